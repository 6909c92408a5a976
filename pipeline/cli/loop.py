"""`hyperrec monitor | loop-demo | refresh-catalogue`: the production loop's commands, thin
wrappers over pipeline/loop/."""
from __future__ import annotations

import json
import os
import sys

import click

from hyperrec.components import config as config_lib
from hyperrec.pipeline.cli.common import EXPERIMENTS, console, usage_errors
from hyperrec.pipeline.runners.commands import UsageProblem

DEFAULT_SCHEMA = os.path.join("schemas", "schema.pbtxt")


def trigger_options(command):
    """--trigger and what a triggered run needs (the data root, the experiment and overrides,
    which also set MonitoringConfig: --set monitoring.airflow_url=...)."""
    options = [
        click.option("--trigger", is_flag=True, help="Start a retraining run when the "
                     "window is above threshold and the data root has a new span."),
        click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
                     help="The data root the run reads (required with --trigger)."),
        click.option("--experiment", type=EXPERIMENTS, default="default",
                     show_default=True, help="The triggered run's experiment."),
        click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                     help="Config override of the triggered run (repeatable)."),
        click.option("--runner", type=click.Choice(["local", "airflow", "kubeflow"]),
                     default=None, help="Overrides monitoring.runner."),
        click.option("--metadata", default="", help="MLMD of the triggers and the local run: "
                     "a SQLite path or mysql:// URI (default: WORKDIR/metadata.sqlite)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


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
@click.option("--feedback", type=click.Path(), default=None,
              help="A span folder of interactions after the window's requests: compare the "
              "canary label with stable and say promote / roll back (monitoring.canary.*).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@trigger_options
@usage_errors
def monitor(serving_log: str, workdir: str, schema_path: str, training_statistics: str,
            feedback: str, as_json: bool, **trigger) -> None:
    """Profiles the requests logged since the last window: skew against training, drift
    against the previous window, report under WORKDIR/monitoring/window-N/; with --trigger,
    starts a retraining run when the window is above threshold and a new span arrived."""
    from hyperrec.pipeline.loop import monitor as monitor_lib
    data_root = trigger["data_root"] or ""
    # A cluster reads a gs:// or s3:// root itself; the other runners read a local one.
    remote_root = "://" in data_root and trigger.get("runner") == "kubeflow"
    if trigger["trigger"] and not (remote_root or (data_root and os.path.isdir(data_root))):
        # Checked before the window is profiled: a usage error must not consume the window.
        raise click.UsageError(f"--trigger needs --data, an existing data root (got "
                               f"{trigger['data_root']!r})")
    schema_path = schema_path or os.path.join(config_lib.project_root(), DEFAULT_SCHEMA)
    from hyperrec.pipeline.runners import commands as runner_commands
    canary = (runner_commands.load_config(trigger["experiment"], trigger["overrides"])
              .monitoring.canary if feedback else config_lib.CanaryConfig())
    try:
        summary = monitor_lib.run(serving_log, workdir, schema_path, training_statistics,
                                  feedback, canary)
    except monitor_lib.NoNewRequests as err:
        console.print(str(err))
        return
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if trigger["trigger"]:
        from hyperrec.pipeline.loop import retrain
        try:
            retrain.trigger_window(summary, workdir, announce=None if as_json else (
                lambda line: console.print(line, markup=False)), **trigger)
        except UsageProblem:
            raise  # a bad --set: usage_errors names the flag
        except (ValueError, FileNotFoundError) as err:
            raise click.UsageError(str(err)) from err
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
    else:
        from hyperrec.pipeline.loop import retrain
        for line in monitor_lib.text_lines(summary) + retrain.trigger_lines(summary):
            console.print(line, markup=False)
        report = os.path.join(monitor_lib.window_dir(workdir, summary["window"]),
                              monitor_lib.REPORT_FILE)
        console.print(f"report: {report}", markup=False)


@click.command("loop-demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/loop",
              show_default=True, help="Generated data, data root, runs, request log, windows.")
@click.option("--experiment", type=click.Choice(["tiny", "small"]), default="tiny",
              show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Config override on top of the loop's own (repeatable).")
def loop_demo(workdir: str, experiment: str, seed: int, overrides) -> None:
    """The retraining loop end to end: v1 -> serve -> shifted traffic -> monitor -> trigger
    -> v2 gated against v1 -> swap under traffic -> recall@10 of both."""
    from hyperrec.pipeline.loop import demo as loop_lib
    result = loop_lib.run_loop(workdir, experiment=experiment, seed=seed,
                               overrides=overrides, console=console)
    for line in loop_lib.summary_lines(result):
        console.print(line, markup=False)
    sys.stdout.flush()
    os._exit(0 if loop_lib.succeeded(result) else 1)  # skip TF's teardown noise (cli.py)


@click.command("refresh-catalogue")
@click.option("--items", "items_csv", type=click.Path(dir_okay=False), required=True,
              help="New items in the contract's items.csv columns (data/README.md).")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), required=True,
              help="The folder holding the images the items reference.")
@click.option("--serving-dir", default=os.path.join("runs", "local", "serving_model"),
              show_default=True, help="Where the Pusher pushes: SERVING_DIR/MODEL_NAME is "
              "the serving base path the server polls.")
@click.option("--model-name", default="hyperrec", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def refresh_catalogue(items_csv: str, images_dir: str, serving_dir: str, model_name: str,
                      as_json: bool) -> None:
    """Adds new items to the served model's catalogue without retraining: embeds them with
    the newest version's item tower and pushes the result as the next version."""
    from hyperrec.pipeline.loop import catalogue_refresh
    try:
        summary = catalogue_refresh.refresh(
            items_csv, images_dir, os.path.join(serving_dir, model_name),
            log=lambda line: console.print(line, markup=False))
    except catalogue_refresh.RefreshError as err:
        raise click.ClickException(f"{type(err).__name__}: {err}") from err
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))


GROUP = "Production loop"
COMMANDS = (monitor, loop_demo, refresh_catalogue)
