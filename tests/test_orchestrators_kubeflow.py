"""Kubeflow Pipelines: the compiled pipeline JSON is a strict KFP PipelineJob/PipelineSpec, loads
with the kfp SDK, runs every task in the given image, names only executors that import here,
and refers to nothing on the compiling machine. `submit` sends a run with the real kfp.Client
(or writes the `kfp run create` line that does, which is run here too) to a loopback stand-in
for the KFP v2beta1 REST API that records each request. Tasks started through the container
entrypoint: tests/test_kubeflow_entrypoint.py."""
import http.server
import importlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
import yaml
from click.testing import CliRunner
from google.protobuf import json_format
from kfp import components as kfp_components
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.dsl.components.base import base_executor
from tfx.dsl.components.common import resolver as resolver_lib
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy)
from tfx.utils import import_utils

from hyperrec.components import config as config_lib
from hyperrec.pipeline import cli
from hyperrec.pipeline import pipeline as pipeline_def
from hyperrec.pipeline.runners import kubeflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "registry.example.com/team/hyperrec:1.2.3"
ROOT = "gs://hyperrec-test-bucket"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("kfp") / "hyperrec-tiny.json"
    result = CliRunner().invoke(cli.main, [
        "compile", "--orchestrator", "kubeflow", "--experiment", "tiny", "--image", IMAGE,
        "--pipeline-root", f"{ROOT}/root", "--data-root", f"{ROOT}/data",
        "--serving-dir", f"{ROOT}/serving/hyperrec", "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    return text, json.loads(text)


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _container_executors(job):
    return {name: spec["container"]
            for name, spec in job["pipelineSpec"]["deploymentSpec"]["executors"].items()
            if "container" in spec}


def _resolver_tasks(resolver):
    """KFP has no resolver nodes: KubeflowV2DagRunner turns the latest-blessed-model strategy
    into two query tasks (blessing, then its model) and any other resolver into one."""
    if resolver.exec_properties.get("resolver_class") is LatestBlessedModelStrategy:
        return {f"{resolver.id}-model-blessing-resolver", f"{resolver.id}-model-resolver"}
    return {resolver.id}


def _tasks_by_kind():
    """(container tasks, resolver query tasks) of the tiny pipeline."""
    pipeline = pipeline_def.create_pipeline(
        config_lib.load("tiny"), data_root=f"{ROOT}/data", pipeline_root=f"{ROOT}/root",
        serving_dir=f"{ROOT}/serving")
    resolvers = [c for c in pipeline.components if isinstance(c, resolver_lib.Resolver)]
    assert any(r.id == "latest_blessed_model_resolver" for r in resolvers)
    queries = set().union(*(_resolver_tasks(r) for r in resolvers))
    containers = {c.id for c in pipeline.components} - {r.id for r in resolvers}
    return containers, queries


def _expected_tasks():
    containers, queries = _tasks_by_kind()
    return containers | queries


def test_spec_parses_strictly_into_kfp_protos(compiled):
    text, job = compiled
    # No ignore_unknown_fields: a field KFP does not know is an error, not silence.
    pipeline_job = json_format.Parse(text, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert spec.schema_version == "2.0.0"
    assert spec.pipeline_info.name == "hyperrec-tiny"
    assert pipeline_job.runtime_config.gcs_output_directory == f"{ROOT}/root"
    assert set(spec.root.dag.tasks) == _expected_tasks()
    for name, task in spec.root.dag.tasks.items():
        assert task.component_ref.name in spec.components, name
        assert spec.components[task.component_ref.name].executor_label in \
            spec.deployment_spec.fields["executors"].struct_value.fields, name
        for upstream in task.dependent_tasks:
            assert upstream in spec.root.dag.tasks, (name, upstream)


def test_spec_loads_with_the_kfp_sdk(compiled):
    _, job = compiled
    component = kfp_components.load_component_from_text(json.dumps(job["pipelineSpec"]))
    assert component.name == "hyperrec-tiny"
    assert set(component.pipeline_spec.root.dag.tasks) == _expected_tasks()


def test_every_task_runs_in_the_given_image(compiled):
    _, job = compiled
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = _container_executors(job)
    # Only the resolvers' queries run without a container (KFP answers them itself).
    container_tasks, queries = _tasks_by_kind()
    assert set(executors) - set(containers) == {f"{t}_executor" for t in queries}
    assert set(containers) == {f"{t}_executor" for t in container_tasks}
    for name, container in containers.items():
        assert container["image"] == IMAGE, name


def test_every_executor_and_entry_point_imports_here(compiled):
    _, job = compiled
    for name, container in _container_executors(job).items():
        args = container["args"]
        executor_class = import_utils.import_class_by_path(
            args[args.index("--executor_class_path") + 1])
        assert issubclass(executor_class, base_executor.BaseExecutor), name
        hooks = [container["command"]] + [
            hook["command"] for hook in container.get("lifecycle", {}).values()]
        for command in hooks:
            assert command[:2] == ["python", "-m"], (name, command)
            assert importlib.util.find_spec(command[2]) is not None, (name, command)
    # Functions named by import path inside parameters (preprocessing_fn, run_fn).
    named = {_constant(job, "Transform", "preprocessing_fn"), _constant(job, "Trainer", "run_fn")}
    assert named == {pipeline_def.PREPROCESSING_FN, pipeline_def.RUN_FN}
    for path in named:
        module, _, function = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function)), path


def _constant(job, task, parameter):
    value = job["pipelineSpec"]["root"]["dag"]["tasks"][task]["inputs"]["parameters"][parameter]
    return value["runtimeValue"]["constantValue"]["stringValue"]


def test_no_path_of_the_compiling_machine_appears(compiled):
    text, job = compiled
    machine = {REPO, os.path.realpath(REPO), os.getcwd(), tempfile.gettempdir(),
               os.path.expanduser("~")} - {"/", ""}
    for string in _strings(job):
        for path in machine:
            # As a path: itself or a prefix ("gs://bucket/root" does not name /root).
            assert string != path and not re.search(
                rf"(^|[\s='\"]){re.escape(path)}/", string), (path, string[:200])
    # Every absolute path in the spec is inside the image's project folder.
    absolute = re.compile(r"(?<![\w.:/\-}])/[\w.\-]+(?:/[\w.\-]+)*")
    found = {m for s in _strings(job) for m in absolute.findall(s)}
    assert found == {kubeflow.image_schema_path(config_lib.load("tiny"))}


def test_schema_is_named_by_its_path_inside_the_image(compiled):
    _, job = compiled
    schema_file = _constant(job, "ImportSchemaGen", "schema_file")
    assert schema_file == "/hyperrec/schemas/schema.pbtxt"
    # The same relative file exists in the checkout the image copies.
    assert os.path.isfile(os.path.join(REPO, "schemas", "schema.pbtxt"))


@pytest.mark.parametrize("flag,value,message", [
    ("--data-root", "/home/me/data", "--data-root must be a URI"),
    ("--pipeline-root", "relative/root", "--pipeline-root must be a URI"),
    ("--serving-dir", "", "--serving-dir must be a URI"),
    ("--image", "not an image", "--image must be an image reference"),
])
def test_a_host_path_or_bad_image_is_refused_with_its_flag(tmp_path, flag, value, message):
    args = {"--image": IMAGE, "--pipeline-root": f"{ROOT}/root", "--data-root": f"{ROOT}/data",
            "--serving-dir": f"{ROOT}/serving"}
    args[flag] = value
    out = tmp_path / "spec.json"
    result = CliRunner().invoke(cli.main, [
        "compile", "--orchestrator", "kubeflow", "--experiment", "tiny", "--output", str(out),
        *[item for pair in args.items() for item in pair]])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_yaml_output_is_the_bare_pipeline_spec_kfp_uploads(tmp_path):
    path = kubeflow.compile_pipeline(
        config_lib.load("tiny"), image=IMAGE, pipeline_root=f"{ROOT}/root",
        data_root=f"{ROOT}/data", serving_dir=f"{ROOT}/serving",
        output_path=str(tmp_path / "hyperrec.yaml"))
    text = open(path).read()
    assert text.startswith("# PIPELINE DEFINITION\n# Name: hyperrec-tiny\n")
    spec = json_format.ParseDict(yaml.safe_load(text), pipeline_spec_pb2.PipelineSpec())
    assert set(spec.root.dag.tasks) == _expected_tasks()
    component = kfp_components.load_component_from_file(path)
    assert component.name == "hyperrec-tiny"


# ---- submit -------------------------------------------------------------------------------
# The KFP side is a stand-in: a loopback HTTP server answering the KFP v2beta1 REST calls
# kfp.Client (and the kfp CLI) make to create a run, recording each request; the tests assert
# on what the real client sent.

RUN_NAME = "retrain-span-4-7"
S3_DATA = "s3://hyperrec-test-bucket/data"


class KfpStandIn(http.server.ThreadingHTTPServer):
    """healthz, experiments (list by name, create), runs (create, get), as KFP 2.0 answers."""

    def __init__(self, refuse_runs: str = ""):
        super().__init__(("127.0.0.1", 0), _KfpHandler)
        self.requests, self.experiments, self.runs = [], {}, {}
        self.refuse_runs = refuse_runs
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self, method, path):
        return [body for m, p, _, body in self.requests if (m, p) == (method, path)]


class _KfpHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # the test's output, not an access log
        pass

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append((self.command, url.path, query, body))
        return url.path, query, body

    def do_GET(self):  # noqa: N802 (http.server's name)
        path, query, _ = self._record()
        server = self.server
        if path == "/apis/v2beta1/healthz":
            return self._reply(200, {"multi_user": False, "tag_name": "2.0.5"})
        if path == "/apis/v2beta1/experiments":
            [predicate] = json.loads(query["filter"])["predicates"]
            found = [e for e in server.experiments.values()
                     if e["display_name"] == predicate["stringValue"]]
            return self._reply(200, {"experiments": found, "total_size": len(found)}
                               if found else {})
        if path.startswith("/apis/v2beta1/runs/") and path.rsplit("/", 1)[1] in server.runs:
            return self._reply(200, server.runs[path.rsplit("/", 1)[1]])
        return self._reply(404, {"error": f"no {path}", "code": 5})

    def do_POST(self):  # noqa: N802
        path, _, body = self._record()
        server = self.server
        if path == "/apis/v2beta1/experiments":
            experiment = {**body, "experiment_id": f"experiment-{len(server.experiments) + 1}",
                          "created_at": "2026-12-07T00:00:00Z", "storage_state": "AVAILABLE"}
            server.experiments[experiment["experiment_id"]] = experiment
            return self._reply(200, experiment)
        if path == "/apis/v2beta1/runs":
            if server.refuse_runs:
                return self._reply(400, {"error": server.refuse_runs, "code": 3})
            run = {**body, "run_id": f"run-{len(server.runs) + 1}", "state": "PENDING",
                   "created_at": "2026-12-07T00:00:01Z", "storage_state": "AVAILABLE"}
            server.runs[run["run_id"]] = run
            return self._reply(200, run)
        return self._reply(404, {"error": f"no {path}", "code": 5})


@pytest.fixture
def kfp_server():
    server = KfpStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _submit(tmp_path, **kwargs):
    return kubeflow.submit(
        config_lib.load("tiny"), data_root=S3_DATA, pipeline_root=f"{ROOT}/root",
        serving_dir=f"{ROOT}/serving/hyperrec", image=IMAGE, out_dir=str(tmp_path / "runs"),
        run_name=RUN_NAME, **kwargs)


def _uploaded_run(server, spec_path, experiment_name):
    """The one run the client created: the spec file as uploaded, under the named
    experiment (looked up by name first, then created), rooted at the pipeline root."""
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    assert spec["root"]["dag"]["tasks"]["FileBasedExampleGen"]["inputs"]["parameters"][
        "input_base"]["runtimeValue"]["constantValue"]["stringValue"] == S3_DATA
    assert spec["defaultPipelineRoot"] == f"{ROOT}/root"
    [lookup] = [q for m, p, q, _ in server.requests
                if (m, p) == ("GET", "/apis/v2beta1/experiments")]
    assert json.loads(lookup["filter"])["predicates"] == [
        {"operation": 1, "key": "display_name", "stringValue": experiment_name}]
    [experiment] = server.bodies("POST", "/apis/v2beta1/experiments")
    assert experiment["display_name"] == experiment_name
    [run] = server.bodies("POST", "/apis/v2beta1/runs")
    assert run["display_name"] == RUN_NAME
    assert run["experiment_id"] == "experiment-1"
    assert run["pipeline_spec"] == spec
    return run


def test_without_an_endpoint_the_spec_and_its_submit_command_are_written(tmp_path,
                                                                        kfp_server):
    result = _submit(tmp_path)
    assert not result.submitted and result.run_id == ""
    run_dir = tmp_path / "runs" / RUN_NAME
    assert result.spec_path == str(run_dir / kubeflow.SPEC_FILE)
    assert result.script == str(run_dir / kubeflow.SUBMIT_SCRIPT)
    assert result.command == ["kfp", "--endpoint", "$KFP_ENDPOINT", "run", "create",
                              "--experiment-name", "hyperrec", "--run-name", RUN_NAME,
                              "--package-file", result.spec_path]
    assert os.access(result.script, os.X_OK)
    assert not kfp_server.requests  # nothing was sent
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
           + os.environ["PATH"]}
    env.pop("KFP_ENDPOINT", None)
    unset = subprocess.run([result.script], env=env, capture_output=True, text=True,
                           timeout=60)
    assert unset.returncode != 0 and "set KFP_ENDPOINT" in unset.stderr
    # The written command, run by hand, submits the same run through kfp's CLI.
    submitted = subprocess.run([result.script], env={**env, "KFP_ENDPOINT": kfp_server.url},
                               capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    assert "run-1" in submitted.stdout
    run = _uploaded_run(kfp_server, result.spec_path, "hyperrec")
    # The CLI has no pipeline-root flag: the spec's default root is the one that counts.
    assert run["runtime_config"] == {"parameters": {}}


def test_with_an_endpoint_the_run_is_created_through_kfp_client(tmp_path, kfp_server):
    runner = kubeflow.KubeflowRunner(
        image=IMAGE, pipeline_root=f"{ROOT}/root", serving_dir=f"{ROOT}/serving/hyperrec",
        out_dir=str(tmp_path / "runs"), endpoint=kfp_server.url, experiment_name="retraining")
    result = runner.submit(config_lib.load("tiny"), data_root=S3_DATA, run_name=RUN_NAME)
    assert result.submitted
    assert (result.run_id, result.experiment_id) == ("run-1", "experiment-1")
    assert result.run_url == f"{kfp_server.url}/#/runs/details/run-1"
    run = _uploaded_run(kfp_server, result.spec_path, "retraining")
    assert run["runtime_config"] == {"pipeline_root": f"{ROOT}/root", "parameters": {}}
    assert os.path.isfile(result.script)  # the same run can be resubmitted by hand


def test_a_refused_or_unreachable_endpoint_is_named(tmp_path, kfp_server):
    kfp_server.refuse_runs = "pipeline spec is invalid"
    with pytest.raises(kubeflow.KubeflowSubmitError,
                       match=f"Kubeflow Pipelines at {kfp_server.url}: .*400"):
        _submit(tmp_path, endpoint=kfp_server.url)
    closed = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(kubeflow.KubeflowSubmitError,
                       match=f"Kubeflow Pipelines at {closed} is unreachable"):
        _submit(tmp_path, endpoint=closed)
    # What was compiled stays, with the command to submit it once the endpoint is back.
    assert os.path.isfile(tmp_path / "runs" / RUN_NAME / kubeflow.SUBMIT_SCRIPT)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_refuses_a_local_data_root_and_unknown_parameters(tmp_path):
    with pytest.raises(kubeflow.KubeflowCompileError, match="--data-root must be a URI"):
        kubeflow.submit(config_lib.load("tiny"), data_root=str(tmp_path),
                        pipeline_root=f"{ROOT}/root", serving_dir=f"{ROOT}/serving",
                        image=IMAGE, out_dir=str(tmp_path / "runs"), run_name=RUN_NAME)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(kubeflow.KubeflowCompileError,
                       match="the pipeline takes no run parameter span"):
        _submit(tmp_path, parameters={"span": 4})
