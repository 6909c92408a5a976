"""Conformance of our model server with TF Serving's REST and gRPC APIs, over real sockets.

The expectations are TF Serving's own (http_rest_api_handler_test.cc, json_tensor.cc,
predict_util.cc, get_model_status_impl.cc): status JSON, routing, error codes and bodies.
REST is spoken with http.client, gRPC with the official tensorflow_serving.apis stubs.
"""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import base64
import http.client
import json
import os
import textwrap

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from hyperrec.serving import config
import standin_models
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(120)

MODEL = "hpt"  # versions 1 (y = x/2 + 2) and 2 (y = x/2 + 3), labels stable=1, canary=2
SINGLE = "single"  # version 1 only


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    standin_models.save_half_plus_two(str(root / "hpt" / "1"), offset=2.0)
    standin_models.save_half_plus_two(str(root / "hpt" / "2"), offset=3.0)
    standin_models.save_half_plus_two(str(root / "single" / "1"), offset=2.0)
    config_file = root / "models.config"
    config_file.write_text(textwrap.dedent(f"""\
        model_config_list {{
          config {{
            name: "{MODEL}"
            base_path: "{root / 'hpt'}"
            model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 2 }}
          }}
          config {{
            name: "{SINGLE}"
            base_path: "{root / 'single'}"
            model_platform: "tensorflow"
          }}
        }}
        """))
    options = ServerOptions(
        models=config.read_model_config_file(str(config_file)), grpc_port=0, rest_port=0,
        monitoring=config.MonitoringOptions(prometheus_enabled=True),
        http=HttpLimits(max_request_bytes=256 * 1024), poll_seconds=0)
    with ModelServer(options) as running:
        yield running


@pytest.fixture
def rest(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    yield connection
    connection.close()


def call(connection, method, path, body=None):
    """(status, content type, parsed JSON body) of one REST exchange."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    connection.request(method, path, body=body)
    answer = connection.getresponse()
    data = answer.read()
    return answer.status, answer.getheader("Content-Type"), json.loads(data)


def error_of(connection, method, path, body=None, expected_status=400):
    status, content_type, doc = call(connection, method, path, body)
    assert status == expected_status, doc
    assert content_type == "application/json"
    assert list(doc) == ["error"] and isinstance(doc["error"], str)
    return doc["error"]


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


# ---- model status and metadata -------------------------------------------------------------

def test_status_json_is_exactly_tf_servings(rest):
    status, content_type, doc = call(rest, "GET", f"/v1/models/{SINGLE}")
    assert status == 200 and content_type == "application/json"
    assert doc == {"model_version_status": [{
        "version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_status_lists_every_served_version_newest_first(rest):
    _, _, doc = call(rest, "GET", f"/v1/models/{MODEL}")
    assert [(s["version"], s["state"]) for s in doc["model_version_status"]] == [
        ("2", "AVAILABLE"), ("1", "AVAILABLE")]


@pytest.mark.parametrize("path,version", [(f"/v1/models/{MODEL}/versions/1", "1"),
                                          (f"/v1/models/{MODEL}/labels/canary", "2")])
def test_status_of_one_version_by_number_or_label(rest, path, version):
    _, _, doc = call(rest, "GET", path)
    assert doc == {"model_version_status": [{"version": version, "state": "AVAILABLE",
                                             "status": {"error_code": "OK", "error_message": ""}}]}


def test_metadata_has_signature_defs(rest):
    status, _, doc = call(rest, "GET", f"/v1/models/{MODEL}/versions/1/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = doc["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert default["inputs"]["x"]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"


def test_metadata_by_label_and_latest(rest):
    assert call(rest, "GET", f"/v1/models/{MODEL}/labels/stable/metadata")[2][
        "model_spec"]["version"] == "1"
    assert call(rest, "GET", f"/v1/models/{MODEL}/metadata")[2]["model_spec"]["version"] == "2"


# ---- predict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path,expected", [
    (f"/v1/models/{MODEL}:predict", [3.5, 4.0]),  # latest is version 2
    (f"/v1/models/{MODEL}/versions/1:predict", [2.5, 3.0]),
    (f"/v1/models/{MODEL}/versions/2:predict", [3.5, 4.0]),
    (f"/v1/models/{MODEL}/labels/stable:predict", [2.5, 3.0]),
    (f"/v1/models/{MODEL}/labels/canary:predict", [3.5, 4.0]),
    (f"/V1/MODELS/{MODEL}/VERSIONS/1:predict", [2.5, 3.0]),  # TF Serving's regexes ignore case
])
def test_predict_by_latest_version_and_label(rest, path, expected):
    status, content_type, doc = call(rest, "POST", path, {"instances": [1.0, 2.0]})
    assert status == 200 and content_type == "application/json"
    assert doc == {"predictions": expected}


def test_row_format_answers_predictions_and_columnar_answers_outputs(rest):
    path = f"/v1/models/{MODEL}/versions/1:predict"
    assert call(rest, "POST", path, {"signature_name": "serving_default",
                                     "instances": [3.0, 4.0]})[2] == {"predictions": [3.5, 4.0]}
    assert call(rest, "POST", path, {"inputs": [3.0, 4.0]})[2] == {"outputs": [3.5, 4.0]}
    assert call(rest, "POST", path, {"instances": [{"x": 3.0}]})[2] == {"predictions": [3.5]}
    assert call(rest, "POST", path, {"inputs": {"x": [3.0]}})[2] == {"outputs": [3.5]}


def test_multi_input_signature_in_both_formats(rest):
    path = f"/v1/models/{MODEL}/versions/1:predict"
    rows = {"signature_name": "multi", "instances": [
        {"a": [1.0, 2.0], "b": 3, "tag": "p"}, {"a": [0.5, 0.5], "b": -1, "tag": "q"}]}
    assert call(rest, "POST", path, rows)[2] == {"predictions": [
        {"tag": "p!", "total": 8.0}, {"tag": "q!", "total": 2.0}]}
    columns = {"signature_name": "multi",
               "inputs": {"a": [[1.0, 2.0], [0.5, 0.5]], "b": [3, -1], "tag": ["p", "q"]}}
    assert call(rest, "POST", path, columns)[2] == {"outputs": {
        "tag": ["p!", "q!"], "total": [8.0, 2.0]}}


def test_b64_binary_inputs_and_bytes_outputs(rest):
    raw = bytes(range(256))
    encoded = base64.b64encode(raw).decode("ascii")
    status, _, doc = call(rest, "POST", f"/v1/models/{MODEL}:predict", {
        "signature_name": "bytes_echo", "instances": [{"b64": encoded}, {"b64": "aGk="}]})
    assert status == 200
    first, second = doc["predictions"]
    assert base64.b64decode(first["echo_bytes"]["b64"]) == raw  # `_bytes` output -> b64
    assert first["length"] == 256
    assert second == {"echo_bytes": {"b64": "aGk="}, "length": 2, "upper": "HI"}
    # Unpadded base64 is accepted (absl::Base64Unescape); columnar b64 works too.
    assert call(rest, "POST", f"/v1/models/{MODEL}:predict", {
        "signature_name": "bytes_echo", "inputs": [{"b64": "aGk"}]})[2]["outputs"]["length"] == [2]


def test_scalar_string_tensors_in_and_out(rest):
    """A columnar scalar is a 0-d tensor: its string outputs are 0-d too (TensorFlow hands
    those back as plain bytes, which once made this a 500)."""
    status, _, doc = call(rest, "POST", f"/v1/models/{MODEL}:predict", {
        "signature_name": "bytes_echo", "inputs": {"b64": "aGk="}})
    assert status == 200
    assert doc == {"outputs": {"echo_bytes": {"b64": "aGk="}, "length": 2, "upper": "HI"}}
    assert call(rest, "POST", f"/v1/models/{MODEL}:predict", {
        "signature_name": "bytes_echo", "inputs": ""})[2] == {
        "outputs": {"echo_bytes": {"b64": ""}, "length": 0, "upper": ""}}


def test_string_signature(rest):
    assert call(rest, "POST", f"/v1/models/{MODEL}:predict", {
        "signature_name": "greet", "instances": ["ann", "bo"]})[2] == {
        "predictions": ["hello ann", "hello bo"]}


# ---- classify / regress ---------------------------------------------------------------------

def test_classify_and_regress_answer_results(rest):
    classify = call(rest, "POST", f"/v1/models/{MODEL}/versions/1:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": 20.0}, {"x": 10.0}]})
    assert classify == (200, "application/json", {"results": [
        [["y", 12.0], ["minus_y", -12.0]], [["y", 7.0], ["minus_y", -7.0]]]})
    regress = call(rest, "POST", f"/v1/models/{MODEL}/labels/stable:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]})
    assert regress[2] == {"results": [42.0]}
    # Context features are merged into every example.
    with_context = call(rest, "POST", f"/v1/models/{MODEL}/versions/1:regress", {
        "signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}, {"x": 4.0}]})
    assert with_context[2] == {"results": [3.0, 4.0]}


def test_classify_with_a_predict_signature_is_invalid(rest):
    message = error_of(rest, "POST", f"/v1/models/{MODEL}:classify", {"examples": [{"x": 1.0}]})
    assert "Expected classification signature method_name to be tensorflow/serving/classify" \
        in message
    message = error_of(rest, "POST", f"/v1/models/{MODEL}:regress",
                       {"signature_name": "nope", "examples": [{"x": 1.0}]})
    assert "No signature was found with the name: nope" in message


# ---- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/foo"),
    ("POST", "/v1/foo"),
    ("POST", "/v1/models"),
    ("GET", f"/v1/models/{MODEL}:predict"),
    ("GET", "/v1/models/debug/model_name"),
    ("POST", f"/v1/models/{MODEL}/version/5:predict"),
    ("POST", f"/v1/models/{MODEL}/versions/HELLO:predict"),
    ("POST", f"/v1/models/{MODEL}/versions/some_label:regress"),
    ("POST", f"/v1/models/{MODEL}/versions/1/labels/stable:predict"),
    ("POST", f"/v1/models/{MODEL}/label/stable:predict"),
    ("POST", f"/v1/models/{MODEL}/metadata"),
    ("POST", f"/v1/models/{MODEL}:explain"),
    ("PUT", f"/v1/models/{MODEL}:predict"),
    ("DELETE", f"/v1/models/{MODEL}"),
])
def test_malformed_requests(rest, method, path):
    body = json.dumps({"instances": [1.0]}) if method != "GET" else None
    assert error_of(rest, method, path, body) == f"Malformed request: {method} {path}"


def test_status_without_model_name(rest):
    assert error_of(rest, "GET", "/v1/models") == "Missing model name in request."


def test_version_out_of_int64_range(rest):
    path = f"/v1/models/{MODEL}/versions/{2 ** 64 - 1}:regress"
    assert "Failed to convert version" in error_of(rest, "POST", path, "{}")


@pytest.mark.parametrize("method,path,body,expected", [
    ("POST", "/v1/models/nope:predict", {"instances": [1.0]},
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/nope/versions/1:predict", {"instances": [1.0]},
     "Servable not found for request: Specific(nope, 1)"),
    ("POST", f"/v1/models/{MODEL}/versions/99:predict", {"instances": [1.0]},
     f"Servable not found for request: Specific({MODEL}, 99)"),
    ("POST", f"/v1/models/{MODEL}/versions/99:classify", {"examples": [{"x": 1.0}]},
     f"Servable not found for request: Specific({MODEL}, 99)"),
    ("GET", "/v1/models/nope", None, "Could not find any versions of model nope"),
    ("GET", f"/v1/models/{MODEL}/versions/99", None, f"Could not find version 99 of model {MODEL}"),
    ("GET", "/v1/models/nope/metadata", None, "Servable not found for request: Latest(nope)"),
])
def test_unknown_model_or_version_is_404(rest, method, path, body, expected):
    assert error_of(rest, method, path, body, expected_status=404) == expected


@pytest.mark.parametrize("body,expected", [
    ("", "JSON Parse error: The document is empty"),
    ("instances = [1, 2]", "JSON Parse error: Invalid value"),
    ("[1.0]", "Is not object"),
    ({"instances": [1.0], "inputs": [1.0]}, "expecting only one of 'inputs' or 'instances'"),
    ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"instances": 1.0}, "Excepting 'instances' to be an list/array"),
    ({"instances": [[1.0, 2.0], [3.0]]}, "Expecting tensor size: 2 but got: 1"),
    ({"instances": [[[1.0, 2.0], [3.0]]]}, "Encountered list at unexpected size"),
    ({"inputs": [[1.0, 2.0], [3.0]]}, "Encountered list at unexpected size"),
    ({"instances": ["x", "y"]}, "not of expected type: float"),
    ({"instances": [True]}, "not of expected type: float"),
    ({"instances": [16777217]}, "without loss of precision"),
    ({"signature_name": 100, "instances": [1.0]}, "'signature_name' key must be a string value."),
    ({"signature_name": "nope", "instances": [1.0]},
     'Serving signature name: "nope" not found in signature def'),
    ({"signature_name": "multi", "instances": [[1.0, 2.0]]}, "instances is a plain list"),
    ({"signature_name": "multi", "instances": [{"a": [1.0, 2.0], "b": 3}]},
     "keys must be equal to: a,b,tag"),
    ({"signature_name": "multi", "inputs": {"a": [[1.0, 2.0]], "b": [3]}},
     "Missing named input: tag in 'inputs' object."),
    ({"signature_name": "multi", "instances": [{"a": [1.0, 2.0], "b": 1.5, "tag": "t"}]},
     "not of expected type: int64"),
    ({"signature_name": "bytes_echo", "instances": [{"b64": "!!!"}]}, "Unable to base64 decode"),
    ({"instances": [{"x": 1.0}, [2.0]]}, "Expecting object but got list at item 1"),
])
def test_bad_predict_bodies_are_400(rest, body, expected):
    assert expected in error_of(rest, "POST", f"/v1/models/{MODEL}:predict", body)


def test_unknown_label_is_400(rest):
    message = error_of(rest, "POST", f"/v1/models/{MODEL}/labels/nope:predict",
                       {"instances": [1.0]})
    assert message == "Unrecognized servable version label: nope"


def test_classify_body_errors(rest):
    path = f"/v1/models/{MODEL}:classify"
    assert "key 'examples' is expected" in error_of(rest, "POST", path, {"x": 1})
    assert "'examples' value is an empty array" in error_of(rest, "POST", path, {"examples": []})
    assert "Example must be JSON object" in error_of(rest, "POST", path, {"examples": [1]})
    assert "Unexpected element type in feature: x" in error_of(
        rest, "POST", path, {"examples": [{"x": [1.0, "a"]}]})


def test_request_over_the_size_limit_is_413_json(server, rest):
    status, content_type, doc = call(rest, "POST", f"/v1/models/{MODEL}:predict",
                                     {"instances": [1.0] * 100_000})
    assert status == 413 and content_type == "application/json"
    assert "exceeds the limit" in doc["error"]


def test_non_api_paths_are_404_json(rest):
    assert "Not found" in error_of(rest, "GET", "/statuspage", expected_status=404)


def test_prometheus_metrics_count_requests_by_model_and_status(server, rest):
    call(rest, "POST", f"/v1/models/{SINGLE}:predict", {"instances": [1.0]})
    call(rest, "POST", f"/v1/models/{SINGLE}:predict", {"instances": ["bad"]})
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.request("GET", "/monitoring/prometheus/metrics")
    answer = connection.getresponse()
    text = answer.read().decode()
    connection.close()
    assert answer.status == 200 and answer.getheader("Content-Type").startswith("text/plain")
    assert f':tensorflow:serving:request_count_total{{model_name="{SINGLE}",status="OK"}}' in text
    assert (f':tensorflow:serving:request_count_total{{model_name="{SINGLE}",'
            'status="INVALID_ARGUMENT"}') in text
    assert (f':tensorflow:serving:request_latency_bucket{{API="predict",entrypoint="REST",'
            f'le="+Inf",model_name="{SINGLE}"}}') in text


# ---- gRPC ------------------------------------------------------------------------------------

def predict_request(model=MODEL, signature="", values=(1.0, 2.0), version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return request


def grpc_error(method, request):
    with pytest.raises(grpc.RpcError) as raised:
        method(request, timeout=30)
    return raised.value.code(), raised.value.details()


def test_grpc_predict_by_latest_version_and_label(stubs):
    predict = stubs[0].Predict
    for kwargs, expected in (({}, [3.5, 4.0]), ({"version": 1}, [2.5, 3.0]),
                             ({"label": "stable"}, [2.5, 3.0])):
        response = predict(predict_request(**kwargs), timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), expected)
        assert response.model_spec.name == MODEL
        assert response.model_spec.signature_name == "serving_default"
    assert predict(predict_request(), timeout=30).model_spec.version.value == 2


def test_grpc_output_filter(stubs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, "bytes_echo"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"ab"]))
    request.output_filter.append("length")
    response = stubs[0].Predict(request, timeout=30)
    assert list(response.outputs) == ["length"]
    request.output_filter.append("nope")
    assert grpc_error(stubs[0].Predict, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_classify_and_regress(stubs):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, "classify_x_to_y"
    request.model_spec.version.value = 1
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(20.0)
    result = stubs[0].Classify(request, timeout=30).result
    assert [[(c.label, c.score) for c in row.classes] for row in result.classifications] == [
        [("y", 12.0), ("minus_y", -12.0)]]

    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, "regress_x_to_y"
    request.model_spec.version_label = "stable"
    for x in (80.0, 0.0):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    response = stubs[0].Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [42.0, 2.0]
    assert response.model_spec.version.value == 1

    request.ClearField("input")
    assert grpc_error(stubs[0].Regress, request) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                     "Input is empty.")


def test_grpc_get_model_metadata(stubs):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = stubs[0].GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 2
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert signature_map.signature_def["regress_x_to_y"].method_name == \
        "tensorflow/serving/regress"
    request.ClearField("metadata_field")
    assert grpc_error(stubs[0].GetModelMetadata, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_unknown_signature_is_failed_precondition(stubs):
    code, details = grpc_error(stubs[0].Predict, predict_request(signature="nope"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == 'Serving signature key "nope" not found.'


def test_grpc_input_mismatch_is_invalid_argument(stubs):
    request = predict_request()
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    code, details = grpc_error(stubs[0].Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input size does not match signature: 2!=1" in details
    assert "Sent extra: {extra}" in details


def test_grpc_unknown_model_or_version_is_not_found(stubs):
    assert grpc_error(stubs[0].Predict, predict_request(model="nope"))[0] == \
        grpc.StatusCode.NOT_FOUND
    assert grpc_error(stubs[0].Predict, predict_request(version=99))[0] == \
        grpc.StatusCode.NOT_FOUND
    assert grpc_error(stubs[0].Predict, predict_request(label="nope"))[0] == \
        grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_get_model_status(stubs):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = SINGLE
    response = stubs[1].GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] \
        == [(1, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]
    request.model_spec.name = "nope"
    assert grpc_error(stubs[1].GetModelStatus, request) == (
        grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    request.model_spec.name = MODEL
    request.model_spec.version.value = 7
    assert grpc_error(stubs[1].GetModelStatus, request)[0] == grpc.StatusCode.NOT_FOUND


def test_grpc_message_over_the_size_limit_is_resource_exhausted(stubs):
    request = predict_request(values=np.zeros(200_000, np.float32))
    assert grpc_error(stubs[0].Predict, request)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_no_listener_on_other_interfaces(server):
    """Loopback by default: the server is bound to 127.0.0.1 only."""
    assert server.options.host == "127.0.0.1"
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
