"""A throwaway PostgreSQL server for tests: Debian's postgresql binaries (the Makefile's test
setup installs the package where it is missing), a fresh cluster in a temporary directory,
TCP on 127.0.0.1 only, a password user. Stopped and deleted when the fixture ends.

PostgreSQL refuses to run as root, so as root (CI) the server runs as Debian's `postgres`
user, in a directory outside pytest's tmp_path (which only root may enter)."""
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile

from mariadb_server import until_accepted

USER, PASSWORD = "hyperrec", "pg-test-pw"
SERVICE_USER = "postgres"  # Debian's package creates it


def bin_dir() -> str:
    """The newest installed server's bin directory ("" if none)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda path: int(path.split("/")[-3]))
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("postgres")
    return os.path.dirname(on_path) if on_path else ""


def missing_binaries():
    where = bin_dir()
    missing = [name for name in ("postgres", "initdb", "psql")
               if not (where and os.access(os.path.join(where, name), os.X_OK))]
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            missing.append(f"the {SERVICE_USER} user")
    return missing


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_service_user():
    """subprocess arguments that drop root to the postgres user (none when not root)."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(SERVICE_USER)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [],
            "env": {**os.environ, "HOME": account.pw_dir, "USER": SERVICE_USER}}


@contextlib.contextmanager
def running(databases=()):
    """Yields `postgresql://USER:PASSWORD@127.0.0.1:PORT` of a fresh server, with each of
    `databases` created and owned by USER."""
    where, drop = bin_dir(), _as_service_user()
    base = tempfile.mkdtemp(prefix="hyperrec-pg-")
    if drop:
        os.chown(base, drop["user"], drop["group"])
    datadir, log = os.path.join(base, "data"), os.path.join(base, "server.log")
    server = None
    try:
        # trust on the unix socket (in `base`, 0700) for set-up; a password over TCP.
        subprocess.run([os.path.join(where, "initdb"), "-D", datadir, "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                        "--locale=C"], check=True, capture_output=True, timeout=120, **drop)
        port = _free_port()
        # -F: no fsync (a test server's data need not survive a crash).
        server = subprocess.Popen(
            [os.path.join(where, "postgres"), "-D", datadir, "-h", "127.0.0.1", "-p", str(port),
             "-k", base, "-F", "-c", "logging_collector=off", "-c", "max_connections=200"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, **drop)
        statements = [f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' CREATEDB"] + [
            f"CREATE DATABASE {name} OWNER {USER}" for name in databases]
        until_accepted("PostgreSQL", server, log, lambda: subprocess.run(
            [os.path.join(where, "psql"), "-h", base, "-p", str(port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", statements[0]],
            capture_output=True, text=True, **drop))
        for statement in statements[1:]:  # CREATE DATABASE cannot run in a multi-statement -c
            subprocess.run([os.path.join(where, "psql"), "-h", base, "-p", str(port), "-U",
                            "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc",
                            statement], check=True, capture_output=True, **drop)
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}"
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(base, ignore_errors=True)
