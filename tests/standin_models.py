"""Small SavedModels and helpers for testing and benchmarking the server.

The pipeline's own model takes minutes to train, so the serving tests use models in the
spirit of TF Serving's saved_model_half_plus_two: `y = 0.5 * x + offset` behind every kind
of signature TF Serving knows (predict, classify, regress), plus a bytes signature for the
`{"b64": ...}` rules, a multi-input one, a stand-in `recommend` with the pipeline's exact
signature, and a matmul-heavy one for the batching benchmark. `offset` differs per version,
so an answer tells which version produced it.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from hyperrec.schemas import features
from hyperrec.serving import record_io
from hyperrec.serving.servable import CLASSIFY_METHOD, REGRESS_METHOD, SAVED_MODEL_FILE

MODEL_NAME = "half_plus_two"
CATALOG = tuple(f"item-{i:02d}" for i in range(20))
EXCLUDED_SCORE = -1e9

_string = tf.TensorSpec([None], tf.string)


class HalfPlusTwo(tf.Module):
    """y = 0.5 x + offset, served through predict, classify, regress, bytes and multi-input."""

    def __init__(self, offset: float):
        super().__init__()
        self.slope = tf.Variable(0.5)
        self.offset = tf.Variable(float(offset))

    def _y(self, x):
        return self.slope * x + self.offset

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self._y(x)}

    def _parse(self, serialized):
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([], tf.float32)})
        return self._y(parsed["x"])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        y = self._parse(inputs)
        scores = tf.stack([y, -y], axis=1)
        classes = tf.broadcast_to(tf.constant([["y", "minus_y"]]), tf.shape(scores))
        return {"scores": scores, "classes": classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": self._parse(inputs)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def bytes_echo(self, image_bytes):
        # `_bytes` outputs come back as {"b64": ...}; `length` shows what the server decoded.
        return {"echo_bytes": image_bytes, "length": tf.strings.length(image_bytes),
                "upper": tf.strings.upper(image_bytes)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="name")])
    def greet(self, name):
        return {"greeting": tf.strings.join(["hello ", name])}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.int64, name="b"),
                                  tf.TensorSpec([None], tf.string, name="tag")])
    def multi(self, a, b, tag):
        total = tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32) + self.offset
        return {"total": total, "tag": tf.strings.join([tag, "!"])}

    def signatures(self) -> dict:
        return {"serving_default": self.predict, "classify_x_to_y": self.classify,
                "regress_x_to_y": self.regress, "bytes_echo": self.bytes_echo,
                "greet": self.greet, "multi": self.multi}


class FakeRecommender(tf.Module):
    """The pipeline's `recommend` signature over a fixed 20-item catalogue.

    Scores fall with catalogue position, shifted per user; history items are excluded and
    `k` is the batch's max, like components/trainer/signatures.py.
    """

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.catalog = tf.constant(CATALOG)
        self.base = tf.Variable(1.0 / (1.0 + np.arange(len(CATALOG), dtype=np.float32)))
        self.offset = tf.Variable(float(offset))
        self.index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.catalog, tf.range(len(CATALOG),
                                                                       dtype=tf.int64)), -1)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name=features.USER_ID),
        tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
        tf.TensorSpec([None], tf.string, name=features.DEVICE),
        tf.TensorSpec([None], tf.int64, name=features.TIMESTAMP),
        tf.TensorSpec([None], tf.int32, name=features.K)])
    def recommend(self, user_id, history_item_ids, device, timestamp, k):
        batch = tf.shape(user_id)[0]
        shift = tf.cast(tf.strings.to_hash_bucket_fast(user_id, 100), tf.float32) / 1e4
        scores = self.base[tf.newaxis, :] + shift[:, tf.newaxis] + self.offset
        seen = tf.reduce_any(
            tf.equal(self.index.lookup(history_item_ids)[:, :, tf.newaxis],
                     tf.range(len(CATALOG), dtype=tf.int64)[tf.newaxis, tf.newaxis, :]), axis=1)
        scores = tf.where(seen, tf.constant(EXCLUDED_SCORE), scores)
        top_scores, top_rows = tf.math.top_k(scores, k=tf.reduce_max(k))
        del batch, device, timestamp
        return {features.ITEM_IDS: tf.gather(self.catalog, top_rows), features.SCORES: top_scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES)])
    def serve_examples(self, examples):
        parsed = tf.io.parse_example(
            examples, {features.USER_ID: tf.io.FixedLenFeature([], tf.string, default_value="")})
        score = tf.cast(tf.strings.length(parsed[features.USER_ID]), tf.float32) / 100.0
        return {features.SCORE: score + self.offset}

    def signatures(self) -> dict:
        return {features.SERVING_DEFAULT: self.serve_examples, features.RECOMMEND: self.recommend}


class DenseModel(tf.Module):
    """A two-layer MLP whose weights dominate a batch-1 call: where batching pays off."""

    def __init__(self, width: int, hidden: int, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = tf.Variable(rng.standard_normal((width, hidden), dtype=np.float32) / width)
        self.w2 = tf.Variable(rng.standard_normal((hidden, width), dtype=np.float32) / hidden)
        self.width = width

    def signatures(self) -> dict:
        @tf.function(input_signature=[tf.TensorSpec([None, self.width], tf.float32, name="x")])
        def dense(x):
            return {"y": tf.matmul(tf.nn.relu(tf.matmul(x, self.w1)), self.w2)}
        return {"serving_default": dense}


def set_method_names(version_dir: str, method_names: dict) -> None:
    """Rewrites SignatureDef method names in saved_model.pb (tf.saved_model.save writes predict)."""
    path = os.path.join(version_dir, SAVED_MODEL_FILE)
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            if name in meta_graph.signature_def:
                meta_graph.signature_def[name].method_name = method
    with open(path, "wb") as handle:
        handle.write(saved_model.SerializeToString())


def save_half_plus_two(version_dir: str, offset: float = 2.0) -> str:
    module = HalfPlusTwo(offset)
    tf.saved_model.save(module, version_dir, signatures=module.signatures())
    set_method_names(version_dir, {"classify_x_to_y": CLASSIFY_METHOD,
                                   "regress_x_to_y": REGRESS_METHOD})
    return version_dir


def save_recommender(version_dir: str, offset: float = 0.0) -> str:
    module = FakeRecommender(offset)
    tf.saved_model.save(module, version_dir, signatures=module.signatures())
    return version_dir


def save_dense(version_dir: str, width: int = 512, hidden: int = 2048) -> str:
    module = DenseModel(width, hidden)
    tf.saved_model.save(module, version_dir, signatures=module.signatures())
    return version_dir


def write_corrupt_version(version_dir: str) -> str:
    """A version directory whose saved_model.pb is not a SavedModel."""
    os.makedirs(version_dir, exist_ok=True)
    with open(os.path.join(version_dir, SAVED_MODEL_FILE), "wb") as handle:
        handle.write(b"\x0b this is not a SavedModel protocol buffer \xff\xfe")
    return version_dir


def write_slow_failing_version(version_dir: str, records: int = 400) -> str:
    """A version that loads, replays `records` warmup requests of a matmul-heavy model (about
    10 ms each) and then fails on the last one: a broken version whose failure costs seconds,
    as a large model's does."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    save_dense(version_dir, width=64, hidden=16384)
    good = predict_pb2.PredictRequest()
    good.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((64, 64), np.float32)))
    bad = predict_pb2.PredictRequest()
    bad.inputs["not_an_input"].CopyFrom(tf.make_tensor_proto(np.ones((1, 64), np.float32)))
    logs = [prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
        for request in [good] * records + [bad]]
    write_warmup_file(version_dir, logs)
    return version_dir


def write_warmup_file(version_dir: str, logs: Iterable) -> str:
    """assets.extra/tf_serving_warmup_requests holding the given PredictionLogs."""
    extra = os.path.join(version_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "tf_serving_warmup_requests")
    with open(path, "wb") as handle:
        for log in logs:
            handle.write(record_io.encode(log.SerializeToString()))
    return path


def push_version(source_dir: str, base_path: str, version: int) -> str:
    """Copies a version in the way a pusher does: to a hidden temp dir, then one rename."""
    target = os.path.join(base_path, str(version))
    staging = os.path.join(base_path, f".tmp-{version}-{os.getpid()}")
    shutil.copytree(source_dir, staging)
    os.rename(staging, target)
    return target


# ---- processes and ports -----------------------------------------------------------------

def rest_only_options(model_name: str, base_path: str, **overrides):
    """ServerOptions for an in-process server of one model: REST on a free port, no gRPC,
    no polling (`overrides` replace any field)."""
    from hyperrec.serving import config
    from hyperrec.serving.server import ServerOptions
    fields = dict(grpc_port=None, rest_port=0, poll_seconds=0)
    fields.update(overrides)
    return ServerOptions(models=config.single_model(model_name, base_path), **fields)


def raw_exchange(port: int, raw: bytes, wait: float = 10.0) -> bytes:
    """Sends raw bytes to 127.0.0.1:`port`; returns everything the server wrote until it
    closed the connection (or nothing arrived for `wait` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
    return data


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(rest_port: int, model_name: str, timeout: float = 60.0,
                       process: Optional[subprocess.Popen] = None) -> None:
    """Polls GET /v1/models/{name} on 127.0.0.1 until it answers 200."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{rest_port}/v1/models/{model_name}"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server on port {rest_port} not serving {model_name} after {timeout}s")


def server_command(args: Sequence[str]) -> List[str]:
    """`python -m hyperrec.serving ARGS` with this interpreter."""
    return [sys.executable, "-m", "hyperrec.serving", *args]


def start_until_serving(args: Sequence[str], log_path: str, rest_port: int, model_name: str,
                        timeout: float = 120.0) -> Tuple[subprocess.Popen, float]:
    """Starts `python -m hyperrec.serving ARGS`; returns it and the seconds until its REST
    port answered for `model_name`."""
    started = time.monotonic()
    process = start_server_process(args, log_path)
    try:
        wait_until_serving(rest_port, model_name, timeout=timeout, process=process)
    except BaseException:
        stop_server_process(process)
        raise
    return process, time.monotonic() - started


def stop_server_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within 30 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def peak_memory_bytes(pid: int) -> int:
    """The process's peak resident set size (VmHWM in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def start_server_process(args: Sequence[str], log_path: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(server_command(args), stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    finally:
        log.close()
