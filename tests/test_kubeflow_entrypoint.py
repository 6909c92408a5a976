"""Kubeflow-compiled tasks started the way KFP starts them: each task's container command and
args from the compiled spec (TFX's Kubeflow V2 container entrypoint, and ExampleGen's driver
hook before it), `{{$}}` resolved by kfp's own placeholder code to an ExecutorInput built
from the spec, in a subprocess of this venv's `python` (the project installed) with the
image's ENV and WORKDIR. Each task's outputs are read back and must be where the next
task's input points.

Stand-ins, each one place: what the KFP backend does between tasks (this module builds each
ExecutorInput: constant parameters from the task, input artifacts from the producers'
executor_output.json, output URIs under the pipeline root, and the driver's span and
fingerprint applied before the executor starts, as the managed service does), the image's
filesystem (its WORKDIR /hyperrec is this checkout), and the two blessings the Pusher takes:
the RankingEvaluator and InfraValidator tasks (a TFMA run and a model server) are skipped
and their `blessing` outputs written as those tasks' executor output (blessed=1) for the
types the spec's Pusher inputs name. StatisticsGen and the validation gates are skipped too:
Transform depends on them for ordering only (no artifact of theirs is an input on this
chain). kfp.local (present in kfp 2.5.0) cannot do this: it runs single components without
input artifacts, and its SubprocessRunner refuses container components.
"""
import concurrent.futures
import json
import os
import re
import subprocess
import time

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from google.protobuf import json_format
from kfp.local import executor_input_utils, placeholder_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from hyperrec.components import config as config_lib
from hyperrec.data import synthetic
from hyperrec.pipeline.runners import kubeflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
IMAGE = "registry.example.com/team/hyperrec:test"
SEED = 7
# The chain to a pushed model in waves, as KFP starts them: a wave's tasks side by side once
# the tasks they read from are done. The others are skipped (module doc).
WAVES = (("FileBasedExampleGen", "ImportSchemaGen"), ("Transform",), ("Trainer",), ("Pusher",))
CHAIN = tuple(name for wave in WAVES for name in wave)
SKIPPED_PRODUCERS = {("RankingEvaluator", "blessing"): "BLESSED",
                     ("InfraValidator", "blessing"): "INFRA_BLESSED"}
# Orchestration is under test, not the model: a few steps of one epoch.
OVERRIDES = ("model.epochs=1", "model.train_steps=4", "model.eval_steps=2")
TASK_TIMEOUT = 600


def image_env():
    """The image's ENV lines (Dockerfile), over this environment, `python` from the venv."""
    with open(os.path.join(REPO, "Dockerfile")) as f:
        dockerfile = f.read().replace("\\\n", " ")
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _in_image(value):
    """The spec names files inside the image; the image's WORKDIR is this checkout here."""
    prefix = kubeflow.IMAGE_PROJECT_ROOT + "/"
    return os.path.join(REPO, value[len(prefix):]) if value.startswith(prefix) else value


class LocalKfpRun:
    """Starts tasks of a compiled PipelineJob on this machine, as a KFP backend would."""

    def __init__(self, job, pipeline_root, log_dir):
        self.spec = job["pipelineSpec"]
        self.root = os.path.join(pipeline_root, "local-run")
        self.log_dir = log_dir
        self.outputs = {}  # task -> ExecutorOutput it wrote
        self.inputs = {}  # task -> ExecutorInput it was started with
        self.argv = {}  # task -> [(hook, argv)]
        self.seconds = {}

    def task(self, name):
        task = self.spec["root"]["dag"]["tasks"][name]
        component = self.spec["components"][task["componentRef"]["name"]]
        container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]][
            "container"]
        return task, component, container

    def executor_input(self, name):
        task, component, _ = self.task(name)
        task_root = os.path.join(self.root, name)
        executor_input = pipeline_spec_pb2.ExecutorInput()
        # Schema 2.0.0 (no --json_serialized_inputs_spec_args): the entrypoint reads the
        # legacy `parameters` field.
        for key, value in task["inputs"].get("parameters", {}).items():
            constant = json_format.ParseDict(value["runtimeValue"]["constantValue"],
                                             pipeline_spec_pb2.Value())
            if constant.WhichOneof("value") == "string_value":
                constant.string_value = _in_image(constant.string_value)
            executor_input.inputs.parameters[key].CopyFrom(constant)
        definitions = component.get("inputDefinitions", {}).get("artifacts", {})
        for key, value in task["inputs"].get("artifacts", {}).items():
            source = value["taskOutputArtifact"]
            produced = self.outputs[source["producerTask"]].artifacts[
                source["outputArtifactKey"]].artifacts[0]
            artifact = executor_input.inputs.artifacts[key].artifacts.add()
            artifact.CopyFrom(produced)
            json_format.ParseDict(definitions[key]["artifactType"], artifact.type)
        for key, value in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            executor_input.outputs.artifacts[key].CopyFrom(executor_input_utils.make_artifact_list(
                name=key, task_root=task_root, artifact_type=json_format.ParseDict(
                    value["artifactType"], pipeline_spec_pb2.ArtifactTypeSchema())))
        executor_input.outputs.output_file = os.path.join(task_root, "executor_output.json")
        return executor_input

    def _start(self, name, hook, command, args, executor_input):
        argv = placeholder_utils.replace_placeholders(
            full_command=list(command) + list(args),
            executor_input_dict=json_format.MessageToDict(executor_input),
            pipeline_resource_name="local-run", task_resource_name=name,
            pipeline_root=self.root)
        self.argv.setdefault(name, []).append((hook, argv))
        log = os.path.join(self.log_dir, f"{name}-{hook}.log")
        with open(log, "w") as out:
            result = subprocess.run(argv, cwd=REPO, env=image_env(), stdout=out,
                                    stderr=subprocess.STDOUT, timeout=TASK_TIMEOUT)
        if result.returncode != 0:
            with open(log) as f:
                tail = f.read()[-4000:]
            pytest.fail(f"{name} {hook} exited with {result.returncode}:\n{tail}")
        with open(executor_input.outputs.output_file) as f:
            return json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput(),
                                     ignore_unknown_fields=True)

    def run(self, name):
        started = time.monotonic()
        _, _, container = self.task(name)
        executor_input = self.executor_input(name)
        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook:
            driver_output = self._start(name, "driver", hook["command"], hook["args"],
                                        executor_input)
            apply_driver_output(executor_input, driver_output)
        self.inputs[name] = executor_input
        self.outputs[name] = self._start(name, "executor", container["command"],
                                         container["args"], executor_input)
        self.seconds[name] = time.monotonic() - started

    def stand_in(self, producer, key, marker):
        """`producer`'s `key` output as its executor output would name it: blessed."""
        uri = os.path.join(self.root, producer, key)
        os.makedirs(uri)
        open(os.path.join(uri, marker), "w").close()
        output = self.outputs.setdefault(producer, pipeline_spec_pb2.ExecutorOutput())
        artifact = output.artifacts[key].artifacts.add(uri=uri, name=f"{producer}-{key}")
        artifact.metadata.update({"blessed": 1})


def apply_driver_output(executor_input, driver_output):
    """What the service does between the driver hook and the executor: the driver's span,
    version, fingerprint and resolved input_config become the task's parameters, and its
    output artifact's properties the executor's."""
    for key, value in driver_output.parameter_values.items():
        parameter = executor_input.inputs.parameters[key]
        if value.WhichOneof("kind") == "number_value":
            parameter.int_value = int(value.number_value)
        else:
            parameter.string_value = value.string_value
    for key, artifacts in driver_output.artifacts.items():
        executor_input.outputs.artifacts[key].artifacts[0].metadata.CopyFrom(
            artifacts.artifacts[0].metadata)


@pytest.fixture(scope="module")
def kfp_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("kfp-entrypoint")
    data, root, serving, logs = (str(base / name) for name in ("data", "root", "serving",
                                                                 "logs"))
    os.makedirs(logs)
    synthetic.generate("tiny", SEED, data)
    spec_path = kubeflow.compile_pipeline(
        config_lib.load("tiny", OVERRIDES), image=IMAGE, pipeline_root=root, data_root=data,
        serving_dir=serving, output_path=str(base / "hyperrec-tiny.json"), tasks_run_here=True)
    with open(spec_path) as f:
        run = LocalKfpRun(json.load(f), root, logs)
    for (producer, key), marker in SKIPPED_PRODUCERS.items():
        run.stand_in(producer, key, marker)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max(map(len, WAVES))) as pool:
        for wave in WAVES:
            for done in [pool.submit(run.run, name) for name in wave]:
                done.result()
    run.total_seconds = time.monotonic() - started
    print(f"\nKFP entrypoint chain: {run.total_seconds:.0f} s ("
          + ", ".join(f"{n} {s:.0f} s" for n, s in run.seconds.items()) + ")")
    run.serving, run.data = serving, data
    return run


def _output(run, task, key):
    return run.outputs[task].artifacts[key].artifacts[0]


def _input(run, task, key):
    return run.inputs[task].inputs.artifacts[key].artifacts[0]


def test_each_task_started_with_its_container_command_and_args(kfp_run):
    for name in CHAIN:
        _, _, container = kfp_run.task(name)
        expected = [("executor", container["command"] + container["args"])]
        if "lifecycle" in container:
            hook = container["lifecycle"]["preCacheCheck"]
            expected.insert(0, ("driver", hook["command"] + hook["args"]))
        started = kfp_run.argv[name]
        assert [hook for hook, _ in started] == [hook for hook, _ in expected], name
        for (_, argv), (_, spec_argv) in zip(started, expected):
            assert argv[:3] == ["python", "-m", spec_argv[2]], name
            placeholder = spec_argv.index("{{$}}")
            assert argv[:placeholder] + argv[placeholder + 1:] == \
                spec_argv[:placeholder] + spec_argv[placeholder + 1:], name
            started_with = json_format.ParseDict(json.loads(argv[placeholder]),
                                                 pipeline_spec_pb2.ExecutorInput())
            assert started_with.outputs.output_file == \
                kfp_run.inputs[name].outputs.output_file, name
        # The executor's placeholder became the ExecutorInput this module built for it.
        assert json.loads(started[-1][1][placeholder]) == json_format.MessageToDict(
            kfp_run.inputs[name]), name
    assert kfp_run.argv["FileBasedExampleGen"][1][1][2] == \
        "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def test_the_driver_resolved_the_latest_span_and_example_gen_wrote_it(kfp_run):
    latest = max(int(name.split("-")[1]) for name in os.listdir(kfp_run.data)
                 if name.startswith("span-"))
    executor_input = kfp_run.inputs["FileBasedExampleGen"]
    assert executor_input.inputs.parameters["span"].int_value == latest
    assert f"span-{latest}/" in executor_input.inputs.parameters["input_config"].string_value
    examples = _output(kfp_run, "FileBasedExampleGen", "examples")
    # The driver's span (a custom property beside the type's own `span` field) and the
    # executor's record of the window it read.
    assert examples.metadata["custom:span"] == latest
    assert examples.metadata["latest_span"] == latest
    assert json.loads(examples.metadata["split_names"]) == ["train", "eval", "catalog"]
    for split in ("train", "eval", "catalog"):
        files = os.listdir(os.path.join(examples.uri, f"Split-{split}"))
        assert files and all(f.endswith(".gz") for f in files), (split, files)
    for consumer in ("Transform", "Trainer"):
        assert _input(kfp_run, consumer, "examples").uri == examples.uri, consumer


def test_schema_and_transform_graph_are_where_the_trainer_reads_them(kfp_run):
    schema = _output(kfp_run, "ImportSchemaGen", "schema")
    assert os.path.isfile(os.path.join(schema.uri, "schema.pbtxt"))
    graph = _output(kfp_run, "Transform", "transform_graph")
    assert os.path.isfile(os.path.join(graph.uri, "transform_fn", "saved_model.pb"))
    assert os.path.isdir(os.path.join(graph.uri, "transformed_metadata"))
    assert _input(kfp_run, "Trainer", "transform_graph").uri == graph.uri
    for consumer in ("Transform", "Trainer"):
        assert _input(kfp_run, consumer, "schema").uri == schema.uri, consumer


def test_trainer_model_is_what_the_pusher_pushed(kfp_run):
    model = _output(kfp_run, "Trainer", "model")
    serving_model = os.path.join(model.uri, "Format-Serving")
    assert os.path.isfile(os.path.join(serving_model, "saved_model.pb"))
    assert _input(kfp_run, "Pusher", "model").uri == model.uri
    pushed = _output(kfp_run, "Pusher", "pushed_model")
    assert pushed.metadata["pushed"] == 1
    destination = pushed.metadata["pushed_destination"]
    assert os.path.dirname(destination) == kfp_run.serving
    assert os.listdir(kfp_run.serving) == [os.path.basename(destination)]
    assert sorted(os.listdir(destination)) == sorted(os.listdir(serving_model))


def test_stand_in_blessings_have_the_types_the_pusher_inputs_name(kfp_run):
    definitions = kfp_run.task("Pusher")[1]["inputDefinitions"]["artifacts"]
    for key, title in (("model_blessing", "tfx.ModelBlessing"),
                       ("infra_blessing", "tfx.InfraBlessing")):
        schema = definitions[key]["artifactType"]["instanceSchema"]
        assert schema.startswith(f"title: {title}\n"), key
        assert _input(kfp_run, "Pusher", key).type.instance_schema == schema, key
