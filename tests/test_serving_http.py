"""The REST port's HTTP/1.1 transport (serving/http_server.py), over raw sockets.

Framing a client may use (Content-Length, chunked, gzip, Expect: 100-continue, keep-alive,
HTTP/1.0), malformed HTTP answered with a 4xx `{"error": ...}` and a closed connection,
model calls running off the event loop (so concurrent REST requests share a batch), and a
shutdown that lets a request in flight finish.
"""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import gzip
import http.client
import json
import socket
import threading
import time

import pytest

from hyperrec.serving import config
import standin_models
from hyperrec.serving.config import BatchingOptions
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(120)

MODEL = "hpt"  # y = x / 2 + 2
PREDICT = f"/v1/models/{MODEL}:predict"


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("http") / MODEL
    standin_models.save_half_plus_two(str(base / "1"))
    return str(base)


@pytest.fixture(scope="module")
def server(model_base):
    options = standin_models.rest_only_options(MODEL, model_base,
                                        http=HttpLimits(max_request_bytes=64 * 1024))
    with ModelServer(options) as running:
        yield running


def exchange(port: int, raw: bytes, read_until_close: bool = True) -> bytes:
    """Sends raw bytes and returns everything the server wrote before closing (or 2 s)."""
    return standin_models.raw_exchange(port, raw, 10 if read_until_close else 2)


def split_response(data: bytes):
    """(status, headers dict lower-cased, body) of the first response in `data`."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", len(rest)))
    return status, headers, rest[:length]


def predict_body(value: float = 1.0) -> bytes:
    return json.dumps({"instances": [value]}).encode()


def post(path: str, body: bytes, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return (f"POST {path} {version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


def test_keep_alive_serves_many_requests_on_one_connection(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    for value in range(20):
        connection.request("POST", PREDICT, body=predict_body(value))
        answer = connection.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read()) == {"predictions": [value / 2 + 2]}
    assert answer.getheader("Content-Type") == "application/json"
    assert answer.getheader("Server") == "hyperrec-model-server"
    connection.close()


def test_chunked_request_body(server):
    body = predict_body(4.0)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece)
                       for piece in (body[:5], body[5:])) + b"0\r\n\r\n"
    raw = (f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           "Connection: close\r\n\r\n").encode() + chunked
    status, headers, payload = split_response(exchange(server.rest_port, raw))
    assert status == 200 and json.loads(payload) == {"predictions": [4.0]}
    assert headers["connection"] == "close"


def test_gzip_request_body(server):
    raw = post(PREDICT, gzip.compress(predict_body(6.0)),
               "Content-Encoding: gzip\r\nConnection: close\r\n")
    status, _, payload = split_response(exchange(server.rest_port, raw))
    assert status == 200 and json.loads(payload) == {"predictions": [5.0]}


def test_expect_100_continue_is_answered_before_the_body(server):
    body = predict_body(2.0)
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall((f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                      "Expect: 100-continue\r\nConnection: close\r\n\r\n").encode())
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        data = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status, _, payload = split_response(data)
    assert status == 200 and json.loads(payload) == {"predictions": [3.0]}


def test_http_1_0_closes_after_the_answer(server):
    status, headers, payload = split_response(
        exchange(server.rest_port, post(PREDICT, predict_body(), version="HTTP/1.0")))
    assert status == 200 and headers["connection"] == "close"
    assert json.loads(payload) == {"predictions": [2.5]}


def test_head_answers_headers_only(server):
    data = exchange(server.rest_port,
                    f"HEAD /v1/models/{MODEL} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    status, headers, payload = split_response(data)
    assert status == 400 and int(headers["content-length"]) > 0 and payload == b""


@pytest.mark.parametrize("raw, status, words", [
    (b"GARBAGE\r\n\r\n", 400, "Bad request syntax"),
    (b"GET /v1/models/hpt HTTP/x.y\r\n\r\n", 400, "Bad request version"),
    (b"GET /v1/models/hpt HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version"),
    (b"BREW /v1/models/hpt HTTP/1.1\r\n\r\n", 501, "Unsupported method"),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "Request line too long"),
    (b"GET /v1/models/hpt HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431,
     "Header line too long"),
    (b"GET /v1/models/hpt HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", 431, "Too many headers"),
    (b"POST /v1/models/hpt:predict HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400,
     "Invalid Content-Length"),
    (b"POST /v1/models/hpt:predict HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400,
     "Invalid Content-Length"),
    (b"POST /v1/models/hpt:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
     "Invalid chunk size"),
    (b"POST /v1/models/hpt:predict HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4"
     b"\r\n\r\nnope", 400, "Malformed request body"),
])
def test_malformed_http_is_a_4xx_json_error_and_a_closed_connection(server, raw, status, words):
    answer_status, headers, payload = split_response(exchange(server.rest_port, raw))
    assert answer_status == status
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert words in json.loads(payload)["error"]


def test_oversized_chunked_and_gzip_bodies_are_413(server):
    big = json.dumps({"instances": [1.0] * 30_000}).encode()  # over the 64 KiB limit
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    raw = (f"POST {PREDICT} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunked
    status, headers, payload = split_response(exchange(server.rest_port, raw))
    assert status == 413 and "exceeds the limit" in json.loads(payload)["error"]
    # A small gzip body that inflates past the limit: read whole, then refused, no hang.
    status, _, payload = split_response(exchange(server.rest_port, post(
        PREDICT, gzip.compress(big), "Content-Encoding: gzip\r\n")))
    assert status == 413 and "exceeds the limit" in json.loads(payload)["error"]


def test_a_client_vanishing_mid_body_leaves_the_server_serving(server):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{{".encode())
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.request("POST", PREDICT, body=predict_body(8.0))
    assert json.loads(connection.getresponse().read()) == {"predictions": [6.0]}
    connection.close()


def test_concurrent_rest_requests_share_a_batch(model_base):
    """Model calls run off the event loop: while one REST request waits for its batch, the
    loop reads the others, so eight concurrent requests land in batches of several rows."""
    batch_sizes = []
    options = ServerOptions(
        models=config.single_model(MODEL, model_base), grpc_port=None, rest_port=0,
        poll_seconds=0, batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=500_000,
                                                 num_batch_threads=1))
    with ModelServer(options) as running:
        running.manager.servable(MODEL, None, None)._on_batch = batch_sizes.append
        answers = [None] * 8

        def client(index: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", running.rest_port, timeout=30)
            connection.request("POST", PREDICT, body=predict_body(index))
            answers[index] = json.loads(connection.getresponse().read())
            connection.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == [{"predictions": [i / 2 + 2]} for i in range(8)]
    assert max(batch_sizes) > 1, batch_sizes


def test_stop_lets_a_request_in_flight_finish(model_base):
    options = ServerOptions(
        models=config.single_model(MODEL, model_base), grpc_port=None, rest_port=0,
        poll_seconds=0, batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=1_000_000,
                                                 num_batch_threads=1))
    running = ModelServer(options).start()
    result = {}

    def client() -> None:  # its batch closes only after the 1 s timeout
        connection = http.client.HTTPConnection("127.0.0.1", running.rest_port, timeout=30)
        connection.request("POST", PREDICT, body=predict_body(2.0))
        answer = connection.getresponse()
        result["status"], result["body"] = answer.status, json.loads(answer.read())

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.3)  # the request is in the server, waiting for its batch
    running.stop()
    thread.join(timeout=30)
    assert result == {"status": 200, "body": {"predictions": [3.0]}}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", running.rest_port), timeout=2).close()
