"""Option sets several commands share."""
from __future__ import annotations

from typing import Callable

import click

from hyperrec.pipeline import beam as beam_lib


def beam_options(command: Callable) -> Callable:
    """--beam PRESET and the presets' settings (pipeline/beam.py)."""
    options = [
        click.option("--beam", "beam_preset", type=click.Choice(beam_lib.PRESETS),
                     default="direct", show_default=True,
                     help="Where Beam-powered components run."),
        click.option("--project", default="", help="dataflow: GCP project."),
        click.option("--region", default="", help="dataflow: region."),
        click.option("--temp-location", default="", help="dataflow: gs:// temp/staging."),
        click.option("--job-endpoint", default="",
                     help="flink/spark: job server host:port; portable: one, or embed "
                          "(default: Beam's Python job service in the component's process)."),
        click.option("--environment-type", default=None,
                     type=click.Choice(beam_lib.PORTABLE_ENVIRONMENTS),
                     help="flink/spark/portable: where the SDK harness runs "
                          "[default: DOCKER; portable: EXTERNAL]."),
        click.option("--environment-config", default="",
                     help="flink/spark/portable: EXTERNAL worker pool host:port, or a "
                          "DOCKER image."),
        click.option("--beam-image", default="",
                     help="dataflow, flink/spark DOCKER: the pipeline image the SDK harness "
                          "runs in (compile: default --image)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
