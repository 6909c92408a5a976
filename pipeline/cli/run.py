"""The `hyperrec` command: generate data, run the pipeline, run the demo.

Every subcommand is a thin wrapper: the work lives in pipeline/, components/ and serving/.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from hyperrec.pipeline import quiet  # also TF_USE_LEGACY_KERAS, before TensorFlow loads

# `hyperrec --verbose ...` keeps TensorFlow's and the libraries' own log lines.
VERBOSE = "--verbose" in sys.argv[1:2]
if not VERBOSE:
    quiet.native_logs()

import click  # noqa: E402
from rich.console import Console  # noqa: E402

from hyperrec.components import config as config_lib
from hyperrec.pipeline.runners import commands as runner_commands  # noqa: E402

if not VERBOSE:
    quiet.python_logs()

EXPERIMENTS = runner_commands.EXPERIMENTS

# Tables stay readable when the output is a log file or a CI console, not a terminal.
console = Console(width=None if sys.stdout.isatty() else 120)


def _exit_now(code: int) -> None:
    """Ends a process that ran TensorFlow in-process without TF's teardown noise.

    Functions traced by the Trainer are collected during interpreter shutdown, after the
    modules they need are gone, and each prints "Exception ignored in AtomicFunction.__del__".
    Everything the run produced is already on disk (artifacts, MLMD), so skip that teardown.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _fail(message: str, code: int = 1) -> None:
    """One line on stderr and a non-zero exit: what went wrong, not a traceback."""
    click.echo(f"error: {message}", err=True)
    _exit_now(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True,
              help="Keep TensorFlow's C++ and gRPC log lines (first option only).")
def main(verbose: bool) -> None:
    """hyperrec: a multimodal recommender as a TFX pipeline."""


@main.command("generate-data")
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


@main.command("run")
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
@runner_commands.beam_options
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
        _fail(problem, 2)
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
        _fail(str(err))
    console.print(f"serving base path: {paths.serving_dir}")
    _exit_now(0)


@main.command("demo")
@click.option("--experiment", type=EXPERIMENTS, default="default", show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/demo",
              show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE")
def demo(experiment: str, workdir: str, seed: int, overrides: Sequence[str]) -> None:
    """Generates sample data, runs the pipeline, recommends from the pushed model."""
    from hyperrec.pipeline import demo as demo_lib
    config = runner_commands.load_config(experiment, overrides)
    _exit_now(demo_lib.run_demo(config, workdir, seed, console))


@main.command("report")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/local",
              show_default=True, help="A run's workdir (its metadata.sqlite is the default).")
@click.option("--metadata", default="", help="MLMD: a SQLite path or mysql:// URI.")
@click.option("--out", "out_path", default="", help="Default: WORKDIR/report.html.")
def report(workdir: str, metadata: str, out_path: str) -> None:
    """Writes the run report (one HTML file) of the newest run in the store."""
    from hyperrec.pipeline.runners import local as local_runner
    location = runner_commands.store_location(workdir, metadata)
    console.print(f"run report: {local_runner.write_report(location, workdir, out_path)}")


@main.command("schema-diff")
@click.option("--workdir", type=click.Path(exists=True, file_okay=False), default="runs/demo",
              show_default=True, help="A local run whose newest statistics are compared.")
@click.option("--experiment", type=EXPERIMENTS, default="default", show_default=True,
              help="Whose curated schema to compare against.")
@click.option("--write-inferred", type=click.Path(dir_okay=False), default=None,
              help="Also write the inferred schema (text proto) here for review.")
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


def _newest_numbered(folder: str) -> str:
    numbered = [n for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    if not numbered:
        _fail(f"nothing under {folder}: run the pipeline first, or name the path", 2)
    return os.path.join(folder, max(numbered, key=int))


@main.command("export-lite")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/demo",
              show_default=True, help="A run's workdir: where the defaults below are found.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, exists=True),
              default=None, help="SavedModel directory [default: the newest pushed version "
              "under WORKDIR/serving_model/hyperrec].")
@click.option("--train-split", type=click.Path(file_okay=False, exists=True), default=None,
              help="ExampleGen train split folder, the int8 representative data [default: "
              "the newest WORKDIR/pipeline/FileBasedExampleGen/examples/N/Split-train].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: WORKDIR/lite].")
@click.option("--representative-rows", type=int, default=200, show_default=True)
def export_lite(workdir: str, model_dir: str, train_split: str, out_dir: str,
                representative_rows: int) -> None:
    """Writes the TFLite recommender (float32, dynamic-range and int8) and its metadata."""
    from hyperrec.pipeline.runners import local as local_runner
    from hyperrec.serving import lite
    paths = local_runner.RunPaths(workdir)
    model_dir = model_dir or _newest_numbered(paths.serving_dir)
    train_split = train_split or os.path.join(_newest_numbered(os.path.join(
        paths.pipeline_root, "FileBasedExampleGen", "examples")), "Split-train")
    out_dir = out_dir or os.path.join(workdir, "lite")
    try:
        metadata = lite.export(model_dir, out_dir, train_split, representative_rows)
    except (lite.LiteExportError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(f"model: {model_dir} ({metadata['saved_model_bytes']:,} bytes as a "
                  "SavedModel)", soft_wrap=True)
    for form, entry in metadata["forms"].items():
        console.print(f"  {form:>13}: {entry['bytes']:>10,} bytes  -> "
                      f"{os.path.join(out_dir, entry['file'])}", soft_wrap=True)
    console.print("ops of the whole recommend signature builtin TFLite lacks (run on the "
                  f"host instead): {', '.join(metadata['unsupported_ops_whole_recommend']) or 'none'}",
                  soft_wrap=True)
    console.print(f"metadata: {os.path.join(out_dir, lite.METADATA_FILE)}")
    _exit_now(0)


def _register_subcommands() -> None:
    """Commands that live beside the code they drive."""
    from hyperrec.data.importers.cli import import_data
    from hyperrec.serving import cli as serving_cli
    main.add_command(import_data)
    serving_cli.register(main)
    runner_commands.register(main)
    from hyperrec.pipeline import monitoring_cli
    monitoring_cli.register(main)
    from hyperrec.pipeline.pretrain_cli import pretrain
    main.add_command(pretrain)


_register_subcommands()

if __name__ == "__main__":
    main()
