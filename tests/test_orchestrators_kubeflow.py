"""Kubeflow Pipelines: the compiled pipeline JSON is a strict KFP PipelineJob/PipelineSpec, loads
with the kfp SDK, runs every task in the given image, names only executors that import here,
and refers to nothing on the compiling machine."""
import importlib
import importlib.util
import json
import os
import re
import tempfile

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
