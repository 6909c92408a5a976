"""Lineage walks on hand-built ML Metadata graphs (a real MLMD store on SQLite), recorded the
two ways TFX records runs: the IR-based runners' contexts (LocalDagRunner, Kubeflow) and the
component launchers' execution properties (Airflow). The Airflow end-to-end test reads the
lineage of a real run back from MariaDB."""
import json

import pytest
from click.testing import CliRunner
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from hyperrec.pipeline import cli, lineage
from hyperrec.pipeline.runners import metadata as metadata_lib

EVENT = mlmd.Event
SPAN_CONFIG = json.dumps({"custom_config": {
    "@type": "type.googleapis.com/google.protobuf.Struct",
    "value": {"span_pattern": "span-{SPAN}/*.csv", "window_spans": 3}}})


class Recorder:
    """Writes executions, artifacts and events like TFX does, in one of its two styles."""

    def __init__(self, store, style):
        self.store, self.style = store, style
        self.contexts = {}

    def _type_id(self, kind, name):
        if kind == "artifact":
            return self.store.put_artifact_type(mlmd.ArtifactType(name=name))
        if kind == "execution":
            execution_type = mlmd.ExecutionType(name=name)
            if self.style == "launcher":
                for key in ("component_id", "run_id", "state"):
                    execution_type.properties[key] = mlmd.STRING
            return self.store.put_execution_type(execution_type)
        return self.store.put_context_type(mlmd.ContextType(name=name))

    def artifact(self, type_name, uri, **custom):
        artifact = mlmd.Artifact(type_id=self._type_id("artifact", type_name), uri=uri,
                                 state=mlmd.Artifact.LIVE)
        for key, value in custom.items():
            field = {int: "int_value", str: "string_value", float: "double_value"}[type(value)]
            setattr(artifact.custom_properties[key], field, value)
        return artifact

    def _context(self, type_name, name):
        if (type_name, name) not in self.contexts:
            context = mlmd.Context(type_id=self._type_id("context", type_name), name=name)
            [context.id] = self.store.put_contexts([context])
            self.contexts[(type_name, name)] = context
        return self.contexts[(type_name, name)]

    def execute(self, node, run, inputs=(), outputs=(), state=mlmd.Execution.COMPLETE,
                **properties):
        """inputs/outputs: (key, artifact) pairs; artifacts without id are created. Returns
        the outputs with their ids."""
        execution = mlmd.Execution(type_id=self._type_id("execution", f"tfx.{node}"),
                                   last_known_state=state)
        for key, value in properties.items():
            execution.custom_properties[key].string_value = value
        contexts = []
        if self.style == "launcher":
            execution.properties["component_id"].string_value = node
            execution.properties["run_id"].string_value = run
        else:
            contexts = [self._context("pipeline_run", run), self._context("node", f"p.{node}")]
        pairs = []
        for event_type, items in ((EVENT.INPUT, inputs), (EVENT.OUTPUT, outputs)):
            for key, artifact in items:
                event = EVENT(type=event_type)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                pairs.append((artifact, event))
        _, artifact_ids, _ = self.store.put_execution(execution, pairs, contexts)
        stored = [a for a, _ in pairs]
        for artifact, artifact_id in zip(stored, artifact_ids):
            artifact.id = artifact_id
        return [artifact for key, artifact in outputs]


def _pushed(recorder, version, pushed=1):
    return recorder.artifact("PushedModel", f"/root/Pusher/{version}", pushed=pushed,
                             pushed_version=version, pushed_destination=f"/serving/{version}")


def build(store, style):
    """Run r0 trains a model; run r1 (ExampleGen -> Trainer -> Evaluator, whose baseline is
    r0's model -> Pusher) pushes version 5; run r2 reuses r1's examples from the cache and
    pushes version 12; a not-pushed PushedModel claims version 13."""
    rec = Recorder(store, style)
    [old_model] = rec.execute("Trainer", "r0", outputs=[("model", rec.artifact("Model", "/m0"))])
    [examples] = rec.execute(
        "FileBasedExampleGen", "r1", input_base="/data", custom_config=SPAN_CONFIG,
        outputs=[("examples", rec.artifact("Examples", "/ex1", span=4, window_first_span=2,
                                           train_examples=90, eval_examples=10))])
    [model] = rec.execute("Trainer", "r1", inputs=[("examples", examples)],
                          outputs=[("model", rec.artifact("Model", "/m1"))],
                          custom_config=json.dumps({"code_fingerprint": "abc123",
                                                    "model": {"epochs": 2}}))
    [blessing] = rec.execute("Evaluator", "r1",
                             inputs=[("model", model), ("baseline_model", old_model)],
                             outputs=[("blessing", rec.artifact("ModelBlessing", "/b1",
                                                                blessed=1))])
    rec.execute("Pusher", "r1", inputs=[("model", model), ("model_blessing", blessing)],
                outputs=[("pushed_model", _pushed(rec, "5"))])
    rec.execute("FileBasedExampleGen", "r2", outputs=[("examples", examples)],
                state=mlmd.Execution.CACHED, input_base="/data", custom_config=SPAN_CONFIG)
    [model2] = rec.execute("Trainer", "r2", inputs=[("examples", examples)],
                           outputs=[("model", rec.artifact("Model", "/m2"))])
    rec.execute("Pusher", "r2", inputs=[("model", model2)],
                outputs=[("pushed_model", _pushed(rec, "12"))])
    rec.execute("Pusher", "r3", outputs=[("pushed_model", _pushed(rec, "13", pushed=0))])
    return {"examples": examples, "old_model": old_model}


@pytest.fixture(params=["ir", "launcher"])
def graph(request, tmp_path):
    path = str(tmp_path / "metadata.sqlite")
    store = metadata_store.MetadataStore(metadata_lib.connection_config(path))
    return store, build(store, request.param), path


def test_served_versions_are_the_pushed_ones(graph):
    store, _, _ = graph
    assert sorted(lineage.served_versions(store), key=int) == ["5", "12"]


def test_lineage_of_a_version_walks_its_own_run_upstream(graph):
    store, built, _ = graph
    trace = lineage.trace(store, "5")
    assert (trace.version, trace.pushed_to, trace.run) == ("5", "/serving/5", "r1")
    # Pusher (depth 0), Evaluator (1), Trainer (2: through the Evaluator), ExampleGen (3).
    assert [s.node for s in trace.steps] == ["Pusher", "Evaluator", "Trainer",
                                             "FileBasedExampleGen"]
    evaluator = trace.step("Evaluator")
    baseline = evaluator.inputs["baseline_model"][0]
    assert (baseline.id, baseline.producer) == (built["old_model"].id, None)  # not followed
    assert evaluator.outputs["blessing"][0].properties["blessed"] == 1
    assert json.loads(trace.step("Trainer").properties["custom_config"])[
        "code_fingerprint"] == "abc123"
    example_gen = trace.step("FileBasedExampleGen")
    assert lineage.data_paths(example_gen) == ["/data/span-2/*.csv", "/data/span-3/*.csv",
                                               "/data/span-4/*.csv"]


def test_default_version_is_the_highest_number_and_cached_steps_count(graph):
    store, built, _ = graph
    trace = lineage.trace(store)
    assert (trace.version, trace.run) == ("12", "r2")  # 12 > 5 as numbers, not as text
    assert [s.node for s in trace.steps] == ["Pusher", "Trainer", "FileBasedExampleGen"]
    example_gen = trace.step("FileBasedExampleGen")
    # The cache hit of r2, not r1's original execution: the walk stays in the run.
    assert example_gen.state == "CACHED"
    assert example_gen.outputs["examples"][0].id == built["examples"].id


def test_unknown_version_and_empty_store_are_named_errors(graph, tmp_path):
    store, _, _ = graph
    with pytest.raises(lineage.LineageError, match="version 13 was not pushed; pushed "
                                                   "versions: 5, 12"):
        lineage.trace(store, "13")
    empty = metadata_store.MetadataStore(metadata_lib.connection_config(
        str(tmp_path / "empty.sqlite")))
    with pytest.raises(lineage.LineageError, match="no pushed model in this metadata store"):
        lineage.trace(empty)


def test_lineage_command_text_json_and_bad_input(graph, tmp_path):
    _, _, path = graph
    text = CliRunner().invoke(cli.main, ["lineage", "--metadata", path, "--version", "5"])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[:3] == ["served version 5 at /serving/5", "run r1",
                         f"<- Pusher (execution {lineage.trace(graph[0], '5').steps[0].execution_id}"
                         ", COMPLETE)"]
    assert "    code fingerprint: abc123" in lines
    assert "    in  baseline_model: Model #1  (from an earlier run: not followed)" in lines
    assert "data read by FileBasedExampleGen: /data/span-4/*.csv" in lines
    as_json = CliRunner().invoke(cli.main, ["lineage", "--metadata", path, "--json"])
    assert json.loads(as_json.output)["version"] == "12"
    no_store = CliRunner().invoke(cli.main, ["lineage", "--workdir", str(tmp_path / "nothing")])
    assert no_store.exit_code == 2 and "no MLMD store at" in no_store.output
    bad_uri = CliRunner().invoke(cli.main, ["lineage", "--metadata", "postgres://h/db"])
    assert bad_uri.exit_code == 2 and "scheme 'postgres' is not supported" in bad_uri.output


@pytest.mark.parametrize("location,message", [
    ("mysql://user@/db", "must be mysql://USER"),
    ("mysql://user@host:99999/db", "Port out of range"),
    ("mysql://user@host:3306/", "must be mysql://USER"),
    ("", "empty metadata location"),
])
def test_bad_metadata_locations_are_named(location, message):
    with pytest.raises(metadata_lib.MetadataUriError, match=message):
        metadata_lib.connection_config(location)


def test_mysql_location_with_password_from_the_environment(monkeypatch):
    monkeypatch.setenv(metadata_lib.PASSWORD_ENV, "s3cret")
    config = metadata_lib.connection_config("mysql://ml%40team@db.internal:3307/mlmd")
    assert (config.mysql.host, config.mysql.port, config.mysql.database, config.mysql.user,
            config.mysql.password) == ("db.internal", 3307, "mlmd", "ml@team", "s3cret")
    assert metadata_lib.describe(config) == "mysql://ml@team@db.internal:3307/mlmd"
    explicit = metadata_lib.connection_config("mysql://u:p%2Fw@h/m")
    assert (explicit.mysql.password, explicit.mysql.port) == ("p/w", 3306)


def test_each_step_is_read_from_the_store_once(graph, monkeypatch):
    """Version 5's Trainer is reached from the Pusher (depth 1) and again through the
    Evaluator (depth 2), which re-queues it and its ExampleGen: the re-visits pass the new
    depth on without asking MLMD for the same events again."""
    store, _, _ = graph
    read = store.get_events_by_execution_ids
    asked = []

    def counting(execution_ids):
        asked.extend(execution_ids)
        return read(execution_ids)

    monkeypatch.setattr(store, "get_events_by_execution_ids", counting)
    trace = lineage.trace(store, "5")
    assert [s.node for s in trace.steps] == ["Pusher", "Evaluator", "Trainer",
                                             "FileBasedExampleGen"]
    assert sorted(asked) == sorted(s.execution_id for s in trace.steps)
