"""Model warmup: replay a version's recorded requests before it takes traffic.

A SavedModel may carry `assets.extra/tf_serving_warmup_requests`, a TFRecord file of
`tensorflow.serving.PredictionLog` (predict, classify or regress logs). As in TF Serving,
every record is replayed against the freshly loaded version before it is made available, so
the first real requests do not pay for lazy initialisation (graph tracing, kernel caches,
batcher threads); a record that fails fails the load.
"""
from __future__ import annotations

import os

from tensorflow_serving.apis import prediction_log_pb2

from hyperrec.serving import errors, inference, record_io
from hyperrec.serving.servable import Servable

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving's kMaxNumRecords


def warmup_path(version_dir: str) -> str:
    return os.path.join(version_dir, WARMUP_FILE)


def replay(servable: Servable, iterations: int = 1) -> int:
    """Replays the warmup file of `servable`'s directory; returns the records replayed."""
    path = warmup_path(servable.path)
    if not os.path.isfile(path):
        return 0
    summary = record_io.ReadSummary()
    records = list(record_io.read_file(path, summary))
    if summary.reason:
        raise errors.ServingError(errors.Code.DATA_LOSS,
                                  f"Corrupt warmup file {path}: {summary.reason}")
    if len(records) > MAX_WARMUP_RECORDS:
        raise errors.invalid_argument(
            f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
    for data in records:
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(data)
        kind = log.WhichOneof("log_type")
        for _ in range(max(iterations, 1)):
            if kind == "predict_log":
                inference.predict(servable, log.predict_log.request)
            elif kind == "classify_log":
                inference.classify(servable, log.classify_log.request)
            elif kind == "regress_log":
                inference.regress(servable, log.regress_log.request)
            else:
                raise errors.unimplemented(f"Unsupported log_type for warmup: {kind}")
    servable.warmup_records = len(records)
    return len(records)
