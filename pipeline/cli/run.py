"""`hyperrec generate-data | run | demo | report | schema-diff`: sample data, one pipeline run
with the local runner, the demo, the run report and the schema review."""
from __future__ import annotations

import os
import time
from typing import Sequence

import click

from hyperrec.components import config as config_lib
from hyperrec.pipeline.cli.common import EXPERIMENTS, console, exit_now, fail, usage_errors
from hyperrec.pipeline.cli.options import beam_options
from hyperrec.pipeline.runners import commands as runner_commands


@click.command("generate-data")
@click.option("--scale", type=click.Choice(["tiny", "small", "default"]), default="default",
              show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True)
def generate_data(scale: str, seed: int, out_dir: str) -> None:
    """Writes the deterministic sample data (data/README.md) to OUT."""
    from hyperrec.data import synthetic as datagen
    start = time.monotonic()
    summary = datagen.generate(scale, seed, out_dir)
    console.print(f"[green]generated[/] {scale} (seed {seed}) in {time.monotonic() - start:.1f}s "
                  f"-> {out_dir}")
    for key in sorted(summary):
        if isinstance(summary[key], (int, float, str)):
            console.print(f"  {key}: {summary[key]}")


@click.command("run")
@click.option("--experiment", type=EXPERIMENTS, default=None,
              help="A named configuration [default: sized from the data's import report "
                   "(hyperrec import table), else default].")
@click.option("--data", "data_root", type=click.Path(file_okay=False),
              required=True, help="A data root in the contract's layout (span-N/ folders).")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/local",
              show_default=True, help="Pipeline root, MLMD database and serving base path.")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
              help="Config override, e.g. --set model.epochs=2 (repeatable).")
@click.option("--metadata", default="", help="MLMD: a SQLite path or mysql://USER@HOST:PORT/DB "
              "(default: WORKDIR/metadata.sqlite).")
@beam_options
@usage_errors
def run_pipeline(experiment: str, data_root: str, workdir: str, overrides: Sequence[str],
                 metadata: str, **beam) -> None:
    """Runs the whole pipeline once with the local runner.

    Without --experiment, an imported data root's configuration is sized from its import
    report and printed with the reason for each choice; DATA/schema.pbtxt (derived by
    `hyperrec import table`) is the schema when present. Both are stored in
    WORKDIR/run_config.json and shown in the run report.
    """
    runner_commands.load_config(experiment or "default", overrides)  # a bad --set: usage error
    from hyperrec.components.example_gen.layout import data_root_problem
    problem = data_root_problem(data_root)  # before anything loads TensorFlow
    if problem:
        fail(problem, 2)
    config, record = runner_commands.run_config(experiment, overrides, data_root)
    runner_commands.print_run_config(record, console)
    runner_commands.store_run_config(record, workdir)
    options = runner_commands.run_options(config, metadata, **beam)
    from hyperrec.components.example_gen import executor as example_gen
    from hyperrec.components.validation_gate import AnomaliesFoundError
    from hyperrec.pipeline.runners import local as local_runner
    try:
        paths = local_runner.run(config, data_root, workdir, console, **options)
    except (example_gen.ContractError, example_gen.EvalSplitTooSmallError,
            AnomaliesFoundError) as err:
        fail(str(err))
    console.print(f"serving base path: {paths.serving_dir}")
    exit_now(0)


@click.command("demo")
@click.option("--experiment", type=EXPERIMENTS, default="default", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/demo",
              show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE")
@usage_errors
def demo(experiment: str, workdir: str, seed: int, overrides: Sequence[str]) -> None:
    """Generates sample data, runs the pipeline, recommends from the pushed model."""
    from hyperrec.pipeline import demo as demo_lib
    config = runner_commands.load_config(experiment, overrides)
    exit_now(demo_lib.run_demo(config, workdir, seed, console))


@click.command("report")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/local",
              show_default=True, help="A run's workdir (its metadata.sqlite is the default).")
@click.option("--metadata", default="", help="MLMD: a SQLite path or mysql:// URI.")
@click.option("--out", "out_path", default="", help="Default: WORKDIR/report.html.")
@usage_errors
def report(workdir: str, metadata: str, out_path: str) -> None:
    """Writes the run report (one HTML file) of the newest run in the store."""
    from hyperrec.pipeline.runners import local as local_runner
    location = runner_commands.store_location(workdir, metadata)
    console.print(f"run report: {local_runner.write_report(location, workdir, out_path)}")


@click.command("schema-diff")
@click.option("--workdir", type=click.Path(exists=True, file_okay=False), default="runs/demo",
              show_default=True, help="A local run whose newest statistics are compared.")
@click.option("--experiment", type=EXPERIMENTS, default="default", show_default=True,
              help="Whose curated schema to compare against.")
@click.option("--write-inferred", type=click.Path(dir_okay=False), default=None,
              help="Also write the inferred schema (text proto) here for review.")
@usage_errors
def schema_diff(workdir: str, experiment: str, write_inferred: str) -> None:
    """Infers a schema from the newest statistics and lists how it differs from the curated one."""
    from hyperrec.pipeline import schema_tools
    config = runner_commands.load_config(experiment, ())
    curated = os.path.join(config_lib.project_root(), config.schema_file)
    stats = schema_tools.latest_statistics(workdir)
    lines = schema_tools.infer_and_diff(stats, curated, write_inferred)
    console.print(f"statistics: {stats}\ncurated:    {curated}")
    for line in lines or ["no differences that need review"]:
        console.print(line, markup=False)
    if write_inferred:
        console.print(f"inferred schema written to {write_inferred}")


GROUP = "Run the pipeline"
COMMANDS = (generate_data, run_pipeline, demo, report, schema_diff)
