"""Beam runner presets: where the Beam-powered components run (ExampleGen, StatisticsGen,
Transform, the Evaluator, ...), chosen by name (`--beam direct|dataflow|flink|spark|portable`).

A preset only produces `beam_pipeline_args`; the pipeline definition is the same for all of
them. Two lists come out: arguments for every Beam-powered component, and the extra arguments
of the ingestion components (ExampleGen, StatisticsGen), which get worker processes on the
DirectRunner because that is where data volume lives.

- direct:   Beam's DirectRunner on this machine (the local runner's default).
- dataflow: Google Cloud Dataflow; workers start from the pipeline image (it carries the
            hyperrec code and Beam's SDK harness boot entry point), so nothing is staged.
- flink / spark: Beam's portable runner against a Flink or Spark job server
            (`--job_endpoint`); the SDK harness runs in the pipeline image (DOCKER), in a
            worker pool beside the task managers (EXTERNAL, `--environment_config` is its
            address) or as a process (PROCESS).
- portable: the same PortableRunner against Beam's own Python job service (`--job-endpoint`
            default `embed`: in the component's process) and an EXTERNAL SDK worker pool
            (`--environment-config host:port` of `python -m
            apache_beam.runners.worker.worker_pool_main --service_port=PORT`): every function
            and coder crosses a process boundary, as on Flink or Spark, with no cluster. The
            tests' stand-in for those runners (pipeline/runners/README.md).

Every missing or malformed setting is a `BeamSettingsError` naming the flag, raised before
anything is compiled or run.
"""
from __future__ import annotations

import dataclasses
import re
from typing import List, Tuple

from hyperrec.components.config import HyperrecConfig

PRESETS = ("direct", "dataflow", "flink", "spark", "portable")
DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
PORTABLE_ENVIRONMENTS = ("DOCKER", "EXTERNAL", "PROCESS", "LOOPBACK")
EMBEDDED_JOB_SERVICE = "embed"  # Beam's Python job service, in the submitting process
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class BeamSettingsError(ValueError):
    """A preset is missing a setting it needs, or a setting is malformed."""


@dataclasses.dataclass(frozen=True)
class BeamSettings:
    """What a preset needs; unused fields are ignored by presets that do not read them."""

    preset: str = "direct"
    # direct
    running_mode: str = "in_memory"  # every component
    ingest_running_mode: str = "in_memory"  # ExampleGen and StatisticsGen
    num_workers: int = 0  # 0: one per core of the machine that runs the step (Beam's rule)
    # dataflow
    project: str = ""
    region: str = ""
    temp_location: str = ""  # gs://...; Dataflow also stages there
    # dataflow and the portable runners: the image whose SDK harness runs the user code
    image: str = ""
    # flink / spark / portable
    job_endpoint: str = ""  # host:port of the runner's job server (portable: default embed)
    environment_type: str = ""  # "": the preset's (DOCKER; portable: EXTERNAL)
    environment_config: str = ""  # DOCKER: the image (default: `image`); EXTERNAL: host:port


def from_config(config: HyperrecConfig, preset: str = "direct", **settings) -> BeamSettings:
    """A preset with the config's DirectRunner choices (used by the direct preset)."""
    values = {"running_mode": config.direct_running_mode,
              "ingest_running_mode": config.ingest_running_mode,
              "num_workers": config.direct_num_workers, **settings}
    return BeamSettings(preset=preset, **values)


def _require(settings: BeamSettings, *names: str) -> None:
    missing = [f"--{name.replace('_', '-')}" for name in names if not getattr(settings, name)]
    if missing:
        raise BeamSettingsError(f"--beam {settings.preset} needs {', '.join(missing)}")


def _direct(settings: BeamSettings) -> Tuple[List[str], List[str]]:
    for mode in (settings.running_mode, settings.ingest_running_mode):
        if mode not in DIRECT_RUNNING_MODES:
            raise BeamSettingsError(
                f"direct running mode {mode!r} is not one of {', '.join(DIRECT_RUNNING_MODES)}")
    if settings.num_workers < 0:
        raise BeamSettingsError(f"--beam-workers must be >= 0, got {settings.num_workers}")

    def mode_args(mode: str) -> List[str]:
        # Worker parallelism only where workers are isolated: in `in_memory` mode Beam runs
        # bundles of one stage on a thread pool, which lets TFMA call one loaded SavedModel
        # from two threads at once (seen to abort the process).
        workers = 1 if mode == "in_memory" else settings.num_workers
        return [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]

    common = ["--runner=DirectRunner"] + mode_args(settings.running_mode)
    ingest = ([] if settings.ingest_running_mode == settings.running_mode
              else mode_args(settings.ingest_running_mode))
    return common, ingest


def _dataflow(settings: BeamSettings) -> Tuple[List[str], List[str]]:
    _require(settings, "project", "region", "temp_location", "image")
    if not settings.temp_location.startswith("gs://"):
        raise BeamSettingsError(
            f"--temp-location for dataflow must be a gs:// path, got {settings.temp_location!r}")
    return [
        "--runner=DataflowRunner",
        f"--project={settings.project}",
        f"--region={settings.region}",
        f"--temp_location={settings.temp_location}",
        f"--sdk_container_image={settings.image}",
        # The image already holds the code and its pinned stack: nothing to stage or install.
        "--sdk_location=container",
    ], []


def _portable(settings: BeamSettings) -> Tuple[List[str], List[str]]:
    if settings.preset == "portable":
        # Beam's Python job service in the component's process unless one is named.
        settings = dataclasses.replace(
            settings, job_endpoint=settings.job_endpoint or EMBEDDED_JOB_SERVICE,
            environment_type=settings.environment_type or "EXTERNAL")
    _require(settings, "job_endpoint")
    if (settings.job_endpoint != EMBEDDED_JOB_SERVICE
            and not _HOST_PORT.match(settings.job_endpoint)):
        raise BeamSettingsError(
            f"--job-endpoint must be host:port, got {settings.job_endpoint!r}")
    environment_type = settings.environment_type or "DOCKER"
    if environment_type not in PORTABLE_ENVIRONMENTS:
        raise BeamSettingsError(
            f"--environment-type {environment_type!r} is not one of "
            f"{', '.join(PORTABLE_ENVIRONMENTS)}")
    args = ["--runner=PortableRunner", f"--job_endpoint={settings.job_endpoint}",
            f"--environment_type={environment_type}"]
    if environment_type == "DOCKER":
        image = settings.environment_config or settings.image
        if not image:
            raise BeamSettingsError(
                f"--beam {settings.preset} with DOCKER workers needs --image "
                "(or --environment-config)")
        args.append(f"--environment_config={image}")
    elif environment_type == "EXTERNAL":
        _require(settings, "environment_config")
        if not _HOST_PORT.match(settings.environment_config):
            raise BeamSettingsError("--environment-config of EXTERNAL workers must be the "
                                    f"pool's host:port, got {settings.environment_config!r}")
        args.append(f"--environment_config={settings.environment_config}")
    return args, []


_BUILDERS = {"direct": _direct, "dataflow": _dataflow, "flink": _portable,
             "spark": _portable, "portable": _portable}


def pipeline_args(settings: BeamSettings) -> Tuple[List[str], List[str]]:
    """(arguments for every Beam-powered component, extra ones for ExampleGen/StatisticsGen)."""
    if settings.preset not in _BUILDERS:
        raise BeamSettingsError(
            f"unknown Beam preset {settings.preset!r}; one of {', '.join(PRESETS)}")
    return _BUILDERS[settings.preset](settings)
