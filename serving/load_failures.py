"""Load failures remembered across restarts, by the content digest of the version directory.

Without a memory, every start tries the broken versions again before it opens its ports:
the version policy aspires the newest version first, and a broken newest version is only
known broken once its load (for a large model, the whole load time) has failed. With one, a
start skips a version that already failed with the same contents, serves the newest good
version, and retries the broken one in the background once the ports are open (a failure
can be passing, e.g. out of memory). The digest covers every file's path and bytes, so a
re-pushed version with other contents is loaded normally.

The record is a small JSON file, {version directory: {digest, code, message}}, replaced
atomically on each change; entries whose directory is gone are dropped then.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from typing import Dict, NamedTuple, Optional

LOG = logging.getLogger("serving.load_failures")
_READ_BYTES = 1 << 20


def default_path() -> str:
    """The per-user cache file: $XDG_CACHE_HOME (or ~/.cache)/hyperrec/serving_load_failures.json."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "hyperrec", "serving_load_failures.json")


def content_digest(version_dir: str) -> str:
    """sha256 over every file's relative path and contents, in sorted path order."""
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(version_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, version_dir).encode("utf-8", "surrogateescape"))
            digest.update(b"\0")
            with open(path, "rb") as handle:
                while chunk := handle.read(_READ_BYTES):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


class Failure(NamedTuple):
    code: str  # errors.Code name
    message: str


class LoadFailureRecord:
    """The remembered failures in the JSON file at `path`."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._entries: Dict[str, dict] = self._read()

    def _read(self) -> Dict[str, dict]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                entries = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:  # unreadable: start afresh rather than fail
            LOG.warning("ignoring the load failure record %s: %s", self.path, err)
            return {}
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(version_dir: str) -> str:
        return os.path.realpath(version_dir)

    def recall(self, version_dir: str) -> Optional[Failure]:
        """The failure remembered for `version_dir` if its contents are still the same."""
        with self._lock:
            entry = self._entries.get(self._key(version_dir))
        if not isinstance(entry, dict):
            return None
        try:
            if content_digest(version_dir) != entry.get("digest"):
                return None
        except OSError:
            return None
        return Failure(str(entry.get("code", "UNKNOWN")), str(entry.get("message", "")))

    def remember(self, version_dir: str, failure: Failure) -> None:
        try:
            digest = content_digest(version_dir)
        except OSError:
            return  # the directory went away: nothing to remember
        with self._lock:
            self._entries[self._key(version_dir)] = {
                "digest": digest, "code": failure.code, "message": failure.message}
            self._write()

    def forget(self, version_dir: str) -> None:
        with self._lock:
            if self._entries.pop(self._key(version_dir), None) is not None:
                self._write()

    def _write(self) -> None:
        """Replaces the file (lock held); a failure to write costs only the memory."""
        self._entries = {key: entry for key, entry in self._entries.items()
                         if os.path.isdir(key)}
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            staging = f"{self.path}.{os.getpid()}.tmp"
            with open(staging, "w", encoding="utf-8") as handle:
                json.dump(self._entries, handle, indent=1, sort_keys=True)
            os.replace(staging, self.path)
        except OSError as err:
            LOG.warning("cannot write the load failure record %s: %s", self.path, err)
