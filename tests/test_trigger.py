"""The retraining trigger's decision, its MLMD record and its runners, without a model.

Summaries are monitor.py's shape, written by hand; the store is a real MLMD SQLite file;
the local runner runs pipeline/runners/local.run in a real child process (on a data root
it refuses); the Airflow command goes through Airflow's own CLI parser; the Kubeflow call is
built from a real compiled package and sent to a closed loopback port. The whole loop, with a real triggered
run, is tests/test_loop.py.
"""
import json
import os
import subprocess
import sys

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from click.testing import CliRunner
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from hyperrec.components import config as config_lib
from hyperrec.pipeline.loop import trigger
from hyperrec.pipeline import cli
from hyperrec.pipeline.runners import metadata as metadata_lib
import standin_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measurement(feature, value, threshold, kind="L_INFTY"):
    return {"feature": feature, "comparator": kind, "value": value, "threshold": threshold,
            "above": value > threshold, "top_shifted": []}


def summary(window=3, drift=(), skew=()):
    return {"window": window, "drift": list(drift), "skew": list(skew)}


SHIFTED = summary(drift=[measurement("item_category", 0.093, 0.05),
                         measurement("device", 0.02, 0.15)],
                  skew=[measurement("item_category", 0.04, 0.05)])


@pytest.fixture
def store(tmp_path):
    return metadata_store.MetadataStore(metadata_lib.connection_config(
        str(tmp_path / "metadata.sqlite")))


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    for span in (1, 2, 3):
        (root / f"span-{span}").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "span-x").mkdir()  # not a span folder
    return str(root)


def _record(store, span, state, data_root, run_id="r-1", window=2):
    type_id = store.put_execution_type(
        metadata_store_pb2.ExecutionType(name=trigger.TRIGGER_TYPE))
    execution = metadata_store_pb2.Execution(type_id=type_id, last_known_state=state)
    execution.custom_properties["span"].int_value = span
    execution.custom_properties["window"].int_value = window
    execution.custom_properties["run_id"].string_value = run_id
    execution.custom_properties["data_root"].string_value = os.path.abspath(data_root)
    return store.put_executions([execution])[0]


def _examples(store, span, trained=True, run="run-1", custom=False):
    """A pipeline run as TFX records it: Examples (with their span) attributed to the run
    context and, when `trained`, a Trainer execution of the run with a Model output."""
    examples_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(
        name="Examples", properties={"span": metadata_store_pb2.INT}))
    artifact = metadata_store_pb2.Artifact(type_id=examples_type, uri="/x",
                                           state=metadata_store_pb2.Artifact.LIVE)
    # LocalDagRunner records the span as a custom property, Airflow's launchers as a property.
    (artifact.custom_properties if custom else artifact.properties)["span"].int_value = span
    [examples_id] = store.put_artifacts([artifact])
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline_run"))
    [context_id] = store.put_contexts([metadata_store_pb2.Context(type_id=context_type,
                                                                  name=run)])
    store.put_attributions_and_associations(
        [metadata_store_pb2.Attribution(artifact_id=examples_id, context_id=context_id)], [])
    if trained:
        model_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Model"))
        trainer_type = store.put_execution_type(metadata_store_pb2.ExecutionType(
            name="tfx.components.trainer.component.Trainer"))
        store.put_execution(
            metadata_store_pb2.Execution(type_id=trainer_type),
            [(metadata_store_pb2.Artifact(type_id=model_type, uri="/m"),
              metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT))],
            store.get_contexts_by_id([context_id]))
    return examples_id


def test_spans_are_the_numbered_span_folders(data_root):
    assert trigger.spans(data_root) == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="no data root at /nowhere"):
        trigger.spans("/nowhere")


def test_a_window_above_threshold_with_a_new_span_starts_a_run(store, data_root):
    decision = trigger.decide(SHIFTED, data_root, store)
    assert (decision.start, decision.span, decision.features) == (
        True, 3, ["drift:item_category"])
    assert decision.reason == (
        "window 3: drift:item_category above threshold (drift item_category 0.0930 > 0.0500; "
        "drift device 0.0200 <= 0.1500; skew item_category 0.0400 <= 0.0500); new span 3")


def test_nothing_above_threshold_starts_nothing_and_names_the_distances(store, data_root):
    quiet = summary(window=2, drift=[measurement("item_category", 0.021, 0.05)],
                    skew=[measurement("item_category", 0.03, 0.05)])
    decision = trigger.decide(quiet, data_root, store)
    assert not decision.start
    assert decision.reason == ("window 2: no feature above its threshold (drift item_category "
                               "0.0210 <= 0.0500; skew item_category 0.0300 <= 0.0500): "
                               "no run started")


def test_trigger_on_chooses_which_comparison_counts(store, data_root):
    assert not trigger.decide(SHIFTED, data_root, store, trigger_on="skew").start
    assert trigger.decide(SHIFTED, data_root, store, trigger_on="drift").start
    first = summary(window=1, skew=[measurement("item_category", 0.2, 0.05)])
    first["drift_unavailable"] = "the first window has no previous window"
    decision = trigger.decide(first, data_root, store, trigger_on="drift")
    assert not decision.start
    assert "(the first window has no previous window)" in decision.reason
    with pytest.raises(ValueError, match="trigger_on must be one of"):
        trigger.decide(SHIFTED, data_root, store, trigger_on="both")


@pytest.mark.parametrize("state,starts", [
    (metadata_store_pb2.Execution.COMPLETE, False),
    (metadata_store_pb2.Execution.RUNNING, False),
    (metadata_store_pb2.Execution.FAILED, True),  # a failed attempt does not hold the span
])
def test_one_run_per_span(store, data_root, state, starts):
    _record(store, 3, state, data_root)
    decision = trigger.decide(SHIFTED, data_root, store)
    assert decision.start is starts
    if not starts:
        assert decision.reason == ("window 3: span 3 already triggered run r-1 at window 2: "
                                   "no run started")


def test_a_trigger_for_an_older_span_or_another_data_root_does_not_hold(store, data_root,
                                                                       tmp_path):
    _record(store, 2, metadata_store_pb2.Execution.COMPLETE, data_root)
    _record(store, 3, metadata_store_pb2.Execution.COMPLETE, str(tmp_path / "other"))
    assert trigger.decide(SHIFTED, data_root, store).start


def test_a_span_already_trained_on_starts_nothing(store, data_root):
    artifact_id = _examples(store, 3)
    decision = trigger.decide(SHIFTED, data_root, store)
    assert not decision.start
    assert f"span 3 (the newest in {data_root}) was already trained on (Examples artifact " \
           f"{artifact_id})" in decision.reason
    later = _examples(store, 2, run="run-2", custom=True)
    assert trigger.trained_spans(store) == {3: artifact_id, 2: later}


def test_a_span_whose_run_trained_no_model_is_not_trained_on(store, data_root):
    # ExampleGen read span 3, the run failed before the Trainer: the next window may retry.
    _examples(store, 3, trained=False)
    assert trigger.trained_spans(store) == {}
    assert trigger.decide(SHIFTED, data_root, store).start


def test_an_empty_data_root_starts_nothing(store, tmp_path):
    (tmp_path / "empty").mkdir()
    decision = trigger.decide(SHIFTED, str(tmp_path / "empty"), store)
    assert not decision.start and "holds no span-N folder to train on" in decision.reason


def test_a_failed_local_run_is_recorded_failed_and_the_span_stays_open(store, data_root,
                                                                       tmp_path):
    # Span folders without the contract's CSVs: the real `hyperrec run` refuses the root.
    window_dir = tmp_path / "window-3"
    window_dir.mkdir()
    entry = trigger.run(dict(SHIFTED), data_root=data_root, workdir=str(tmp_path / "w"),
                        experiment="tiny", overrides=["model.epochs=1"], store=store,
                        runner=trigger.LocalRunner(), window_dir=str(window_dir))
    assert entry["started"] is False and entry["run_id"] is None
    assert entry["error"].startswith("the local run exited with 2 (log: ")
    assert "span-1" in entry["error"]  # the run's own one-line reason, from its log
    [execution] = trigger.triggers(store)
    assert execution.last_known_state == metadata_store_pb2.Execution.FAILED
    assert execution.custom_properties["error"].string_value == entry["error"]
    assert execution.custom_properties["span"].int_value == 3
    assert trigger.text_lines(entry)[0].startswith("trigger: FAILED to start a local run")
    assert trigger.decide(SHIFTED, data_root, store).start  # the next window may retry


def _request(tmp_path, **overrides):
    values = dict(span=4, reason="window 3: drift:item_category above threshold", window=3,
                  execution_id=7, data_root="/d", workdir="/w", experiment="tiny",
                  overrides=("model.epochs=1",), log_path=str(tmp_path / "run.log"))
    values.update(overrides)
    return trigger.RunRequest(**values)


def test_airflow_trigger_command_parses_with_airflows_own_cli(tmp_path):
    runner = trigger.AirflowRunner("hyperrec-tiny")
    command = runner.command(_request(tmp_path))
    assert command[0] == os.path.join(os.path.dirname(sys.executable), "airflow")
    # Airflow's own argument parser (what `airflow` runs), in a process with its own home.
    script = ("import json, sys\nfrom airflow.cli import cli_parser\n"
              "args = cli_parser.get_parser().parse_args(sys.argv[1:])\n"
              "print(json.dumps([args.subcommand, args.dag_id, args.run_id, args.conf]))")
    result = subprocess.run([sys.executable, "-c", script, *command[1:]],
                            env={**os.environ, "AIRFLOW_HOME": str(tmp_path / "home")},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    subcommand, dag_id, run_id, conf = json.loads(result.stdout.strip().splitlines()[-1])
    assert (subcommand, dag_id, run_id) == ("trigger", "hyperrec-tiny", "retrain-span-4-7")
    assert json.loads(conf) == {"span": 4, "reason": "window 3: drift:item_category above "
                                "threshold", "window": 3, "trigger_execution_id": 7}


def test_airflow_rest_request_and_an_unreachable_api(tmp_path, monkeypatch, store):
    monkeypatch.setenv("AIRFLOW_USERNAME", "ops")
    monkeypatch.setenv("AIRFLOW_PASSWORD", "s3cret")
    port = standin_models.free_port()
    runner = trigger.AirflowRunner("hyperrec-tiny", url=f"http://127.0.0.1:{port}/",
                                   timeout=5)
    request = runner.http_request(_request(tmp_path))
    assert (request.method, request.full_url) == (
        "POST", f"http://127.0.0.1:{port}/api/v1/dags/hyperrec-tiny/dagRuns")
    assert json.loads(request.data) == {"dag_run_id": "retrain-span-4-7", "conf": {
        "span": 4, "reason": "window 3: drift:item_category above threshold", "window": 3,
        "trigger_execution_id": 7}}
    assert request.get_header("Authorization") == "Basic b3BzOnMzY3JldA=="  # ops:s3cret
    with pytest.raises(trigger.TriggerError, match=f"Airflow REST API http://127.0.0.1:{port} "
                                                   "unreachable"):
        runner.start(_request(tmp_path), store)


def test_airflow_cli_failure_is_named(tmp_path, store):
    runner = trigger.AirflowRunner("hyperrec-tiny", airflow=str(tmp_path / "no-airflow"))
    with pytest.raises(trigger.TriggerError, match="no-airflow dags trigger: "):
        runner.start(_request(tmp_path), store)


def _kubeflow_runner(host: str = ""):
    return trigger.runner_for(config_lib.MonitoringConfig(
        runner="kubeflow", kubeflow_host=host, kubeflow_experiment="retraining",
        kubeflow_image="registry.example.com/hyperrec:1",
        kubeflow_pipeline_root="gs://b/root", kubeflow_serving_dir="gs://b/serving/hyperrec"),
        "tiny")


def test_kubeflow_trigger_submits_the_span_run_to_the_endpoint(tmp_path, store):
    # The data root stays a gs:// URI: the cluster reads it, this machine never looks for it.
    from test_orchestrators_kubeflow import KfpStandIn
    import threading
    server = KfpStandIn()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run_id = _kubeflow_runner(server.url).start(
            _request(tmp_path, data_root="gs://b/data", workdir=str(tmp_path / "w")), store)
    finally:
        server.shutdown()
        server.server_close()
    [run] = server.bodies("POST", "/apis/v2beta1/runs")
    assert run["display_name"] == "hyperrec-retrain-span-4-7" and run_id
    assert run["runtime_config"]["pipeline_root"] == "gs://b/root"
    example_gen = run["pipeline_spec"]["root"]["dag"]["tasks"]["FileBasedExampleGen"]
    assert example_gen["inputs"]["parameters"]["input_base"]["runtimeValue"][
        "constantValue"]["stringValue"] == "gs://b/data"
    [experiment] = server.bodies("POST", "/apis/v2beta1/experiments")
    assert experiment["display_name"] == "retraining"


def test_kubeflow_trigger_without_an_endpoint_writes_the_spec_and_its_command(tmp_path, store):
    run_id = _kubeflow_runner().start(
        _request(tmp_path, data_root="gs://b/data", workdir=str(tmp_path / "w")), store)
    script = tmp_path / "w" / "kubeflow" / "hyperrec-retrain-span-4-7" / "submit.sh"
    assert run_id == f"not submitted: {script}"
    assert "kfp --endpoint" in script.read_text() and (script.parent / "pipeline.yaml").exists()


def test_kubeflow_trigger_failure_is_named(tmp_path, store):
    with pytest.raises(trigger.TriggerError):
        _kubeflow_runner(f"http://127.0.0.1:{standin_models.free_port()}").start(
            _request(tmp_path, data_root="gs://b/data", workdir=str(tmp_path / "w")), store)


def test_runner_for_names_an_unknown_runner():
    with pytest.raises(ValueError, match="monitoring.runner must be one of"):
        trigger.runner_for(config_lib.MonitoringConfig(runner="cron"), "tiny")
    assert trigger.runner_for(config_lib.MonitoringConfig(runner="airflow"),
                              "tiny").dag_id == "hyperrec-tiny"


def test_monitor_trigger_needs_an_existing_data_root(tmp_path):
    result = CliRunner().invoke(cli.main, ["monitor", "--serving-log", str(tmp_path),
                                           "--workdir", str(tmp_path / "w"), "--trigger"])
    assert result.exit_code == 2
    assert "--trigger needs --data, an existing data root (got None)" in result.output
    assert not (tmp_path / "w").exists()  # checked before a window is profiled


@pytest.mark.e2e
def test_airflow_dags_trigger_queues_a_run_of_the_real_dag(tmp_path, store):
    """A real Airflow home (SQLite), the project's DAG file serialized into it, then the
    runner's `airflow dags trigger`: a queued run with the trigger's id and conf (no
    scheduler runs it here: tests/test_airflow_scheduler.py runs the DAG under Airflow's scheduler).
    Airflow refuses the same run id twice, a second guard behind MLMD's one run per span."""
    home = tmp_path / "airflow_home"
    env = {**os.environ, "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO, "pipeline", "runners",
                                                      "airflow_dag.py"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "HYPERREC_EXPERIMENT": "tiny", "HYPERREC_DATA_ROOT": str(tmp_path / "data"),
           "HYPERREC_WORKDIR": str(tmp_path / "work")}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    for args in (("db", "migrate"), ("dags", "reserialize")):
        done = subprocess.run([airflow, *args], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    runner = trigger.AirflowRunner("hyperrec-tiny", env=env, timeout=300)
    request = _request(tmp_path)
    assert runner.start(request, store) == "retrain-span-4-7"
    import pickle
    import sqlite3
    with sqlite3.connect(home / "airflow.db") as db:
        [(run_id, state, run_type, conf)] = db.execute(
            "SELECT run_id, state, run_type, conf FROM dag_run WHERE dag_id = ?",
            ("hyperrec-tiny",)).fetchall()
    assert (run_id, state, run_type) == ("retrain-span-4-7", "queued", "manual")
    assert pickle.loads(conf) == request.conf()
    with pytest.raises(trigger.TriggerError, match="airflow dags trigger hyperrec-tiny "
                                                   "exited with 1: .*already exists"):
        runner.start(request, store)
