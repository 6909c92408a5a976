"""Builds the pipeline as an Airflow DAG with TFX's AirflowDagRunner: one task per component,
run by TFX's component launchers inside Airflow's workers.

Airflow imports DAG files itself, so the DAG file (`airflow_dag.py` beside this module) takes
its settings from the environment of the scheduler and workers:

    HYPERREC_EXPERIMENT   experiment name (default: default)
    HYPERREC_SET          config overrides, shell-quoted, e.g. "model.epochs=2 schedule=@daily"
    HYPERREC_DATA_ROOT    the data root (span-N/ folders)                         (required)
    HYPERREC_WORKDIR      pipeline root, serving base path and default MLMD file   (required)
    HYPERREC_METADATA     MLMD: a SQLite path or mysql://USER@HOST:PORT/DB
                          (default: WORKDIR/metadata.sqlite; runners/metadata.py)
    HYPERREC_BEAM         Beam preset: direct | dataflow | flink | spark (default: direct),
                          with HYPERREC_BEAM_<FIELD> for the preset's settings (pipeline/beam.py)
    HYPERREC_AIRFLOW_RETRIES      retries of a failed or killed task (default: 2)
    HYPERREC_AIRFLOW_RETRY_DELAY  seconds before a retry (default: 300, Airflow's own default)

Scheduler setting this DAG needs: `[scheduler] zombie_detection_interval` (default 10 s)
above the time Airflow takes to parse this DAG file (it imports TensorFlow and TFX: 15-60 s
on a busy 2-core machine). A task whose process dies (SIGKILL, out of memory) is found as a
zombie at each scan until the DAG processor has parsed the file and handled the first
finding; a second finding handled after the retry was queued fails the task with its
retries unused (Airflow issue #31212). tests/test_airflow_scheduler.py runs with 120 s.

The schedule is the config's `schedule` (cron or a preset such as @daily; empty: triggered
runs only). A missing or malformed setting is an `AirflowSettingsError` naming the variable,
which Airflow lists as the DAG file's import error.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import shlex
from typing import Mapping, Optional

from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.components.base import base_driver

from hyperrec.components import config as config_lib
from hyperrec.components.example_gen import layout
from hyperrec.pipeline import beam as beam_lib
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.runners import metadata as metadata_lib
from hyperrec.pipeline.runners.local import RunPaths

ENV = "HYPERREC_"
# A fixed start date: a DAG's start must not move each time the file is parsed.
START_DATE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


class AirflowSettingsError(ValueError):
    """A DAG setting (environment variable) is missing or malformed."""


@dataclasses.dataclass(frozen=True)
class AirflowSettings:
    config: config_lib.HyperrecConfig
    data_root: str
    workdir: str
    metadata: str = ""  # "" = WORKDIR/metadata.sqlite
    beam: beam_lib.BeamSettings = beam_lib.BeamSettings()
    # A task's process can die under it (a worker's node drained, out of memory): Airflow
    # starts it again, and the DAG's drivers let TFX register the same run again
    # (_RetrySafeMetadata, _airflow_driver).
    retries: int = 2
    retry_delay_s: float = 300.0


def _beam_from_env(env: Mapping[str, str],
                   config: config_lib.HyperrecConfig) -> beam_lib.BeamSettings:
    values = {}
    for field in dataclasses.fields(beam_lib.BeamSettings):
        if field.name == "preset":
            continue  # HYPERREC_BEAM itself
        name = f"{ENV}BEAM_{field.name.upper()}"
        if name in env:
            try:
                values[field.name] = type(field.default)(env[name])
            except ValueError as err:
                raise AirflowSettingsError(f"{name}: {err}") from err
    return beam_lib.from_config(config, env.get(f"{ENV}BEAM", "direct"), **values)


def settings_from_env(env: Mapping[str, str]) -> AirflowSettings:
    """Reads the DAG's settings; every problem names its variable."""
    missing = [f"{ENV}{name}" for name in ("DATA_ROOT", "WORKDIR") if not env.get(f"{ENV}{name}")]
    if missing:
        raise AirflowSettingsError(f"the hyperrec DAG needs {', '.join(missing)} in the "
                                   "environment of Airflow's scheduler and workers")
    try:
        config = config_lib.load(env.get(f"{ENV}EXPERIMENT", "default"),
                                 shlex.split(env.get(f"{ENV}SET", "")))
    except ValueError as err:
        raise AirflowSettingsError(f"{ENV}EXPERIMENT / {ENV}SET: {err}") from err
    retry = {}
    for field, name, kind in (("retries", "AIRFLOW_RETRIES", int),
                              ("retry_delay_s", "AIRFLOW_RETRY_DELAY", float)):
        if f"{ENV}{name}" in env:
            try:
                retry[field] = kind(env[f"{ENV}{name}"])
            except ValueError as err:
                raise AirflowSettingsError(f"{ENV}{name}: {err}") from err
            if retry[field] < 0:
                raise AirflowSettingsError(f"{ENV}{name} must be >= 0, got {retry[field]}")
    return AirflowSettings(config=config, data_root=env[f"{ENV}DATA_ROOT"],
                           workdir=env[f"{ENV}WORKDIR"], metadata=env.get(f"{ENV}METADATA", ""),
                           beam=_beam_from_env(env, config), **retry)


class _RetrySafeMetadata:
    """A driver's MLMD handle (TFX's `Metadata`) on which a retried task registers again.

    Airflow retries a failed or killed task by running its TFX driver again for the same
    component run. TFX then finds the run's context, reuses the first try's execution and
    records its input events a second time, which MLMD refuses (AlreadyExistsError: Given
    event already exists): no retry could ever succeed. The first try recorded the context,
    the execution and all its input events in one transaction, so a retry records none.
    """

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def register_execution(self, pipeline_info, component_info, contexts,
                           exec_properties=None, input_artifacts=None):
        if input_artifacts and self._handle.get_component_run_context(component_info):
            input_artifacts = {}  # a retry: recorded by the first try
        return self._handle.register_execution(
            pipeline_info=pipeline_info, component_info=component_info, contexts=contexts,
            exec_properties=exec_properties, input_artifacts=input_artifacts)


def _recorded_outputs(store, execution_id: int) -> dict:
    """(output key, index) -> the MLMD artifact an execution's driver already registered."""
    events = [e for e in store.get_events_by_execution_ids([execution_id])
              if e.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    return {(e.path.steps[0].key, e.path.steps[1].index): artifacts[e.artifact_id]
            for e in events}


@functools.lru_cache(maxsize=None)
def _airflow_driver(driver_class: type) -> type:
    """`driver_class` for Airflow's tasks: output artifacts named `<component id>.<output
    key>:<run id>`, and registration that survives a retried task (_RetrySafeMetadata; the
    retry's outputs are the artifacts the first try registered, at the same URIs: TFX
    registers them before the executor starts, and MLMD refuses a second artifact of the
    same name).

    TFX's component launchers (the Airflow path) name an output artifact `<output key>:<run
    id>`, and MLMD keeps artifact names unique per type: two components of one run with the
    same output key and type (ExampleValidator's and DistributionValidator's `anomalies`)
    collide (AlreadyExistsError). Inputs are found through events (output key and producer),
    never by these names, so scoping them changes nothing else.
    """
    class Driver(driver_class):
        def __init__(self, metadata_handle, *args, **kwargs):
            super().__init__(_RetrySafeMetadata(metadata_handle), *args, **kwargs)

        def _prepare_output_artifacts(self, input_artifacts, output_dict, exec_properties,
                                      execution_id, pipeline_info, component_info):
            outputs = super()._prepare_output_artifacts(
                input_artifacts, output_dict, exec_properties, execution_id, pipeline_info,
                component_info)
            recorded = _recorded_outputs(self._metadata_handle.store, execution_id)
            for key, artifacts in outputs.items():
                for index, artifact in enumerate(artifacts):
                    artifact.name = f"{component_info.component_id}.{artifact.name}"
                    if (key, index) in recorded:  # a retry
                        artifact.set_mlmd_artifact(recorded[(key, index)])
            return outputs

    Driver.__name__ = Driver.__qualname__ = f"Airflow{driver_class.__name__}"
    return Driver


def dag_config(config: config_lib.HyperrecConfig, retries: int = 2,
               retry_delay_s: float = 300.0) -> dict:
    """Airflow's DAG arguments: the schedule from the config, every task's retries."""
    return {"schedule": config.schedule or None, "start_date": START_DATE,
            # A retraining run covers the data present when it starts: no backfill of missed
            # intervals, and one run at a time shares the MLMD store and the cache.
            "catchup": False, "max_active_runs": 1, "tags": ["hyperrec", config.name],
            "default_args": {"retries": retries,
                             "retry_delay": datetime.timedelta(seconds=retry_delay_s)}}


def create_dag(settings: AirflowSettings):
    """The Airflow DAG of the pipeline (one PythonOperator per component)."""
    # Imported here: Airflow configures itself on import (AIRFLOW_HOME, logging), which only
    # the processes Airflow starts should do.
    from tfx.orchestration.airflow.airflow_dag_runner import (AirflowDagRunner,
                                                              AirflowPipelineConfig)
    config = settings.config
    # Absolute local paths: Airflow's workers may start in another directory.
    paths = RunPaths(layout.absolute(settings.workdir))
    common_args, ingest_args = beam_lib.pipeline_args(settings.beam)
    pipeline = pipeline_def.create_pipeline(
        config, data_root=layout.absolute(settings.data_root),
        pipeline_root=paths.pipeline_root, serving_dir=paths.serving_dir,
        metadata_connection_config=metadata_lib.connection_config(
            settings.metadata or paths.metadata_path),
        beam_pipeline_args=common_args, ingest_beam_pipeline_args=ingest_args)
    for component in pipeline.components:
        driver = getattr(component, "driver_class", None)
        if isinstance(driver, type) and issubclass(driver, base_driver.BaseDriver):
            component.driver_class = _airflow_driver(driver)
    return AirflowDagRunner(AirflowPipelineConfig(
        dag_config(config, settings.retries, settings.retry_delay_s))).run(pipeline)


def dag_from_env(env: Optional[Mapping[str, str]] = None):
    return create_dag(settings_from_env(os.environ if env is None else env))
