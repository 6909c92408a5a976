"""Per-request bookkeeping shared by the REST and gRPC APIs: metrics and the request log.

`track` times a request and counts it by outcome; `log_*` append the request and its
response to the request log as a PredictionLog (only when a log directory is configured).
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator, Mapping, Optional

import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from hyperrec.serving import errors, inference
from hyperrec.serving.metrics import ServingMetrics
from hyperrec.serving.request_log import RequestLogWriter
from hyperrec.serving.servable import Servable


class RequestTracker:
    """Times, counts and (optionally) logs served requests."""

    def __init__(self, metrics: ServingMetrics, request_log: Optional[RequestLogWriter] = None):
        self.metrics = metrics
        self.request_log = request_log

    @contextlib.contextmanager
    def track(self, model_name: str, api: str, entrypoint: str) -> Iterator[None]:
        started = time.perf_counter()
        status = errors.Code.OK.name
        try:
            yield
        except errors.ServingError as err:
            status = err.code.name
            raise
        except Exception:
            status = errors.Code.INTERNAL.name
            raise
        finally:
            self.metrics.observe_request(model_name, api, entrypoint, status,
                                         time.perf_counter() - started)

    @property
    def logging(self) -> bool:
        return self.request_log is not None

    def _write(self, log: prediction_log_pb2.PredictionLog, servable: Servable,
               signature_name: str) -> None:
        spec = log.log_metadata.model_spec
        spec.name = servable.model_name
        spec.version.value = servable.version
        spec.signature_name = signature_name
        log.log_metadata.timestamp_secs = int(time.time())
        self.request_log.write(log.SerializeToString())

    def log_predict(self, servable: Servable, request: predict_pb2.PredictRequest,
                    response: predict_pb2.PredictResponse) -> None:
        if not self.logging:
            return
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(request)
        log.predict_log.response.CopyFrom(response)
        self._write(log, servable, response.model_spec.signature_name)

    def log_predict_arrays(self, servable: Servable, signature_name: str,
                           inputs: Mapping[str, np.ndarray],
                           outputs: Mapping[str, np.ndarray],
                           version: Optional[int] = None, label: Optional[str] = None) -> None:
        """Logs a REST predict, whose tensors never were protos. `version`/`label` are what
        the URL named, kept in the request's model spec as a gRPC request keeps them (the
        monitor compares outcomes per requested label)."""
        if not self.logging:
            return
        request = predict_pb2.PredictRequest()
        request.model_spec.name = servable.model_name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        elif label is not None:
            request.model_spec.version_label = label
        for alias, array in inputs.items():
            request.inputs[alias].CopyFrom(inference.array_to_tensor(array))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.model_name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(inference.array_to_tensor(array))
        self.log_predict(servable, request, response)

    def log_classify(self, servable: Servable, request, response) -> None:
        self._log_exchange("classify_log", servable, request, response)

    def log_regress(self, servable: Servable, request, response) -> None:
        self._log_exchange("regress_log", servable, request, response)

    def _log_exchange(self, kind: str, servable: Servable, request, response) -> None:
        """One PredictionLog whose `kind` field (classify_log, regress_log) holds the pair."""
        if not self.logging:
            return
        log = prediction_log_pb2.PredictionLog()
        getattr(log, kind).request.CopyFrom(request)
        getattr(log, kind).response.CopyFrom(response)
        self._write(log, servable, response.model_spec.signature_name)
