"""Helpers shared by several test modules."""
import hashlib
import os


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
