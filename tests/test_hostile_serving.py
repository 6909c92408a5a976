"""Hostile input to the REST port, over real sockets: request smuggling, unknown transfer
codings, gzip bombs, huge requests beside small ones, slowloris, idle sockets, too many
connections, and a broken version on disk at restart.

Each outcome has a name (serving/README.md, "Hostile input"): a status with TF Serving's
`{"error": ...}` body and a closed connection, a bounded cost, or a timeout. The costly cases
run against a real `python -m hyperrec.serving` subprocess, whose memory and event loop are
its own.
"""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import http.client
import json
import shutil
import socket
import statistics
import struct
import threading
import time
import zlib

import pytest

from hyperrec.serving import config, errors
import standin_models
from hyperrec.serving.http_limits import HttpLimits
from hyperrec.serving.load_failures import LoadFailureRecord
from hyperrec.serving.manager import ModelManager
from hyperrec.serving.servable import Servable
from hyperrec.serving.server import ModelServer

pytestmark = pytest.mark.timeout(300)

HPT = "hpt"  # y = x / 2 + 2
REC = "rec"
HPT_PREDICT = f"/v1/models/{HPT}:predict"
REC_PREDICT = f"/v1/models/{REC}:predict"
CONNECTION_CAP = 4
TIMEOUT_MS = 1000  # header and idle timeouts of the subprocess server
MIB = 1024 * 1024


# ---- helpers -------------------------------------------------------------------------------

def responses(data: bytes):
    """[(status, headers, body)] of every response in `data`, in order."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", len(rest)))
        found.append((int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return found


def only_response(data: bytes):
    answers = responses(data)
    assert len(answers) == 1, answers
    return answers[0]


def assert_refused(data: bytes, status: int, words: str) -> None:
    """One JSON error answer with `status`, naming `words`, and the connection closed."""
    answer_status, headers, body = only_response(data)
    assert answer_status == status, body
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert words in json.loads(body)["error"]


def hpt_body(value: float = 1.0) -> bytes:
    return json.dumps({"instances": [value]}).encode()


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def recommend_body(rows: int, k: int = 10) -> bytes:
    return json.dumps({"signature_name": "recommend", "instances": [
        {"user_id": f"u{i:05d}", "history_item_ids": ["item-01", "item-02", "item-03"],
         "device": "mobile", "timestamp": 1_700_000_000, "k": k} for i in range(rows)]}).encode()


def gzip_bomb(inflated_mib: int) -> bytes:
    """A gzip member inflating to `inflated_mib` MiB of zeros, about 1 KB per MiB: one MiB
    compressed after a full flush (which resets the compressor, so every further MiB
    compresses to the same bytes), repeated, then an empty final block and the trailer."""
    block = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    final_block = b"\x03\x00"  # fixed Huffman, last block, no data
    trailer = struct.pack("<II", crc, (inflated_mib * MIB) & 0xFFFFFFFF)
    return header + segment * inflated_mib + final_block + trailer


def predict_answer(port: int, path: str, body: bytes, timeout: float = 120.0):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def version_states(port: int, model: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"/v1/models/{model}")
        answer = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return {int(s["version"]): s["state"] for s in answer["model_version_status"]}


# ---- servers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """In this process: framing and the connection cap."""
    version_dir = tmp_path_factory.mktemp("hostile") / HPT / "1"
    standin_models.save_half_plus_two(str(version_dir))
    options = standin_models.rest_only_options(HPT, str(version_dir.parent),
                                        http=HttpLimits(max_connections=CONNECTION_CAP))
    with ModelServer(options) as running:
        yield running


@pytest.fixture(scope="module")
def process_server(tmp_path_factory):
    """`python -m hyperrec.serving` on the stand-in recommender, with 1 s header and idle
    timeouts and default connection caps and request budget: memory, event-loop delay and
    timeouts are measured on a process of its own."""
    root = tmp_path_factory.mktemp("hostile_process")
    standin_models.save_recommender(str(root / REC / "1"))
    rest_port = standin_models.free_port()
    args = ["--model_name", REC, "--model_base_path", str(root / REC),
            "--port", str(standin_models.free_port()), "--rest_api_port", str(rest_port),
            "--file_system_poll_wait_seconds", "0",
            "--rest_api_header_timeout_in_ms", str(TIMEOUT_MS),
            "--rest_api_idle_timeout_in_ms", str(TIMEOUT_MS),
            "--model_load_failure_file", str(root / "failures.json")]
    process, _ = standin_models.start_until_serving(args, str(root / "server.log"), rest_port, REC)
    try:
        yield process, rest_port
    finally:
        standin_models.stop_server_process(process)


# ---- framing (RFC 9112) --------------------------------------------------------------------

def test_content_length_with_chunked_is_400_and_nothing_is_smuggled(server):
    smuggled = f"GET /v1/models/{HPT} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    raw = (f"POST {HPT_PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
           "Transfer-Encoding: chunked\r\n\r\n").encode() + chunked(hpt_body()) + smuggled
    assert_refused(standin_models.raw_exchange(server.rest_port, raw), 400,
                   "Both Content-Length and Transfer-Encoding")


@pytest.mark.parametrize("coding, status, words", [
    ("xchunked", 501, "Unsupported Transfer-Encoding: xchunked"),
    ("chunked-x", 501, "Unsupported Transfer-Encoding: chunked-x"),
    ("gzip, chunked", 501, "Unsupported Transfer-Encoding: gzip"),
    ("identity", 501, "Unsupported Transfer-Encoding: identity"),
    ("chunked, chunked", 400, "Transfer-Encoding must end in one chunked coding"),
])
def test_transfer_codings_other_than_chunked_are_refused(server, coding, status, words):
    raw = (f"POST {HPT_PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n"
           ).encode() + chunked(hpt_body())
    assert_refused(standin_models.raw_exchange(server.rest_port, raw), status, words)


@pytest.mark.parametrize("coding", ["chunked", "Chunked", "CHUNKED", " chunked "])
def test_chunked_is_a_case_insensitive_token(server, coding):
    raw = (f"POST {HPT_PREDICT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           f"Transfer-Encoding: {coding}\r\n\r\n").encode() + chunked(hpt_body(3.0))
    status, _, body = only_response(standin_models.raw_exchange(server.rest_port, raw))
    assert status == 200 and json.loads(body) == {"predictions": [3.5]}


@pytest.mark.parametrize("lengths", [["17", "18"], ["17, 18"], ["+17"], ["0x11"], [" "],
                                     ["17 17"], ["99999999999999999999"]])
def test_conflicting_or_invalid_content_length_is_400(server, lengths):
    fields = "".join(f"Content-Length: {value}\r\n" for value in lengths)
    raw = f"POST {HPT_PREDICT} HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode() + hpt_body()
    assert_refused(standin_models.raw_exchange(server.rest_port, raw), 400, "Invalid Content-Length")


def test_repeated_identical_content_lengths_are_one_length(server):
    body = hpt_body(5.0)  # RFC 9112 6.3: a recipient may accept a list of equal values
    raw = (f"POST {HPT_PREDICT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           f"Content-Length: {len(body)}, {len(body)}\r\n\r\n").encode() + body
    status, _, answer = only_response(standin_models.raw_exchange(server.rest_port, raw))
    assert status == 200 and json.loads(answer) == {"predictions": [4.5]}


@pytest.mark.parametrize("raw, status, words", [
    (f"POST {HPT_PREDICT} HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400,
     "Invalid header line"),
    (f"POST {HPT_PREDICT} HTTP/1.1\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n", 400,
     "Folded header lines"),
    (f"POST {HPT_PREDICT} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "Transfer-Encoding on an HTTP/1.0 request"),
    (f"POST {HPT_PREDICT} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", 400,
     "Invalid chunk size"),
    (f"POST {HPT_PREDICT} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", 400,
     "Invalid chunk size"),
    (f"POST {HPT_PREDICT} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}XX0\r\n\r\n",
     400, "Chunk data not followed by CRLF"),
])
def test_ambiguous_framing_is_400(server, raw, status, words):
    assert_refused(standin_models.raw_exchange(server.rest_port, raw.encode()), status, words)


# ---- connections ---------------------------------------------------------------------------

def test_connections_over_the_cap_all_active_get_503_and_close(server):
    """Only active connections (mid-request) fill the cap: then a new one is 503."""
    port = server.rest_port
    raw = f"GET /v1/models/{HPT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    body = hpt_body()
    active = (f"POST {HPT_PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
              ).encode() + body[:3]  # the rest of the body is still to come
    holders = []
    try:
        for _ in range(CONNECTION_CAP):
            holders.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            holders[-1].sendall(active)
        time.sleep(0.5)  # read by the server: active, not idle
        assert_refused(standin_models.raw_exchange(port, raw), 503, "Too many open connections (limit 4")
        holders[0].sendall(body[3:])  # one request completes; its connection turns idle
        assert holders[0].recv(65536).startswith(b"HTTP/1.1 200 ")
        status, _, _ = only_response(standin_models.raw_exchange(port, raw))
        assert status == 200  # in, by closing the idle one
    finally:
        for sock in holders:
            sock.close()


def test_idle_connections_at_the_cap_make_room_for_new_ones(server):
    port = server.rest_port
    raw = f"GET /v1/models/{HPT} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    holders = []
    try:
        for _ in range(CONNECTION_CAP):  # each answered once and kept alive: idle
            holders.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            holders[-1].sendall(raw)
            assert holders[-1].recv(65536).startswith(b"HTTP/1.1 200 ")
        status, _, _ = only_response(standin_models.raw_exchange(
            port, raw.replace(b"Host: x", b"Connection: close")))
        assert status == 200
        assert holders[0].recv(65536) == b""  # the oldest idle one was closed for it
    finally:
        for sock in holders:
            sock.close()


def _closed_by_server(socks, seconds: float, drip: bytes = b""):
    """Sends `drip` to every socket every 0.2 s for up to `seconds`; returns (closed sockets'
    received bytes, number still open)."""
    received = {sock: b"" for sock in socks}
    open_socks = set(socks)
    for sock in socks:
        sock.setblocking(False)
    deadline = time.monotonic() + seconds
    while open_socks and time.monotonic() < deadline:
        for sock in list(open_socks):
            try:
                if drip:
                    sock.send(drip)
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        open_socks.discard(sock)
                        break
                    received[sock] += chunk
            except BlockingIOError:
                pass
            except (ConnectionResetError, BrokenPipeError):
                open_socks.discard(sock)
        time.sleep(0.2)
    return [received[s] for s in socks if s not in open_socks], len(open_socks)


def test_slowloris_sockets_are_answered_408_and_closed(process_server):
    _, port = process_server
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        for sock in socks:  # a request whose headers never end, one header per 0.2 s
            sock.sendall(f"POST {REC_PREDICT} HTTP/1.1\r\nHost: x\r\n".encode())
        started = time.monotonic()
        closed, still_open = _closed_by_server(socks, 10 * TIMEOUT_MS / 1000, b"X-Slow: 1\r\n")
        assert still_open == 0
        assert time.monotonic() - started < 8 * TIMEOUT_MS / 1000
        for data in closed:
            assert_refused(data, 408, "Timed out reading the request")
    finally:
        for sock in socks:
            sock.close()


def test_a_body_that_stops_arriving_is_408(process_server):
    _, port = process_server
    body = recommend_body(1)
    raw = (f"POST {REC_PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
           ).encode() + body[:10]
    started = time.monotonic()
    data = standin_models.raw_exchange(port, raw, wait=10 * TIMEOUT_MS / 1000)
    assert time.monotonic() - started < 8 * TIMEOUT_MS / 1000
    assert_refused(data, 408, "Timed out reading the request")


def test_idle_keep_alive_sockets_are_closed(process_server):
    _, port = process_server
    socks = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(f"GET /v1/models/{REC} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        closed, still_open = _closed_by_server(socks, 10 * TIMEOUT_MS / 1000)
        assert still_open == 0
        for data in closed:  # each got its answer, kept alive, then closed silently
            status, headers, _ = only_response(data)
            assert status == 200 and "connection" not in headers
    finally:
        for sock in socks:
            sock.close()


def test_a_thousand_idle_sockets_do_not_lock_good_clients_out(process_server):
    """1,000 sockets that connect and send nothing, at the default cap of 1,000 connections
    (500 of them idle): 10 good requests on new connections are all answered."""
    _, port = process_server
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(1000)]
    try:
        answers = [predict_answer(port, REC_PREDICT, recommend_body(1))[0] for _ in range(10)]
        assert answers == [200] * 10
    finally:
        for sock in socks:
            sock.close()


# ---- cost per request ----------------------------------------------------------------------

def test_a_100k_instance_request_is_refused_before_parsing(process_server):
    """100,000 recommend rows (13 MB): over the default request budget by their values, so
    413 before parsing, at the cost of reading the body (it cost +390 MiB peak to parse and
    answer on this stand-in model; bench/bench_serving.py --memory)."""
    process, port = process_server
    big = recommend_body(100_000)
    assert predict_answer(port, REC_PREDICT, recommend_body(1))[0] == 200
    idle_peak = standin_models.peak_memory_bytes(process.pid)
    status, answer = predict_answer(port, REC_PREDICT, big)
    growth = standin_models.peak_memory_bytes(process.pid) - idle_peak
    print(f"100,000-instance request ({len(big) / MIB:.1f} MiB): {status}, "
          f"peak memory +{growth / MIB:.1f} MiB")
    assert status == 413
    assert "over the per-request budget of 134217728 bytes (--request_budget_bytes)" in \
        json.loads(answer)["error"]
    assert growth < 4 * len(big)
    assert predict_answer(port, REC_PREDICT, recommend_body(1))[0] == 200


def test_gzip_bomb_is_413_while_inflating_and_costs_little_memory(process_server):
    process, port = process_server
    bomb = gzip_bomb(1024)  # 1 GiB of zeros
    assert len(bomb) < 2 * MIB
    status, _ = predict_answer(port, REC_PREDICT, recommend_body(1))
    assert status == 200
    idle_peak = standin_models.peak_memory_bytes(process.pid)
    raw = (f"POST {REC_PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
           f"Content-Length: {len(bomb)}\r\n\r\n").encode() + bomb
    started = time.monotonic()
    data = standin_models.raw_exchange(port, raw, wait=120)
    elapsed = time.monotonic() - started
    growth = standin_models.peak_memory_bytes(process.pid) - idle_peak
    print(f"gzip bomb: {len(bomb)} bytes -> 413 in {elapsed:.2f} s, "
          f"peak memory +{growth / MIB:.1f} MiB")
    assert_refused(data, 413, "Decompressed request body exceeds the limit of 10485760 bytes")
    assert growth < 512 * MIB
    assert predict_answer(port, REC_PREDICT, recommend_body(1))[0] == 200


def test_a_huge_request_does_not_stall_small_ones(process_server):
    _, port = process_server
    small, big = recommend_body(1, k=3), recommend_body(30_000)

    def small_latency() -> float:
        started = time.monotonic()
        status, _ = predict_answer(port, REC_PREDICT, small)
        assert status == 200
        return time.monotonic() - started

    alone = statistics.median(small_latency() for _ in range(10))
    outcome = {}

    def send_big():
        started = time.monotonic()
        outcome["status"], outcome["answer"] = predict_answer(port, REC_PREDICT, big)
        outcome["seconds"] = time.monotonic() - started  # parsed after: this process's GIL

    sender = threading.Thread(target=send_big)
    sender.start()
    time.sleep(0.05)
    during = []
    while sender.is_alive():
        during.append(small_latency())
    sender.join()
    print(f"30,000-instance request: {outcome['seconds']:.2f} s; small requests alone "
          f"{alone * 1000:.1f} ms, during it {len(during)} requests, max "
          f"{max(during) * 1000:.0f} ms")
    assert outcome["status"] == 200
    assert len(json.loads(outcome["answer"])["predictions"]) == 30_000
    # Meaningful only if the huge request kept the server busy for longer than the bound.
    assert outcome["seconds"] > 1.0 and len(during) >= 3
    # Under 1 s; on a machine so loaded that everything runs several times slower, a fifth
    # of the huge request's time (a loop parsing it would stall small ones for most of it).
    assert max(during) < max(1.0, 0.2 * outcome["seconds"])


# ---- restart with a broken version ---------------------------------------------------------

def test_a_remembered_failure_is_skipped_at_start_and_retried_after(tmp_path):
    """The manager's side of a restart, with a loader that records its calls: the first
    start tries version 2 first and remembers its failure; the next start loads only version 1
    until enable_retries(), then tries version 2 once more."""
    base = tmp_path / "m"
    for version in (1, 2):
        standin_models.write_corrupt_version(str(base / str(version)))  # only scanned here
    calls = []

    def loader(name, version, path):
        calls.append(version)
        if version == 2:
            raise errors.ServingError(errors.Code.DATA_LOSS, "version 2 is broken")
        return Servable(name, version, path, {}, {})

    def manager():
        return ModelManager(config.single_model("m", str(base)), poll_seconds=0, loader=loader,
                            failure_record=LoadFailureRecord(str(tmp_path / "failures.json")))

    first = manager()
    first.start()
    assert calls == [2, 1]
    first.stop()

    calls.clear()
    second = manager()
    second.start()
    assert calls == [1]
    states = second.version_states("m")
    assert states[1].state == "AVAILABLE" and states[2].state == "END"
    assert (states[2].error_code, states[2].error_message) == (
        errors.Code.DATA_LOSS, "version 2 is broken")
    second.reconcile()
    assert calls == [1]  # no retry before the ports are open
    second.enable_retries()
    second.reconcile()
    second.reconcile()
    assert calls == [1, 2]  # one retry
    second.stop()

    standin_models.write_corrupt_version(str(base / "2"))  # same bytes: still remembered
    (base / "2" / "extra").write_bytes(b"new contents")  # other contents: forgotten
    calls.clear()
    third = manager()
    third.start()
    assert calls == [2, 1]
    third.stop()


def test_restart_serves_the_good_version_before_retrying_a_broken_one(tmp_path):
    base = tmp_path / "m"
    standin_models.save_half_plus_two(str(base / "1"))
    rest_port = standin_models.free_port()
    args = ["--model_name", "m", "--model_base_path", str(base),
            "--port", str(standin_models.free_port()), "--rest_api_port", str(rest_port),
            "--file_system_poll_wait_seconds", "0.2",
            "--model_load_failure_file", str(tmp_path / "failures.json")]
    log = str(tmp_path / "server.log")

    process, clean_start = standin_models.start_until_serving(args, log, rest_port, "m")
    standin_models.stop_server_process(process)

    # Version 2 loads, then fails its warmup after seconds of work.
    standin_models.write_slow_failing_version(str(base / "2"))
    process, first_start = standin_models.start_until_serving(args, log, rest_port, "m")
    try:
        assert version_states(rest_port, "m") == {2: "END", 1: "AVAILABLE"}
    finally:
        standin_models.stop_server_process(process)

    process, restart = standin_models.start_until_serving(args, log, rest_port, "m")
    try:
        # Ready on version 1 while version 2's retry is still to run or running ...
        seen = [version_states(rest_port, "m")]
        assert seen[0][1] == "AVAILABLE" and seen[0][2] in ("END", "LOADING")
        assert predict_answer(rest_port, "/v1/models/m:predict", hpt_body(2.0)) == (
            200, b'{"predictions": [3.0]}')
        # ... which then happens in the background and fails again.
        deadline = time.monotonic() + 120
        while not (len(seen) > 1 and seen[-1][2] == "END" and "LOADING" in
                   [states[2] for states in seen]):
            assert time.monotonic() < deadline, seen[-5:]
            time.sleep(0.05)
            seen.append(version_states(rest_port, "m"))
        assert all(states[1] == "AVAILABLE" for states in seen)
    finally:
        standin_models.stop_server_process(process)
    print(f"start to ready: clean {clean_start:.2f} s, first start with the broken version "
          f"{first_start:.2f} s, restart {restart:.2f} s ({restart / clean_start:.2f}x clean)")
    # The broken version's failure cost (first_start - clean_start) is not paid again.
    assert restart < clean_start + 0.5 * (first_start - clean_start)
    shutil.rmtree(base / "2")
