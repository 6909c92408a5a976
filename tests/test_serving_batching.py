"""Request batching: the scheduler's rules, the parameters file, and a batching server."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import concurrent.futures
import http.client
import json
import threading
import time

import numpy as np
import pytest

from hyperrec.serving import config, errors
import standin_models
from hyperrec.serving.batching import BatchScheduler
from hyperrec.serving.config import BatchingOptions
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """A fake signature: doubles `x`, remembers every batch it was called with."""

    def __init__(self, delay=0.0, gate=None):
        self.batches = []
        self.delay = delay
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, inputs):
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.batches.append({k: v.copy() for k, v in inputs.items()})
        time.sleep(self.delay)
        return {"y": inputs["x"] * 2}


def run_concurrently(scheduler, requests):
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(scheduler.run, requests))


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    fake = Recorder(delay=0.02)
    scheduler = BatchScheduler(fake, BatchingOptions(
        max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1))
    requests = [{"x": np.full((1, 3), i, np.float32)} for i in range(16)]
    try:
        results = run_concurrently(scheduler, requests)
    finally:
        scheduler.close()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 3), 2 * i, np.float32))
    assert len(fake.batches) < len(requests)
    assert max(len(batch["x"]) for batch in fake.batches) <= 8


def test_allowed_batch_sizes_pad_with_the_first_row():
    fake = Recorder()
    options = BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 4), num_batch_threads=1)
    scheduler = BatchScheduler(fake, options)
    try:
        result = scheduler.run({"x": np.array([[5.0], [6.0], [7.0]], np.float32)})
    finally:
        scheduler.close()
    np.testing.assert_array_equal(result["y"], [[10.0], [12.0], [14.0]])
    np.testing.assert_array_equal(fake.batches[0]["x"], [[5.0], [6.0], [7.0], [5.0]])


def test_variable_length_inputs_are_padded_with_the_first_element_only_when_enabled():
    gate = threading.Event()
    requests = [{"x": np.array([["a", "b", "c"]], object)}, {"x": np.array([["d"]], object)}]
    fake = Recorder(gate=gate)
    scheduler = BatchScheduler(fake, BatchingOptions(
        max_batch_size=4, batch_timeout_micros=1_000_000, num_batch_threads=1,
        pad_variable_length_inputs=True))
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(scheduler.run, r) for r in requests]
            time.sleep(0.05)
            gate.set()
            results = [f.result(10) for f in futures]
    finally:
        scheduler.close()
    assert [r["y"].shape for r in results] == [(1, 3), (1, 3)]
    merged = [batch for batch in fake.batches if len(batch["x"]) == 2]
    assert merged and merged[0]["x"].tolist() == [["a", "b", "c"], ["d", "d", "d"]]

    strict = BatchScheduler(Recorder(), BatchingOptions(max_batch_size=4,
                                                        batch_timeout_micros=1_000_000,
                                                        num_batch_threads=1))
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(strict.run, r) for r in requests]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result(10))
                except errors.ServingError as err:
                    outcomes.append(err)
    finally:
        strict.close()
    assert all(isinstance(o, errors.ServingError) and "padding is turned off" in o.message
               for o in outcomes)


def test_batching_preconditions():
    scheduler = BatchScheduler(Recorder(), BatchingOptions(max_batch_size=4, num_batch_threads=1))
    try:
        with pytest.raises(errors.ServingError, match="at least one dimension"):
            scheduler.run({"x": np.array(1.0, np.float32)})
        with pytest.raises(errors.ServingError, match="equal 0th-dimension size"):
            scheduler.run({"x": np.zeros((2,), np.float32), "z": np.zeros((3,), np.float32)})
        with pytest.raises(errors.ServingError,
                           match="Task size 5 is larger than maximum input batch size 4"):
            scheduler.run({"x": np.zeros((5, 1), np.float32)})
    finally:
        scheduler.close()


def test_large_batch_splitting():
    fake = Recorder()
    options = BatchingOptions(max_batch_size=10, max_execution_batch_size=4,
                              enable_large_batch_splitting=True, num_batch_threads=1)
    scheduler = BatchScheduler(fake, options)
    try:
        x = np.arange(10, dtype=np.float32).reshape(10, 1)
        np.testing.assert_array_equal(scheduler.run({"x": x})["y"], x * 2)
    finally:
        scheduler.close()
    assert max(len(batch["x"]) for batch in fake.batches) <= 4


def test_a_full_queue_is_unavailable():
    gate = threading.Event()
    fake = Recorder(gate=gate)
    scheduler = BatchScheduler(fake, BatchingOptions(max_batch_size=1, max_enqueued_batches=2,
                                                     num_batch_threads=1))
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(scheduler.run, {"x": np.ones((1, 1), np.float32)})
                       for _ in range(8)]
            time.sleep(0.2)
            gate.set()
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result(10))
                except errors.ServingError as err:
                    outcomes.append(err.code)
    finally:
        scheduler.close()
    assert errors.Code.UNAVAILABLE in outcomes
    assert any(isinstance(o, dict) for o in outcomes)


def test_a_failing_batch_fails_every_request_in_it():
    def broken(inputs):
        raise ValueError("model exploded")
    scheduler = BatchScheduler(broken, BatchingOptions(max_batch_size=4, num_batch_threads=1))
    try:
        with pytest.raises(errors.ServingError, match="model exploded") as raised:
            scheduler.run({"x": np.ones((1, 1), np.float32)})
        assert raised.value.code == errors.Code.INVALID_ARGUMENT
    finally:
        scheduler.close()


def test_the_shipped_batching_parameters_file_parses():
    options = config.read_batching_parameters_file("serving/batching_parameters.txt")
    assert options.max_batch_size >= 1 and options.num_batch_threads >= 1
    assert options.allowed_batch_sizes[-1] == options.max_batch_size


@pytest.mark.parametrize("text,message", [
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 4", "must match max_batch_size"),
    ("max_batch_sizes { value: 8 }", "Invalid protobuf file"),
    ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
])
def test_bad_batching_parameters_are_rejected(tmp_path, text, message):
    path = tmp_path / "batching.txt"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.read_batching_parameters_file(str(path))
    with pytest.raises(config.ConfigError, match="without --enable_batching"):
        config.batching_options(False, str(path))


def test_a_batching_server_answers_concurrent_clients_correctly(tmp_path):
    base = tmp_path / "m"
    standin_models.save_half_plus_two(str(base / "1"))
    batching = BatchingOptions(max_batch_size=16, batch_timeout_micros=5_000, num_batch_threads=2)
    options = ServerOptions(models=config.single_model("m", str(base)), grpc_port=None,
                            rest_port=0, poll_seconds=0, batching=batching,
                            monitoring=config.MonitoringOptions(prometheus_enabled=True))
    with ModelServer(options) as server:
        def client(worker):
            connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
            answers = []
            for i in range(10):
                x = float(worker * 100 + i)
                connection.request("POST", "/v1/models/m:predict",
                                   json.dumps({"instances": [x, x + 1]}))
                answer = connection.getresponse()
                answers.append((answer.status, json.loads(answer.read()), x))
            connection.close()
            return answers
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = [a for answers in pool.map(client, range(8)) for a in answers]
        for status, doc, x in results:
            assert status == 200
            assert doc == {"predictions": [0.5 * x + 2, 0.5 * (x + 1) + 2]}
        metrics = server.metrics.exposition().decode()
        assert ":tensorflow:serving:batching_session:processed_batch_size_count" in metrics
