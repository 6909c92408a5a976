"""A throwaway MariaDB server for tests: Debian's mariadb-server binaries (the Makefile's test
setup installs the package where it is missing), a fresh data directory, TCP on 127.0.0.1
only, a password user for MLMD. Stopped and deleted when the fixture ends."""
import contextlib
import os
import shutil
import socket
import subprocess
import time

SERVER = "mariadbd"
INSTALL_DB = "mariadb-install-db"
CLIENT = "mariadb"
USER, PASSWORD = "mlmd", "mlmd-test-pw"


def missing_binaries():
    return [name for name in (SERVER, INSTALL_DB, CLIENT) if not shutil.which(name)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_root():
    # mariadbd refuses to run as root unless told to (CI runs the tests as root).
    return ["--user=root"] if os.geteuid() == 0 else []


def until_accepted(name, server, log, statement, seconds=60):
    """Runs `statement` (a client call returning a CompletedProcess) until the server that
    is starting accepts it; the server's exit or the deadline is an error with its log."""
    deadline = time.monotonic() + seconds
    while True:
        ready = statement()
        if ready.returncode == 0:
            return
        if server.poll() is not None or time.monotonic() > deadline:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"{name} did not start: {ready.stderr}\n{f.read()}")
        time.sleep(0.3)


@contextlib.contextmanager
def running(workdir):
    """Yields `mysql://USER:PASSWORD@127.0.0.1:PORT` (no database part) of a fresh server."""
    datadir, sock = os.path.join(workdir, "data"), os.path.join(workdir, "mysqld.sock")
    log = os.path.join(workdir, "error.log")
    subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={datadir}", "--skip-test-db",
                    "--auth-root-authentication-method=socket", *_as_root()],
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    server = subprocess.Popen(
        [SERVER, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
         "--bind-address=127.0.0.1", "--skip-log-bin", f"--log-error={log}",
         f"--pid-file={os.path.join(workdir, 'mysqld.pid')}", *_as_root()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until_accepted("MariaDB", server, log, lambda: subprocess.run(
            [CLIENT, "--no-defaults", f"--socket={sock}", "-uroot", "-e",
             f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
             f"GRANT ALL ON *.* TO '{USER}'@'127.0.0.1';"],
            capture_output=True, text=True))
        yield f"mysql://{USER}:{PASSWORD}@127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
