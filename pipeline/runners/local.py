"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner (or another Beam preset),
MLMD on SQLite (or MySQL), caching on."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import List, Optional

from absl import logging as absl_logging
from rich.console import Console
from rich.markup import escape
from tfx import v1 as tfx

from hyperrec.pipeline import beam as beam_lib
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.components.config import HyperrecConfig
from hyperrec.pipeline.progress import ComponentTiming, component_progress
from hyperrec.pipeline.runners import metadata as metadata_lib


@dataclasses.dataclass
class RunPaths:
    """Where a local run keeps its artifacts, metadata and pushed models (and its timings)."""

    workdir: str
    data_root: str = ""
    timings: List[ComponentTiming] = dataclasses.field(default_factory=list)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.workdir, "pipeline")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.workdir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.workdir, "serving_model", pipeline_def.MODEL_NAME)


def beam_args(config: HyperrecConfig) -> List[str]:
    """Pipeline-wide DirectRunner arguments (pipeline/beam.py, the direct preset)."""
    return beam_lib.pipeline_args(beam_lib.from_config(config))[0]


def run(config: HyperrecConfig, data_root: str, workdir: str,
        console: Optional[Console] = None, *, metadata: str = "",
        beam: Optional[beam_lib.BeamSettings] = None) -> RunPaths:
    """Runs the whole pipeline once and returns where it wrote things. `metadata`: an MLMD
    location (runners/metadata.py; default WORKDIR/metadata.sqlite); `beam`: a Beam preset
    (default: the config's DirectRunner choices)."""
    console = console or Console()
    paths = RunPaths(os.path.abspath(workdir), os.path.abspath(data_root))
    common_args, ingest_args = beam_lib.pipeline_args(beam or beam_lib.from_config(config))
    pipeline = pipeline_def.create_pipeline(
        config, data_root=os.path.abspath(data_root), pipeline_root=paths.pipeline_root,
        serving_dir=paths.serving_dir,
        metadata_connection_config=metadata_lib.connection_config(
            metadata or paths.metadata_path),
        beam_pipeline_args=common_args, ingest_beam_pipeline_args=ingest_args)
    start = time.monotonic()
    # Component logs go to stderr only from WARNING up; progress lines say what runs.
    absl_logging.set_verbosity(absl_logging.WARNING)
    with component_progress(console) as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    progress.print_summary()
    paths.timings = progress.timings
    console.print(f"[bold]pipeline {pipeline.pipeline_info.pipeline_name} finished in "
                  f"{time.monotonic() - start:.1f}s[/]")
    report_after_run(metadata or paths.metadata_path, paths.workdir, console)
    return paths


def report_after_run(metadata_location: str, workdir: str, console: Console) -> Optional[str]:
    """The run report, or one clear line saying why there is none: the run's artifacts are
    all in place by now, so a broken report does not undo the run."""
    try:
        path = write_report(metadata_location, workdir)
    except Exception as err:  # noqa: BLE001 (any report failure: one clear line, run stands)
        console.print(f"[bold red]run report FAILED[/] ({escape(type(err).__name__)}: "
                      f"{escape(str(err))}); retry: hyperrec report --workdir {workdir}")
        return None
    console.print(f"run report: {path}")
    return path


def write_report(metadata_location: str, workdir: str, out_path: str = "") -> str:
    """Writes the run report (components/evaluation/report.py) of the newest run in the
    store, with the served model's lineage when one was pushed; returns its path."""
    from ml_metadata.metadata_store import metadata_store
    from hyperrec.components.evaluation import report
    from hyperrec.pipeline import lineage
    store = metadata_store.MetadataStore(metadata_lib.connection_config(metadata_location))
    try:
        lineage_text = lineage.render(lineage.trace(store))
    except lineage.LineageError:
        lineage_text = None  # nothing pushed yet: the report says so
    return report.write(store, out_path or os.path.join(workdir, report.REPORT_FILE),
                        lineage_text, configuration=_run_config(workdir))


def _run_config(workdir: str) -> Optional[dict]:
    """The configuration record `hyperrec run` stored for the run, if any."""
    from hyperrec.pipeline.runners.commands import RUN_CONFIG_FILE
    path = os.path.join(workdir, RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
