"""The request log: every served request's inputs and response, for the drift loop.

Records are `tensorflow.serving.PredictionLog` protos (TF Serving's own request-logging
format: model spec, request, response) in TFRecord frames (serving/record_io.py), appended to
size-rotated files under one directory. Durability against a killed server comes from three
choices:
- each record is framed (length + CRC32C) and written with one `os.write` on an O_APPEND
  descriptor, so data reaches the kernel whole or, at worst, as a torn final frame;
- every process start opens a new file, so a torn frame can only ever be the last bytes of a
  file, never followed by good records;
- the reader yields complete, checksum-valid records only and ignores a torn tail.
(The kernel keeps written data across `kill -9`; `fsync=True` also survives power loss.)
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
from typing import Any, Dict, Iterator, List, Optional

from hyperrec.serving import record_io

FILE_PREFIX = "requests-"
FILE_SUFFIX = ".tfrecord"
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024


class RequestLogWriter:
    """Appends framed records to rotating files in `directory` (thread-safe).

    A file is closed and a new one started once it holds `max_file_bytes`; with `max_files`
    set, the oldest files beyond that many are deleted at rotation.
    """

    def __init__(self, directory: str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 max_files: Optional[int] = None, fsync: bool = False):
        self.directory = os.path.abspath(directory)
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.fsync = fsync
        self._lock = threading.Lock()
        self._sequence = itertools.count()
        self._started = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self._fd: Optional[int] = None
        self._size = 0
        self.path: Optional[str] = None
        os.makedirs(self.directory, exist_ok=True)

    def _open_next(self) -> None:
        # Names sort chronologically: process start time, then pid, then rotation number.
        name = f"{FILE_PREFIX}{self._started}-{os.getpid()}-{next(self._sequence):06d}{FILE_SUFFIX}"
        self.path = os.path.join(self.directory, name)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        if self.max_files:
            for old in log_files(self.directory)[:-self.max_files]:
                try:
                    os.remove(old)
                except FileNotFoundError:
                    pass

    def write(self, data: bytes) -> None:
        """Appends one record."""
        frame = record_io.encode(data)
        with self._lock:
            if self._fd is None or self._size >= self.max_file_bytes:
                self._close_current()
                self._open_next()
            view = memoryview(frame)
            while view:  # one write in practice; a short write is finished, never dropped
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            self._size += len(frame)

    def _close_current(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close_current()


def log_files(directory: str) -> List[str]:
    """The log files in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    names = sorted(name for name in os.listdir(directory)
                   if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX))
    return [os.path.join(directory, name) for name in names]


def read_records(directory: str, summaries: Optional[dict] = None) -> Iterator[bytes]:
    """Every complete record in the log, oldest first; torn tails are skipped.

    `summaries`, when given, receives a record_io.ReadSummary per file path.
    """
    for path in log_files(directory):
        summary = record_io.ReadSummary()
        if summaries is not None:
            summaries[path] = summary
        try:
            yield from record_io.read_file(path, summary)
        except FileNotFoundError:  # rotated away while reading
            continue


def read_prediction_logs(directory: str) -> Iterator["prediction_log_pb2.PredictionLog"]:
    """The log's records parsed as tensorflow.serving.PredictionLog protos."""
    from tensorflow_serving.apis import prediction_log_pb2
    for data in read_records(directory):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(data)
        yield log


def _example_features(request_input) -> Dict[str, List[list]]:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list_with_context":
        context = request_input.example_list_with_context.context
        examples = []
        for example in request_input.example_list_with_context.examples:
            merged = type(example)()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            examples.append(merged)
    elif kind == "example_list":
        examples = list(request_input.example_list.examples)
    else:
        examples = []
    names = sorted({name for example in examples for name in example.features.feature})
    features: Dict[str, List[list]] = {}
    for name in names:
        rows = []
        for example in examples:
            feature = example.features.feature.get(name)
            kind_name = feature.WhichOneof("kind") if feature is not None else None
            rows.append(list(getattr(feature, kind_name).value) if kind_name else [])
        features[name] = rows
    return features


def request_features(log) -> Dict[str, Any]:
    """The features a logged request carried, for drift statistics.

    Predict: {input alias: numpy array, one row per instance}; classify/regress:
    {feature name: [values of example 0, values of example 1, ...]} (context merged in).
    """
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        import tensorflow as tf
        return {alias: tf.make_ndarray(tensor)
                for alias, tensor in log.predict_log.request.inputs.items()}
    if kind in ("classify_log", "regress_log"):
        return _example_features(getattr(log, kind).request.input)
    return {}
