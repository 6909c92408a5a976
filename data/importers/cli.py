"""`hyperrec import ...`: turns a real data set into the data contract (data/README.md).

A click group that the `hyperrec` command mounts; each subcommand is a thin wrapper around one
importer module, imported inside the command so that `hyperrec --help` stays fast. Also
runnable alone: `python -m hyperrec.data.importers.cli online-retail PATH --out DIR`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import click


@click.group("import", context_settings={"help_option_names": ["-h", "--help"]})
def import_data() -> None:
    """Imports a real data set as span folders of the data contract (data/README.md)."""


@import_data.command("online-retail")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Data root to write (span-N/ folders and import_report.json).")
@click.option("--span-days", type=click.IntRange(min=1), default=28, show_default=True,
              help="Length of each span window in days.")
@click.option("--max-customers", type=click.IntRange(min=1), default=None,
              help="Keep a seeded random sample of this many customers (for quick runs).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the customer sample and of the sampled negatives.")
@click.option("--negatives-per-purchase", type=click.IntRange(min=0), default=1,
              show_default=True,
              help="Popularity-sampled 'impression' rows per purchase (0: purchases only).")
@click.option("--eval-days", type=click.FloatRange(min=0), default=None,
              help="The pipeline's data.eval_days (default: the online_retail experiment's, "
                   "28): first_seen is derived from the sales before that eval cutoff only.")
def online_retail(path: str, out_dir: str, span_days: int, max_customers: Optional[int],
                  seed: int, negatives_per_purchase: int, eval_days: Optional[float]) -> None:
    """UCI Online Retail (.rda/.rds, e.g. onlineretail.rda) -> purchases and a catalogue."""
    from hyperrec.data.importers import online_retail as importer

    if eval_days is None:
        eval_days = importer.DEFAULT_EVAL_DAYS
    _run("online retail", lambda: importer.import_online_retail(
        path, out_dir, span_days, max_customers, seed, negatives_per_purchase, eval_days),
        out_dir,
        lambda report: {
        "lines read": report["source"]["lines"],
        "lines kept": report["cleaning"]["kept_lines"],
        **{f"dropped: {rule}": count
           for rule, count in report["cleaning"]["dropped_lines"].items()},
        "items": report["catalogue"]["items_written"],
        "customers": report["interactions"]["customers_written"],
        "purchase events": report["interactions"]["events"],
        "items first sold in the eval period, listed from its cutoff":
            report["catalogue"]["first_seen"]["items_moved_to_cutoff"],
    })


@import_data.command("image-folder")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Data root to write (images/, span-N/ folders, import_report.json).")
@click.option("--with-sample-users", "sample_users", type=click.IntRange(min=0), default=200,
              show_default=True,
              help="Users of a synthetic, documented interaction log over the photos "
                   "(0: catalogue only, header-only interactions.csv).")
@click.option("--weeks", type=click.IntRange(min=1), default=4, show_default=True,
              help="Weekly spans of the synthetic log.")
@click.option("--start-date", default="2024-01-01", show_default=True,
              help="First day (UTC) of the timeline; every item's first_seen.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic log.")
def image_folder(path: str, out_dir: str, sample_users: int, weeks: int, start_date: str,
                 seed: int) -> None:
    """Class folders of photos (PATH/<class>/*.jpg|png) -> a catalogue with images."""
    from hyperrec.data.importers import image_folder as importer

    _run("image folder", lambda: importer.import_image_folder(
        path, out_dir, seed, sample_users, weeks, start_date), out_dir,
        lambda report: {
        "items": report["catalogue"]["items"],
        "categories": len(report["catalogue"]["by_category"]),
        "corrupt images": report["images"]["corrupt"],
        "too-large images": report["images"]["too_large"],
        "synthetic users": report["interactions"]["users"],
        "synthetic interaction rows": report["interactions"]["rows"],
    })


def _run(name: str, do_import: Callable[[], Dict[str, Any]], out_dir: str,
         summary: Callable[[Dict[str, Any]], Dict[str, Any]]) -> None:
    """Runs one importer; a ValueError (bad input) is a one-line error, not a traceback."""
    from rich.console import Console

    start = time.monotonic()
    try:
        report = do_import()
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    seconds = time.monotonic() - start
    counts = summary(report)
    console = Console()
    console.print(f"[green]imported[/] {name} in {seconds:.1f}s -> {out_dir} "
                  f"({report['timeline']['spans']} spans)")
    for key, value in counts.items():
        console.print(f"  {key}: {value}")
    console.print(f"  details: {out_dir}/import_report.json")


if __name__ == "__main__":
    import_data()
