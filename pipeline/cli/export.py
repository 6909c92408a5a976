"""`hyperrec export-lite | compile`: the pushed model as TFLite, the pipeline for an
orchestrator (Kubeflow Pipelines v2 JSON)."""
from __future__ import annotations

import os
from typing import Sequence

import click

from hyperrec.pipeline.cli.common import EXPERIMENTS, console, exit_now, fail, usage_errors
from hyperrec.pipeline.cli.options import beam_options
from hyperrec.pipeline.runners import commands as runner_commands


def _newest_numbered(folder: str) -> str:
    numbered = [n for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    if not numbered:
        fail(f"nothing under {folder}: run the pipeline first, or name the path", 2)
    return os.path.join(folder, max(numbered, key=int))


@click.command("export-lite")
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
        fail(str(err))
    console.print(f"model: {model_dir} ({metadata['saved_model_bytes']:,} bytes as a "
                  "SavedModel)", soft_wrap=True)
    for form, entry in metadata["forms"].items():
        console.print(f"  {form:>13}: {entry['bytes']:>10,} bytes  -> "
                      f"{os.path.join(out_dir, entry['file'])}", soft_wrap=True)
    unsupported = ", ".join(metadata["unsupported_ops_whole_recommend"]) or "none"
    console.print("ops of the whole recommend signature builtin TFLite lacks (run on the "
                  f"host instead): {unsupported}", soft_wrap=True)
    console.print(f"metadata: {os.path.join(out_dir, lite.METADATA_FILE)}")
    exit_now(0)


@click.command("compile")
@click.option("--orchestrator", type=click.Choice(["kubeflow"]), default="kubeflow",
              show_default=True)
@click.option("--experiment", type=EXPERIMENTS, default="default", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE")
@click.option("--image", required=True, help="The pipeline image every task runs in.")
@click.option("--pipeline-root", required=True, help="gs://... (artifacts).")
@click.option("--data-root", required=True, help="gs://... in the data contract's layout.")
@click.option("--serving-dir", required=True, help="gs://... serving base path.")
@click.option("--output", default="hyperrec_pipeline.json", show_default=True,
              type=click.Path(dir_okay=False), help="The pipeline JSON to write.")
@beam_options
@usage_errors
def compile_command(orchestrator: str, experiment: str, overrides: Sequence[str], image: str,
                    pipeline_root: str, data_root: str, serving_dir: str, output: str,
                    **options) -> None:
    """Writes the pipeline for an orchestrator (Kubeflow Pipelines v2 JSON)."""
    from hyperrec.pipeline.runners import kubeflow
    config = runner_commands.load_config(experiment, overrides)
    beam = runner_commands.beam_settings(config, image=image, **options)
    try:
        path = kubeflow.compile_pipeline(
            config, image=image, pipeline_root=pipeline_root, data_root=data_root,
            serving_dir=serving_dir, output_path=output, beam=beam)
    except kubeflow.KubeflowCompileError as err:
        raise click.UsageError(str(err)) from err
    click.echo(f"wrote {path} ({orchestrator}, image {image})")


GROUP = "Export"
COMMANDS = (export_lite, compile_command)
