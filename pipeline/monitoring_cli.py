"""`hyperrec monitor` (and, beside it, the loop's other commands): thin wrappers over
components/monitoring/ and the refresh module."""
from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console

from hyperrec.components import config as config_lib

console = Console(width=None if sys.stdout.isatty() else 120)
DEFAULT_SCHEMA = os.path.join("schemas", "schema.pbtxt")


@click.command("monitor")
@click.option("--serving-log", "serving_log", type=click.Path(file_okay=False), required=True,
              help="The server's --request_log_dir.")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/local",
              show_default=True, help="A local run's workdir: its metadata.sqlite gives the "
              "served version's training statistics; windows go to WORKDIR/monitoring/.")
@click.option("--schema", "schema_path", type=click.Path(dir_okay=False), default=None,
              help="The curated schema with the comparators (default: schemas/schema.pbtxt).")
@click.option("--training-statistics", type=click.Path(dir_okay=False), default=None,
              help="A FeatureStats.pb to compare with instead of the MLMD lookup.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def monitor(serving_log: str, workdir: str, schema_path: str, training_statistics: str,
            as_json: bool) -> None:
    """Profiles the requests logged since the last window: skew against training, drift
    against the previous window, report under WORKDIR/monitoring/window-N/."""
    from hyperrec.components.monitoring import monitor as monitor_lib
    schema_path = schema_path or os.path.join(config_lib.project_root(), DEFAULT_SCHEMA)
    try:
        summary = monitor_lib.run(serving_log, workdir, schema_path, training_statistics)
    except monitor_lib.NoNewRequests as err:
        console.print(str(err))
        return
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
    else:
        for line in monitor_lib.text_lines(summary):
            console.print(line, markup=False)
        report = os.path.join(monitor_lib.window_dir(workdir, summary["window"]),
                              monitor_lib.REPORT_FILE)
        console.print(f"report: {report}", markup=False)


def register(group: click.Group) -> None:
    group.add_command(monitor)
