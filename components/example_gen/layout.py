"""The data root's folder layout (span-N/ folders of CSV files), checked without TensorFlow.

Cheap enough to run before a pipeline is built, so a wrong path is one clear line instead of
a traceback from deep inside the orchestrator.
"""
from __future__ import annotations

import os
import re
from typing import List

SPAN_DIR = re.compile(r"^span-(\d+)$")


def absolute(path: str) -> str:
    """A local path made absolute; a URI (gs://, s3://, ...) as given."""
    return path if "://" in path else os.path.abspath(path)


def is_dir(path: str) -> bool:
    if "://" in path:  # gs://, s3://: only TensorFlow's file system knows them
        import tensorflow as tf
        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def _listdir(path: str) -> List[str]:
    if not is_dir(path):
        return []
    if "://" in path:
        import tensorflow as tf
        return [n.rstrip("/") for n in tf.io.gfile.listdir(path)]
    return os.listdir(path)


def span_numbers(data_root: str) -> List[int]:
    """The numbers of the data root's span-N folders, ascending ([] when there are none)."""
    return sorted(int(m.group(1)) for m in map(SPAN_DIR.match, _listdir(data_root))
                  if m and is_dir(os.path.join(data_root, m.group(0))))


def data_root_problem(data_root: str) -> str:
    """Why `data_root` cannot be ingested ("" when it looks like the contract's layout)."""
    if "://" not in data_root and not os.path.isdir(data_root):
        return f"data folder {data_root} does not exist"
    spans = sorted(n for n in _listdir(data_root) if SPAN_DIR.match(n))
    if not spans:
        return (f"data folder {data_root} has no span-N/ folders "
                f"(data/README.md describes the layout)")
    if not any(n.endswith(".csv") for s in spans for n in _listdir(os.path.join(data_root, s))):
        return f"data folder {data_root}: no CSV file in any of {spans}"
    return ""
