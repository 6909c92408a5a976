"""`hyperrec import ...`: turns a real data set into the data contract (data/README.md).

A click group that the `hyperrec` command mounts; each subcommand is a thin wrapper around one
importer module, imported inside the command so that `hyperrec --help` stays fast. Also
runnable as `python -m hyperrec.pipeline.cli import online-retail PATH --out DIR`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import click

from hyperrec.schemas import features


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


_TABLE_FLAGS = (
    # (flag, TableMapping field, click type, help with an example)
    ("--mapping", None, click.Path(exists=True, dir_okay=False),
     "YAML file of the mapping: keys are these flags' names without dashes (user: reviewer, "
     "engaged_if: 'rating>=4', event_map: {view: impression}); flags win over it; items/images "
     "paths in it are relative to it. E.g. --mapping data/examples/reviews/mapping.yaml"),
    ("--format", "format", click.Choice(["csv", "tsv", "parquet", "jsonl"]),
     "Format of PATH (default: from its extension, .gz/.bz2/.zip/.xz/.zst skipped). "
     "E.g. --format jsonl"),
    ("--user", "user", str, "User id column [default: user_id]. E.g. --user customer"),
    ("--item", "item", str, "Item id column [default: item_id]. E.g. --item sku"),
    ("--timestamp", "timestamp", str,
     "Time column [default: timestamp]: epoch s/ms/us or ISO-8601. E.g. --timestamp rated_at"),
    ("--timestamp-unit", "timestamp_unit", click.Choice(["auto", "s", "ms", "us", "iso"]),
     "How to read the time column [default: auto: numbers by magnitude (>=1e14 us, >=1e11 ms, "
     "else s), text as ISO-8601]. E.g. --timestamp-unit ms"),
    ("--timezone", "timezone", str,
     "Zone of ISO times without one (a date alone is midnight there); times with Z or an offset "
     "are converted to UTC [default: UTC]. E.g. --timezone Europe/Berlin"),
    ("--event", "event", str,
     "Event type column, values impression|click|add_to_cart|purchase or mapped with "
     "--event-map [default: a column named event, if any]. E.g. --event action"),
    ("--event-map", "event_map", str,
     "VALUE=EVENT pairs for the event column; VALUE=drop drops (and counts) those rows. "
     "E.g. --event-map view=impression,basket=add_to_cart,buy=purchase,wish=drop"),
    ("--rating", "rating", str,
     "Rating column (numbers; needs --engaged-if) instead of an event column. E.g. --rating stars"),
    ("--engaged-if", "engaged_if", str,
     "Which ratings are engaged; the others are shown-not-engaged impressions. "
     "E.g. --engaged-if 'rating>=4'"),
    ("--engaged-event", "engaged_event", click.Choice(list(features.POSITIVE_EVENTS)),
     "Event written for engaged ratings [default: click] or, without an event or rating "
     "column, for every row [default: purchase]. E.g. --engaged-event purchase"),
    ("--device", "device", str,
     "Device context column (empty -> unknown) [default: none, all unknown]. "
     "E.g. --device platform"),
    ("--items", "items", click.Path(exists=True, dir_okay=False),
     "Item table (CSV, TSV, Parquet or JSON lines) with the columns below. "
     "E.g. --items products.csv"),
    ("--items-format", "items_format", click.Choice(["csv", "tsv", "parquet", "jsonl"]),
     "Format of --items (default: from its extension). E.g. --items-format parquet"),
    ("--item-id", "item_id", str,
     "Item id column of --items [default: the --item name if present, else item_id]. "
     "E.g. --item-id sku"),
    ("--title", "title", str, "Title column of --items [default: title]. E.g. --title name"),
    ("--description", "description", str,
     "Description column of --items [default: description]. E.g. --description blurb"),
    ("--category", "category", str,
     "Category column of --items [default: category; empty -> unknown]. "
     "E.g. --category department"),
    ("--price", "price", str,
     "Price column of --items (missing/invalid -> the median, counted) [default: price]. "
     "E.g. --price price_eur"),
    ("--image", "image", str,
     "Image column of --items: a path relative to the item table, absolute, or a URL "
     "[default: image]. E.g. --image picture"),
    ("--first-seen", "first_seen", str,
     "Launch time column of --items [default: first_seen; without it, first_seen is the "
     "item's first event before the eval cutoff]. E.g. --first-seen launched"),
    ("--images", "images", click.Path(exists=True, file_okay=False),
     "Folder of <item_id>.jpg|jpeg|png images for items without an image column value. "
     "E.g. --images photos/"),
    ("--span-days", "span_days", click.IntRange(min=1),
     "Span length in days [default: 7, or whole weeks keeping the log within 16 spans]. "
     "E.g. --span-days 28"),
    ("--eval-days", "eval_days", click.FloatRange(min=0),
     "The eval window that derived first_seen respects [default: 15% of the log's days, at "
     "least one span; what `hyperrec run` then uses]. E.g. --eval-days 14"),
    ("--negatives-per-positive", "negatives_per_positive", click.IntRange(min=0),
     "Popularity-sampled impressions per engaged row [default: 1 for a log without "
     "impressions (purchase-only), else 0]. E.g. --negatives-per-positive 2"),
    ("--max-bad-timestamps", "max_bad_timestamps", click.FloatRange(0, 1),
     "Largest share of unparseable timestamps that is dropped (counted) rather than refused "
     "[default: 0.01]. E.g. --max-bad-timestamps 0.05"),
    ("--seed", "seed", int, "Seed of the sampled negatives [default: 0]. E.g. --seed 7"),
)


def _table_options(command: Callable) -> Callable:
    for flag, _, kind, text in reversed(_TABLE_FLAGS):
        command = click.option(flag, flag.lstrip("-").replace("-", "_"), type=kind,
                               default=None, help=text)(command)
    return command


@import_data.command("table")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Data root to write: span-N/ folders, images/, schema.pbtxt, "
                   "import_report.json (written beside it, then renamed into place). "
                   "E.g. --out runs/mydata/data")
@_table_options
def table(path: str, out_dir: str, **flags: Any) -> None:
    """Your own interaction log (CSV, TSV, Parquet, JSON lines; PATH) with its own column
    names -> the data contract, a schema derived from the data and an import report.

    \b
    E.g. hyperrec import table ratings.csv.gz --rating stars --engaged-if 'rating>=4' \\
           --user reviewer --item product --timestamp rated_at_ms --items products.csv \\
           --item-id sku --images photos/ --out runs/mydata/data
    """
    from hyperrec.data.importers import generic_table as importer

    def do_import() -> Dict[str, Any]:
        values = importer.load_mapping(flags["mapping"]) if flags["mapping"] else {}
        for flag, field, _, _ in _TABLE_FLAGS:
            given = flags[flag.lstrip("-").replace("-", "_")]
            if field and given is not None:
                values[field] = (importer.parse_event_map(given) if field == "event_map"
                                 else given)
        return importer.import_table(path, out_dir, importer.TableMapping(**values))

    _run("table", do_import, out_dir, lambda report: {
        "rows read": report["rows"]["read"],
        "rows kept": report["rows"]["kept"],
        **{f"dropped: {reason}": count for reason, count in report["rows"]["dropped"].items()
           if count},
        "users": report["interactions"]["users"],
        "items": report["catalogue"]["items"],
        "items not in the item table (kept, empty content)":
            report["catalogue"]["not_in_item_table"],
        "sampled negatives": report["interactions"]["negatives_sampled"],
        "date range": f"{report['date_range']['first_event']} .. "
                      f"{report['date_range']['last_event']}",
        "items with image / text": f"{report['catalogue']['with_image_share']:.0%} / "
                                   f"{report['catalogue']['with_text_share']:.0%}",
        "image paths not found (no image)": report["images"]["missing_files"],
        "text cells not UTF-8 (replaced)": sum(
            sum(part.values()) for key, part in report["text_not_utf8"].items()
            if isinstance(part, dict)),
        "schema": f"{out_dir}/{report['schema']['file']} "
                  f"({len(report['schema']['item_category_domain'])} categories)",
        "next": f"hyperrec run --data {out_dir}",
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


GROUP = "Import data"
COMMANDS = (import_data,)
