"""The candidate's model-server process: `python -m hyperrec.serving` on two free loopback
ports, its peak memory watched, waited on until the version is AVAILABLE, and stopped."""
from __future__ import annotations

import dataclasses
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from hyperrec.components import config as config_lib


SERVER_MODULE = "hyperrec.serving"
VERSION = 1
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

    def wait_available(self, rest) -> float:  # a model_requests.RestApi
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
