"""The whole pipeline on `tiny` sample data with LocalDagRunner and the Beam DirectRunner.

The run is `hyperrec demo --experiment tiny` in a subprocess, as a user types it (what
`make demo` runs, on the tiny experiment); the other tests read what it left behind.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from hyperrec.components import config as config_lib
from hyperrec.pipeline.runners import local as local_runner

pytestmark = pytest.mark.e2e

EXPECTED_NODES = {"FileBasedExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                  "AnomaliesGate",
                  "Transform", "Trainer", "latest_blessed_model_resolver", "Evaluator",
                  "InfraValidator", "Pusher"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    hyperrec = os.path.join(os.path.dirname(sys.executable), "hyperrec")
    # As a user's shell has it: none of the log settings conftest gives the test process.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY",
                        "GLOG_minloglevel")}
    demo = subprocess.run([hyperrec, "demo", "--experiment", "tiny", "--workdir", workdir],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    paths = local_runner.RunPaths(workdir, os.path.join(workdir, "data", "tiny-seed42"))
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(paths.metadata_path))
    return paths, store, demo.stdout + demo.stderr


def _artifacts(store, type_name):
    return store.get_artifacts_by_type(type_name)


def test_demo_prints_each_component_and_rest_grpc_and_in_process_agree(tiny_run):
    _, _, text = tiny_run
    for component in ("FileBasedExampleGen", "StatisticsGen", "ExampleValidator", "Transform",
                      "Trainer", "Evaluator", "Pusher"):
        assert re.search(rf"✔ {component} finished in +\d+\.\ds", text), component
    pushed = re.search(r"pushed model: (\S+)\s+\(version (\d+)\)", text)
    assert pushed and os.path.exists(os.path.join(pushed.group(1), "saved_model.pb"))
    assert len(re.findall(r"^│ (?:\d+) +│ i\d{5} ", text, flags=re.M)) == 10
    assert "REST, gRPC and the in-process SavedModel agree" in text
    # A first run has no previous span: the drift check says so instead of a logged error.
    assert re.search(r"DistributionValidator finished in +\d+\.\ds \(skipped: no "
                     r"baseline_statistics artifact yet\)", text)
    # The terminal shows the project's lines, not library noise (a first run included).
    for noise in ("Traceback", "FutureWarning", "Input resolution error", "Worker: severity",
                  "Unable to register"):
        assert noise not in text, noise


def test_every_component_executed(tiny_run):
    _, store, _ = tiny_run
    states = {}
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[-1]
        executions = store.get_executions_by_context(context.id)
        states[node] = {metadata_store_pb2.Execution.State.Name(e.last_known_state)
                        for e in executions}
    assert EXPECTED_NODES <= set(states), states
    for node in EXPECTED_NODES:
        assert "COMPLETE" in states[node], (node, states[node])


def test_schema_statistics_and_anomalies_artifacts_exist(tiny_run):
    _, store, _ = tiny_run
    for type_name in ("Schema", "ExampleStatistics", "ExampleAnomalies", "TransformGraph"):
        artifacts = _artifacts(store, type_name)
        assert artifacts, type_name
        assert all(os.listdir(a.uri) for a in artifacts), type_name
    examples = _artifacts(store, "Examples")[0]
    assert set(json.loads(examples.properties["split_names"].string_value)) == {
        "train", "eval", "catalog"}


def test_model_is_blessed_and_a_numbered_version_is_pushed(tiny_run):
    paths, store, _ = tiny_run
    blessings = _artifacts(store, "ModelBlessing")
    assert blessings and blessings[-1].custom_properties["blessed"].int_value == 1
    pushed = _artifacts(store, "PushedModel")
    assert pushed and pushed[-1].custom_properties["pushed"].int_value == 1
    versions = [d for d in os.listdir(paths.serving_dir) if d.isdigit()]
    assert len(versions) == 1
    assert os.path.exists(os.path.join(paths.serving_dir, versions[0], "saved_model.pb"))


def test_infra_validator_served_the_candidate_and_blessed_it_with_its_numbers(tiny_run):
    """The candidate was loaded by a fresh server process, answered every signature over
    REST and gRPC like the in-process SavedModel, and the Pusher consumed that blessing."""
    paths, store, text = tiny_run
    infra = _artifacts(store, "InfraBlessing")
    assert infra, "no InfraBlessing"
    properties = infra[-1].custom_properties
    assert properties["blessed"].int_value == 1, properties["reason"].string_value
    for number in ("load_seconds", "first_request_ms", "rest_p50_ms", "rest_p99_ms",
                   "grpc_p50_ms", "grpc_p99_ms", "peak_rss_mb", "memory_limit_mb"):
        assert properties[number].double_value > 0, number
    with open(os.path.join(infra[-1].uri, "infra_validation.json")) as handle:
        report = json.load(handle)
    assert {"serving_default", "recommend", "embed_items"} <= set(report["signatures"])
    assert report["warmup_requests"] > 0
    assert "REST and gRPC answers equal the in-process SavedModel's" in report["checks"]
    assert re.search(r"InfraValidator: INFRA BLESSED: served by a fresh server", text)
    from hyperrec.pipeline import lineage
    traced = lineage.trace(store)
    assert traced.step("InfraValidator").outputs["blessing"][0].properties["blessed"] == 1


def test_pushed_model_scores_and_recommends_in_a_fresh_process(tiny_run):
    paths, store, _ = tiny_run
    examples = _artifacts(store, "Examples")[0]
    eval_glob = os.path.join(examples.uri, "Split-eval", "*")
    script = textwrap.dedent(f"""
        import glob, json, sys
        import tensorflow as tf
        from hyperrec.serving import saved_model
        version, model_dir = saved_model.latest_version({paths.serving_dir!r})
        loaded = tf.saved_model.load(model_dir)
        records = tf.data.TFRecordDataset(glob.glob({eval_glob!r}), compression_type="GZIP")
        serialized = [r.numpy() for r in records.take(16)]
        scores = loaded.signatures["serving_default"](examples=tf.constant(serialized))["score"]
        recs = saved_model.recommend(model_dir, "u00001", [], "mobile", 1700000000, k=5)
        print(json.dumps({{"scores": scores.numpy().reshape(-1).tolist(), "recs": recs}}))
    """)
    # As a user's shell has it: none of the log settings conftest gives the test process.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY",
                        "GLOG_minloglevel")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["scores"]) == 16
    assert all(0.0 <= s <= 1.0 for s in result["scores"])
    assert len(result["recs"]) == 5 and len({item for item, _ in result["recs"]}) == 5


def test_trainer_inside_the_pipeline_used_the_same_keras_as_a_plain_import(tiny_run):
    """The Keras the Trainer saw inside the run equals what `import hyperrec.components` gives alone."""
    from test_keras_env import _keras_seen_after
    _, store, _ = tiny_run
    model_run = _artifacts(store, "ModelRun")[-1]
    with open(os.path.join(model_run.uri, "keras.json")) as f:
        inside = json.load(f)
    assert [inside["module"], inside["version"]] == _keras_seen_after("import hyperrec.components")


def test_schema_diff_command_compares_the_run_statistics_with_the_curated_schema(tiny_run):
    from click.testing import CliRunner
    from hyperrec.pipeline import cli
    paths, _, _ = tiny_run
    result = CliRunner().invoke(cli.main, ["schema-diff", "--workdir", paths.workdir,
                                           "--experiment", "tiny"])
    assert result.exit_code == 0, result.output
    assert "FeatureStats.pb" in result.output
    # The sample data never produces the curated fallback value "unknown".
    assert "'item_category' curated values not seen in the new data: ['unknown']" in result.output


def test_a_rerun_on_unchanged_data_reuses_the_cache_and_pushes_no_duplicate(tiny_run, capsys):
    """`make demo` twice: the second run is served from the cache and adds no version."""
    paths, store, _ = tiny_run
    before = sorted(d for d in os.listdir(paths.serving_dir) if d.isdigit())
    local_runner.run(config_lib.load("tiny"), paths.data_root, paths.workdir)
    output = capsys.readouterr().out
    for node in ("FileBasedExampleGen", "Transform", "Trainer"):
        assert f"{node} finished in" in output and "(cached)" in output.split(
            f"{node} finished in")[1].splitlines()[0], node
    assert sorted(d for d in os.listdir(paths.serving_dir) if d.isdigit()) == before
    pushed = store.get_artifacts_by_type("PushedModel")
    assert pushed[-1].custom_properties["pushed"].int_value == 1
    assert pushed[-1].custom_properties["pushed_version"].string_value == before[-1]


def test_a_model_code_change_reruns_the_trainer_and_leaves_ingestion_cached(
        tiny_run, capsys, monkeypatch):
    """Per-component fingerprints: an edited model file re-runs Trainer, not ExampleGen."""
    from hyperrec.pipeline import fingerprint
    paths, _, _ = tiny_run
    read = fingerprint.read_source
    monkeypatch.setattr(fingerprint, "read_source", lambda path: read(path) + (
        b"\n# an edit\n" if path.endswith(os.path.join("model", "towers.py")) else b""))
    local_runner.run(config_lib.load("tiny"), paths.data_root, paths.workdir)
    output = capsys.readouterr().out

    def cached(node):
        return "(cached)" in output.split(f"{node} finished in")[1].splitlines()[0]

    assert cached("FileBasedExampleGen") and cached("Transform")
    assert not cached("Trainer")


def test_the_run_writes_a_report_that_opens_in_chromium_with_every_plot(tiny_run, tmp_path):
    """Every local run ends with WORKDIR/report.html; it agrees with MLMD (rows per split as
    ExampleGen counted them, the ranking section exactly when a RankingEvaluation exists,
    the served model's lineage) and opens in headless Chromium with every plot decoded."""
    import browser
    from hyperrec.components.evaluation import report
    paths, store, _ = tiny_run
    path = os.path.join(paths.workdir, report.REPORT_FILE)
    with open(path) as f:
        document = f.read()
    ranked = bool(store.get_artifacts_by_type(report.RANKING))
    assert report.sections_not_run(document) == (
        [] if ranked else ["Ranking evaluation (full catalogue, temporal split)"])
    assert 'class="unreadable"' not in document
    examples = store.get_artifacts_by_type("Examples")[-1]
    for split in ("train", "eval"):
        rows = examples.custom_properties[f"{split}_examples"].int_value
        assert f"<td>{split}</td><td>{rows:,}</td><td>" in document, split
    assert "<h2>Lineage of the served model</h2><pre>served version " in document
    expected_plots = {"training curves", "distribution of event"} | (
        {"recall@k and ndcg@k curves", "recall@10 by slice"} if ranked else set())
    check = browser.check_page(path, tmp_path / "report_tiny_run.png")
    assert expected_plots <= {i["alt"] for i in check.images}
    assert len(check.images) == document.count("<img ")
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in check.images), check.images
    assert check.errors == []


def test_training_statistics_of_the_pushed_version_are_statistics_gens_train_split(tiny_run):
    """Monitoring's skew baseline: the served version's run -> StatisticsGen's `statistics`
    output, not Transform's pre/post-transform statistics (ExampleStatistics of the same run
    with a higher id and no Split-train)."""
    from hyperrec.pipeline.loop import training_stats
    paths, store = tiny_run[0], tiny_run[1]
    pushed = [a for a in store.get_artifacts_by_type("PushedModel")
              if a.custom_properties["pushed"].int_value == 1]
    assert pushed
    version = int(pushed[0].custom_properties["pushed_version"].string_value)
    path, run_name = training_stats.resolve(store, version)
    parts = path.split(os.sep)
    assert parts[-5:-3] == ["StatisticsGen", "statistics"] and parts[-3].isdigit(), path
    assert parts[-2:] == ["Split-train", "FeatureStats.pb"], path
    assert path.startswith(paths.workdir) and os.path.isfile(path)
    assert run_name
