"""TFLite export of a served SavedModel's `recommend`: the on-device recommender.

Why here (serving/) and not in components/: the export reads nothing but a SavedModel as the
Pusher publishes it (no trainer code, no TFX), like the rest of serving/; the pipeline's
`hyperrec export-lite` command and bench/bench_lite.py are thin callers.

What converts. The whole `recommend` signature does not convert to builtin TFLite ops: its
Transform layer (string normalisation, vocabulary hash tables), the catalogue's id index (a
MutableHashTable) and its float64 day arithmetic need TF ops (Flex), named by
`unsupported_ops` and written to the metadata. So the SavedModel's `recommend` graph is cut
where those ops end (`split_recommend`): the device model takes the Transform layer's
outputs (integer vocabulary indices, hour, day of week, event day), the catalogue rows of
the history items (-1: padding or unknown) and the request day, and holds everything after
them: the query tower, the catalogue's item embedding table and per-item score terms
(frozen to constants), the freshness term, the history and not-yet-published masks and the
top-k. It answers catalogue rows and scores; the metadata's catalogue maps rows to item ids.
What runs on the host is `host_inputs`: the SavedModel's own Transform layer and a
dictionary lookup, which an app replaces with the vocabularies the metadata lists.

Forms: float32, dynamic-range quantised (int8 weights, float activations) and full int8
(int8 weights and activations, calibrated on representative inputs from the train split;
the model's inputs and outputs keep their types, and the masking and top-k tail stays float,
see `_mask_and_top_k_tensors`).

The cut itself lives in lite_graph_cut.py; this module converts, runs and exports.
"""
from __future__ import annotations

import hyperrec.serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.serving.lite_graph_cut import (
    HISTORY_ROWS, K_INPUT, QUERY_XF, REQUEST_DAY, TOP_ROWS, TOP_SCORES, Split, split_recommend,
    unsupported_ops)
from hyperrec.serving.lite_graph_cut import LiteExportError  # noqa: F401  (export raises it)

FORMS = ("float32", "dynamic_range", "int8")
METADATA_FILE = "metadata.json"
EXCLUDED_SCORE = -1e9
# Inputs whose every consumer stays float in the int8 form (_mask_and_top_k_tensors).
FLOAT_ROOTS = (HISTORY_ROWS, REQUEST_DAY, K_INPUT, features.EVENT_DAY_XF)
# Ops kept float in the int8 form wherever they are: the top-k, and the comparisons and
# selects of the masks, whose int8 kernels abort this TFLite runtime (TF 2.16) on this graph.
FLOAT_OPS = ("TOPK_V2", "SUB", "LESS", "GREATER", "RELU", "SELECT_V2")
_SCORING_OPS = ("FULLY_CONNECTED", "ADD", "MUL", "DEQUANTIZE")


# ---------------------------------------------------------------- the host side

@dataclasses.dataclass
class Query:
    """One `recommend` row: the raw request."""
    user_id: str
    history: Sequence[str]
    device: str
    timestamp: int


class HostSide:
    """What runs before the device model: the SavedModel's own Transform layer (the app's
    vocabulary lookups) and the catalogue row of each history item."""

    def __init__(self, loaded: Any):
        self.loaded = loaded
        self.catalog = [v.decode("utf-8") for v in loaded.catalog_item_ids.numpy()]
        self.row_of = {item: row for row, item in enumerate(self.catalog)}
        function = loaded.tft_layer.call_and_return_all_conditional_losses
        self._transform = function.concrete_functions[0]
        self._raw_spec = self._transform.structured_input_signature[0][0]

    def inputs(self, queries: Sequence[Query], k: int = 10) -> Dict[str, np.ndarray]:
        """The device model's inputs for `queries` (a batch), as numpy arrays."""
        batch = len(queries)
        raw_values = {features.USER_ID: [q.user_id for q in queries],
                      features.DEVICE: [q.device for q in queries],
                      features.TIMESTAMP: [int(q.timestamp) for q in queries]}
        raw: Dict[str, Any] = {}
        for name, spec in self._raw_spec.items():
            if name == features.HISTORY:
                histories = [list(q.history) or [""] for q in queries]
                width = max(len(h) for h in histories)
                dense = tf.constant([h + [""] * (width - len(h)) for h in histories])
                raw[name] = tf.sparse.from_dense(dense)
            elif name in raw_values:
                raw[name] = tf.reshape(tf.constant(raw_values[name], spec.dtype), [-1, 1])
            else:
                raw[name] = tf.zeros([batch, 1], spec.dtype) if spec.dtype != tf.string \
                    else tf.fill([batch, 1], "")
        transformed = self._transform(raw)
        if isinstance(transformed, (tuple, list)):
            transformed = transformed[0]
        out = {name: transformed[name].numpy() for name in QUERY_XF if name in transformed}
        histories = [list(q.history) for q in queries]
        width = max([len(h) for h in histories] + [1])
        out[HISTORY_ROWS] = np.array([[self.row_of.get(i, -1) for i in h]
                                      + [-1] * (width - len(h)) for h in histories], np.int64)
        out[REQUEST_DAY] = (np.array([q.timestamp for q in queries], np.float64)
                            / features.SECONDS_PER_DAY).astype(np.float32)
        out[K_INPUT] = np.full([batch], k, np.int32)
        return out


def read_queries(split_dir: str, limit: int, engaged_only: bool = False
                 ) -> List[Tuple[Query, str]]:
    """Up to `limit` (query, item id) pairs from an ExampleGen split folder (gzipped
    TFRecords of tf.Examples, e.g. .../examples/N/Split-train), in file order; with
    `engaged_only`, only engaged events (label 1), whose item is the one to recall."""
    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, "*")))
    if not files:
        raise FileNotFoundError(f"no example files in {split_dir}")
    pairs: List[Tuple[Query, str]] = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature

        def first(name: str, default: Any) -> Any:
            kind = feature[name].WhichOneof("kind") if name in feature else None
            values = list(getattr(feature[name], kind).value) if kind else []
            return values[0] if values else default

        if engaged_only and int(first(features.LABEL, 0)) != 1:
            continue
        history = [v.decode("utf-8") for v in feature[features.HISTORY].bytes_list.value]
        pairs.append((Query(first(features.USER_ID, b"").decode("utf-8"), history,
                            first(features.DEVICE, b"").decode("utf-8"),
                            int(first(features.TIMESTAMP, 0))),
                      first(features.ITEM_ID, b"").decode("utf-8")))
        if len(pairs) >= limit:
            break
    return pairs


def convert(split: Split, form: str,
            representative: Optional[Callable[[], Iterable[Dict[str, np.ndarray]]]] = None
            ) -> bytes:
    """The device model as TFLite flatbuffer bytes in one of FORMS."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose from {FORMS}")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([split.function], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if form == "float32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if form == "dynamic_range":
        return converter.convert()
    if representative is None:
        raise ValueError("full int8 needs representative data")
    converter.representative_dataset = representative
    converter._experimental_calibrate_only = True  # noqa: SLF001 (TFLite's own debugger does)
    calibrated = converter.convert()
    from tensorflow.lite.python import convert as lite_convert
    return lite_convert.mlir_quantize(
        calibrated, denylisted_nodes=_mask_and_top_k_tensors(calibrated),
        denylisted_ops=list(FLOAT_OPS))


def _mask_and_top_k_tensors(model: bytes) -> List[str]:
    """Output names of the ops that read FLOAT_ROOTS, directly or through others (the
    exclusion masks that set scores to EXCLUDED_SCORE, the freshness term from item ages
    in days since the epoch, the top-k), and of the catalogue scoring that feeds them (the
    query x item-table product and the per-item terms added to it). They stay float in the
    int8 form: one int8 scale cannot hold scores near 1 and -1e9, nor ages as differences
    of two numbers near 20,000, and a top-k over int8 scores would tie most items."""
    interpreter = tf.lite.Interpreter(model_content=model)
    signature = next(iter(interpreter._get_full_signature_list().values()))  # noqa: SLF001
    reached = {signature["inputs"][name] for name in FLOAT_ROOTS if name in signature["inputs"]}
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    outputs: List[str] = []
    changed = True
    while changed:
        changed = False
        for op in interpreter._get_ops_details():  # noqa: SLF001
            if reached & set(op["inputs"]) and not set(op["outputs"]) <= reached:
                reached |= set(op["outputs"])
                changed = True
    ops = interpreter._get_ops_details()  # noqa: SLF001
    producer = {tensor: op for op in ops for tensor in op["outputs"]}
    tail = [op for op in ops if reached & set(op["inputs"])]
    # The catalogue scoring feeding the tail (query x item table, + per-item terms) stays
    # float too: int8 scores would leave 256 levels to rank the whole catalogue by.
    pending = [t for op in tail for t in op["inputs"] if t not in reached and t in producer]
    while pending:
        op = producer[pending.pop()]
        if op["op_name"] not in _SCORING_OPS or op in tail:
            continue
        tail.append(op)
        if op["op_name"] != "FULLY_CONNECTED":
            pending.extend(t for t in op["inputs"] if t in producer)
    for op in tail:
        outputs.extend(names[i] for i in op["outputs"] if i in names)
    return sorted(set(outputs))


class LiteRecommender:
    """A converted device model under tf.lite.Interpreter: host inputs -> top-k rows."""

    def __init__(self, model: bytes, catalog: Sequence[str], num_threads: int = 1):
        self.interpreter = tf.lite.Interpreter(model_content=model, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner()
        self.catalog = list(catalog)

    def rows(self, inputs: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        answer = self.runner(**{name: np.asarray(value) for name, value in inputs.items()})
        return answer[TOP_ROWS], answer[TOP_SCORES]

    def recommend(self, inputs: Mapping[str, np.ndarray]) -> List[List[str]]:
        rows, scores = self.rows(inputs)
        return [[self.catalog[r] for r, s in zip(row, score) if s > EXCLUDED_SCORE]
                for row, score in zip(rows, scores)]


def saved_model_recommend(loaded: Any, queries: Sequence[Query], k: int = 10
                          ) -> List[List[str]]:
    """The SavedModel's `recommend` for `queries` (empty slots dropped)."""
    width = max([len(q.history) for q in queries] + [1])
    answer = loaded.signatures[features.RECOMMEND](
        user_id=tf.constant([q.user_id for q in queries]),
        history_item_ids=tf.constant([list(q.history) + [""] * (width - len(q.history))
                                      for q in queries]),
        device=tf.constant([q.device for q in queries]),
        timestamp=tf.constant([q.timestamp for q in queries], tf.int64),
        k=tf.constant([k] * len(queries), tf.int32))
    return [[i.decode("utf-8") for i in row if i] for row in answer[features.ITEM_IDS].numpy()]


def _directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def export(model_dir: str, out_dir: str, train_split_dir: str, representative_rows: int = 200,
           forms: Sequence[str] = FORMS) -> Dict[str, Any]:
    """Writes recommend_<form>.tflite for each form and metadata.json to `out_dir`; returns
    the metadata. Representative data (for int8): `representative_rows` train queries."""
    loaded = tf.saved_model.load(model_dir)
    host = HostSide(loaded)
    queries = [q for q, _ in read_queries(train_split_dir, representative_rows)]
    batches = [host.inputs([q]) for q in queries]
    split = split_recommend(loaded, batches[0])

    def representative() -> Iterable[Dict[str, np.ndarray]]:
        for batch in batches:
            yield {name: batch[name] for name in split.inputs}

    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for form in forms:
        started = time.monotonic()
        data = convert(split, form, representative)
        path = os.path.join(out_dir, f"recommend_{form}.tflite")
        with open(path, "wb") as handle:
            handle.write(data)
        files[form] = {"file": os.path.basename(path), "bytes": len(data),
                       "convert_seconds": round(time.monotonic() - started, 2)}
    vocabulary_dir = os.path.join(out_dir, "vocabulary")
    os.makedirs(vocabulary_dir, exist_ok=True)
    assets = os.path.join(model_dir, "assets")
    vocabularies = []
    for name in sorted(os.listdir(assets)) if os.path.isdir(assets) else []:
        tf.io.gfile.copy(os.path.join(assets, name), os.path.join(vocabulary_dir, name),
                         overwrite=True)
        vocabularies.append(f"vocabulary/{name}")
    metadata = {
        "model_dir": os.path.abspath(model_dir),
        "saved_model_bytes": _directory_bytes(model_dir),
        "versions": {"tensorflow": tf.__version__,
                     "tflite_schema": 3,
                     "model_version": os.path.basename(os.path.normpath(model_dir))},
        "forms": files,
        "signature": "serving_default",
        "inputs": {name: {"dtype": spec.dtype.name, "shape": [-1 if d is None else d
                                                              for d in spec.shape]}
                   for name, spec in split.inputs.items()},
        "outputs": {TOP_ROWS: "int32 [batch, k]: catalogue rows, best first",
                    TOP_SCORES: f"float32 [batch, k]: scores; <= {EXCLUDED_SCORE:g} marks an "
                                "empty slot (k above the items left)"},
        "host_side": {
            "transform": "the *_xf inputs are the Transform layer's outputs (vocabulary index "
                         "+ 1 with OOV buckets, hour, day of week, event day); the files in "
                         "`vocabulary` are the Transform graph's assets",
            HISTORY_ROWS: "row in `catalog` of each history item, -1 for padding or unknown",
            REQUEST_DAY: "request timestamp / 86400 (float32)"},
        "vocabulary": vocabularies,
        "catalog": host.catalog,
        "unsupported_ops_whole_recommend": unsupported_ops(model_dir),
        "representative_rows": len(batches),
        "train_split": os.path.abspath(train_split_dir),
    }
    with open(os.path.join(out_dir, METADATA_FILE), "w") as handle:
        json.dump(metadata, handle, indent=1)
    return metadata


def top_k_parity(expected: Sequence[Sequence[str]], got: Sequence[Sequence[str]],
                 k: int = 10) -> float:
    """Mean |top-k(expected) ∩ top-k(got)| / k over the rows."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(expected, got)]))


def recall(lists: Sequence[Sequence[str]], targets: Sequence[str], k: int = 10) -> float:
    """Share of rows whose target item is in the first k."""
    return float(np.mean([t in row[:k] for row, t in zip(lists, targets)]))
