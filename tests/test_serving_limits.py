"""Serving memory and connections, over real sockets: the per-request budget (REST and the
official gRPC stubs alike) and idle connections that cannot lock good clients out.

Limits are small here (a 256 KiB budget, 50 idle sockets): the same code runs with the
defaults (serving/README.md, "Request budget" and "Idle connections").
"""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import json
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import (classification_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from hyperrec.schemas import features
from hyperrec.serving import config, request_budget
import standin_models
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.server import ModelServer, ServerOptions
from test_hostile_serving import predict_answer, recommend_body

pytestmark = pytest.mark.timeout(180)

HPT = "hpt"  # y = x / 2 + 2
REC = "rec"
BUDGET = 256 * 1024
BUDGET_WORDS = f"per-request budget of {BUDGET} bytes (--request_budget_bytes)"


def post(port: int, path: str, body: bytes):
    return predict_answer(port, path, body, timeout=60)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    standin_models.save_half_plus_two(str(root / HPT / "1"))
    standin_models.save_recommender(str(root / REC / "1"))
    return root


def start_server(base, **limits) -> ModelServer:
    models = (config.single_model(HPT, str(base / HPT)) +
              config.single_model(REC, str(base / REC)))
    return ModelServer(ServerOptions(models=models, grpc_port=0, rest_port=0, poll_seconds=0,
                                     http=HttpLimits(**limits))).start()


@pytest.fixture(scope="module")
def budget_server(base):
    server = start_server(base, request_budget_bytes=BUDGET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(budget_server):
    with grpc.insecure_channel(f"127.0.0.1:{budget_server.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


# ---- the per-request budget ----------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=40))
def test_the_value_bound_is_never_below_the_values_in_a_document(doc):
    def count(value):
        if isinstance(value, list):
            return 1 + sum(count(v) for v in value)
        if isinstance(value, dict):
            return 1 + sum(count(v) for v in value.values())
        return 1
    assert request_budget.json_values_bound(json.dumps(doc).encode()) >= count(doc)


def test_rest_over_budget_is_413_naming_the_limit_before_parsing(budget_server):
    port = budget_server.rest_port
    body = recommend_body(1_500)  # ~200 KB: under the budget in bytes, over it in values
    assert len(body) < BUDGET
    status, answer = post(port, f"/v1/models/{REC}:predict", body)
    assert status == 413
    assert BUDGET_WORDS in json.loads(answer)["error"]
    status, answer = post(port, f"/v1/models/{REC}:predict", recommend_body(10))
    assert status == 200 and len(json.loads(answer)["predictions"]) == 10


def test_rest_body_over_budget_in_bytes_is_413_before_it_is_read(budget_server):
    length = 64 * BUDGET  # announced, never sent
    raw = (f"POST /v1/models/{HPT}:predict HTTP/1.1\r\nHost: x\r\n"
           f"Content-Length: {length}\r\n\r\n").encode()
    data = standin_models.raw_exchange(budget_server.rest_port, raw)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert (f"Request body of {length} bytes exceeds the limit of {BUDGET} bytes "
            "(--request_budget_bytes)") in json.loads(body)["error"]


def test_rest_classify_is_priced_too(budget_server):
    body = json.dumps({"signature_name": "classify_x_to_y",
                       "examples": [{"x": 1.0}] * 20_000}).encode()
    status, answer = post(budget_server.rest_port, f"/v1/models/{HPT}:classify", body)
    assert status == 413 and BUDGET_WORDS in json.loads(answer)["error"]


def recommend_request(rows: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = REC
    request.model_spec.signature_name = features.RECOMMEND
    inputs = {features.USER_ID: np.array([f"u{i}" for i in range(rows)], dtype=object),
              features.HISTORY: np.array([["item-01", "item-02"]] * rows, dtype=object),
              features.DEVICE: np.array(["mobile"] * rows, dtype=object),
              features.TIMESTAMP: np.full(rows, 1_700_000_000, np.int64),
              features.K: np.full(rows, 3, np.int32)}
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def grpc_refusal(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=60)
    return raised.value


def test_grpc_over_budget_is_resource_exhausted_naming_the_limit(stub):
    assert len(stub.Predict(recommend_request(10), timeout=60).outputs[features.ITEM_IDS]
               .string_val) == 30
    error = grpc_refusal(stub.Predict, recommend_request(5_000))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert BUDGET_WORDS in error.details()


def test_grpc_shape_claiming_a_huge_tensor_is_refused_before_it_is_built(stub):
    """A 20-byte tensor claiming 2**28 floats: tf.make_ndarray would repeat the one value
    into a 1 GiB array."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = HPT
    tensor = request.inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add().size = 1 << 28
    tensor.float_val.append(1.0)
    assert request.ByteSize() < 100
    error = grpc_refusal(stub.Predict, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"({1 << 28} values taking {4 << 28} bytes" in error.details()
    assert BUDGET_WORDS in error.details()


def test_grpc_classify_is_priced_too(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = HPT
    request.model_spec.signature_name = "classify_x_to_y"
    for _ in range(10_000):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    error = grpc_refusal(stub.Classify, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert BUDGET_WORDS in error.details()


def test_grpc_message_over_budget_in_bytes_is_refused_unread(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = HPT
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(BUDGET, np.float32)))
    error = grpc_refusal(stub.Predict, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---- idle connections ----------------------------------------------------------------------

def open_idle(port: int, count: int):
    return [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(count)]


def closed_by_server(socks, at_least: int, wait: float):
    """Indexes of sockets the server closed, once at least `at_least` are (or `wait` s)."""
    closed = set()
    deadline = time.monotonic() + wait
    while True:
        for index, sock in enumerate(socks):
            if index in closed:
                continue
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closed.add(index)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(index)
        if len(closed) >= at_least or time.monotonic() > deadline:
            return closed
        time.sleep(0.1)


def good_requests(port: int, count: int):
    return [post(port, f"/v1/models/{HPT}:predict", b'{"instances": [1.0]}') for _ in range(count)]


def test_idle_sockets_do_not_lock_good_clients_out_and_the_oldest_close_first(base):
    """200 idle sockets against a cap of 100 connections, 50 of them idle, and an idle
    timeout too long to matter: good requests are all answered, and the server closed idle
    sockets oldest first."""
    server = start_server(base, max_connections=100, max_idle_connections=50,
                          idle_timeout_s=600, pressure_idle_timeout_s=600)
    socks = open_idle(server.rest_port, 200)
    try:
        assert good_requests(server.rest_port, 10) == [(200, b'{"predictions": [2.5]}')] * 10
        closed = closed_by_server(socks, 150, wait=60)
        time.sleep(0.5)
        closed |= closed_by_server(socks, 0, wait=0)
        still_open = set(range(len(socks))) - closed
        assert 0 < len(still_open) <= 50
        assert max(closed) < min(still_open), "an idle socket was closed before an older one"
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_idle_timeout_shrinks_under_pressure(base):
    """A 600 s idle timeout and 50 idle sockets allowed: 20 idle sockets (below half the cap)
    keep it; 30 more (the cap) bring it down to the pressure timeout, 0.5 s, which closes the
    20 (idle for seconds by then), oldest first; that relieves the pressure, so the timeout
    goes back up before the newer 30 reach it."""
    server = start_server(base, max_idle_connections=50, idle_timeout_s=600,
                          pressure_idle_timeout_s=0.5)
    few = open_idle(server.rest_port, 20)
    crowd = []
    try:
        assert not closed_by_server(few, 1, wait=2)
        crowd = open_idle(server.rest_port, 30)
        closed = closed_by_server(few + crowd, 20, wait=60)  # far below the 600 s timeout
        assert set(range(20)) <= closed
        assert closed == set(range(len(closed))), "an idle socket closed before an older one"
        assert good_requests(server.rest_port, 3) == [(200, b'{"predictions": [2.5]}')] * 3
    finally:
        for sock in few + crowd:
            sock.close()
        server.stop()
