"""Finding the versions under a base path, and telling complete ones from half-copied ones.

A version is an integer-named sub-directory holding a saved_model.pb (TF Serving's layout).
A pusher copying a version in is not atomic, so a directory counts as *ready* only once its
fingerprint (file count, total size, newest mtime over the whole tree) is unchanged between
two consecutive scans: a copy in progress keeps changing it, a finished one does not.
"""
from __future__ import annotations

import os
from typing import Dict, NamedTuple, Optional

from hyperrec.serving.servable import SAVED_MODEL_FILE

_MAX_VERSION = (1 << 63) - 1


class Fingerprint(NamedTuple):
    files: int
    total_bytes: int
    newest_mtime_ns: int


def _fingerprint(version_dir: str) -> Optional[Fingerprint]:
    files = total = newest = 0
    for root, _, names in os.walk(version_dir):
        for name in names:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:  # deleted while we looked: the directory is still changing
                return None
            files += 1
            total += stat.st_size
            newest = max(newest, stat.st_mtime_ns)
    return Fingerprint(files, total, newest)


def scan(base_path: str) -> Dict[int, Fingerprint]:
    """Version -> fingerprint for every integer sub-directory with a saved_model.pb."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    found = {}
    for name in names:
        if not name.isdigit() or int(name) > _MAX_VERSION:
            continue
        version_dir = os.path.join(base_path, name)
        if not os.path.isfile(os.path.join(version_dir, SAVED_MODEL_FILE)):
            continue
        fingerprint = _fingerprint(version_dir)
        if fingerprint is not None and fingerprint.total_bytes > 0:
            found[int(name)] = fingerprint
    return found


class ReadinessTracker:
    """Reports the versions whose fingerprint did not change since the previous scan."""

    def __init__(self):
        self._previous: Dict[int, Fingerprint] = {}

    def observe(self, scanned: Dict[int, Fingerprint]) -> Dict[int, Fingerprint]:
        ready = {version: fingerprint for version, fingerprint in scanned.items()
                 if self._previous.get(version) == fingerprint}
        self._previous = dict(scanned)
        return ready
