"""The Airflow DAG's settings and building blocks, without an Airflow process.

The DAG running for real (scheduler, LocalExecutor, PostgreSQL, MLMD on MariaDB, a killed
task retried, the pushed model and its lineage) is tests/test_airflow_scheduler.py.
"""
import datetime

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest

from hyperrec.components import config as config_lib
from hyperrec.pipeline import beam
from hyperrec.pipeline.runners import airflow as airflow_runner


# ---- the DAG's settings (no Airflow process needed) -------------------------------------


def _env(**extra):
    return {"HYPERREC_DATA_ROOT": "/data", "HYPERREC_WORKDIR": "/work", **extra}


def test_settings_come_from_the_environment_and_the_schedule_from_the_config():
    settings = airflow_runner.settings_from_env(_env(
        HYPERREC_EXPERIMENT="tiny", HYPERREC_SET="schedule=@daily 'model.epochs=2'",
        HYPERREC_METADATA="mysql://u@db:3306/m", HYPERREC_BEAM="flink",
        HYPERREC_BEAM_JOB_ENDPOINT="flink:8099", HYPERREC_BEAM_IMAGE="img:1"))
    assert (settings.data_root, settings.workdir, settings.metadata) == (
        "/data", "/work", "mysql://u@db:3306/m")
    assert settings.config.model.epochs == 2
    dag = airflow_runner.dag_config(settings.config)
    assert (dag["schedule"], dag["catchup"], dag["max_active_runs"]) == ("@daily", False, 1)
    assert beam.pipeline_args(settings.beam)[0] == [
        "--runner=PortableRunner", "--job_endpoint=flink:8099", "--environment_type=DOCKER",
        "--environment_config=img:1"]
    # No schedule in the config: the DAG runs only when triggered.
    assert airflow_runner.dag_config(config_lib.load("tiny"))["schedule"] is None


def test_every_task_retries_as_the_settings_say():
    default = airflow_runner.settings_from_env(_env())
    assert (default.retries, default.retry_delay_s) == (2, 300.0)
    settings = airflow_runner.settings_from_env(_env(HYPERREC_AIRFLOW_RETRIES="1",
                                                     HYPERREC_AIRFLOW_RETRY_DELAY="2.5"))
    args = airflow_runner.dag_config(settings.config, settings.retries,
                                     settings.retry_delay_s)["default_args"]
    assert args == {"retries": 1, "retry_delay": datetime.timedelta(seconds=2.5)}


@pytest.mark.parametrize("env,message", [
    ({}, "needs HYPERREC_DATA_ROOT, HYPERREC_WORKDIR"),
    ({"HYPERREC_WORKDIR": "/w"}, "needs HYPERREC_DATA_ROOT"),
    (_env(HYPERREC_SET="model.epochz=2"), "HYPERREC_EXPERIMENT / HYPERREC_SET: unknown config"),
    (_env(HYPERREC_EXPERIMENT="huge"), "unknown experiment 'huge'"),
    (_env(HYPERREC_BEAM_NUM_WORKERS="many"), "HYPERREC_BEAM_NUM_WORKERS: invalid literal"),
    (_env(HYPERREC_AIRFLOW_RETRIES="two"), "HYPERREC_AIRFLOW_RETRIES: invalid literal"),
    (_env(HYPERREC_AIRFLOW_RETRY_DELAY="-1"), "HYPERREC_AIRFLOW_RETRY_DELAY must be >= 0"),
])
def test_a_missing_or_bad_setting_names_its_variable(env, message):
    with pytest.raises(airflow_runner.AirflowSettingsError, match=message):
        airflow_runner.settings_from_env(env)


def test_output_artifact_names_are_scoped_by_component(tmp_path):
    # Two components of one run with the same output key and type must not share a name
    # (MLMD refuses the second: AlreadyExistsError), as TFX's launchers alone would make it.
    from tfx import types
    from tfx.dsl.components.base import base_driver
    from tfx.orchestration import data_types, metadata
    from tfx.types import standard_artifacts
    pipeline_info = data_types.PipelineInfo("p", "/root", run_id="r1")
    names = []
    config = metadata.sqlite_metadata_connection_config(str(tmp_path / "mlmd.sqlite"))
    with metadata.Metadata(config) as handle:
        for component_id in ("ExampleValidator", "DistributionValidator"):
            driver = airflow_runner._airflow_driver(base_driver.BaseDriver)(handle)
            outputs = driver._prepare_output_artifacts(
                {}, {"anomalies": types.Channel(type=standard_artifacts.ExampleAnomalies)}, {},
                7, pipeline_info, data_types.ComponentInfo("tfx.X", component_id, pipeline_info))
            names.append(outputs["anomalies"][0].name)
    assert names == ["ExampleValidator.anomalies:r1", "DistributionValidator.anomalies:r1"]


def test_a_retried_driver_reuses_the_execution_and_outputs_of_the_first_try(tmp_path):
    # The first try's driver registered the execution and its (pending) output artifacts
    # before the task was killed; TFX's driver run again registers a second `model`
    # artifact of the same name, which MLMD refuses.
    from ml_metadata import errors
    from tfx import types
    from tfx.dsl.components.base import base_driver
    from tfx.orchestration import data_types, metadata
    from tfx.types import standard_artifacts
    pipeline_info = data_types.PipelineInfo("p", str(tmp_path), run_id="r1")
    component_info = data_types.ComponentInfo("tfx.Trainer", "Trainer", pipeline_info)
    def pre_execution(handle, driver_class):
        return driver_class(handle).pre_execution(
            input_dict={}, output_dict={"model": types.Channel(type=standard_artifacts.Model)},
            exec_properties={}, driver_args=data_types.DriverArgs(enable_cache=False),
            pipeline_info=pipeline_info, component_info=component_info)

    def store(name):
        return metadata.Metadata(metadata.sqlite_metadata_connection_config(
            str(tmp_path / name)))

    with store("tfx.sqlite") as handle:
        pre_execution(handle, base_driver.BaseDriver)
        with pytest.raises(errors.AlreadyExistsError, match="already exists"):
            pre_execution(handle, base_driver.BaseDriver)
    airflow_driver = airflow_runner._airflow_driver(base_driver.BaseDriver)
    with store("airflow.sqlite") as handle:
        first = pre_execution(handle, airflow_driver)  # the try that was killed
        retry = pre_execution(handle, airflow_driver)
        assert retry.execution_id == first.execution_id
        (model,), (first_model,) = retry.output_dict["model"], first.output_dict["model"]
        assert (model.id, model.uri, model.name) == (first_model.id, first_model.uri,
                                                     "Trainer.model:r1")
        assert len(handle.store.get_artifacts()) == 1


def test_a_retried_task_registers_its_execution_again(tmp_path):
    # Airflow's retry runs the TFX driver again for the same component run; TFX's own
    # registration then records the input events twice and MLMD refuses them.
    from ml_metadata import errors
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import data_types, metadata
    from tfx.types import standard_artifacts
    pipeline_info = data_types.PipelineInfo("p", str(tmp_path), run_id="r1")
    component_info = data_types.ComponentInfo("tfx.Trainer", "Trainer", pipeline_info)
    config = metadata.sqlite_metadata_connection_config(str(tmp_path / "mlmd.sqlite"))
    with metadata.Metadata(config) as handle:
        examples = standard_artifacts.Examples()
        examples.uri = str(tmp_path / "examples")
        handle.publish_artifacts([examples])

        def register(on):
            return on.register_execution(
                pipeline_info=pipeline_info, component_info=component_info,
                contexts=handle.register_pipeline_contexts_if_not_exists(pipeline_info),
                exec_properties={"x": 1}, input_artifacts={"examples": [examples]})

        first = register(handle)  # the try that was killed
        with pytest.raises(errors.AlreadyExistsError, match="event already exists"):
            register(handle)
        retry = register(airflow_runner._RetrySafeMetadata(handle))
        assert retry.id == first.id
        events = handle.store.get_events_by_execution_ids([first.id])
        assert [(e.artifact_id, e.type) for e in events] == [
            (examples.id, metadata_store_pb2.Event.INPUT)]
        # A first try (no context yet) records its inputs as TFX does.
        other = data_types.ComponentInfo("tfx.Evaluator", "Evaluator", pipeline_info)
        fresh = airflow_runner._RetrySafeMetadata(handle).register_execution(
            pipeline_info=pipeline_info, component_info=other,
            contexts=handle.register_pipeline_contexts_if_not_exists(pipeline_info),
            input_artifacts={"examples": [examples]})
        assert len(handle.store.get_events_by_execution_ids([fresh.id])) == 1
