"""Airflow's own scheduler runs the hyperrec DAG: LocalExecutor, every task in its own
process, Airflow's metadata in PostgreSQL and ML Metadata in MariaDB (server databases, as
tasks in separate processes share them; both from Debian's packages on loopback ports).

One tiny run serves every test here (`make airflow-scheduler` runs just this module):
`airflow db migrate`, `airflow dags reserialize` (the scheduler needs the DAG in its
database before a trigger), `airflow dags unpause`, then `airflow scheduler` in the
background and the trigger of `hyperrec monitor --trigger --runner airflow` (the loop's
AirflowRunner: `airflow dags trigger` with the trigger's conf). While the run goes on, the
Trainer's process is killed with SIGKILL once its executor has started: Airflow must
notice, retry it (HYPERREC_AIRFLOW_RETRIES / _RETRY_DELAY, pipeline/runners/airflow.py) and
still complete the run. The tests then read the task states from PostgreSQL and the pushed
model and its lineage from MariaDB.
"""
import glob
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import psutil
import psycopg2
import pytest
from click.testing import CliRunner
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

import mariadb_server
import postgres_server
from hyperrec.components import config as config_lib
from hyperrec.data import synthetic
from hyperrec.pipeline import lineage
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.loop import trigger as trigger_lib
from hyperrec.pipeline.runners import metadata as metadata_lib
from hyperrec.pipeline.runners.local import RunPaths

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_FILE = os.path.join(REPO, "pipeline", "runners", "airflow_dag.py")
AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
EXPERIMENT = "tiny"
DAG_ID = f"hyperrec-{EXPERIMENT}"
# Orchestration is under test, not model quality: one epoch, and an AUC gate any model passes.
OVERRIDES = "model.epochs=1 eval.min_auc=0"
SEED = 7
KILLED_TASK = "Trainer"
RUN_TIMEOUT_S = 1500  # the whole run on a busy 2-core machine, generously
REQUEST = dict(span=4, reason="drift:test", window=4, execution_id=1)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    missing = postgres_server.missing_binaries() + mariadb_server.missing_binaries()
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: `make test-packages` installs Debian's "
                    "postgresql and mariadb-server (the test setup does it where missing)")
    with postgres_server.running(["airflow"]) as postgres, \
            mariadb_server.running(str(tmp_path_factory.mktemp("mariadb"))) as mariadb:
        yield {"airflow_db": f"{postgres}/airflow", "mariadb": mariadb}


def _airflow_env(home, data, workdir, airflow_db, metadata):
    driver_url = airflow_db.replace("postgresql://", "postgresql+psycopg2://", 1)
    return {"AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": driver_url,
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": DAG_FILE,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Two task processes at a time on a 2-core machine.
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
            # Parsing the DAG file imports TensorFlow and TFX (10-20 s): over Airflow's
            # 30/50 s limits on a busy machine, and not to be repeated every 30 s.
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
            "AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT": "600",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
            # A killed task is found at a zombie scan. Scans closer than the DAG file's parse
            # time find it again before the first finding is handled, and a late second
            # handling fails the retry (pipeline/runners/airflow.py, Airflow issue #31212).
            "AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL": "120",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "HYPERREC_EXPERIMENT": EXPERIMENT, "HYPERREC_SET": OVERRIDES,
            "HYPERREC_DATA_ROOT": str(data), "HYPERREC_WORKDIR": str(workdir),
            "HYPERREC_METADATA": metadata,
            "HYPERREC_AIRFLOW_RETRIES": "1", "HYPERREC_AIRFLOW_RETRY_DELAY": "1",
            metadata_lib.PASSWORD_ENV: mariadb_server.PASSWORD}


def _rows(airflow_db, query, *args):
    with psycopg2.connect(airflow_db) as db, db.cursor() as cursor:
        cursor.execute(query, args)
        return cursor.fetchall()


def _task_rows(airflow_db, run_id):
    rows = _rows(airflow_db, "SELECT task_id, state, try_number, pid, job_id FROM "
                 "task_instance WHERE dag_id = %s AND run_id = %s", DAG_ID, run_id)
    return {task: {"state": state, "try_number": tries, "pid": pid, "job_id": job}
            for task, state, tries, pid, job in rows}


def _stop_tree(pid):
    """SIGTERM the scheduler and everything under it (task processes run in their own
    process groups, so a group kill would miss them), then SIGKILL what is left."""
    try:
        process = psutil.Process(pid)
        family = [process] + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=30)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def _tail(path, lines=60):
    try:
        with open(path, errors="replace") as f:
            # Without Beam's type-hint notes, hundreds of lines per DAG file parse.
            return "".join([line for line in f if "native_type_compatibility" not in line]
                           [-lines:])
    except OSError as err:
        return f"({err})"


def _task_log(home, run_id, task, attempt):
    return os.path.join(home, "logs", f"dag_id={DAG_ID}", f"run_id={run_id}",
                        f"task_id={task}", f"attempt={attempt}.log")


@pytest.fixture(scope="module")
def scheduled_run(tmp_path_factory, servers):
    started = time.monotonic()
    base = tmp_path_factory.mktemp("airflow_scheduler")
    data, workdir, home = base / "data", base / "work", base / "airflow_home"
    synthetic.generate(EXPERIMENT, SEED, str(data))
    # The password comes from the environment, not the URI (runners/metadata.py).
    user_host = servers["mariadb"].replace(f":{mariadb_server.PASSWORD}@", "@")
    metadata = f"{user_host}/mlmd_airflow_scheduler"
    airflow_db = servers["airflow_db"]
    env = {**os.environ, **_airflow_env(home, data, workdir, airflow_db, metadata)}
    scheduler_log = base / "scheduler.log"

    def airflow(*args, timeout=600):
        result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stderr[-4000:]}"
        return result

    airflow("db", "migrate")
    airflow("dags", "reserialize")  # parses the DAG file once, into the database
    airflow("dags", "unpause", DAG_ID)
    # --skip-serve-logs: no log server on port 8793 (the task logs are files here).
    scheduler = subprocess.Popen([AIRFLOW, "scheduler", "--skip-serve-logs"], env=env,
                                 stdout=open(scheduler_log, "wb"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
    run = {"home": home, "data": data, "workdir": workdir, "metadata": metadata,
           "airflow_db": airflow_db, "scheduler_pid": scheduler.pid, "killed": None,
           "scheduler_log": scheduler_log}

    def diagnosis(note):
        tasks = _task_rows(airflow_db, run["run_id"]) if run.get("run_id") else {}
        failed = [t for t, row in tasks.items() if row["state"] in ("failed", "up_for_retry")]
        logs = "".join(f"\n--- {t} attempt {tries}:\n" + _tail(_task_log(home, run["run_id"],
                                                                          t, tries))
                       for t in failed for tries in range(1, tasks[t]["try_number"] + 1))
        return (f"{note}\ntasks: {json.dumps(tasks, indent=1)}\n--- scheduler log:\n"
                f"{_tail(scheduler_log)}{logs}")

    monkeypatch = pytest.MonkeyPatch()
    try:
        # The monitor's code path: its runner (from a config that names airflow) with this
        # process's environment, as `hyperrec monitor --trigger --runner airflow` has it.
        for key in ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                    "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES"):
            monkeypatch.setenv(key, env[key])
        runner = trigger_lib.runner_for(config_lib.MonitoringConfig(runner="airflow"),
                                        EXPERIMENT)
        request = trigger_lib.RunRequest(data_root=str(data), workdir=str(workdir),
                                         experiment=EXPERIMENT, **REQUEST)
        run["request"], run["runner"] = request, runner
        run["run_id"] = runner.start(request, store=None)
        monkeypatch.undo()
        run["state"] = _wait_killing_one_task(run, scheduler, diagnosis)
        run["seconds"] = time.monotonic() - started
        print(f"\nAirflow scheduler run: {run['state']} in {run['seconds']:.0f} s "
              f"(servers and set-up included)")
        run["diagnosis"] = diagnosis("")
        yield run
    finally:
        monkeypatch.undo()
        _stop_tree(scheduler.pid)
        scheduler.wait(timeout=10)


def _wait_killing_one_task(run, scheduler, diagnosis):
    """Polls the run; once KILLED_TASK's executor is under way (its outputs' folder exists
    in the pipeline root, made by the TFX driver just before), SIGKILLs its process."""
    trainer_outputs = os.path.join(RunPaths(str(run["workdir"])).pipeline_root, KILLED_TASK)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if scheduler.poll() is not None:
            pytest.fail(diagnosis(f"the scheduler exited with {scheduler.returncode}"))
        (state,) = _rows(run["airflow_db"], "SELECT state FROM dag_run WHERE run_id = %s",
                         run["run_id"])[0]
        if state in ("success", "failed"):
            return state
        if run["killed"] is None:
            task = _task_rows(run["airflow_db"], run["run_id"]).get(KILLED_TASK, {})
            outputs = glob.glob(os.path.join(trainer_outputs, "*", "*"))
            if task.get("state") == "running" and task.get("pid") and outputs:
                time.sleep(2)  # midway through the executor, not at its first line
                os.kill(task["pid"], signal.SIGKILL)
                # <output key>/<MLMD execution id>: the execution the try registered.
                run["killed"] = {"pid": task["pid"], "try_number": task["try_number"],
                                 "execution_id": int(os.path.basename(outputs[0]))}
        time.sleep(1)
    pytest.fail(diagnosis(f"the run did not finish within {RUN_TIMEOUT_S} s"))


@pytest.fixture(scope="module")
def store(scheduled_run):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(metadata_lib.PASSWORD_ENV, mariadb_server.PASSWORD)
        yield metadata_store.MetadataStore(
            metadata_lib.connection_config(scheduled_run["metadata"]))


def _expected_tasks():
    config = config_lib.load(EXPERIMENT, OVERRIDES.split())
    pipeline = pipeline_def.create_pipeline(config, data_root="d", pipeline_root="r",
                                            serving_dir="s")
    return {component.id for component in pipeline.components}


def test_the_triggered_run_succeeds_under_the_scheduler_with_local_executor(scheduled_run):
    run = scheduled_run
    assert run["state"] == "success", run["diagnosis"]
    request = run["request"]
    assert run["run_id"] == request.run_name
    ((run_type, conf),) = _rows(run["airflow_db"], "SELECT run_type, conf FROM dag_run "
                                "WHERE dag_id = %s", DAG_ID)
    assert run_type == "manual"
    assert pickle.loads(bytes(conf)) == request.conf()  # Airflow 2.10 pickles it (bytea)
    tasks = _task_rows(run["airflow_db"], run["run_id"])
    expected = _expected_tasks()
    assert {"FileBasedExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= expected
    assert {t: row["state"] for t, row in tasks.items()} == {t: "success" for t in expected}
    # The scheduler names the executor of each finished task instance.
    finished = re.findall(r"TaskInstance Finished: .*? executor=([^,]+),",
                          open(run["scheduler_log"], errors="replace").read())
    assert finished and set(finished) == {"LocalExecutor(parallelism=2)"}
    assert _rows(run["airflow_db"], "SELECT filename, stacktrace FROM import_error") == []


def test_every_task_ran_in_its_own_process(scheduled_run):
    tasks = _task_rows(scheduled_run["airflow_db"], scheduled_run["run_id"])
    pids = [row["pid"] for row in tasks.values()]
    assert None not in pids and len(set(pids)) == len(pids), tasks
    assert scheduled_run["scheduler_pid"] not in pids
    # One LocalTaskJob (the `airflow tasks run` supervisor) per task try.
    jobs = [row["job_id"] for row in tasks.values()]
    assert len(set(jobs)) == len(jobs), tasks
    (local_jobs,) = _rows(scheduled_run["airflow_db"], "SELECT count(*) FROM job WHERE "
                          "job_type = 'LocalTaskJob' AND dag_id = %s", DAG_ID)[0]
    assert local_jobs == len(tasks) + 1  # the killed try had its own


def test_the_killed_task_was_retried_and_only_it(scheduled_run):
    killed = scheduled_run["killed"]
    assert killed is not None, f"{KILLED_TASK} was never seen running"
    tasks = _task_rows(scheduled_run["airflow_db"], scheduled_run["run_id"])
    assert killed["try_number"] == 1
    assert tasks[KILLED_TASK]["try_number"] == 2
    assert tasks[KILLED_TASK]["pid"] != killed["pid"]
    assert {t: row["try_number"] for t, row in tasks.items() if t != KILLED_TASK} == {
        t: 1 for t in tasks if t != KILLED_TASK}
    home, run_id = scheduled_run["home"], scheduled_run["run_id"]
    first = open(_task_log(home, run_id, KILLED_TASK, 1), errors="replace").read()
    assert f"Task exited with return code -{int(signal.SIGKILL)}" in first
    assert "Marking task as SUCCESS" not in first
    second = open(_task_log(home, run_id, KILLED_TASK, 2), errors="replace").read()
    assert "Marking task as SUCCESS" in second
    # Found once: the scheduler setting keeps Airflow from handling the zombie twice.
    scheduler_log = open(scheduled_run["scheduler_log"], errors="replace").read()
    assert scheduler_log.count("Detected zombie job") == 1


def test_the_retry_completed_the_execution_the_killed_try_registered(scheduled_run, store):
    # TFX keeps one execution per component run; the retry registers it again
    # (pipeline/runners/airflow.py: _RetrySafeMetadata) and completes it.
    trainer_runs = [e for e in store.get_executions() if "component_id" in e.properties
                    and e.properties["component_id"].string_value == KILLED_TASK]
    assert [(e.id, metadata_store_pb2.Execution.State.Name(e.last_known_state),
             e.properties["state"].string_value) for e in trainer_runs] == [
        (scheduled_run["killed"]["execution_id"], "COMPLETE", "complete")]
    events = store.get_events_by_execution_ids([trainer_runs[0].id])
    inputs = [e for e in events if e.type == metadata_store_pb2.Event.INPUT]
    assert len({(e.artifact_id, e.path.SerializeToString()) for e in inputs}) == len(inputs)


def test_a_model_is_pushed_and_recorded_in_mariadb(scheduled_run, store):
    serving = scheduled_run["workdir"] / "serving_model" / pipeline_def.MODEL_NAME
    versions = [d for d in os.listdir(serving) if d.isdigit()]
    assert len(versions) == 1
    assert (serving / versions[0] / "saved_model.pb").is_file()
    pushed = lineage.served_versions(store)
    assert list(pushed) == versions
    assert pushed[versions[0]].custom_properties["pushed_destination"].string_value == str(
        serving / versions[0])


def test_lineage_of_the_served_version_reads_back_from_mariadb(scheduled_run, store):
    trace = lineage.trace(store)
    assert trace.run == scheduled_run["run_id"]
    nodes = [step.node for step in trace.steps]
    assert nodes[0] == "Pusher"
    # Every step is listed before the steps whose outputs it consumed.
    for later, earlier in (("Trainer", "Pusher"), ("Trainer", "Evaluator"),
                           ("Transform", "Trainer"), ("FileBasedExampleGen", "Transform")):
        assert nodes.index(later) > nodes.index(earlier), nodes
    # The served model comes from the retry's execution, complete like every other step.
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
    spans = sorted(int(name.split("-")[1]) for name in os.listdir(scheduled_run["data"])
                   if name.startswith("span-"))
    assert (examples.properties["window_first_span"], examples.properties["span"]) == (
        spans[0], spans[-1])
    assert lineage.data_paths(example_gen) == [
        os.path.join(str(scheduled_run["data"]), f"span-{s}", "*.csv") for s in spans]
    for key in ("train_examples", "eval_examples"):
        assert examples.properties[key] == report[key] > 0, key


def test_lineage_command_prints_the_chain(scheduled_run, store, monkeypatch):
    from hyperrec.pipeline import cli  # the whole command tree: only this test needs it
    monkeypatch.setenv(metadata_lib.PASSWORD_ENV, mariadb_server.PASSWORD)
    metadata = scheduled_run["metadata"]
    result = CliRunner().invoke(cli.main, ["lineage", "--metadata", metadata])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    version = next(iter(lineage.served_versions(store)))
    assert lines[0].startswith(f"served version {version} at ")
    heads = [line.split(" (")[0] for line in lines if line.startswith("<- ")]
    assert heads[0] == "<- Pusher" and "<- Trainer" in heads and "<- FileBasedExampleGen" in heads
    assert any(line.startswith("    code fingerprint: ") for line in lines)
    assert f"data read by FileBasedExampleGen: {scheduled_run['data']}/span-1/*.csv" in lines
    missing = CliRunner().invoke(cli.main, ["lineage", "--metadata", metadata,
                                            "--version", "7"])
    assert missing.exit_code == 1
    assert f"version 7 was not pushed; pushed versions: {version}" in missing.output
