"""Serving benchmark: REST and gRPC against calling the same signature in-process.

Measures p50/p99 latency and throughput at 1, 8 and 32 concurrent clients, with server-side
batching off and on, all in one run and on one machine, then prints the ratios the serving
design is judged by:
- gRPC p50 at 1 client / in-process p50 at 1 client (target: <= 1.3x);
- throughput at 32 clients, batching on / batching off (target: >= 3x).
Beside them it measures the floor under the first ratio: a PredictionService that only
echoes the request (no TensorFlow, the same stubs and payload) over the same Python gRPC;
(in-process + echo) / in-process is the best ratio any Python gRPC server could reach here.
The 1-client latency ratios come from in-process, gRPC, REST and echo calls measured in
alternating short slices (the same VM drifts by tens of percent within a minute); the
table's 1-client cells, measured one after another, are printed beside them.
From the server's Prometheus histograms the table also shows, per cell, the server's own
mean request time (so client-side latency splits into server and transport) and, with
batching on, the mean rows per executed batch, which is what batching's throughput follows.
The model is a two-layer MLP (tests/standin_models.py DenseModel) whose 64 MB of weights make a
batch-1 call memory-bound: exactly the per-call cost that batching shares between requests.
Each server is its own `python -m hyperrec.serving` process (so the clients do not share its GIL);
everything listens on 127.0.0.1. Total run time is bounded (about 1-1.5 minutes).

    python bench/bench_serving.py [--seconds 2.5] [--width 2048] [--hidden 4096]

`--restart [--repeats 3]` measures instead how long a start takes until the REST port answers
with a broken version on disk (it loads, then fails its warmup after seconds of work) against
a clean start, as medians of interleaved starts: with the load failure remembered from a
previous start (the default) and without (`--model_load_failure_file ''`, so every start
loads the broken version first).

`--memory [--rows 100000] [--idle 1000]` measures memory and connections instead (about a
minute): RSS step by step from `python` to a server at rest (imports, model load, ports,
requests); the peak RSS growth for one REST request of `--rows` `recommend` instances
without the per-request budget (`--request_budget_bytes 0`) and with the default, and RSS
after it; and the p50 latency of good requests with `--idle` idle sockets open against
none, each as a ratio. Both modes live in bench_serving_footprint.py.
"""
from __future__ import annotations

import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import argparse
import contextlib
import gc
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Callable, Dict, Iterator, List, Tuple

import grpc
import numpy as np
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from hyperrec.serving import config as serving_config
from hyperrec.serving import metrics

# The stand-in models live with the tests (tests/standin_models.py), not in the product.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import standin_models  # noqa: E402
from bench_serving_footprint import memory_report, restart_ratios  # noqa: E402

MODEL = "dense"
CONCURRENCY = (1, 8, 32)
INTERLEAVED_ROUNDS = 10
# The production monitoring config (Prometheus on the REST port) serves the benchmark too.
MONITORING_CONFIG = os.path.join(os.path.dirname(os.path.abspath(hyperrec.serving.__file__)),
                                 "monitoring.config")
METRICS_PATH = serving_config.read_monitoring_config_file(MONITORING_CONFIG).prometheus_path
BATCHING_PARAMETERS = """\
max_batch_size { value: 32 }
batch_timeout_micros { value: 10000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 2 }
"""

Caller = Callable[[], None]


def measure(make_caller: Callable[[], Caller], clients: int, seconds: float
            ) -> Dict[str, float]:
    """Runs `clients` threads calling in a loop; latency percentiles and throughput."""
    gc.collect()
    gc.freeze()  # the clients' own full collections must not show up as server latency
    warmup = min(0.5, seconds / 4)
    start = time.perf_counter()
    measure_from, measure_to = start + warmup, start + warmup + seconds
    latencies: List[List[float]] = [[] for _ in range(clients)]
    errors: List[BaseException] = []

    def client(index: int) -> None:
        try:
            call = make_caller()
            while True:
                began = time.perf_counter()
                if began >= measure_to:
                    return
                call()
                if began >= measure_from:
                    latencies[index].append(time.perf_counter() - began)
        except BaseException as err:  # reported below: a benchmark must not hide failures
            errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    merged = sorted(x for per_client in latencies for x in per_client)
    return {"p50_ms": 1e3 * merged[len(merged) // 2],
            "p99_ms": 1e3 * merged[min(len(merged) - 1, int(len(merged) * 0.99))],
            "rps": len(merged) / seconds, "calls": len(merged)}


def interleaved_p50(makers: Dict[str, Callable[[], Caller]], rounds: int,
                    slice_seconds: float) -> Dict[str, float]:
    """1-client p50 (ms) of several ways of calling, measured in alternating short slices.

    On a shared VM the speed of the same call drifts by tens of percent within a minute,
    so cells measured one after another can differ by more than what they compare.
    Alternating slices lets every drift hit all the ways of calling alike; their ratios
    are what the 1-client latency target is judged on.
    """
    calls = {name: make() for name, make in makers.items()}
    latencies: Dict[str, List[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(20):  # warm connections and TensorFlow's threads
            call()
    gc.collect()
    for _ in range(rounds):
        for name, call in calls.items():
            until = time.perf_counter() + slice_seconds
            while True:
                began = time.perf_counter()
                if began >= until:
                    break
                call()
                latencies[name].append(time.perf_counter() - began)
    return {name: 1e3 * float(np.median(values)) for name, values in latencies.items()}


# ---- the three ways of calling the model --------------------------------------------------

def in_process_caller(model_dir: str, row: np.ndarray) -> Callable[[], Caller]:
    function = tf.saved_model.load(model_dir).signatures["serving_default"]

    def make() -> Caller:
        return lambda: function(x=tf.constant(row))
    return make


def rest_caller(port: int, row: np.ndarray) -> Callable[[], Caller]:
    body = json.dumps({"instances": row.tolist()})
    path = f"/v1/models/{MODEL}:predict"

    def make() -> Caller:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def call() -> None:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {data[:200]!r}")
        return call
    return make


def grpc_caller(port: int, row: np.ndarray) -> Callable[[], Caller]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(row))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def make() -> Caller:
        return lambda: stub.Predict(request, timeout=60)
    return make


# ---- the transport floor: an echo PredictionService ------------------------------------------

def run_echo_server(port: int) -> None:
    """Serves Predict by echoing each input back as an output (no model, no TensorFlow call):
    what is left is the Python gRPC round trip with the benchmark's payload."""
    from concurrent import futures

    class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for alias, tensor in request.inputs.items():
                response.outputs[alias].CopyFrom(tensor)
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    port = standin_models.free_port()
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo-server",
                                str(port)], env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        request = predict_pb2.PredictRequest()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                              timeout=60)
        yield port
    finally:
        process.kill()
        process.wait(30)


Totals = Dict[Tuple[str, frozenset], Tuple[float, float]]  # (name, labels) -> (sum, count)


def histogram_totals(rest_port: int) -> Totals:
    """(sum, count) of every histogram series the server has recorded so far, keyed by
    (metric name, labels), read from its Prometheus exposition."""
    url = f"http://127.0.0.1:{rest_port}{METRICS_PATH}"
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode("utf-8")
    totals: Dict[Tuple[str, frozenset], List[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            slot = {family.name + "_sum": 0, family.name + "_count": 1}.get(sample.name)
            if slot is not None:
                key = (family.name, frozenset(sample.labels.items()))
                totals.setdefault(key, [0.0, 0.0])[slot] = sample.value
    return {key: (pair[0], pair[1]) for key, pair in totals.items()}


def cell_metrics(before: Totals, after: Totals, entrypoint: str) -> Dict[str, float]:
    """What the server saw during one cell: mean rows per executed batch and its own mean
    request latency (handler entry to exit, transport excluded) for `entrypoint`."""
    def delta(select: Callable[[Tuple[str, frozenset]], bool]) -> Tuple[float, float]:
        total, count = 0.0, 0.0
        for key, (value_sum, value_count) in after.items():
            if select(key):
                old_sum, old_count = before.get(key, (0.0, 0.0))
                total, count = total + value_sum - old_sum, count + value_count - old_count
        return total, count

    found = {}
    rows, batches = delta(lambda key: key[0] == metrics.BATCH_SIZE)
    if batches:
        found["rows_per_batch"] = rows / batches
    micros, requests = delta(lambda key: key[0] == metrics.REQUEST_LATENCY and
                             ("entrypoint", entrypoint) in key[1])
    if requests:
        found["server_ms"] = micros / requests / 1e3
    return found


# ---- servers ---------------------------------------------------------------------------------

@contextlib.contextmanager
def model_server(base: str, work: str, batching: bool) -> Iterator[Tuple[int, int]]:
    grpc_port, rest_port = standin_models.free_port(), standin_models.free_port()
    args = ["--model_name", MODEL, "--model_base_path", base, "--port", str(grpc_port),
            "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0",
            "--grpc_max_threads", "64", "--monitoring_config_file", MONITORING_CONFIG]
    if batching:
        parameters = os.path.join(work, "batching_parameters.txt")
        with open(parameters, "w", encoding="utf-8") as handle:
            handle.write(BATCHING_PARAMETERS)
        args += ["--enable_batching", "--batching_parameters_file", parameters]
    log = os.path.join(work, f"server-batching-{'on' if batching else 'off'}.log")
    process, _ = standin_models.start_until_serving(args, log, rest_port, MODEL, timeout=120)
    try:
        yield grpc_port, rest_port
    finally:
        standin_models.stop_server_process(process)


def check_same_answer(model_dir: str, row: np.ndarray, grpc_port: int, rest_port: int) -> None:
    """All three paths compute the same thing (a benchmark of wrong answers is worthless)."""
    expected = tf.saved_model.load(model_dir).signatures["serving_default"](
        x=tf.constant(row))["y"].numpy()
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
    connection.request("POST", f"/v1/models/{MODEL}:predict",
                       json.dumps({"instances": row.tolist()}))
    over_rest = np.array(json.loads(connection.getresponse().read())["predictions"])
    connection.close()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(row))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    np.testing.assert_allclose(over_rest, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), expected, rtol=1e-5,
                               atol=1e-5)


# ---- report ----------------------------------------------------------------------------------

def print_table(results: Dict[Tuple[str, str, int], Dict[str, float]]) -> None:
    print(f"\n{'path':<11} {'batching':<9} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s':>9} {'calls':>7} {'server ms':>9} {'rows/batch':>10}")
    for (path, batching, clients), row in results.items():
        server = f"{row['server_ms']:>9.2f}" if "server_ms" in row else f"{'-':>9}"
        rows = f"{row['rows_per_batch']:>10.1f}" if "rows_per_batch" in row else f"{'-':>10}"
        print(f"{path:<11} {batching:<9} {clients:>7} {row['p50_ms']:>8.2f} "
              f"{row['p99_ms']:>8.2f} {row['rps']:>9.1f} {row['calls']:>7d} {server} {rows}")
    print("server ms: the server's own mean request time (Prometheus request_latency: handler "
          "entry to exit,\nmodel call included, transport excluded); rows/batch: mean rows per "
          "executed batch.")


def print_ratios(results: Dict[Tuple[str, str, int], Dict[str, float]],
                 interleaved: Dict[str, float]) -> None:
    base = interleaved["in-process"]
    echo = interleaved["grpc-echo"]
    print("\nratios (same run, same machine)")
    print(f"  1 client, batching off, interleaved ({INTERLEAVED_ROUNDS} rounds of alternating "
          f"slices): p50 in-process {base:.2f} ms, gRPC {interleaved['grpc']:.2f} ms, REST "
          f"{interleaved['rest']:.2f} ms, gRPC echo {echo:.2f} ms")
    print(f"  floor: (in-process p50 + gRPC echo p50) / in-process p50: "
          f"{(base + echo) / base:5.2f}x  (the echo round trip: no model, no TensorFlow)")
    print(f"  grpc p50 @1 client / in-process p50: {interleaved['grpc'] / base:5.2f}x  "
          "(target <= 1.3x)")
    print(f"  rest p50 @1 client / in-process p50: {interleaved['rest'] / base:5.2f}x")
    cell_base = results[("in-process", "-", 1)]["p50_ms"]
    for path in ("grpc", "rest"):
        for batching in ("off", "on"):
            ratio = results[(path, batching, 1)]["p50_ms"] / cell_base
            print(f"  table cells: {path} p50 @1 client, batching {batching:<3} / in-process p50: "
                  f"{ratio:5.2f}x")
    for path in ("grpc", "rest"):
        for clients in (8, 32):
            ratio = results[(path, "on", clients)]["rps"] / results[(path, "off", clients)]["rps"]
            target = "  (target >= 3x)" if clients == 32 else ""
            print(f"  {path} throughput @{clients} clients, batching on / off: {ratio:5.2f}x"
                  f"{target}")
    for clients in CONCURRENCY:
        ratio = results[("grpc", "on", clients)]["rps"] / results[("in-process", "-", clients)][
            "rps"]
        print(f"  grpc (batching on) / in-process throughput @{clients} clients: {ratio:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.5, help="measured seconds per cell")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--restart", action="store_true",
                        help="measure start-to-ready with a broken version on disk instead")
    parser.add_argument("--repeats", type=int, default=3, help="starts per kind (--restart)")
    parser.add_argument("--memory", action="store_true",
                        help="measure memory at rest, per large request and with idle sockets")
    parser.add_argument("--rows", type=int, default=100_000, help="instances (--memory)")
    parser.add_argument("--idle", type=int, default=1000, help="idle sockets (--memory)")
    args = parser.parse_args()
    if args.echo_server:
        run_echo_server(args.echo_server)
        return
    if args.restart or args.memory:
        work = tempfile.mkdtemp(prefix="bench-serving-")
        try:
            if args.restart:
                restart_ratios(work, args.repeats)
            else:
                memory_report(work, args.rows, args.idle)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return

    started = time.perf_counter()
    work = tempfile.mkdtemp(prefix="bench-serving-")
    try:
        base = os.path.join(work, MODEL)
        model_dir = standin_models.save_dense(os.path.join(base, "1"), args.width, args.hidden)
        row = np.random.default_rng(0).standard_normal((1, args.width)).astype(np.float32)
        print(f"model: x[1,{args.width}] -> relu(x W1[{args.width},{args.hidden}]) "
              f"W2[{args.hidden},{args.width}]; cpus: {os.cpu_count()}; "
              f"{args.seconds}s per cell; load average before: {os.getloadavg()[0]:.2f}")
        results: Dict[Tuple[str, str, int], Dict[str, float]] = {}
        interleaved: Dict[str, float] = {}
        caller = in_process_caller(model_dir, row)
        for clients in CONCURRENCY:
            results[("in-process", "-", clients)] = measure(caller, clients, args.seconds)
        with echo_server() as echo_port:
            results[("grpc-echo", "-", 1)] = measure(grpc_caller(echo_port, row), 1,
                                                     args.seconds)
            for batching in (False, True):
                with model_server(base, work, batching) as (grpc_port, rest_port):
                    check_same_answer(model_dir, row, grpc_port, rest_port)
                    label = "on" if batching else "off"
                    for path, make in (("grpc", grpc_caller(grpc_port, row)),
                                       ("rest", rest_caller(rest_port, row))):
                        for clients in CONCURRENCY:
                            before = histogram_totals(rest_port)
                            cell = measure(make, clients, args.seconds)
                            cell.update(cell_metrics(before, histogram_totals(rest_port),
                                                     path.upper()))
                            results[(path, label, clients)] = cell
                    if not batching:
                        interleaved = interleaved_p50(
                            {"in-process": caller, "grpc": grpc_caller(grpc_port, row),
                             "rest": rest_caller(rest_port, row),
                             "grpc-echo": grpc_caller(echo_port, row)},
                            rounds=INTERLEAVED_ROUNDS, slice_seconds=args.seconds / 10)
        ordered = dict(sorted(results.items(), key=lambda kv: (
            ["in-process", "grpc-echo", "grpc", "rest"].index(kv[0][0]), kv[0][1], kv[0][2])))
        print_table(ordered)
        print_ratios(results, interleaved)
        print(f"\ntotal benchmark time: {time.perf_counter() - started:.0f}s; load average "
              f"after: {os.getloadavg()[0]:.2f} (other processes on these cores skew the numbers)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
