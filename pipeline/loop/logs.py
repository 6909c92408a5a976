"""The serving request log read back as rows of SERVING-environment features.

The log (serving/README.md, "Request log") is a directory of `requests-*.tfrecord` files of
`tensorflow.serving.PredictionLog` protos, append-only, oldest name first. It is read here with
TensorFlow's TFRecord reader and TF Serving's own protos (components never import serving/):
a torn final frame of a killed server raises DataLossError, which ends that file only.

Each logged example becomes one row:
- predict on `serving_default` (input `examples`: serialized tf.Examples) and classify/regress
  (tf.Examples, context merged): the example's features;
- predict on `recommend` (named tensors, one row per instance): the query features
  (user id, history, device, timestamp);
plus the model version that answered and its label (`stable`/`canary`) where the request
named one. Other signatures carry no features the schema knows and are counted, not read.

A cursor (file name -> records consumed) makes windows: each monitoring run reads the records
appended since the previous one.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from hyperrec.schemas import features

FILE_PREFIX = "requests-"
FILE_SUFFIX = ".tfrecord"
VERSION = "model_version"  # row keys that are not features: who answered the request
VERSION_LABEL = "model_version_label"
# recommend's inputs that are features of the schema (k is a request knob, not a feature).
_RECOMMEND_FEATURES = (features.USER_ID, features.HISTORY, features.DEVICE, features.TIMESTAMP)


def log_files(directory: str) -> List[str]:
    """The log's files, oldest first (their names sort chronologically)."""
    if not tf.io.gfile.isdir(directory):
        return []
    return [os.path.join(directory, name) for name in sorted(tf.io.gfile.listdir(directory))
            if name.startswith(FILE_PREFIX) and name.endswith(FILE_SUFFIX)]


def read_file(path: str, skip: int = 0) -> Tuple[List[bytes], bool]:
    """(records after the first `skip`, whether the file ended in a torn frame)."""
    records: List[bytes] = []
    torn = False
    iterator = iter(tf.data.TFRecordDataset(path))
    index = 0
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            break
        except tf.errors.DataLossError:  # a torn last frame of a killed writer
            torn = True
            break
        if index >= skip:
            records.append(record.numpy())
        index += 1
    return records, torn


@dataclasses.dataclass
class Window:
    """The records of one monitoring window and where the cursor moves to after it."""

    records: List[bytes]
    cursor: Dict[str, int]
    torn_files: List[str]


def read_window(directory: str, cursor: Optional[Mapping[str, int]] = None) -> Window:
    """Every complete record appended since `cursor` (file name -> records already read)."""
    cursor = dict(cursor or {})
    records: List[bytes] = []
    torn_files: List[str] = []
    for path in log_files(directory):
        name = os.path.basename(path)
        new, torn = read_file(path, cursor.get(name, 0))
        records.extend(new)
        cursor[name] = cursor.get(name, 0) + len(new)
        if torn:
            torn_files.append(name)
    return Window(records, cursor, torn_files)


def example_rows(examples: Iterable[tf.train.Example]) -> List[Dict[str, List[Any]]]:
    rows = []
    for example in examples:
        row = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            row[name] = list(getattr(feature, kind).value) if kind else []
        rows.append(row)
    return rows


def _input_examples(request_input) -> List[tf.train.Example]:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return list(request_input.example_list.examples)
    if kind == "example_list_with_context":
        merged = []
        for example in request_input.example_list_with_context.examples:
            row = tf.train.Example()
            row.CopyFrom(request_input.example_list_with_context.context)
            row.MergeFrom(example)
            merged.append(row)
        return merged
    return []


def _predict_rows(request) -> List[Dict[str, List[Any]]]:
    inputs = request.inputs
    if features.EXAMPLES in inputs:
        serialized = tf.make_ndarray(inputs[features.EXAMPLES]).reshape(-1)
        return example_rows(tf.train.Example.FromString(data) for data in serialized)
    present = [name for name in _RECOMMEND_FEATURES if name in inputs]
    if not present:
        return []
    arrays = {name: tf.make_ndarray(inputs[name]) for name in present}
    n = len(next(iter(arrays.values())))
    rows = []
    for i in range(n):
        row = {}
        for name, array in arrays.items():
            value = array[i]
            values = list(value.reshape(-1)) if isinstance(value, np.ndarray) else [value]
            if name == features.HISTORY:  # right-padded with "" to the batch's width
                values = [v for v in values if v]
            row[name] = values
        rows.append(row)
    return rows


def decode(record: bytes) -> List[Dict[str, Any]]:
    """The feature rows of one logged request (each a dict name -> list of values), tagged
    with the answering version and the label the request asked for ("" when none)."""
    log = prediction_log_pb2.PredictionLog.FromString(record)
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        rows = _predict_rows(request)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        rows = example_rows(_input_examples(request.input))
    else:
        return []
    version = log.log_metadata.model_spec.version.value or request.model_spec.version.value
    label = request.model_spec.version_label
    for row in rows:
        row[VERSION] = int(version)
        row[VERSION_LABEL] = label
    return rows


def rows_of(records: List[bytes]) -> Iterator[Dict[str, Any]]:
    for record in records:
        yield from decode(record)
