"""Serve a candidate SavedModel in a fresh model-server process and check it answers.

`validate(model_dir, settings, workdir)`:
1. stages the candidate as version 1 of a private base path (a symlink, nothing copied) and
   starts `python -m hyperrec.serving` on it on two free loopback ports (gRPC, REST), with
   warmup on (the server replays assets.extra/tf_serving_warmup_requests before it makes the
   version AVAILABLE, as TF Serving does), no version polling and no load-failure memory;
2. watches the process's peak resident set (VmHWM, /proc) every 20 ms and kills it once
   it is above `memory_limit_mb` (see `MemoryWatch` for why RSS and not RLIMIT_AS);
3. waits for AVAILABLE (load time = process start to AVAILABLE: interpreter, TensorFlow,
   the model and its warmup, what a restarted replica pays), or for the load error;
4. builds one request per signature: the warmup requests as recorded, and for a signature
   without one, inputs taken from the warmup's tf.Examples by input name (else
   zeros / ""); sends each over REST (TF Serving's JSON, columnar `inputs`) and over gRPC
   (PredictionService through the official tensorflow_serving.apis stubs);
5. checks every answer's shapes (first dimension = the request's batch, the signature's
   declared rank and sizes, `[batch, <= max k]` for a signature taking `k`), then the
   latency of the first request and p50/p99 over `requests` calls per API;
6. stops the server, calls the same requests in-process (tf.saved_model.load) and requires
   REST and gRPC answers to equal them (strings and integers exactly, floats within
   rtol/atol).
The first failure is the refusal and its reason names the check ("load", "memory", "shape",
"mismatch", "request", "timeout"); the numbers measured until then are kept.

Only the model server is a separate process: `python -m hyperrec.serving` is the serving
module, never the pipeline's `hyperrec` command.
"""
from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hyperrec.components import config as config_lib
from hyperrec.schemas import features

SERVER_MODULE = "hyperrec.serving"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
VERSION = 1
_INIT_OP = "__saved_model_init_op"
_LOG_TAIL = 1500


class Refusal(Exception):
    """A failed check: `kind` is the check's name, the message says what went wrong."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclasses.dataclass
class Settings(config_lib.InfraValidationConfig):
    """The run's InfraValidationConfig and the name the server serves the candidate as."""

    model_name: str = "hyperrec"


@dataclasses.dataclass
class Report:
    blessed: bool = False
    reason: str = ""
    refusal_kind: str = ""
    load_seconds: Optional[float] = None
    first_request_ms: Optional[float] = None
    rest_p50_ms: Optional[float] = None
    rest_p99_ms: Optional[float] = None
    grpc_p50_ms: Optional[float] = None
    grpc_p99_ms: Optional[float] = None
    latency_signature: str = ""
    peak_rss_mb: Optional[float] = None
    memory_limit_mb: float = 0.0
    warmup_requests: int = 0
    signatures: List[str] = dataclasses.field(default_factory=list)
    checks: List[str] = dataclasses.field(default_factory=list)
    server_log_tail: str = ""

    def numbers(self) -> Dict[str, float]:
        """The measured numbers (those that were reached), for MLMD properties."""
        names = ("load_seconds", "first_request_ms", "rest_p50_ms", "rest_p99_ms",
                 "grpc_p50_ms", "grpc_p99_ms", "peak_rss_mb", "memory_limit_mb")
        return {n: float(getattr(self, n)) for n in names if getattr(self, n) is not None}


@dataclasses.dataclass
class Call:
    """One request: a signature and its inputs (numpy arrays, batch first)."""
    signature: str
    inputs: Dict[str, np.ndarray]

    @property
    def batch(self) -> int:
        return int(min(len(v) for v in self.inputs.values())) if self.inputs else 0


# ---------------------------------------------------------------- the server process

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemoryWatch(threading.Thread):
    """Polls the server's peak RSS (VmHWM) and SIGKILLs it above the limit.

    Why RSS and not `resource.setrlimit(RLIMIT_AS)` in preexec_fn: RLIMIT_AS caps virtual
    address space, and a TensorFlow process reserves several GiB of it that it never touches
    (thread stacks, allocator arenas, mapped libraries), so a limit near the real need fails
    healthy models at import, and an exceeded one surfaces as a bad_alloc abort with no
    reason. Container limits (cgroups, Kubernetes `resources.limits.memory`) count resident
    memory, which is what this watches; VmHWM is the kernel's own high-water mark, so a spike
    between two polls is still seen at the next one.
    """

    def __init__(self, process: subprocess.Popen, limit_bytes: float, interval: float = 0.02):
        super().__init__(daemon=True)
        self.process, self.limit, self.interval = process, limit_bytes, interval
        self.peak = 0
        self.exceeded = False
        self._stop_event = threading.Event()

    def sample(self) -> int:
        try:
            self.peak = max(self.peak, _status_kib(self.process.pid, "VmHWM") * 1024)
        except (OSError, ValueError):
            pass
        return self.peak

    def run(self) -> None:
        while not self._stop_event.is_set() and self.process.poll() is None:
            if self.limit and self.sample() > self.limit:
                self.exceeded = True
                self.process.kill()
                return
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()


class Server:
    """`python -m hyperrec.serving` on a private base path holding only the candidate."""

    def __init__(self, model_dir: str, workdir: str, settings: Settings):
        self.settings = settings
        base = os.path.join(workdir, "model_base")
        os.makedirs(base, exist_ok=True)
        link = os.path.join(base, str(VERSION))
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(model_dir), link)
        self.grpc_port = free_port()
        self.rest_port = free_port()
        while self.rest_port == self.grpc_port:
            self.rest_port = free_port()
        self.log_path = os.path.join(workdir, "server.log")
        args = [sys.executable, "-m", SERVER_MODULE, f"--model_name={settings.model_name}",
                f"--model_base_path={base}", f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}", "--file_system_poll_wait_seconds=0",
                "--model_load_failure_file=", "--enable_model_warmup=true"]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        self.watch = MemoryWatch(self.process, settings.memory_limit_mb * 2 ** 20)
        self.watch.start()

    def log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - _LOG_TAIL))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Raises the memory refusal once the watch killed the server, or an exit."""
        if self.watch.exceeded:
            raise Refusal("memory", f"peak RSS {self.watch.peak / 2 ** 20:.0f} MiB exceeded "
                          f"the limit of {self.settings.memory_limit_mb:.0f} MiB (server "
                          "killed)")
        code = self.process.poll()
        if code is not None:
            last = self.log_tail().strip().splitlines()[-1:] or [""]
            raise Refusal("load", f"the server exited with code {code}: {last[0][:300]}")

    def wait_available(self, rest: "RestApi") -> float:
        """Seconds from process start until the version is AVAILABLE; a load error, an exit
        or the memory limit is a Refusal."""
        deadline = self.started + self.settings.load_timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status = rest.status()
            except (OSError, http.client.HTTPException, ValueError):
                status = None
            for entry in (status or {}).get("model_version_status", []):
                error = entry.get("status", {})
                if entry.get("state") == "AVAILABLE":
                    return time.monotonic() - self.started
                if error.get("error_code", "OK") not in ("OK", 0):
                    raise Refusal("load", f"the server could not load the model: "
                                  f"{error.get('error_code')}: "
                                  f"{error.get('error_message', '')[:400]}")
            time.sleep(0.05)
        raise Refusal("timeout", f"not AVAILABLE {self.settings.load_timeout_s:.0f}s after "
                      "the server started")

    def peak_rss_mb(self) -> float:
        return self.watch.sample() / 2 ** 20

    def stop(self) -> None:
        self.watch.stop()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


# ---------------------------------------------------------------- the two APIs

def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_json(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        flat = [_json_value(v if not isinstance(v, str) else v.encode("utf-8"))
                for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim \
            else flat[0]
    return array.tolist()


def _from_json(value: Any) -> np.ndarray:
    def leaf(v: Any) -> Any:
        if isinstance(v, dict) and "b64" in v:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [leaf(x) for x in v]
        return v.encode("utf-8") if isinstance(v, str) else v
    converted = leaf(value)
    array = np.array(converted, dtype=object)
    if array.size and all(isinstance(v, (int, float, bool)) for v in array.reshape(-1)):
        return np.array(converted)
    return array


class RestApi:
    """TF Serving's REST API on one keep-alive connection, standard library only."""

    def __init__(self, port: int, model_name: str, timeout: float):
        self.path = f"/v1/models/{model_name}"
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def _exchange(self, method: str, path: str, payload: Optional[dict] = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        try:
            self.connection.request(method, path, body=body,
                                    headers={"Content-Type": "application/json"})
            answer = self.connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            raise
        parsed = json.loads(data.decode("utf-8")) if data else {}
        if answer.status != 200:
            raise Refusal("request", f"REST {answer.status}: {parsed.get('error', data[:300])}")
        return parsed

    def status(self) -> dict:
        return self._exchange("GET", self.path)

    def predict(self, call: Call) -> Dict[str, np.ndarray]:
        answer = self._exchange("POST", self.path + ":predict", {
            "signature_name": call.signature,
            "inputs": {name: _to_json(value) for name, value in call.inputs.items()}})
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict):  # a single output is answered bare
            outputs = {"": outputs}
        return {name: _from_json(value) for name, value in outputs.items()}

    def close(self) -> None:
        self.connection.close()


class GrpcApi:
    """PredictionService through the official tensorflow_serving.apis stubs."""

    def __init__(self, port: int, model_name: str, timeout: float):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc
        self.model_name, self.timeout = model_name, timeout
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1),
                                          ("grpc.max_send_message_length", -1)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(self, call: Call) -> Dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = call.signature
        for name, value in call.inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise Refusal("request", f"gRPC {err.code().name}: {err.details()}") from err
        return {name: tf.make_ndarray(t) for name, t in response.outputs.items()}

    def close(self) -> None:
        self.channel.close()


# ---------------------------------------------------------------- requests

def signature_defs(model_dir: str) -> Dict[str, Any]:
    """{name: SignatureDef} of the serving MetaGraph (saved_model.pb, parsed as protobuf)."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags or len(saved_model.meta_graphs) == 1:
            return {name: sig for name, sig in meta_graph.signature_def.items()
                    if name != _INIT_OP}
    return {}


def warmup_calls(model_dir: str) -> List[Call]:
    """The PredictRequests of the model's warmup file (other log kinds are left out)."""
    path = os.path.join(model_dir, WARMUP_FILE)
    if not os.path.isfile(path):
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    calls = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") == "predict_log":
            request = log.predict_log.request
            calls.append(Call(request.model_spec.signature_name or features.SERVING_DEFAULT,
                              {name: tf.make_ndarray(t) for name, t in request.inputs.items()}))
    return calls


def _example_columns(calls: Sequence[Call]) -> Tuple[Dict[str, List[list]], int]:
    """Per feature name, the value lists of the tf.Examples any warmup request carries
    (in an `examples` input), and how many examples that is."""
    import tensorflow as tf
    serialized = next((call.inputs[features.EXAMPLES] for call in calls
                       if features.EXAMPLES in call.inputs), None)
    if serialized is None:
        return {}, 0
    columns: Dict[str, List[list]] = {}
    for index, data in enumerate(serialized.reshape(-1)):
        for name, feature in tf.train.Example.FromString(data).features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            columns.setdefault(name, [[] for _ in range(len(serialized))])[index] = values
    return columns, len(serialized)


def _synthesised_input(info: Any, columns: Dict[str, List[list]], batch: int,
                       name: str) -> np.ndarray:
    import tensorflow as tf
    dtype = tf.as_dtype(info.dtype)
    numpy_type = object if dtype == tf.string else dtype.as_numpy_dtype
    filler = b"" if dtype == tf.string else 0
    dims = [d.size for d in info.tensor_shape.dim]
    if name == features.K and dtype.is_integer:
        return np.full([batch], 10, numpy_type)
    if name in columns:
        rows = columns[name]
        if len(dims) >= 2:
            width = max([len(r) for r in rows] + [1])
            return np.array([r + [filler] * (width - len(r)) for r in rows], numpy_type)
        return np.array([r[0] if r else filler for r in rows], numpy_type)
    shape = [batch] + [d if d > 0 else 1 for d in dims[1:]]
    return np.full(shape, filler, numpy_type)


def build_calls(model_dir: str, signatures: Dict[str, Any]) -> Tuple[List[Call], int]:
    """The warmup requests (for the signatures the model has) plus one request for every
    other signature; and how many warmup requests the file held."""
    warmup = warmup_calls(model_dir)
    calls = [c for c in warmup if c.signature in signatures]
    columns, examples = _example_columns(warmup)
    batch = min(examples, 4) or 1
    columns = {name: rows[:batch] for name, rows in columns.items()}
    if examples:
        serialized = next(c.inputs[features.EXAMPLES] for c in warmup
                          if features.EXAMPLES in c.inputs)
        columns[features.EXAMPLES] = [[v] for v in serialized.reshape(-1)[:batch]]
    covered = {c.signature for c in calls}
    for name in sorted(set(signatures) - covered):
        inputs = signatures[name].inputs
        calls.append(Call(name, {alias: _synthesised_input(info, columns, batch, alias)
                                 for alias, info in sorted(inputs.items())}))
    return calls, len(warmup)


# ---------------------------------------------------------------- checks

def shape_problem(call: Call, signature: Any, outputs: Dict[str, np.ndarray]) -> Optional[str]:
    """Why `outputs` do not have the shapes the signature promises, or None."""
    declared = dict(signature.outputs)
    if set(outputs) != set(declared) and set(outputs) != {""}:
        return (f"signature {call.signature!r} answered outputs {sorted(outputs)}, "
                f"declared {sorted(declared)}")
    max_k = (int(np.max(call.inputs[features.K])) if features.K in call.inputs
             and call.inputs[features.K].size else None)
    for name, value in outputs.items():
        shape = list(np.shape(value))
        info = declared.get(name) if name else next(iter(declared.values()))
        where = f"signature {call.signature!r} output {name!r} has shape {shape}"
        if not shape or shape[0] != call.batch:
            return f"{where} for a batch of {call.batch}: the first dimension must be the batch"
        if info is not None and not info.tensor_shape.unknown_rank:
            dims = [d.size for d in info.tensor_shape.dim]
            if len(dims) != len(shape) or any(d >= 0 and d != s for d, s in zip(dims, shape)):
                return f"{where}, the signature declares {dims}"
        if max_k is not None and (len(shape) != 2 or shape[1] > max_k):
            return f"{where}: a top-k answer must be [batch, <= k] with k = {max_k}"
    return None


def difference(expected: Dict[str, np.ndarray], got: Dict[str, np.ndarray], rtol: float,
               atol: float) -> Optional[str]:
    """How `got` differs from `expected`, or None (a bare single output matches any name)."""
    if set(got) == {""} and len(expected) == 1:
        got = {next(iter(expected)): got[""]}
    if set(got) != set(expected):
        return f"outputs {sorted(got)} instead of {sorted(expected)}"
    for name, want in expected.items():
        have = got[name]
        if np.shape(have) != np.shape(want):
            return f"{name}: shape {list(np.shape(have))} instead of {list(np.shape(want))}"
        if want.dtype.kind in "fc":
            have = np.asarray(have, dtype=np.float64)
            if not np.allclose(have, want, rtol=rtol, atol=atol):
                worst = float(np.max(np.abs(have - want)))
                return f"{name}: values differ by up to {worst:.3g}"
        elif want.dtype.kind in "iub":
            if not np.array_equal(np.asarray(have, dtype=want.dtype), want):
                return f"{name}: values differ"
        else:
            flat_want = [bytes(v) for v in want.reshape(-1)]
            flat_have = [v if isinstance(v, bytes) else str(v).encode()
                         for v in np.asarray(have, dtype=object).reshape(-1)]
            if flat_want != flat_have:
                return f"{name}: values differ"
    return None


def in_process_answers(model_dir: str, calls: Sequence[Call],
                       signatures: Dict[str, Any]) -> List[Dict[str, np.ndarray]]:
    import tensorflow as tf
    loaded = tf.saved_model.load(model_dir)
    answers = []
    for call in calls:
        fn = loaded.signatures[call.signature]
        inputs = {name: tf.constant(value, dtype=tf.as_dtype(
            signatures[call.signature].inputs[name].dtype))
            for name, value in call.inputs.items()}
        answers.append({name: t.numpy() for name, t in fn(**inputs).items()})
    return answers


def _percentiles(latencies: Sequence[float]) -> Tuple[float, float]:
    values = np.asarray(latencies) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _timed(api: Any, call: Call, count: int) -> List[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        api.predict(call)
        latencies.append(time.perf_counter() - started)
    return latencies


def _serve_and_call(model_dir: str, workdir: str, settings: Settings, report: Report
                    ) -> Tuple[List[Call], Dict[str, Any], List[Tuple[str, Call, dict]]]:
    server = Server(model_dir, workdir, settings)
    rest = RestApi(server.rest_port, settings.model_name, settings.request_timeout_s)
    grpc_api = None
    try:
        report.load_seconds = server.wait_available(rest)
        report.checks.append(f"loaded in {report.load_seconds:.2f}s (warmup replayed)")
        signatures = signature_defs(model_dir)
        report.signatures = sorted(signatures)
        calls, report.warmup_requests = build_calls(model_dir, signatures)
        grpc_api = GrpcApi(server.grpc_port, settings.model_name, settings.request_timeout_s)
        served = []
        for index, call in enumerate(calls):
            for api_name, api in (("REST", rest), ("gRPC", grpc_api)):
                started = time.perf_counter()
                try:
                    outputs = api.predict(call)
                except (OSError, http.client.HTTPException) as err:
                    server.check_alive()
                    raise Refusal("request", f"{api_name} {call.signature}: {err}") from err
                if index == 0 and api_name == "REST":
                    report.first_request_ms = (time.perf_counter() - started) * 1000.0
                problem = shape_problem(call, signatures[call.signature], outputs)
                if problem:
                    raise Refusal("shape", f"{problem} ({api_name})")
                served.append((api_name, call, outputs))
        report.checks.append(f"{len(calls)} requests over {len(report.signatures)} "
                             "signatures answered over REST and gRPC with the promised shapes")
        timed = next((c for c in calls if c.signature == features.RECOMMEND), calls[0])
        report.latency_signature = timed.signature
        report.rest_p50_ms, report.rest_p99_ms = _percentiles(
            _timed(rest, timed, settings.requests))
        report.grpc_p50_ms, report.grpc_p99_ms = _percentiles(
            _timed(grpc_api, timed, settings.requests))
        server.check_alive()
        return calls, signatures, served
    except Refusal:
        raise
    except Exception as err:  # noqa: BLE001 (a server that stops answering mid-way)
        server.check_alive()
        raise Refusal("request", f"{type(err).__name__}: {err}") from err
    finally:
        report.peak_rss_mb = server.peak_rss_mb()
        if grpc_api is not None:
            grpc_api.close()
        rest.close()
        server.stop()
        report.server_log_tail = server.log_tail()
        if server.watch.exceeded:  # killed between two checks: still the memory refusal
            report.peak_rss_mb = max(report.peak_rss_mb, server.watch.peak / 2 ** 20)


def validate(model_dir: str, settings: Settings, workdir: str) -> Report:
    """Serves `model_dir` in a fresh server process and checks it (module docstring)."""
    report = Report(memory_limit_mb=float(settings.memory_limit_mb))
    try:
        calls, signatures, served = _serve_and_call(model_dir, workdir, settings, report)
        expected = in_process_answers(model_dir, calls, signatures)
        by_call = {id(call): answer for call, answer in zip(calls, expected)}
        for api_name, call, outputs in served:
            problem = difference(by_call[id(call)], outputs, settings.rtol, settings.atol)
            if problem:
                raise Refusal("mismatch", f"{api_name} answer of {call.signature!r} differs "
                              f"from the in-process SavedModel: {problem}")
        report.checks.append("REST and gRPC answers equal the in-process SavedModel's")
        if report.peak_rss_mb and report.peak_rss_mb > settings.memory_limit_mb:
            raise Refusal("memory", f"peak RSS {report.peak_rss_mb:.0f} MiB exceeded the "
                          f"limit of {settings.memory_limit_mb:.0f} MiB")
        report.blessed = True
        report.reason = (f"served by a fresh server: loaded in {report.load_seconds:.1f}s, "
                         f"first request {report.first_request_ms:.1f} ms, "
                         f"{report.latency_signature} p50 {report.rest_p50_ms:.1f} ms / p99 "
                         f"{report.rest_p99_ms:.1f} ms (REST), peak RSS "
                         f"{report.peak_rss_mb:.0f} MiB of {settings.memory_limit_mb:.0f}")
    except Refusal as refusal:
        report.blessed = False
        report.refusal_kind = refusal.kind
        report.reason = str(refusal)
    return report
