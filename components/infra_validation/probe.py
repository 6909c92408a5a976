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

The server process lives in candidate_server.py, the requests and the two APIs in
model_requests.py; this module runs the checks and decides.
"""
from __future__ import annotations

import dataclasses
import http.client
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hyperrec.schemas import features
from hyperrec.components.infra_validation.candidate_server import Refusal, Server, Settings
from hyperrec.components.infra_validation.model_requests import (
    Call, GrpcApi, RestApi, build_calls, signature_defs)


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
