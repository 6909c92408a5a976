"""The whole pipeline on the full UCI Online Retail import (real data, 4,334 customers).

Imports ../shared/data/online_retail/onlineretail.rda, runs every component with the local
runner and prints each component's wall time and the ingestion throughput. Reference in the
same run: the same pipeline on a 10% customer sample, so the printed ratio says how the
pipeline scales from the sample to the full set (rows ratio vs time ratio).

    .venv/bin/python bench/bench_online_retail.py [--epochs 1] [--sample-customers 433]
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperrec.pipeline import quiet  # noqa: E402  (Keras env, quiet logs before TensorFlow)

quiet.native_logs()

import click  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from hyperrec.data.importers import online_retail  # noqa: E402
from hyperrec.components import config as config_lib  # noqa: E402
from hyperrec.pipeline.runners import local as local_runner  # noqa: E402

quiet.python_logs()

RDA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                   "data", "online_retail", "onlineretail.rda")


def _import_and_run(tmp: str, name: str, max_customers, epochs: int, console: Console):
    data_root = os.path.join(tmp, name, "data")
    start = time.monotonic()
    report = online_retail.import_online_retail(RDA, data_root, max_customers=max_customers)
    import_seconds = time.monotonic() - start
    rows = report["interactions"]["events"] + report["interactions"]["negatives_sampled"]
    config = config_lib.load("online_retail", [f"model.epochs={epochs}",
                                               "ingest_running_mode=multi_processing"])
    paths = local_runner.run(config, data_root, os.path.join(tmp, name, "run"), console)
    return rows, import_seconds, {t.name: t.seconds for t in paths.timings}


@click.command()
@click.option("--epochs", default=1, show_default=True)
@click.option("--sample-customers", default=433, show_default=True)
def main(epochs: int, sample_customers: int) -> None:
    console = Console(width=120)
    if not os.path.exists(RDA):
        raise click.ClickException(f"{RDA} is absent: the real data lives in ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        sample = _import_and_run(tmp, "sample", sample_customers, epochs, console)
        full = _import_and_run(tmp, "full", None, epochs, console)
    table = Table(title=f"Online Retail through the pipeline ({os.cpu_count()} cores, "
                        f"{epochs} epoch(s))")
    for column in ("component", f"sample: {sample[0]:,} rows (s)", f"full: {full[0]:,} rows (s)",
                   "time ratio"):
        table.add_column(column, justify="right")
    table.add_row("import", f"{sample[1]:.1f}", f"{full[1]:.1f}", f"{full[1] / sample[1]:.1f}")
    for name, seconds in full[2].items():
        small = sample[2].get(name, 0.0)
        table.add_row(name, f"{small:.1f}", f"{seconds:.1f}",
                      f"{seconds / small:.1f}" if small > 0.5 else "")
    total_small, total_full = sum(sample[2].values()), sum(full[2].values())
    table.add_row("pipeline total", f"{total_small:.1f}", f"{total_full:.1f}",
                  f"{total_full / total_small:.1f}")
    console.print(table)
    example_gen = full[2].get("FileBasedExampleGen", 0.0)
    console.print(f"rows ratio full/sample: {full[0] / sample[0]:.1f}x; ExampleGen throughput "
                  f"on the full set: {full[0] / max(example_gen, 1e-9):,.0f} rows/s")


if __name__ == "__main__":
    main()
