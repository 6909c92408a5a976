"""From a monitoring window to a retraining run: decide, record in ML Metadata, start.

A window starts a run when (1) a feature is above its schema threshold (drift, skew or
either: MonitoringConfig.trigger_on), (2) the data root holds a span no run trained on yet,
and (3) no earlier trigger claimed that span. The key is the newest span: one run per new
span, however many windows see the shift. Each start is an MLMD Execution of type
`hyperrec.RetrainingTrigger` (span, reason, features, window, runner, run id, data root),
written before the runner is called and completed (or failed) after; every decision, started
or not, is added to the window's summary.json and report.html.

Runners share one small interface (`start(request) -> run id`): LocalRunner
(pipeline/runners/local.run in a child process, waited for), AirflowRunner (`airflow dags
trigger` or the REST API, with the trigger in the run's conf) and KubeflowRunner
(pipeline/runners/kubeflow.py: compiled for the span's data root, submitted to the KFP
endpoint or written with the command that would submit it).
"""
from __future__ import annotations

import base64
import dataclasses
import html
import json
import multiprocessing
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from hyperrec.components.config import MonitoringConfig
from hyperrec.components.example_gen import layout

TRIGGER_TYPE = "hyperrec.RetrainingTrigger"
EXAMPLES_TYPE = "Examples"
MODEL_TYPE = "Model"
RUN_CONTEXT_TYPE = "pipeline_run"
TRIGGER_ON = ("drift", "skew", "drift_or_skew")
RUNNERS = ("local", "airflow", "kubeflow")
RUN_LOG = "retraining-run.log"
# Attempts in these states hold their span; a FAILED one lets the next window try again.
_HOLDING = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING,
            metadata_store_pb2.Execution.COMPLETE)


class TriggerError(RuntimeError):
    """The runner could not start (or, for the local runner, finish) the run."""


@dataclasses.dataclass
class Decision:
    start: bool
    reason: str
    span: Optional[int] = None
    features: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RunRequest:
    """What a runner needs: the run's data and settings, and why it starts."""

    span: int
    reason: str
    window: int
    execution_id: int
    data_root: str
    workdir: str
    experiment: str
    overrides: Sequence[str] = ()
    metadata: str = ""  # "" = WORKDIR/metadata.sqlite
    log_path: str = ""  # where the local runner writes the run's output

    @property
    def run_name(self) -> str:
        # Unique per attempt (the MLMD id), readable per span.
        return f"retrain-span-{self.span}-{self.execution_id}"

    def conf(self) -> Dict[str, Any]:
        return {"span": self.span, "reason": self.reason, "window": self.window,
                "trigger_execution_id": self.execution_id}


# ---- the decision -------------------------------------------------------------------------


def spans(data_root: str) -> List[int]:
    """The span numbers of the data root's span-N folders, ascending (a gs:// or s3:// root
    is read with tf.io.gfile)."""
    if not layout.is_dir(data_root):
        raise FileNotFoundError(f"no data root at {data_root}")
    return layout.span_numbers(data_root)


def above(summary: Dict[str, Any], trigger_on: str) -> List[str]:
    """'drift:<feature>' / 'skew:<feature>' for the measurements that count."""
    if trigger_on not in TRIGGER_ON:
        raise ValueError(f"trigger_on must be one of {TRIGGER_ON}, got {trigger_on!r}")
    kinds = ("drift", "skew") if trigger_on == "drift_or_skew" else (trigger_on,)
    return [f"{kind}:{m['feature']}" for kind in kinds for m in summary[kind] if m["above"]]


def _measured(summary: Dict[str, Any], trigger_on: str) -> str:
    kinds = ("drift", "skew") if trigger_on == "drift_or_skew" else (trigger_on,)
    parts = [f"{kind} {m['feature']} {m['value']:.4f} {'>' if m['above'] else '<='} "
             f"{m['threshold']:.4f}" for kind in kinds for m in summary[kind]]
    missing = [summary[f"{kind}_unavailable"] for kind in kinds
               if f"{kind}_unavailable" in summary]
    return "; ".join(parts + missing) or "nothing measured"


def _trigger_type(store: metadata_store.MetadataStore) -> int:
    return store.put_execution_type(metadata_store_pb2.ExecutionType(name=TRIGGER_TYPE))


def triggers(store: metadata_store.MetadataStore) -> List[metadata_store_pb2.Execution]:
    """Every RetrainingTrigger execution in the store, oldest first."""
    return sorted(store.get_executions_by_type(TRIGGER_TYPE), key=lambda e: e.id)


def _prop(execution: metadata_store_pb2.Execution, name: str) -> Any:
    value = execution.custom_properties.get(name)
    if value is None:
        return None
    return value.int_value if value.WhichOneof("value") == "int_value" else value.string_value


def _trained(store: metadata_store.MetadataStore, examples_id: int) -> bool:
    """A pipeline run holding these Examples also output a Model: a run that failed before
    the Trainer has not trained on the span, and the next window may try again."""
    run_type = {t.id for t in store.get_context_types() if t.name == RUN_CONTEXT_TYPE}
    model_type = {t.id for t in store.get_artifact_types() if t.name == MODEL_TYPE}
    for context in store.get_contexts_by_artifact(examples_id):
        if context.type_id not in run_type:
            continue
        executions = [e.id for e in store.get_executions_by_context(context.id)]
        outputs = {e.artifact_id for e in store.get_events_by_execution_ids(executions)
                   if e.type == metadata_store_pb2.Event.OUTPUT}
        if any(a.type_id in model_type for a in store.get_artifacts_by_id(sorted(outputs))):
            return True
    return False


def trained_spans(store: metadata_store.MetadataStore) -> Dict[int, int]:
    """newest span of each Examples artifact ExampleGen wrote, in a run that trained a
    model -> that artifact's id."""
    found = {}
    for artifact in store.get_artifacts_by_type(EXAMPLES_TYPE):  # [] before the first run
        # A property where the Examples type declares it (Airflow's launchers), else TFX's
        # custom property (LocalDagRunner).
        values = artifact.properties if "span" in artifact.properties else \
            artifact.custom_properties
        span = values["span"].int_value if "span" in values else None
        if (span is not None and span not in found
                and artifact.state == metadata_store_pb2.Artifact.LIVE
                and _trained(store, artifact.id)):
            found[span] = artifact.id
    return found


def decide(summary: Dict[str, Any], data_root: str, store: metadata_store.MetadataStore,
           trigger_on: str = "drift_or_skew") -> Decision:
    """Whether this window starts a run, and why (or why not)."""
    window = summary["window"]
    features = above(summary, trigger_on)
    if not features:
        return Decision(False, f"window {window}: no feature above its threshold "
                               f"({_measured(summary, trigger_on)}): no run started")
    found = spans(data_root)
    if not found:
        return Decision(False, f"window {window}: {', '.join(features)} above threshold, but "
                               f"{data_root} holds no span-N folder to train on: no run "
                               "started", features=features)
    newest = found[-1]
    for execution in triggers(store):
        if (_prop(execution, "span") == newest and execution.last_known_state in _HOLDING
                and _prop(execution, "data_root") == layout.absolute(data_root)):
            return Decision(False, f"window {window}: span {newest} already triggered run "
                                   f"{_prop(execution, 'run_id') or '(starting)'} at window "
                                   f"{_prop(execution, 'window')}: no run started",
                            span=newest, features=features)
    trained = trained_spans(store)
    if newest in trained:
        return Decision(False, f"window {window}: {', '.join(features)} above threshold, but "
                               f"span {newest} (the newest in {data_root}) was already trained "
                               f"on (Examples artifact {trained[newest]}); a run starts when a "
                               "new span arrives: no run started", span=newest,
                        features=features)
    return Decision(True, f"window {window}: {', '.join(features)} above threshold "
                          f"({_measured(summary, trigger_on)}); new span {newest}",
                    span=newest, features=features)


# ---- the runners --------------------------------------------------------------------------


class LocalRunner:
    """pipeline/runners/local.run in a child process (multiprocessing, spawn), waited for:
    the child's output goes to the request's log file, and the run's TensorFlow state and
    memory end with it. The run id is the run's MLMD pipeline_run."""

    name = "local"

    def __init__(self, start_method: str = "spawn"):
        # spawn, not fork: the parent may hold TensorFlow, gRPC or server threads.
        self.context = multiprocessing.get_context(start_method)

    def start(self, request: RunRequest, store: metadata_store.MetadataStore) -> str:
        from hyperrec.pipeline.loop import local_run
        before = {c.id for c in _run_contexts(store)}
        child = self.context.Process(target=local_run.run_in_child,
                                     args=(dataclasses.asdict(request),),
                                     name=f"hyperrec-{request.run_name}")
        child.start()
        child.join()
        if child.exitcode != 0:
            tail = _tail(request.log_path)
            raise TriggerError(f"the local run exited with {child.exitcode}"
                               f"{' (log: ' + request.log_path + ')' if request.log_path else ''}"
                               f"{': ' + tail if tail else ''}")
        new = [c for c in _run_contexts(store) if c.id not in before]
        if not new:
            raise TriggerError("the local run finished but recorded no pipeline run in the "
                               "metadata store")
        return max(new, key=lambda c: c.id).name


def _run_contexts(store: metadata_store.MetadataStore) -> List[metadata_store_pb2.Context]:
    return list(store.get_contexts_by_type(RUN_CONTEXT_TYPE))  # [] before the first run


def _tail(path: str, lines: int = 5) -> str:
    if not path or not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        return " | ".join(line.strip() for line in f.read().splitlines()[-lines:])


class AirflowRunner:
    """Triggers the pipeline's DAG with the trigger as the run's conf and a run id per
    attempt (Airflow refuses a second run with the same id): through the REST API
    (POST /api/v1/dags/{dag_id}/dagRuns) when `url` is set, else `airflow dags trigger`."""

    name = "airflow"

    def __init__(self, dag_id: str, url: str = "", airflow: str = "",
                 env: Optional[Dict[str, str]] = None, timeout: float = 120.0):
        self.dag_id, self.url = dag_id, url.rstrip("/")
        self.airflow = airflow or os.path.join(os.path.dirname(sys.executable), "airflow")
        self.env, self.timeout = env, timeout

    def command(self, request: RunRequest) -> List[str]:
        return [self.airflow, "dags", "trigger", self.dag_id, "--run-id", request.run_name,
                "--conf", json.dumps(request.conf(), sort_keys=True)]

    def http_request(self, request: RunRequest) -> urllib.request.Request:
        body = json.dumps({"dag_run_id": request.run_name, "conf": request.conf()},
                          sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        user = os.environ.get("AIRFLOW_USERNAME", "")
        if user:
            token = f"{user}:{os.environ.get('AIRFLOW_PASSWORD', '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        return urllib.request.Request(f"{self.url}/api/v1/dags/{self.dag_id}/dagRuns",
                                      data=body, headers=headers, method="POST")

    def start(self, request: RunRequest, store: metadata_store.MetadataStore) -> str:
        del store  # Airflow's run writes MLMD itself, later
        if self.url:
            try:
                with urllib.request.urlopen(self.http_request(request),
                                            timeout=self.timeout) as response:
                    return json.load(response)["dag_run_id"]
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:500]
                raise TriggerError(f"Airflow REST API {self.url}: HTTP {err.code}: "
                                   f"{detail}") from err
            except (urllib.error.URLError, OSError) as err:
                raise TriggerError(f"Airflow REST API {self.url} unreachable: {err}") from err
        try:
            result = subprocess.run(self.command(request), capture_output=True, text=True,
                                    env=self.env, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise TriggerError(f"{self.airflow} dags trigger: {err}") from err
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise TriggerError(f"airflow dags trigger {self.dag_id} exited with "
                               f"{result.returncode}: {lines[-1] if lines else ''}")
        return request.run_name


class KubeflowRunner:
    """Compiles the run for the request's data root and submits it through
    pipeline/runners/kubeflow.py: to monitoring.kubeflow_host, or, with none, writes the spec
    and its submit.sh under WORKDIR/kubeflow/<run> (the run id is then that script)."""

    name = "kubeflow"

    def __init__(self, config: MonitoringConfig):
        self.config = config

    def start(self, request: RunRequest, store: metadata_store.MetadataStore) -> str:
        del store  # KFP keeps its own MLMD
        from hyperrec.components import config as config_lib
        from hyperrec.pipeline.runners import kubeflow
        runner = kubeflow.KubeflowRunner(
            image=self.config.kubeflow_image, pipeline_root=self.config.kubeflow_pipeline_root,
            serving_dir=self.config.kubeflow_serving_dir,
            out_dir=os.path.join(request.workdir, "kubeflow"),
            endpoint=self.config.kubeflow_host, experiment_name=self.config.kubeflow_experiment)
        try:
            result = runner.submit(config_lib.load(request.experiment or "default",
                                                   request.overrides),
                                   data_root=request.data_root,
                                   run_name=f"hyperrec-{request.run_name}")
        except (kubeflow.KubeflowCompileError, kubeflow.KubeflowSubmitError) as err:
            raise TriggerError(str(err)) from err
        return result.run_id if result.submitted else f"not submitted: {result.script}"


def runner_for(config: MonitoringConfig, experiment: str):
    """The runner MonitoringConfig names."""
    if config.runner == "local":
        return LocalRunner()
    if config.runner == "airflow":
        return AirflowRunner(config.airflow_dag_id or f"hyperrec-{experiment}",
                             config.airflow_url)
    if config.runner == "kubeflow":
        return KubeflowRunner(config)
    raise ValueError(f"monitoring.runner must be one of {RUNNERS}, got {config.runner!r}")


# ---- record and run -----------------------------------------------------------------------


def _record(store, decision: Decision, summary: Dict[str, Any], runner_name: str,
            data_root: str) -> metadata_store_pb2.Execution:
    execution = metadata_store_pb2.Execution(
        type_id=_trigger_type(store), last_known_state=metadata_store_pb2.Execution.RUNNING)
    values = {"span": decision.span, "reason": decision.reason,
              "features": ",".join(decision.features), "window": summary["window"],
              "runner": runner_name, "data_root": layout.absolute(data_root), "run_id": ""}
    for name, value in values.items():
        if isinstance(value, int):
            execution.custom_properties[name].int_value = value
        else:
            execution.custom_properties[name].string_value = value
    [execution.id] = store.put_executions([execution])
    return execution


def run(summary: Dict[str, Any], *, data_root: str, workdir: str, experiment: str,
        overrides: Sequence[str], store: metadata_store.MetadataStore, runner,
        window_dir: str, trigger_on: str = "drift_or_skew", metadata: str = "",
        announce: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Decides, records and starts; returns the trigger entry (also in summary['trigger']).
    `announce` gets one line before a runner starts (a local run takes minutes)."""
    decision = decide(summary, data_root, store, trigger_on)
    entry: Dict[str, Any] = {"started": False, "reason": decision.reason,
                             "span": decision.span, "features": decision.features,
                             "runner": runner.name, "run_id": None, "execution_id": None}
    if decision.start:
        execution = _record(store, decision, summary, runner.name, data_root)
        request = RunRequest(span=decision.span, reason=decision.reason,
                             window=summary["window"], execution_id=execution.id,
                             data_root=layout.absolute(data_root),
                             workdir=os.path.abspath(workdir), experiment=experiment,
                             overrides=tuple(overrides), metadata=metadata,
                             log_path=os.path.join(window_dir, RUN_LOG))
        entry["execution_id"] = execution.id
        if announce:
            announce(f"trigger: starting a {runner.name} run for span {decision.span} "
                     f"({decision.reason}); MLMD execution {execution.id}"
                     + (f"; log: {request.log_path}" if runner.name == "local" else ""))
        try:
            entry["run_id"] = runner.start(request, store)
            execution.last_known_state = metadata_store_pb2.Execution.COMPLETE
            entry["started"] = True
            if runner.name == "local":
                entry["log"] = request.log_path
        except TriggerError as err:
            execution.last_known_state = metadata_store_pb2.Execution.FAILED
            entry["error"] = str(err)
        execution.custom_properties["run_id"].string_value = entry["run_id"] or ""
        if "error" in entry:
            execution.custom_properties["error"].string_value = entry["error"]
        store.put_executions([execution])
    summary["trigger"] = entry
    return entry


def text_lines(entry: Dict[str, Any]) -> List[str]:
    if entry.get("error"):
        return [f"trigger: FAILED to start a {entry['runner']} run for span {entry['span']} "
                f"({entry['reason']}): {entry['error']}"]
    if not entry["started"]:
        return [f"trigger: {entry['reason']}"]
    return [f"trigger: started {entry['runner']} run {entry['run_id']} for span "
            f"{entry['span']} ({entry['reason']}); MLMD execution {entry['execution_id']}"]


def write_to_window(window_dir: str, summary: Dict[str, Any]) -> None:
    """summary.json and report.html of the window, with the trigger's decision in both."""
    from hyperrec.pipeline.loop import report
    staging = os.path.join(window_dir, "summary.json.tmp")
    with open(staging, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    os.replace(staging, os.path.join(window_dir, "summary.json"))
    entry = summary["trigger"]
    section = ("<section><h2>Retraining trigger</h2><p>" + html.escape(
        "; ".join(text_lines(entry))) + "</p></section>")
    page = report.html_page(summary).replace("</body>", section + "</body>", 1)
    with open(os.path.join(window_dir, "report.html"), "w") as f:
        f.write(page)
