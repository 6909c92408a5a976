"""Faults under load: pushes while clients hammer the server, corrupt pushes, kill -9.

All traffic is real HTTP on 127.0.0.1. Counts and durations are bounded; nothing asserts
absolute timings.
"""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import http.client
import json
import os
import shutil
import signal
import threading
import time

import pytest

from hyperrec.serving import config, request_log
import standin_models
from hyperrec.serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.timeout(180)

CLIENTS = 8
V1, V2 = 2.0, 3.0  # y(0) of version 1 and version 2


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-built")
    return {1: standin_models.save_half_plus_two(str(root / "1"), offset=V1),
            2: standin_models.save_half_plus_two(str(root / "2"), offset=V2)}


class Clients:
    """CLIENTS threads sending predicts on keep-alive connections until stopped."""

    def __init__(self, port: int, model: str):
        self.port, self.model = port, model
        self.stop = threading.Event()
        self.answers = [[] for _ in range(CLIENTS)]  # per client: y(0) or an error
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def _run(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = json.dumps({"instances": [0.0]})
        while not self.stop.is_set():
            try:
                connection.request("POST", f"/v1/models/{self.model}:predict", body)
                answer = connection.getresponse()
                data = answer.read()
                self.answers[index].append(json.loads(data)["predictions"][0]
                                           if answer.status == 200 else f"HTTP {answer.status}")
            except Exception as err:  # a dropped request is a failure too
                self.answers[index].append(f"{type(err).__name__}: {err}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def wait_until_all_see(self, value: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(a and a[-1] == value for a in self.answers):
            assert time.monotonic() < deadline, f"clients never all saw {value}"
            time.sleep(0.05)

    def failures(self):
        return [a for answers in self.answers for a in answers if not isinstance(a, float)]


def serve(base, **kwargs):
    options = ServerOptions(models=config.single_model("m", str(base)), grpc_port=None,
                            rest_port=0, poll_seconds=0.1, **kwargs)
    return ModelServer(options)


@pytest.mark.parametrize("atomic", [True, False], ids=["rename", "copy-in-place"])
def test_a_push_under_load_fails_no_request_and_switches_versions(tmp_path, built, atomic):
    base = tmp_path / "m"
    shutil.copytree(built[1], base / "1")
    with serve(base) as server, Clients(server.rest_port, "m") as clients:
        clients.wait_until_all_see(V1)
        if atomic:
            standin_models.push_version(built[2], str(base), 2)
        else:
            shutil.copytree(built[2], base / "2")  # appears file by file
        clients.wait_until_all_see(V2)
        time.sleep(0.2)  # a little more traffic on the new version
    assert clients.failures() == []
    for answers in clients.answers:
        switched = answers.index(V2)
        assert set(answers[:switched]) == {V1} and set(answers[switched:]) == {V2}
    assert {v: s.state for v, s in server.manager.version_states("m").items()} == {
        2: "AVAILABLE", 1: "END"}


def test_a_corrupt_push_under_load_keeps_the_old_version_serving(tmp_path, built):
    base = tmp_path / "m"
    shutil.copytree(built[1], base / "1")
    with serve(base) as server, Clients(server.rest_port, "m") as clients:
        clients.wait_until_all_see(V1)
        standin_models.write_corrupt_version(str(base / "2"))
        deadline = time.monotonic() + 60
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        while True:
            connection.request("GET", "/v1/models/m")
            status = json.loads(connection.getresponse().read())["model_version_status"]
            if status[0]["state"] == "END":
                break
            assert time.monotonic() < deadline, "the corrupt version never failed"
            time.sleep(0.05)
        connection.close()
        time.sleep(0.3)  # keep serving for a while after the failure
    assert clients.failures() == []
    assert {a for answers in clients.answers for a in answers} == {V1}
    assert status[0]["version"] == "2" and status[0]["status"]["error_code"] == "DATA_LOSS"
    assert status[0]["status"]["error_message"]
    assert status[1] == {"version": "1", "state": "AVAILABLE",
                         "status": {"error_code": "OK", "error_message": ""}}


def predict_once(port: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/v1/models/m:predict", json.dumps({"instances": [0.0]}))
        return json.loads(connection.getresponse().read())["predictions"][0]
    finally:
        connection.close()


def test_a_killed_server_restarts_on_the_latest_good_version(tmp_path, built):
    base, log_dir = tmp_path / "m", tmp_path / "requests"
    shutil.copytree(built[1], base / "1")
    rest_port, grpc_port = standin_models.free_port(), standin_models.free_port()
    args = ["--model_name", "m", "--model_base_path", str(base), "--port", str(grpc_port),
            "--rest_api_port", str(rest_port), "--file_system_poll_wait_seconds", "0.1",
            "--request_log_dir", str(log_dir),
            "--model_load_failure_file", str(tmp_path / "load_failures.json")]
    server_log = str(tmp_path / "server.log")
    process = standin_models.start_server_process(args, server_log)
    try:
        standin_models.wait_until_serving(rest_port, "m", timeout=90, process=process)
        standin_models.push_version(built[2], str(base), 2)
        deadline = time.monotonic() + 60
        while predict_once(rest_port) != V2:
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.05)
        standin_models.write_corrupt_version(str(base / "3"))  # pushed, but broken
        with Clients(rest_port, "m") as clients:
            time.sleep(0.5)
            os.kill(process.pid, signal.SIGKILL)  # mid-stream: requests in flight
            process.wait(30)
        assert clients.failures(), "the kill should have interrupted some requests"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)

    restarted, _ = standin_models.start_until_serving(args, server_log, rest_port, "m", timeout=90)
    try:
        assert predict_once(rest_port) == V2
        connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
        connection.request("GET", "/v1/models/m")
        states = {s["version"]: s["state"] for s in
                  json.loads(connection.getresponse().read())["model_version_status"]}
        connection.close()
        assert states == {"3": "END", "2": "AVAILABLE"}
    finally:
        standin_models.stop_server_process(restarted)

    # The request log written before the kill holds only whole PredictionLogs.
    logs = list(request_log.read_prediction_logs(str(log_dir)))
    assert logs and all(log.WhichOneof("log_type") == "predict_log" for log in logs)
    assert len(request_log.log_files(str(log_dir))) == 2  # one file per server process
