"""The serving commands (serve, recommend, predict) and the production config files."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import json
import pathlib

import pytest
import yaml
from click.testing import CliRunner
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from hyperrec.pipeline.cli import serve as cli
from hyperrec.serving import cli as serving_cli
from hyperrec.serving import client, config
import standin_models
from hyperrec.serving.server import ModelServer, ServerOptions, options_from_flags

pytestmark = pytest.mark.timeout(120)

SERVING_DIR = pathlib.Path(hyperrec.serving.__file__).resolve().parent
STOCK_IMAGE = "tensorflow/serving:2.16.1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shipped config files, with models.config pointed at a stand-in recommender."""
    root = tmp_path_factory.mktemp("cli")
    standin_models.save_recommender(str(root / "hyperrec" / "1"))
    shipped = text_format.Parse((SERVING_DIR / "models.config").read_text(),
                                model_server_config_pb2.ModelServerConfig())
    shipped.model_config_list.config[0].base_path = str(root / "hyperrec")
    config_file = root / "models.config"
    config_file.write_text(text_format.MessageToString(shipped))
    options = options_from_flags(
        "ignored", None, str(config_file), grpc_port=0, rest_port=0, poll_seconds=0,
        batching=config.batching_options(True, str(SERVING_DIR / "batching_parameters.txt")),
        monitoring=config.read_monitoring_config_file(str(SERVING_DIR / "monitoring.config")))
    with ModelServer(options) as running:
        yield running


def invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_recommend_command(server, use_grpc):
    port = server.grpc_port if use_grpc else server.rest_port
    args = ["--user", "u1", "--history", "item-00,item-02", "--k", 3, "--device", "mobile",
            "--port", port, "--json"] + (["--grpc"] if use_grpc else [])
    result = invoke(cli.recommend, args)
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output)
    assert [r["item_id"] for r in ranked] == ["item-01", "item-03", "item-04"]  # history excluded
    assert ranked[0]["score"] > ranked[1]["score"] > ranked[2]["score"]


def test_recommend_prints_a_table(server):
    result = invoke(cli.recommend, ["--user", "u1", "--k", 2, "--port", server.rest_port])
    assert result.exit_code == 0 and "item-00" in result.output and "item-01" in result.output


def test_rest_and_grpc_clients_agree(server):
    rest = client.RestClient(port=server.rest_port)
    grpc_client = client.GrpcClient(port=server.grpc_port)
    try:
        kwargs = dict(user_id="u9", history=["item-05"], device="web", k=5, timestamp=1700000000)
        over_rest, over_grpc = rest.recommend(**kwargs), grpc_client.recommend(**kwargs)
        assert [i for i, _ in over_rest] == [i for i, _ in over_grpc]
        assert "item-05" not in [i for i, _ in over_rest]
        assert [s for _, s in over_rest] == pytest.approx([s for _, s in over_grpc])
        assert rest.status()["model_version_status"][0]["state"] == "AVAILABLE"
        assert grpc_client.status().model_version_status[0].version == 1
        assert "recommend" in rest.metadata()["metadata"]["signature_def"]["signature_def"]
        with pytest.raises(client.ServingClientError) as raised:
            rest.recommend("u", [], k=1, version=7)
        assert raised.value.code == 404
        with pytest.raises(client.ServingClientError) as raised:
            grpc_client.recommend("u", [], k=1, version=7)
        assert raised.value.code == "NOT_FOUND"
    finally:
        rest.close()
        grpc_client.close()


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_predict_command(server, tmp_path, use_grpc):
    port = server.grpc_port if use_grpc else server.rest_port
    transport = ["--grpc"] if use_grpc else []
    instances = json.dumps([{"user_id": "u1", "history_item_ids": ["item-00"],
                             "device": "d", "timestamp": 1, "k": 2}])
    result = invoke(cli.predict, ["--instances", instances, "--signature_name", "recommend",
                                  "--port", port] + transport)
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)["predictions"][0]
    assert row["item_ids"] == ["item-01", "item-02"]

    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"signature_name": "recommend", "inputs": {
        "user_id": ["u1"], "history_item_ids": [[""]], "device": ["d"], "timestamp": [1],
        "k": [1]}}))
    result = invoke(cli.predict, ["--file", request_file, "--port", port] + transport)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["item_ids"] == [["item-00"]]


def test_client_errors_are_reported_not_raised(server):
    result = invoke(cli.predict, ["--instances", "[1.0]", "--port", server.rest_port])
    assert result.exit_code != 0 and "400" in result.output
    result = invoke(cli.predict, ["--port", server.rest_port])
    assert result.exit_code != 0 and "give --instances" in result.output


def test_the_shipped_monitoring_config_exposes_metrics(server):
    rest = client.RestClient(port=server.rest_port)
    try:
        status, body = rest.request("GET", "/monitoring/prometheus/metrics")
    finally:
        rest.close()
    assert status == 200 and b":tensorflow:serving:request_count_total" in body


def test_serve_rejects_a_batching_file_without_batching(tmp_path):
    result = CliRunner().invoke(cli.serve, [
        "--model_base_path", str(tmp_path), "--batching_parameters_file",
        str(SERVING_DIR / "batching_parameters.txt")])
    assert result.exit_code == 2 and "without --enable_batching" in result.output


def test_the_shipped_config_files_parse():
    models = config.read_model_config_file(str(SERVING_DIR / "models.config"))
    assert [(m.name, m.base_path, m.policy.kind) for m in models] == [
        ("hyperrec", "/models/hyperrec", "latest")]
    assert config.read_monitoring_config_file(str(SERVING_DIR / "monitoring.config")) == \
        config.MonitoringOptions(True, "/monitoring/prometheus/metrics")
    batching = config.read_batching_parameters_file(str(SERVING_DIR / "batching_parameters.txt"))
    assert batching.pad_variable_length_inputs


def stock_args(document: str):
    compose = yaml.safe_load((SERVING_DIR / "docker-compose.yml").read_text())
    if document == "compose":
        service = compose["services"]["tf-serving"]
        return service["image"], service["command"], service["volumes"]
    deployment = next(d for d in yaml.safe_load_all((SERVING_DIR / "k8s.yaml").read_text())
                      if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return container["image"], container["args"], container["volumeMounts"]


@pytest.mark.parametrize("document", ["compose", "k8s"])
def test_deployments_run_the_stock_image_with_flags_our_server_accepts(document):
    image, args, mounts = stock_args(document)
    assert image == STOCK_IMAGE
    local = {"/config/": str(SERVING_DIR) + "/"}
    translated = []
    for arg in args:
        for remote, here in local.items():
            arg = arg.replace(remote, here)
        translated.append(arg)
    flags = serving_cli.parse_flags(translated + ["--model_base_path", "/unused"])
    assert flags.enable_batching is True
    assert flags.model_config_file.endswith("models.config")
    assert "/models/hyperrec" in json.dumps(mounts)
    services = list(yaml.safe_load_all((SERVING_DIR / "k8s.yaml").read_text()))
    assert {d["kind"] for d in services} == {"Deployment", "Service"}


def test_server_options_default_to_loopback():
    assert ServerOptions(models=[]).host == "127.0.0.1"
    assert serving_cli.parse_flags(["--model_base_path", "/x"]).host == "127.0.0.1"


def test_serve_rejects_an_unparsable_session_config(tmp_path):
    bad = tmp_path / "session.config"
    bad.write_text("intra_op_parallelism_threads: many\n")
    result = CliRunner().invoke(cli.serve, [
        "--model_base_path", str(tmp_path), "--tensorflow_session_config_file", str(bad)])
    assert result.exit_code == 2 and "Invalid protobuf file" in result.output


def test_session_config_reaches_tensorflow_and_thread_flags_override_it(tmp_path):
    """--tensorflow_session_config_file is applied before TensorFlow's context exists (a
    fresh interpreter, as `serve` is), and the thread flags win over its thread counts."""
    session = tmp_path / "session.config"
    session.write_text("intra_op_parallelism_threads: 3\ninter_op_parallelism_threads: 5\n"
                       "experimental { disable_thread_spinning: true }\n")
    script = (
        "import serving\n"
        "from serving import cli, config\n"
        f"cli._configure_tensorflow(config.read_session_config_file({str(session)!r}), 1, 0)\n"
        "from tensorflow.python.eager import context\n"
        "import tensorflow as tf\n"
        "tf.constant(1.0) + 1.0\n"
        "c = context.context().config\n"
        "print(c.intra_op_parallelism_threads, c.inter_op_parallelism_threads,\n"
        "      c.experimental.disable_thread_spinning)\n")
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[-3:] == ["1", "5", "True"]


def test_rest_threads_flag_reaches_the_server_options(tmp_path):
    flags = serving_cli.parse_flags(["--model_base_path", "/x", "--rest_api_num_threads", "7"])
    assert flags.rest_api_num_threads == 7
    options = options_from_flags("m", "/x", None, rest_api_num_threads=7)
    assert options.rest_api_num_threads == 7
