"""Helpers shared by several test modules."""
import hashlib
import os
import pathlib
import shutil
from typing import Callable

import filelock


def tree_digest(root):
    """sha256 over every file's relative path and bytes under `root`, in sorted order."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def once_per_session(tmp_path_factory, name: str, build: Callable[[str], None]) -> str:
    """A directory that `build(directory)` fills once per test session, shared by every
    module and every xdist worker of the session (pytest-xdist's documented pattern: the
    workers' common temporary folder and a file lock). The first to ask builds it while
    the others wait; a build that failed is retried by the next one to ask. Only for
    outputs that tests read and never change."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # each worker's basetemp is a folder of the session's
    directory = pathlib.Path(root) / f"shared-{name}"
    with filelock.FileLock(f"{directory}.lock"):
        complete = directory / ".complete"
        if not complete.exists():
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            build(str(directory))
            complete.touch()
    return str(directory)
