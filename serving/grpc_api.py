"""The gRPC port: PredictionService and ModelService, on the official generated servicers.

Each method delegates to serving/inference.py (the same code as REST), counts and logs the
request, and turns a ServingError into the call's status code and details, as
tensorflow_model_server does. Clients use the stock tensorflow_serving.apis stubs.
"""
from __future__ import annotations

from concurrent import futures
from typing import Callable, List, Optional

import grpc
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from hyperrec.serving import config, errors, inference, model_status, request_budget
from hyperrec.serving.http_limits import DEFAULT_REQUEST_BUDGET_BYTES
from hyperrec.serving.manager import ModelManager
from hyperrec.serving.request_tracking import RequestTracker

ENTRYPOINT = "GRPC"
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _abort(context: grpc.ServicerContext, error: errors.ServingError):
    context.abort(_GRPC_CODES.get(error.code.number, grpc.StatusCode.UNKNOWN), error.message)


def _version_and_label(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label if model_spec.WhichOneof("version_choice") == \
        "version_label" else None
    return version, label


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress and GetModelMetadata over the manager's servables; the
    requests of the first three are priced against the per-request budget before anything
    in them is converted (serving/request_budget.py)."""

    def __init__(self, manager: ModelManager, tracker: RequestTracker,
                 request_budget_bytes: int = DEFAULT_REQUEST_BUDGET_BYTES):
        self._manager = manager
        self._tracker = tracker
        self._budget = request_budget_bytes

    def _serve(self, request, context, api: str, run: Callable, log: Optional[Callable],
               price: Optional[Callable] = None):
        model_spec = request.model_spec
        cost = 0
        try:
            if price is not None:
                cost = price(request, self._budget)
            with self._tracker.track(model_spec.name, api, ENTRYPOINT):
                servable = self._manager.servable(model_spec.name, *_version_and_label(model_spec))
                response = run(servable, request)
                if log is not None:
                    log(servable, request, response)
                return response
        except errors.ServingError as err:
            _abort(context, err)
        except Exception as err:  # an unexpected failure is INTERNAL, never a dropped call
            _abort(context, errors.from_exception(err))
        finally:
            request_budget.release_after(cost)

    def Predict(self, request, context):
        return self._serve(request, context, "predict", inference.predict,
                           self._tracker.log_predict, request_budget.check_predict_request)

    def Classify(self, request, context):
        return self._serve(request, context, "classify", inference.classify,
                           self._tracker.log_classify, request_budget.check_examples_request)

    def Regress(self, request, context):
        return self._serve(request, context, "regress", inference.regress,
                           self._tracker.log_regress, request_budget.check_examples_request)

    def GetModelMetadata(self, request, context):
        return self._serve(request, context, "GetModelMetadata", inference.metadata, None)

    def MultiInference(self, request, context):
        _abort(context, errors.unimplemented("MultiInference is not supported by this server"))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest."""

    def __init__(self, manager: ModelManager):
        self._manager = manager

    def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            _abort(context, errors.invalid_argument("Missing ModelSpec"))
        try:
            version, label = _version_and_label(request.model_spec)
            states = self._manager.version_states(request.model_spec.name, version, label)
            return model_status.status_response(states)
        except errors.ServingError as err:
            _abort(context, err)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._manager.reload(config.models_from_proto(request.config))
        except config.ConfigError as err:
            response.status.error_code = errors.Code.INVALID_ARGUMENT.number
            response.status.error_message = str(err)
        return response


class GrpcServer:
    """The gRPC listener on `host:port` (port 0 picks a free one)."""

    def __init__(self, host: str, port: int, manager: ModelManager, tracker: RequestTracker,
                 max_workers: int = 64, max_message_bytes: int = 0,
                 request_budget_bytes: int = DEFAULT_REQUEST_BUDGET_BYTES):
        # TF Serving accepts messages up to 2 GiB (SetMaxMessageSize(kint32max)). A message
        # over the request budget would be refused once received: gRPC refuses it unread.
        limits = [(1 << 31) - 1] + [bound for bound in (max_message_bytes, request_budget_bytes)
                                    if bound > 0]
        limit = min(limits)
        options: List = [("grpc.max_receive_message_length", limit),
                         ("grpc.max_send_message_length", (1 << 31) - 1),
                         ("grpc.so_reuseport", 0)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix="grpc"),
                                   options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(manager, tracker, request_budget_bytes), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(manager), self._server)
        self.host = host
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait(timeout=grace + 5)

