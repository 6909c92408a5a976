"""Airflow runs the one pipeline for real, with ML Metadata on a real MariaDB server.

One tiny run serves every test here: a temporary AIRFLOW_HOME (SQLite metadata DB), the
project's DAG file, `airflow dags list-import-errors` (must be empty) and `airflow dags test`,
which runs every task in order in one process, as a worker would. MLMD lives in a MariaDB
server from Debian's packages on a loopback port (`make test` installs the package); the
served model's lineage is read back from it with `hyperrec lineage`.
"""
import json
import os
import sqlite3
import subprocess
import sys

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from click.testing import CliRunner
from ml_metadata.metadata_store import metadata_store

import mariadb_server
from hyperrec.components import config as config_lib
from hyperrec.data import synthetic
from hyperrec.pipeline import beam, cli, lineage
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.runners import airflow as airflow_runner
from hyperrec.pipeline.runners import metadata as metadata_lib

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FILE = os.path.join(REPO, "pipeline", "runners", "airflow_dag.py")
AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
DAG_ID = "hyperrec-tiny"
LOGICAL_DATE = "2024-01-02"
RUN_ID = f"manual__{LOGICAL_DATE}T00:00:00+00:00"  # what `airflow dags test` names its run
# Orchestration is under test, not model quality: one epoch, and an AUC gate any model passes.
OVERRIDES = "model.epochs=1 eval.min_auc=0 schedule=@weekly"
SEED = 7


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    missing = mariadb_server.missing_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: `make test-packages` installs Debian's "
                    "mariadb-server (the test setup does it where it is missing)")
    with mariadb_server.running(str(tmp_path_factory.mktemp("mariadb"))) as url:
        yield url


@pytest.fixture(scope="module")
def airflow_run(tmp_path_factory, mariadb):
    base = tmp_path_factory.mktemp("airflow")
    data, workdir, home = base / "data", base / "work", base / "airflow_home"
    synthetic.generate("tiny", SEED, str(data))
    # The password comes from the environment, not the URI (runners/metadata.py).
    user_host = mariadb.replace(f":{mariadb_server.PASSWORD}@", "@")
    metadata = f"{user_host}/mlmd_airflow"
    env = {**os.environ,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__DAGS_FOLDER": DAG_FILE,
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           # Parsing the DAG file imports TensorFlow and TFX: more than Airflow's 30 s default
           # on a busy 2-core machine.
           "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "HYPERREC_EXPERIMENT": "tiny", "HYPERREC_SET": OVERRIDES,
           "HYPERREC_DATA_ROOT": str(data), "HYPERREC_WORKDIR": str(workdir),
           "HYPERREC_METADATA": metadata,
           metadata_lib.PASSWORD_ENV: mariadb_server.PASSWORD}

    def airflow(*args, timeout=300):
        return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)

    migrate = airflow("db", "migrate")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    import_errors = airflow("dags", "list-import-errors", "-o", "json")
    dag_test = airflow("dags", "test", DAG_ID, LOGICAL_DATE, timeout=1500)
    return {"import_errors": import_errors, "dag_test": dag_test, "data": data,
            "workdir": workdir, "home": home, "metadata": metadata,
            "env": {metadata_lib.PASSWORD_ENV: mariadb_server.PASSWORD}}


@pytest.fixture(scope="module")
def store(airflow_run, monkeypatch_module):
    for key, value in airflow_run["env"].items():
        monkeypatch_module.setenv(key, value)
    return metadata_store.MetadataStore(metadata_lib.connection_config(airflow_run["metadata"]))


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def _tasks(airflow_run):
    with sqlite3.connect(airflow_run["home"] / "airflow.db") as db:
        runs = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?",
                          (DAG_ID,)).fetchall()
        tasks = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?",
                                (DAG_ID,)).fetchall())
    return runs, tasks


def test_dag_file_imports_without_errors(airflow_run):
    result = airflow_run["import_errors"]
    assert result.returncode == 0, result.stderr[-3000:]
    # The JSON list is the last line of stdout (Airflow logs its plugin set-up before it).
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def _errors(result):
    """The failed tasks' tracebacks and ERROR lines of an Airflow command (its output is
    mostly INFO lines of every task)."""
    lines = (result.stdout + result.stderr).splitlines()
    keep = [n for n, line in enumerate(lines) if " ERROR - " in line or "Traceback" in line]
    picked = sorted({m for n in keep for m in range(n, min(n + 25, len(lines)))})
    return "\n".join(lines[m] for m in picked)[-8000:] or "\n".join(lines[-40:])


def test_dags_test_runs_every_task_of_the_pipeline_to_success(airflow_run):
    result = airflow_run["dag_test"]
    assert result.returncode == 0, _errors(result)
    runs, tasks = _tasks(airflow_run)
    assert runs == [(RUN_ID, "success")]
    config = config_lib.load("tiny", OVERRIDES.split())
    pipeline = pipeline_def.create_pipeline(config, data_root="d", pipeline_root="r",
                                            serving_dir="s")
    expected = {component.id for component in pipeline.components}
    assert {"FileBasedExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= expected
    assert tasks == {task: "success" for task in expected}


def test_a_model_is_pushed_and_recorded_in_mariadb(airflow_run, store):
    serving = airflow_run["workdir"] / "serving_model" / pipeline_def.MODEL_NAME
    versions = [d for d in os.listdir(serving) if d.isdigit()]
    assert len(versions) == 1
    assert (serving / versions[0] / "saved_model.pb").is_file()
    pushed = lineage.served_versions(store)
    assert list(pushed) == versions
    assert pushed[versions[0]].custom_properties["pushed_destination"].string_value == str(
        serving / versions[0])


def test_lineage_of_the_served_version_reads_back_from_mariadb(airflow_run, store):
    trace = lineage.trace(store)
    assert trace.run == RUN_ID
    nodes = [step.node for step in trace.steps]
    assert nodes[0] == "Pusher"
    # Every step is listed before the steps whose outputs it consumed.
    for later, earlier in (("Trainer", "Pusher"), ("Trainer", "Evaluator"),
                           ("Transform", "Trainer"), ("FileBasedExampleGen", "Transform")):
        assert nodes.index(later) > nodes.index(earlier), nodes
    assert all(step.state == "COMPLETE" for step in trace.steps)
    trainer = trace.step("Trainer")
    custom = json.loads(trainer.properties["custom_config"])
    assert custom["model"]["epochs"] == 1  # the override the DAG was built with
    assert len(custom["code_fingerprint"]) == 16
    evaluator = trace.step("Evaluator")
    assert evaluator.metrics["validation_ok"] is True
    assert 0.0 <= evaluator.metrics["auc"] <= 1.0
    example_gen = trace.step("FileBasedExampleGen")
    (examples,) = example_gen.outputs["examples"]
    report = json.load(open(os.path.join(examples.uri, "ingest_report.json")))
    spans = sorted(int(name.split("-")[1]) for name in os.listdir(airflow_run["data"])
                   if name.startswith("span-"))
    assert (examples.properties["window_first_span"], examples.properties["span"]) == (
        spans[0], spans[-1])
    assert lineage.data_paths(example_gen) == [
        os.path.join(str(airflow_run["data"]), f"span-{s}", "*.csv") for s in spans]
    for key in ("train_examples", "eval_examples"):
        assert examples.properties[key] == report[key] > 0, key


def test_lineage_command_prints_the_chain(airflow_run, store):
    result = CliRunner().invoke(cli.main, ["lineage", "--metadata", airflow_run["metadata"]])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    version = next(iter(lineage.served_versions(store)))
    assert lines[0].startswith(f"served version {version} at ")
    heads = [line.split(" (")[0] for line in lines if line.startswith("<- ")]
    assert heads[0] == "<- Pusher" and "<- Trainer" in heads and "<- FileBasedExampleGen" in heads
    assert any(line.startswith("    code fingerprint: ") for line in lines)
    assert f"data read by FileBasedExampleGen: {airflow_run['data']}/span-1/*.csv" in lines
    missing = CliRunner().invoke(cli.main, ["lineage", "--metadata", airflow_run["metadata"],
                                            "--version", "7"])
    assert missing.exit_code == 1
    assert f"version 7 was not pushed; pushed versions: {version}" in missing.output


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


@pytest.mark.parametrize("env,message", [
    ({}, "needs HYPERREC_DATA_ROOT, HYPERREC_WORKDIR"),
    ({"HYPERREC_WORKDIR": "/w"}, "needs HYPERREC_DATA_ROOT"),
    (_env(HYPERREC_SET="model.epochz=2"), "HYPERREC_EXPERIMENT / HYPERREC_SET: unknown config"),
    (_env(HYPERREC_EXPERIMENT="huge"), "unknown experiment 'huge'"),
    (_env(HYPERREC_BEAM_NUM_WORKERS="many"), "HYPERREC_BEAM_NUM_WORKERS: invalid literal"),
])
def test_a_missing_or_bad_setting_names_its_variable(env, message):
    with pytest.raises(airflow_runner.AirflowSettingsError, match=message):
        airflow_runner.settings_from_env(env)


def test_output_artifact_names_are_scoped_by_component():
    # Two components of one run with the same output key and type must not share a name
    # (MLMD refuses the second: AlreadyExistsError), as TFX's launchers alone would make it.
    from tfx import types
    from tfx.dsl.components.base import base_driver
    from tfx.orchestration import data_types
    from tfx.types import standard_artifacts
    pipeline_info = data_types.PipelineInfo("p", "/root", run_id="r1")
    names = []
    for component_id in ("ExampleValidator", "DistributionValidator"):
        driver = airflow_runner._component_scoped_names(base_driver.BaseDriver)(None)
        outputs = driver._prepare_output_artifacts(
            {}, {"anomalies": types.Channel(type=standard_artifacts.ExampleAnomalies)}, {}, 7,
            pipeline_info, data_types.ComponentInfo("tfx.X", component_id, pipeline_info))
        names.append(outputs["anomalies"][0].name)
    assert names == ["ExampleValidator.anomalies:r1", "DistributionValidator.anomalies:r1"]
