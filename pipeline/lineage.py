"""Which data and which run produced a served model, read back from ML Metadata.

`trace(store, version)` starts at the PushedModel artifact of a served version and walks
upstream through MLMD's events, one execution per pipeline node of the same run: Pusher ->
the gates (Evaluator, RankingEvaluator: blessing, reason, metrics) -> Trainer
(hyperparameters, code fingerprint) -> Transform -> ... -> ExampleGen (spans, row counts,
ingest report) -> the data paths it read. Inputs that came from another run (the baseline
model the resolver picked) are listed, not followed: they are not what this model was built from.

It works for both ways TFX records runs: the IR-based runners (LocalDagRunner: `pipeline_run`
and `node` contexts) and the component launchers of AirflowDagRunner (`run_id` and
`component_id` execution properties).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

PUSHED_MODEL = "PushedModel"
_EVENT_OUT = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_EVENT_IN = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
# Execution properties worth a line in the text view (all are in the JSON view).
_SHOWN_PROPERTIES = ("input_base", "custom_config", "train_args", "eval_args", "module_path",
                     "run_fn", "preprocessing_fn", "push_destination", "schema_file",
                     "splits_config", "config")
_MAX_TEXT = 240


class LineageError(LookupError):
    """The store holds no pushed model for the asked version (or none at all)."""


def _value(value: metadata_store_pb2.Value) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "struct_value":
        from google.protobuf import json_format
        return json_format.MessageToDict(value.struct_value)
    if kind == "proto_value":
        return str(value.proto_value)
    return getattr(value, kind)


def _properties(message) -> Dict[str, Any]:
    values = {k: _value(v) for k, v in message.properties.items()}
    values.update({k: _value(v) for k, v in message.custom_properties.items()})
    return dict(sorted(values.items()))


@dataclasses.dataclass
class ArtifactRecord:
    id: int
    type: str
    uri: str
    properties: Dict[str, Any]
    producer: Optional[int] = None  # execution id, when produced in the traced run


@dataclasses.dataclass
class StepRecord:
    node: str
    execution_id: int
    type: str
    state: str
    properties: Dict[str, Any]
    inputs: Dict[str, List[ArtifactRecord]]
    outputs: Dict[str, List[ArtifactRecord]]
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Lineage:
    version: str
    pushed_to: str
    run: str
    steps: List[StepRecord]  # Pusher first; every step before the steps it consumed

    def step(self, node_prefix: str) -> StepRecord:
        for step in self.steps:
            if step.node.startswith(node_prefix):
                return step
        raise KeyError(node_prefix)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class _Graph:
    """Cached MLMD look-ups for one trace."""

    def __init__(self, store: metadata_store.MetadataStore):
        self.store = store
        self.type_names = {t.id: t.name for t in store.get_artifact_types()}
        self.execution_types = {t.id: t.name for t in store.get_execution_types()}
        self._contexts: Dict[int, List[metadata_store_pb2.Context]] = {}
        self.context_types = {t.id: t.name for t in store.get_context_types()}

    def contexts(self, execution_id: int) -> List[metadata_store_pb2.Context]:
        if execution_id not in self._contexts:
            self._contexts[execution_id] = self.store.get_contexts_by_execution(execution_id)
        return self._contexts[execution_id]

    def run_of(self, execution: metadata_store_pb2.Execution) -> str:
        if "run_id" in execution.properties:  # component launchers (Airflow)
            return execution.properties["run_id"].string_value
        for context in self.contexts(execution.id):
            if self.context_types[context.type_id] == "pipeline_run":
                return context.name
        return ""

    def node_of(self, execution: metadata_store_pb2.Execution) -> str:
        if "component_id" in execution.properties:
            return execution.properties["component_id"].string_value
        for context in self.contexts(execution.id):
            if self.context_types[context.type_id] == "node":
                return context.name.split(".", 1)[-1]
        return self.execution_types.get(execution.type_id, "?").rsplit(".", 1)[-1]

    def artifact(self, artifact: metadata_store_pb2.Artifact) -> ArtifactRecord:
        return ArtifactRecord(artifact.id, self.type_names.get(artifact.type_id, "?"),
                              artifact.uri, _properties(artifact))


def served_versions(store: metadata_store.MetadataStore) -> Dict[str, metadata_store_pb2.Artifact]:
    """pushed version -> its newest PushedModel artifact (pushed ones only)."""
    versions: Dict[str, metadata_store_pb2.Artifact] = {}
    for artifact in store.get_artifacts_by_type(PUSHED_MODEL):
        props = artifact.custom_properties
        if props.get("pushed") is None or props["pushed"].int_value != 1:
            continue
        version = props["pushed_version"].string_value if "pushed_version" in props else ""
        if version and (version not in versions or versions[version].id < artifact.id):
            versions[version] = artifact
    return versions


def _key(path: metadata_store_pb2.Event.Path) -> str:
    return next((s.key for s in path.steps if s.HasField("key")), "")


def _pick_producer(graph: _Graph, artifact_id: int,
                   run: str) -> Optional[metadata_store_pb2.Execution]:
    """The execution of `run` that output the artifact (a CACHED one counts), else None."""
    events = [e for e in graph.store.get_events_by_artifact_ids([artifact_id])
              if e.type in _EVENT_OUT]
    executions = graph.store.get_executions_by_id([e.execution_id for e in events])
    same_run = [e for e in executions if graph.run_of(e) == run]
    return min(same_run, key=lambda e: e.id) if same_run else None


def _gate_metrics(step_type: str, outputs: Dict[str, List[ArtifactRecord]]) -> Dict[str, Any]:
    """Overall-slice metrics of a TFMA evaluation (its files, not MLMD properties)."""
    metrics: Dict[str, Any] = {}
    for record in outputs.get("evaluation", []):
        if record.type != "ModelEvaluation":
            continue
        try:
            import tensorflow_model_analysis as tfma
            for slice_metrics in tfma.load_metrics(record.uri):
                if slice_metrics.slice_key.single_slice_keys:
                    continue  # the overall slice only
                for item in slice_metrics.metric_keys_and_values:
                    if item.value.HasField("double_value"):
                        metrics[item.key.name] = item.value.double_value.value
            validation = tfma.load_validation_result(record.uri)
            metrics["validation_ok"] = bool(validation.validation_ok)
        except Exception as err:  # a missing or foreign file: say so, keep the chain
            metrics["unreadable"] = f"{type(err).__name__}: {err}"
    return metrics


def _events_of(graph: _Graph, execution_id: int, run: str) -> Tuple[
        Dict[str, List[ArtifactRecord]], Dict[str, List[ArtifactRecord]],
        List[metadata_store_pb2.Execution]]:
    """An execution's inputs and outputs by key, and the executions of `run` that produced
    its inputs (in event order, one entry per input that has one)."""
    events = graph.store.get_events_by_execution_ids([execution_id])
    artifacts = {a.id: a for a in graph.store.get_artifacts_by_id(
        [e.artifact_id for e in events])}
    inputs: Dict[str, List[ArtifactRecord]] = collections.defaultdict(list)
    outputs: Dict[str, List[ArtifactRecord]] = collections.defaultdict(list)
    producers: List[metadata_store_pb2.Execution] = []
    for event in sorted(events, key=lambda e: e.artifact_id):
        record = graph.artifact(artifacts[event.artifact_id])
        if event.type in _EVENT_OUT:
            outputs[_key(event.path)].append(record)
            continue
        if event.type not in _EVENT_IN:
            continue
        producer = _pick_producer(graph, event.artifact_id, run)
        inputs[_key(event.path)].append(record)
        if producer is None:
            continue  # from another run (e.g. the resolver's baseline model)
        record.producer = producer.id
        producers.append(producer)
    return dict(inputs), dict(outputs), producers


def trace(store: metadata_store.MetadataStore, version: Optional[str] = None) -> Lineage:
    """The lineage of served `version` (default: the highest pushed version)."""
    versions = served_versions(store)
    if not versions:
        raise LineageError("no pushed model in this metadata store")
    if version is None:
        version = max(versions, key=lambda v: (int(v) if v.isdigit() else -1, v))
    if version not in versions:
        raise LineageError(f"version {version} was not pushed; pushed versions: "
                           f"{', '.join(sorted(versions, key=lambda v: (len(v), v)))}")
    pushed = versions[version]
    graph = _Graph(store)
    events = store.get_events_by_artifact_ids([pushed.id])
    pusher_id = max(e.execution_id for e in events if e.type in _EVENT_OUT)
    pusher = store.get_executions_by_id([pusher_id])[0]
    run = graph.run_of(pusher)

    # Breadth-first upstream; depth = longest path from the Pusher, so that every step is
    # listed before the steps it consumed (Trainer after the gates that read its model). A
    # step is re-queued when a longer path to it turns up, so its MLMD look-ups are cached:
    # a re-visit only passes the new depth on to its producers.
    depth = {pusher.id: 0}
    executions = {pusher.id: pusher}
    order = collections.deque([pusher.id])
    inputs_of: Dict[int, Dict[str, List[ArtifactRecord]]] = {}
    outputs_of: Dict[int, Dict[str, List[ArtifactRecord]]] = {}
    producers_of: Dict[int, List[metadata_store_pb2.Execution]] = {}
    while order:
        execution_id = order.popleft()
        if execution_id not in producers_of:
            inputs_of[execution_id], outputs_of[execution_id], producers_of[execution_id] = (
                _events_of(graph, execution_id, run))
        for producer in producers_of[execution_id]:
            if depth.get(producer.id, -1) < depth[execution_id] + 1:
                depth[producer.id] = depth[execution_id] + 1
                executions[producer.id] = producer
                order.append(producer.id)

    steps = []
    for execution_id in sorted(executions, key=lambda i: (depth[i], i)):
        execution = executions[execution_id]
        step_type = graph.execution_types.get(execution.type_id, "?")
        steps.append(StepRecord(
            node=graph.node_of(execution), execution_id=execution_id, type=step_type,
            state=metadata_store_pb2.Execution.State.Name(execution.last_known_state),
            properties=_properties(execution), inputs=inputs_of[execution_id],
            outputs=outputs_of[execution_id],
            metrics=_gate_metrics(step_type, outputs_of[execution_id])))
    return Lineage(version=version, pushed_to=pushed.custom_properties[
        "pushed_destination"].string_value if "pushed_destination" in pushed.custom_properties
        else pushed.uri, run=run, steps=steps)


def _short(value: Any) -> str:
    if isinstance(value, str) and value[:1] in "{[":
        try:  # JSON-encoded protos and configs: one line
            value = json.loads(value)
        except ValueError:
            pass
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + " ..."


def _code_and_hyperparameters(step: StepRecord) -> List[str]:
    lines = []
    raw = step.properties.get("custom_config")
    if isinstance(raw, str) and raw.startswith("{"):
        custom = json.loads(raw)
        if "code_fingerprint" in custom:
            lines.append(f"    code fingerprint: {custom['code_fingerprint']}")
        if isinstance(custom.get("model"), dict):
            lines.append(f"    hyperparameters: {_short(custom['model'])}")
    return lines


def render(lineage: Lineage) -> str:
    """The text view `hyperrec lineage` prints."""
    lines = [f"served version {lineage.version} at {lineage.pushed_to}",
             f"run {lineage.run}"]
    for step in lineage.steps:
        lines.append(f"<- {step.node} (execution {step.execution_id}, {step.state})")
        lines.extend(_code_and_hyperparameters(step))
        for name in _SHOWN_PROPERTIES:
            if step.properties.get(name) is not None and name != "custom_config":
                lines.append(f"    {name}: {_short(step.properties[name])}")
        for name, value in sorted(step.metrics.items()):
            lines.append(f"    metric {name}: {value}")
        for key, records in sorted(step.outputs.items()):
            for record in records:
                props = {k: v for k, v in record.properties.items()
                         if k not in ("name", "producer_component", "tfx_version", "state",
                                      "is_external")}
                lines.append(f"    out {key}: {record.type} {record.uri}")
                if props:
                    lines.append(f"        {_short(props)}")
        for key, records in sorted(step.inputs.items()):
            for record in records:
                origin = ("" if record.producer is not None
                          else "  (from an earlier run: not followed)")
                lines.append(f"    in  {key}: {record.type} #{record.id}{origin}")
    for step in lineage.steps:
        lines.extend(_data_lines(step))
    return "\n".join(lines)


def data_paths(step: StepRecord) -> List[str]:
    """The span folders an ExampleGen step read: its input_base and the span pattern of its
    config, over the span window its Examples record (window_first_span .. span)."""
    if "input_base" not in step.properties:
        return []
    custom = json.loads(step.properties.get("custom_config") or "{}")
    # ExampleGen's custom_config is a Struct packed in an Any: {"custom_config": {"value": ..}}
    pattern = custom.get("custom_config", {}).get("value", {}).get("span_pattern")
    if not pattern:  # another ExampleGen: the pattern its driver resolved
        splits = json.loads(step.properties.get("input_config") or "{}").get("splits", [])
        pattern = splits[0]["pattern"] if splits else "*"
    paths = []
    for record in step.outputs.get("examples", []):
        last = record.properties.get("span")
        first = record.properties.get("window_first_span", last)
        spans = range(first, last + 1) if "{SPAN}" in pattern and last is not None else [None]
        paths.extend(os.path.join(step.properties["input_base"],
                                  pattern.replace("{SPAN}", str(span))) for span in spans)
    return paths


def _data_lines(step: StepRecord) -> List[str]:
    lines = [f"data read by {step.node}: {path}" for path in data_paths(step)]
    for record in step.outputs.get("examples", []) if lines else []:
        counts = {k: v for k, v in record.properties.items()
                  if k.endswith(("_examples", "_read", "_items")) and isinstance(v, int)}
        lines.append(f"rows: {_short(counts)}")
        lines.append(f"ingest report: {os.path.join(record.uri, 'ingest_report.json')}")
    return lines
