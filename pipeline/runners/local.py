"""Runs the pipeline locally: LocalDagRunner, Beam DirectRunner, MLMD on SQLite, caching on."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import List, Optional

from absl import logging as absl_logging
from rich.console import Console
from tfx import v1 as tfx

from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.components.config import HyperrecConfig
from hyperrec.pipeline.progress import ComponentTiming, component_progress


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
    """Pipeline-wide DirectRunner arguments.

    Worker parallelism only for multi-process or multi-thread modes: in `in_memory` mode Beam
    runs bundles of one stage on a thread pool of `direct_num_workers`, which lets TFMA call
    one loaded SavedModel from two threads at once (seen to abort the process), without the
    isolation that makes parallel workers safe.
    """
    args = [f"--direct_running_mode={config.direct_running_mode}"]
    if config.direct_running_mode != "in_memory":
        args.append(f"--direct_num_workers={config.direct_num_workers or os.cpu_count() or 1}")
    return args


def ingest_beam_args(config: HyperrecConfig) -> List[str]:
    """DirectRunner arguments of ExampleGen and StatisticsGen: worker processes where data
    volume lives (the other components are dominated by TensorFlow, which uses the cores)."""
    if config.ingest_running_mode == "in_memory":
        return []
    return [f"--direct_running_mode={config.ingest_running_mode}",
            f"--direct_num_workers={config.direct_num_workers or os.cpu_count() or 1}"]


def run(config: HyperrecConfig, data_root: str, workdir: str,
        console: Optional[Console] = None) -> RunPaths:
    """Runs the whole pipeline once and returns where it wrote things."""
    console = console or Console()
    paths = RunPaths(os.path.abspath(workdir), os.path.abspath(data_root))
    pipeline = pipeline_def.create_pipeline(
        config, data_root=os.path.abspath(data_root), pipeline_root=paths.pipeline_root,
        serving_dir=paths.serving_dir, metadata_path=paths.metadata_path,
        beam_pipeline_args=beam_args(config), ingest_beam_pipeline_args=ingest_beam_args(config))
    start = time.monotonic()
    # Component logs go to stderr only from WARNING up; progress lines say what runs.
    absl_logging.set_verbosity(absl_logging.WARNING)
    with component_progress(console) as progress:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    progress.print_summary()
    paths.timings = progress.timings
    console.print(f"[bold]pipeline {pipeline.pipeline_info.pipeline_name} finished in "
                  f"{time.monotonic() - start:.1f}s[/]")
    return paths
