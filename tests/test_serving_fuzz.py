"""Property-based fuzzing of the REST handler over a real socket.

Whatever the body (random bytes, random JSON, or JSON shaped like a predict/classify request
with random values), the server answers either a correct result or a 4xx with a JSON
`{"error": ...}`: never a 5xx, a non-JSON body or a dropped connection.
"""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperrec.serving import config
import standin_models
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(240)

MODEL = "fuzz"
SIGNATURES = ["serving_default", "classify_x_to_y", "regress_x_to_y", "bytes_echo", "greet",
              "multi", "", "nope"]
FUZZ_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])


@pytest.fixture(scope="module")
def connection(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / MODEL
    standin_models.save_half_plus_two(str(base / "1"))
    options = ServerOptions(models=config.single_model(MODEL, str(base)), grpc_port=None,
                            rest_port=0, poll_seconds=0,
                            http=HttpLimits(max_request_bytes=1 << 20))
    with ModelServer(options) as server:
        client = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        yield client
        client.close()


def exchange(client, method, path, body):
    client.request(method, path, body=body)
    answer = client.getresponse()
    data = answer.read()
    if answer.getheader("Connection", "").lower() == "close":
        client.close()
    return answer.status, answer.getheader("Content-Type"), data


def check_answer(status, content_type, data, success_keys):
    assert status < 500, (status, data[:300])
    assert content_type == "application/json"
    doc = json.loads(data)
    assert isinstance(doc, dict)
    if status == 200:
        assert set(doc) <= success_keys and doc, doc
    else:
        assert 400 <= status < 500
        assert list(doc) == ["error"] and isinstance(doc["error"], str)


json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | \
    st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) |
    st.dictionaries(st.sampled_from(["x", "a", "b", "tag", "b64", "name", "image_bytes", "y"]) |
                    st.text(max_size=4), inner, max_size=4),
    max_leaves=20)
b64_values = st.builds(lambda s: {"b64": s}, st.text(alphabet="QUJDaGVsbG8=+/!", max_size=12))
predict_bodies = st.fixed_dictionaries(
    {}, optional={
        "signature_name": st.sampled_from(SIGNATURES) | json_scalars,
        "instances": st.lists(json_values | b64_values, max_size=4) | json_values,
        "inputs": json_values | b64_values,
    })
example_bodies = st.fixed_dictionaries(
    {}, optional={
        "signature_name": st.sampled_from(SIGNATURES) | json_scalars,
        "examples": st.lists(st.dictionaries(st.sampled_from(["x", "y"]), json_values,
                                             max_size=3) | json_values, max_size=3) | json_values,
        "context": st.dictionaries(st.sampled_from(["x", "y"]), json_values, max_size=2),
    })


def encode(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode("utf-8")


@FUZZ_SETTINGS
@given(body=st.binary(max_size=64) | json_values.map(encode))
def test_any_body_to_predict_is_an_answer_or_a_4xx(connection, body):
    check_answer(*exchange(connection, "POST", f"/v1/models/{MODEL}:predict", body),
                 {"predictions", "outputs"})


@FUZZ_SETTINGS
@given(body=predict_bodies.map(encode))
def test_predict_shaped_bodies_are_an_answer_or_a_4xx(connection, body):
    check_answer(*exchange(connection, "POST", f"/v1/models/{MODEL}:predict", body),
                 {"predictions", "outputs"})


@FUZZ_SETTINGS
@given(body=example_bodies.map(encode), verb=st.sampled_from(["classify", "regress"]))
def test_classify_regress_bodies_are_an_answer_or_a_4xx(connection, body, verb):
    check_answer(*exchange(connection, "POST", f"/v1/models/{MODEL}:{verb}", body), {"results"})


@FUZZ_SETTINGS
@given(path=st.text(alphabet="/v1modelsfuzaions:predictlbx0123%", min_size=1, max_size=40),
       method=st.sampled_from(["GET", "POST"]))
def test_any_path_is_an_answer_or_a_4xx(connection, path, method):
    status, content_type, data = exchange(connection, method, "/" + path.lstrip("/"), b"{}")
    assert status < 500 and content_type == "application/json"
    assert isinstance(json.loads(data), dict)
