"""One loaded model version: its SignatureDefs and a way to run them.

A servable is what TF Serving calls a SavedModelBundle: the SavedModel at
`<base_path>/<version>` loaded with TensorFlow (`tf.saved_model.load`), plus the
MetaGraphDef's SignatureDefs read from saved_model.pb (method names and tensor infos, which
the TF2 loader does not expose and which metadata, classify and regress need). Signatures
are called with tensors; with batching on, each signature gets its own BatchScheduler so
concurrent requests share one call.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Dict, Iterable, Mapping, Optional

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from hyperrec.serving import errors
from hyperrec.serving.batching import BatchScheduler
from hyperrec.serving.config import BatchingOptions

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SAVED_MODEL_FILE = "saved_model.pb"

Tensors = Dict[str, np.ndarray]


def read_meta_graph(path: str, tag: str = SERVE_TAG) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged `tag` in `<path>/saved_model.pb`."""
    pb_path = os.path.join(path, SAVED_MODEL_FILE)
    try:
        with open(pb_path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise errors.not_found(f"SavedModel file does not exist at: {pb_path}") from err
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(data)
    except DecodeError as err:
        raise errors.ServingError(
            errors.Code.DATA_LOSS, f"Could not parse SavedModel proto at {pb_path}: {err}") from err
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    raise errors.not_found(
        f"Could not find meta graph def matching supplied tags: {{ {tag} }}. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`")


def _to_array(tensor: tf.Tensor) -> np.ndarray:
    """The tensor's value as an array; `.numpy()` gives a scalar string as plain bytes."""
    value = tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    return np.array(value, dtype=object if tensor.dtype == tf.string else None)


class Servable:
    """A loaded version: SignatureDefs plus callable signature functions."""

    def __init__(self, model_name: str, version: int, path: str,
                 signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
                 functions: Mapping[str, Callable], batching: Optional[BatchingOptions] = None,
                 on_batch: Optional[Callable[[int], None]] = None, keepalive=None):
        self.model_name = model_name
        self.version = version
        self.path = path
        self.signature_defs = dict(signature_defs)
        self._functions = dict(functions)
        self._batching = batching
        self._on_batch = on_batch
        self._batchers: Dict[str, BatchScheduler] = {}
        self._batchers_lock = threading.Lock()
        self._keepalive = keepalive  # the loaded object owns the variables the functions use
        self.warmup_records = 0

    @classmethod
    def load(cls, model_name: str, version: int, path: str,
             batching: Optional[BatchingOptions] = None,
             on_batch: Optional[Callable[[int], None]] = None) -> "Servable":
        """Loads `<path>` (one version directory) or raises a ServingError."""
        meta_graph = read_meta_graph(path)
        try:
            loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
        except Exception as err:  # a broken export is the version's problem, not the server's
            raise errors.from_exception(err) from err
        functions = {name: loaded.signatures[name] for name in loaded.signatures.keys()}
        return cls(model_name, version, path, meta_graph.signature_def, functions, batching,
                   on_batch, keepalive=loaded)

    # -- signatures ----------------------------------------------------------------------------

    def signature_def(self, name: str) -> Optional[meta_graph_pb2.SignatureDef]:
        return self.signature_defs.get(name or DEFAULT_SIGNATURE)

    def input_dtypes(self, name: str) -> Dict[str, int]:
        """Input alias -> DataType enum of signature `name` (REST's GetInfoMap)."""
        signature = self.signature_def(name)
        if signature is None:
            raise errors.invalid_argument(
                f'Serving signature name: "{name or DEFAULT_SIGNATURE}" not found in signature def')
        return {alias: info.dtype for alias, info in sorted(signature.inputs.items())}

    # -- running -------------------------------------------------------------------------------

    def run(self, signature_name: str, inputs: Tensors,
            output_filter: Iterable[str] = ()) -> Tensors:
        """Runs a signature on {alias: array} and returns {alias: array} (batched if enabled)."""
        name = signature_name or DEFAULT_SIGNATURE
        function = self._functions.get(name)
        if function is None:
            raise errors.failed_precondition(f'Serving signature key "{name}" not found.')
        outputs = self._batcher(name, function).run(inputs) if self._batching and inputs \
            else self._call(function, inputs)
        wanted = list(output_filter)
        return {alias: outputs[alias] for alias in wanted} if wanted else outputs

    @staticmethod
    def _call(function: Callable, inputs: Tensors) -> Tensors:
        try:
            tensors = {alias: tf.constant(array) for alias, array in inputs.items()}
            results = function(**tensors)
            return {alias: _to_array(tensor) for alias, tensor in results.items()}
        except Exception as err:
            raise errors.from_exception(err) from err

    def _batcher(self, name: str, function: Callable) -> BatchScheduler:
        with self._batchers_lock:
            batcher = self._batchers.get(name)
            if batcher is None:
                batcher = BatchScheduler(lambda inputs: self._call(function, inputs),
                                         self._batching, name=f"batch-{self.version}-{name}",
                                         on_batch=self._on_batch)
                self._batchers[name] = batcher
            return batcher

    def close(self) -> None:
        """Stops the batch threads once queued requests are done (requests in flight finish)."""
        with self._batchers_lock:
            for batcher in self._batchers.values():
                batcher.close()
