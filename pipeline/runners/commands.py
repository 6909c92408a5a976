"""`hyperrec compile` and `hyperrec lineage`, and the Beam/MLMD options every runner command
shares; registered on the main command by pipeline/cli.py."""
from __future__ import annotations

import json
import os
from typing import Callable, Sequence

import click

from hyperrec.components import config as config_lib
from hyperrec.pipeline import beam as beam_lib

EXPERIMENTS = click.Choice(sorted(config_lib.EXPERIMENTS))


def beam_options(command: Callable) -> Callable:
    """--beam PRESET and the presets' settings (pipeline/beam.py)."""
    options = [
        click.option("--beam", "beam_preset", type=click.Choice(beam_lib.PRESETS),
                     default="direct", show_default=True,
                     help="Where Beam-powered components run."),
        click.option("--project", default="", help="dataflow: GCP project."),
        click.option("--region", default="", help="dataflow: region."),
        click.option("--temp-location", default="", help="dataflow: gs:// temp/staging."),
        click.option("--job-endpoint", default="", help="flink/spark: job server host:port."),
        click.option("--environment-type", default="DOCKER", show_default=True,
                     type=click.Choice(beam_lib.PORTABLE_ENVIRONMENTS),
                     help="flink/spark: where the SDK harness runs."),
        click.option("--environment-config", default="",
                     help="flink/spark: EXTERNAL worker pool address, or a DOCKER image."),
        click.option("--beam-image", default="",
                     help="dataflow, flink/spark DOCKER: the pipeline image the SDK harness "
                          "runs in (compile: default --image)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def beam_settings(config: config_lib.HyperrecConfig, image: str = "",
                  **options) -> beam_lib.BeamSettings:
    """The preset the command line chose; its errors are usage errors naming the flag."""
    settings = beam_lib.from_config(
        config, options["beam_preset"], project=options["project"], region=options["region"],
        temp_location=options["temp_location"], image=options["beam_image"] or image,
        job_endpoint=options["job_endpoint"], environment_type=options["environment_type"],
        environment_config=options["environment_config"])
    try:
        beam_lib.pipeline_args(settings)
    except beam_lib.BeamSettingsError as err:
        raise click.UsageError(str(err)) from err
    return settings


def run_options(config: config_lib.HyperrecConfig, metadata: str, **beam) -> dict:
    """`hyperrec run`'s MLMD and Beam choices as local.run keywords, checked up front."""
    if metadata:
        _check_metadata(metadata)
    return {"metadata": metadata, "beam": beam_settings(config, **beam)}


def _check_metadata(location: str) -> None:
    """A metadata location that names no usable store is a usage error, not a traceback."""
    from hyperrec.pipeline.runners import metadata as metadata_lib
    try:
        metadata_lib.connection_config(location)
    except metadata_lib.MetadataUriError as err:
        raise click.UsageError(str(err)) from err


def store_location(workdir: str, metadata: str) -> str:
    """The MLMD store a command reads: --metadata, else WORKDIR/metadata.sqlite; a SQLite
    file that is not there or a URI that names no usable store is a usage error."""
    location = metadata or os.path.join(workdir, "metadata.sqlite")
    if "://" not in location and not os.path.isfile(location):
        raise click.UsageError(f"no MLMD store at {location} (give --workdir or --metadata)")
    _check_metadata(location)
    return location


def load_config(experiment: str, overrides: Sequence[str]) -> config_lib.HyperrecConfig:
    """The named experiment with `--set` overrides; a bad override is a usage error."""
    try:
        return config_lib.load(experiment, overrides)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--set") from err


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
def compile_command(orchestrator: str, experiment: str, overrides: Sequence[str], image: str,
                    pipeline_root: str, data_root: str, serving_dir: str, output: str,
                    **options) -> None:
    """Writes the pipeline for an orchestrator (Kubeflow Pipelines v2 JSON)."""
    from hyperrec.pipeline.runners import kubeflow
    config = load_config(experiment, overrides)
    beam = beam_settings(config, image=image, **options)
    try:
        path = kubeflow.compile_pipeline(
            config, image=image, pipeline_root=pipeline_root, data_root=data_root,
            serving_dir=serving_dir, output_path=output, beam=beam)
    except kubeflow.KubeflowCompileError as err:
        raise click.UsageError(str(err)) from err
    click.echo(f"wrote {path} ({orchestrator}, image {image})")


@click.command("lineage")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs/local",
              show_default=True, help="A run's workdir (its metadata.sqlite is the default).")
@click.option("--metadata", default="",
              help="MLMD: a SQLite path or mysql://USER@HOST:PORT/DB (password: "
                   "$MLMD_MYSQL_PASSWORD).")
@click.option("--version", default=None, help="Served version (default: the newest pushed).")
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
def lineage_command(workdir: str, metadata: str, version: str, as_json: bool) -> None:
    """Which run, code and data produced a served model (read from MLMD)."""
    from ml_metadata.metadata_store import metadata_store
    from hyperrec.pipeline import lineage
    from hyperrec.pipeline.runners import metadata as metadata_lib
    location = store_location(workdir, metadata)
    try:
        store = metadata_store.MetadataStore(metadata_lib.connection_config(location))
        result = lineage.trace(store, version)
    except lineage.LineageError as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(result.to_dict(), indent=1, sort_keys=True) if as_json
               else lineage.render(result))


def register(main: click.Group) -> None:
    main.add_command(compile_command)
    main.add_command(lineage_command)
