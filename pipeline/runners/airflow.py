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

from tfx.dsl.components.base import base_driver

from hyperrec.components import config as config_lib
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
    return AirflowSettings(config=config, data_root=env[f"{ENV}DATA_ROOT"],
                           workdir=env[f"{ENV}WORKDIR"], metadata=env.get(f"{ENV}METADATA", ""),
                           beam=_beam_from_env(env, config))


@functools.lru_cache(maxsize=None)
def _component_scoped_names(driver_class: type) -> type:
    """`driver_class`, naming output artifacts `<component id>.<output key>:<run id>`.

    TFX's component launchers (the Airflow path) name an output artifact `<output key>:<run
    id>`, and MLMD keeps artifact names unique per type: two components of one run with the
    same output key and type (ExampleValidator's and DistributionValidator's `anomalies`)
    collide (AlreadyExistsError). Inputs are found through events (output key and producer),
    never by these names, so scoping them changes nothing else.
    """
    class Driver(driver_class):
        def _prepare_output_artifacts(self, input_artifacts, output_dict, exec_properties,
                                      execution_id, pipeline_info, component_info):
            outputs = super()._prepare_output_artifacts(
                input_artifacts, output_dict, exec_properties, execution_id, pipeline_info,
                component_info)
            for artifacts in outputs.values():
                for artifact in artifacts:
                    artifact.name = f"{component_info.component_id}.{artifact.name}"
            return outputs

    Driver.__name__ = Driver.__qualname__ = f"ComponentScoped{driver_class.__name__}"
    return Driver


def _absolute(path: str) -> str:
    """Local paths made absolute (Airflow's workers may start elsewhere); URIs as they are."""
    return path if "://" in path else os.path.abspath(path)


def dag_config(config: config_lib.HyperrecConfig) -> dict:
    """Airflow's DAG arguments: the schedule from the config."""
    return {"schedule": config.schedule or None, "start_date": START_DATE,
            # A retraining run covers the data present when it starts: no backfill of missed
            # intervals, and one run at a time shares the MLMD store and the cache.
            "catchup": False, "max_active_runs": 1, "tags": ["hyperrec", config.name]}


def create_dag(settings: AirflowSettings):
    """The Airflow DAG of the pipeline (one PythonOperator per component)."""
    # Imported here: Airflow configures itself on import (AIRFLOW_HOME, logging), which only
    # the processes Airflow starts should do.
    from tfx.orchestration.airflow.airflow_dag_runner import (AirflowDagRunner,
                                                              AirflowPipelineConfig)
    config = settings.config
    paths = RunPaths(_absolute(settings.workdir))
    common_args, ingest_args = beam_lib.pipeline_args(settings.beam)
    pipeline = pipeline_def.create_pipeline(
        config, data_root=_absolute(settings.data_root),
        pipeline_root=paths.pipeline_root, serving_dir=paths.serving_dir,
        metadata_connection_config=metadata_lib.connection_config(
            settings.metadata or paths.metadata_path),
        beam_pipeline_args=common_args, ingest_beam_pipeline_args=ingest_args)
    for component in pipeline.components:
        driver = getattr(component, "driver_class", None)
        if isinstance(driver, type) and issubclass(driver, base_driver.BaseDriver):
            component.driver_class = _component_scoped_names(driver)
    return AirflowDagRunner(AirflowPipelineConfig(dag_config(config))).run(pipeline)


def dag_from_env(env: Optional[Mapping[str, str]] = None):
    return create_dag(settings_from_env(os.environ if env is None else env))
