"""What a model server costs apart from latency (bench/bench_serving.py runs these):

`--restart`: start-to-ready time with a broken version on disk, the load failure remembered
from a previous start or not, against a clean start (medians of interleaved starts).

`--memory`: RSS step by step from `python` to a server at rest; the peak RSS growth for one
large REST `recommend` request with and without the per-request budget; and the p50 latency
of good requests with many idle sockets open against none."""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Tuple

import standin_models  # tests/standin_models.py: bench_serving.py puts tests/ on the path


def restart_ratios(work: str, repeats: int) -> None:
    base = os.path.join(work, "restart", "m")
    standin_models.save_half_plus_two(os.path.join(base, "1"))
    broken, hidden = os.path.join(base, "2"), os.path.join(base, ".hidden-2")
    standin_models.write_slow_failing_version(broken)
    os.rename(broken, hidden)  # not an integer name: not a version
    rest_port = standin_models.free_port()
    log = os.path.join(work, "restart", "server.log")

    def ready_seconds(remember: bool) -> float:
        failures = os.path.join(work, "restart", "failures.json") if remember else ""
        args = ["--model_name", "m", "--model_base_path", base, "--port",
                str(standin_models.free_port()), "--rest_api_port", str(rest_port),
                "--file_system_poll_wait_seconds", "0.2", "--model_load_failure_file", failures]
        process, seconds = standin_models.start_until_serving(args, log, rest_port, "m")
        standin_models.stop_server_process(process)
        return seconds

    times: Dict[str, list] = {"clean start": [], "restart, failure remembered": [],
                              "restart, failure not remembered": []}
    os.rename(hidden, broken)
    ready_seconds(remember=True)  # the first start with it: fails it and remembers
    os.rename(broken, hidden)
    for _ in range(repeats):
        times["clean start"].append(ready_seconds(remember=True))
        os.rename(hidden, broken)
        times["restart, failure remembered"].append(ready_seconds(remember=True))
        times["restart, failure not remembered"].append(ready_seconds(remember=False))
        os.rename(broken, hidden)
    clean = statistics.median(times["clean start"])
    print(f"start until the REST port answers, median of {repeats} interleaved starts:")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label:34s} {median:6.2f} s  ({median / clean:.2f}x clean)  "
              f"runs: {', '.join(f'{v:.2f}' for v in values)}")


# ---- memory and connections (--memory) ----------------------------------------------------

# Run in a fresh interpreter: RSS after each import and step of a server's start.
_RSS_STEPS = r"""
import sys, json, threading, http.client
def rss():
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return [int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "RssAnon", "RssFile")]
previous = rss()
def step(label):
    global previous
    now = rss()
    print(f"  {label:38s} {now[0]:7.1f} MiB (+{now[0] - previous[0]:6.1f}; "
          f"anon {now[1]:6.1f}, file {now[2]:6.1f})", flush=True)
    previous = now
step("python")
import numpy; step("import numpy")
import grpc; step("import grpc")
import hyperrec.serving; step("import hyperrec.serving")
import tensorflow; step("import tensorflow")
import tensorflow_serving.apis.prediction_service_pb2_grpc; step("import tensorflow_serving.apis")
from hyperrec.serving import config
from hyperrec.serving.server import ModelServer, ServerOptions; step("import the server's modules")
server = ModelServer(ServerOptions(models=config.single_model("rec", sys.argv[1]), grpc_port=0,
                                   rest_port=0, poll_seconds=0))
server.manager.start(); step("model loaded")
server.start(); step("ports open")
body = json.dumps({"signature_name": "recommend", "instances": [{"user_id": "u1",
    "history_item_ids": ["item-01"], "device": "m", "timestamp": 1, "k": 3}]}).encode()
def call():
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port)
    connection.request("POST", "/v1/models/rec:predict", body)
    connection.getresponse().read()
    connection.close()
call(); step("one REST request")
clients = [threading.Thread(target=lambda: [call() for _ in range(20)]) for _ in range(32)]
[client.start() for client in clients]; [client.join() for client in clients]
step("32 clients x 20 REST requests")
server.stop()
"""


def _status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


@contextlib.contextmanager
def recommender_server(base: str, work: str, extra: List[str]) -> Iterator[Tuple[int, int]]:
    """(pid, REST port) of `python -m hyperrec.serving` on the stand-in recommender."""
    rest_port = standin_models.free_port()
    args = ["--model_name", "rec", "--model_base_path", base, "--port",
            str(standin_models.free_port()), "--rest_api_port", str(rest_port),
            "--file_system_poll_wait_seconds", "0", "--model_load_failure_file", "", *extra]
    process, _ = standin_models.start_until_serving(args, os.path.join(work, "rec.log"), rest_port,
                                             "rec")
    try:
        yield process.pid, rest_port
    finally:
        standin_models.stop_server_process(process)


def _post(port: int, body: bytes) -> Tuple[int, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("POST", "/v1/models/rec:predict", body)
        answer = connection.getresponse()
        answer.read()
        return answer.status, time.perf_counter() - started
    finally:
        connection.close()


def _recommend_body(rows: int) -> bytes:
    return json.dumps({"signature_name": "recommend", "instances": [
        {"user_id": f"u{i:05d}", "history_item_ids": ["item-01", "item-02", "item-03"],
         "device": "mobile", "timestamp": 1_700_000_000, "k": 10} for i in range(rows)]}).encode()


def memory_report(work: str, rows: int, idle: int) -> None:
    import socket
    base = os.path.join(work, "rec")
    standin_models.save_recommender(os.path.join(base, "1"))
    print(f"RSS from `python` to a server at rest (stand-in recommender; cpus: {os.cpu_count()}):")
    subprocess.run([sys.executable, "-c", _RSS_STEPS, base], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stderr=subprocess.DEVNULL)

    big, small = _recommend_body(rows), _recommend_body(1)
    print(f"\none REST request of {rows} recommend instances ({len(big) / 2 ** 20:.1f} MiB):")
    growth = {}
    for label, extra in (("no budget (before)", ["--request_budget_bytes", "0"]),
                         ("default budget", [])):
        with recommender_server(base, work, extra) as (pid, port):
            _post(port, small)
            rest_rss, rest_peak = _status_mib(pid, "VmRSS"), _status_mib(pid, "VmHWM")
            status, seconds = _post(port, big)
            time.sleep(1)
            growth[label] = _status_mib(pid, "VmHWM") - rest_peak
            print(f"  {label:20s} {status} in {seconds:5.2f} s; at rest {rest_rss:6.1f} MiB, "
                  f"peak +{growth[label]:6.1f} MiB, after {_status_mib(pid, 'VmRSS'):6.1f} MiB")
    print(f"  peak growth, default budget / none: "
          f"{growth['default budget'] / max(growth['no budget (before)'], 1e-9):.3f}x")

    print(f"\ngood requests with {idle} idle sockets open (default connection caps):")
    with recommender_server(base, work, []) as (_, port):
        def p50(count: int = 20) -> Tuple[float, int]:
            results = [_post(port, small) for _ in range(count)]
            return (statistics.median(seconds for _, seconds in results),
                    sum(status == 200 for status, _ in results))
        p50(5)
        alone, answered_alone = p50()
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(idle)]
        try:
            crowded, answered = p50()
        finally:
            for sock in socks:
                sock.close()
        print(f"  none idle: {answered_alone}/20 answered, p50 {alone * 1000:.1f} ms; "
              f"{idle} idle: {answered}/20 answered, p50 {crowded * 1000:.1f} ms; "
              f"ratio {crowded / alone:.2f}x")
