"""Clients for any server speaking TF Serving's API: ours or the stock tensorflow/serving.

`RestClient` needs only the standard library (JSON over HTTP); `GrpcClient` uses the official
tensorflow_serving.apis stubs. Both offer `predict` (TF Serving's row format in, the JSON
answer's shape out), `recommend` (the pipeline's `recommend` signature for one user),
`status` and `metadata`. With `canary_share` > 0, `recommend` calls that name neither a
version nor a label go to the `canary` or `stable` label by the user's hash (routing.py).
"""
from __future__ import annotations

import http.client
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hyperrec.schemas import features
from hyperrec.serving import routing

DEFAULT_MODEL_NAME = "hyperrec"
DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
RECOMMEND_SIGNATURE = features.RECOMMEND
RECOMMEND_EXCLUDING_SIGNATURE = features.RECOMMEND_EXCLUDING

Recommendations = List[Tuple[str, float]]


class ServingClientError(RuntimeError):
    """The server answered with an error (REST status or gRPC code, and its message)."""

    def __init__(self, code: Any, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def recommend_instance(user_id: str, history: Sequence[str], device: str, k: int,
                       timestamp: Optional[int] = None,
                       exclude_item_ids: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """One row of the `recommend` signature (an empty history is sent as one padding id),
    or of `recommend_excluding` when `exclude_item_ids` is given (empty: one padding id)."""
    row = {features.USER_ID: user_id, features.HISTORY: list(history) or [""],
           features.DEVICE: device,
           features.TIMESTAMP: int(time.time() if timestamp is None else timestamp),
           features.K: int(k)}
    if exclude_item_ids is not None:
        row[features.EXCLUDE_ITEM_IDS] = list(exclude_item_ids) or [""]
    return row


def recommend_signature(exclude_item_ids: Optional[Sequence[str]]) -> str:
    return RECOMMEND_SIGNATURE if exclude_item_ids is None else RECOMMEND_EXCLUDING_SIGNATURE


def routed_label(user_id: str, canary_share: float, version: Optional[int],
                 label: Optional[str]) -> Optional[str]:
    """The label a recommend call asks for: an explicit version or label wins; otherwise the
    user's canary routing (None with a share of 0: the latest version)."""
    if version is not None or label is not None:
        return label
    return routing.label_for(user_id, canary_share)


def _model_path(model_name: str, version: Optional[int], label: Optional[str]) -> str:
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{version}"
    elif label is not None:
        path += f"/labels/{label}"
    return path


class RestClient:
    """TF Serving's REST API over one keep-alive HTTP connection (not thread-safe)."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_REST_PORT,
                 model_name: str = DEFAULT_MODEL_NAME, timeout: float = 30.0,
                 canary_share: float = 0.0):
        self.host, self.port, self.model_name, self.timeout = host, port, model_name, timeout
        self.canary_share = routing.check_share(canary_share)
        self._connection: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body: Optional[bytes] = None
                ) -> Tuple[int, bytes]:
        """One HTTP exchange; returns (status, body). Reconnects once if the socket died."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port,
                                                              timeout=self.timeout)
            try:
                self._connection.request(method, path, body=body, headers=headers)
                answer = self._connection.getresponse()
                data = answer.read()
                if answer.getheader("Connection", "").lower() == "close":
                    self.close()
                return answer.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, payload: Optional[dict] = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        status, data = self.request(method, path, body)
        try:
            answer = json.loads(data.decode("utf-8")) if data else {}
        except ValueError:
            answer = {"error": data.decode("utf-8", "replace")}
        if status != 200:
            raise ServingClientError(status, answer.get("error", "") if isinstance(answer, dict)
                                     else str(answer))
        return answer

    def predict(self, instances: Optional[list] = None, inputs: Any = None,
                signature_name: Optional[str] = None, version: Optional[int] = None,
                label: Optional[str] = None) -> dict:
        """POST :predict with `instances` (row format) or `inputs` (columnar)."""
        payload: Dict[str, Any] = {}
        if signature_name:
            payload["signature_name"] = signature_name
        if instances is not None:
            payload["instances"] = instances
        if inputs is not None:
            payload["inputs"] = inputs
        return self._json("POST", _model_path(self.model_name, version, label) + ":predict",
                          payload)

    def recommend(self, user_id: str, history: Sequence[str], device: str = "", k: int = 10,
                  timestamp: Optional[int] = None, version: Optional[int] = None,
                  label: Optional[str] = None,
                  exclude_item_ids: Optional[Sequence[str]] = None) -> Recommendations:
        label = routed_label(user_id, self.canary_share, version, label)
        answer = self.predict(
            [recommend_instance(user_id, history, device, k, timestamp, exclude_item_ids)],
            signature_name=recommend_signature(exclude_item_ids), version=version, label=label)
        row = answer["predictions"][0]
        return list(zip(row[features.ITEM_IDS], [float(s) for s in row[features.SCORES]]))

    def status(self, version: Optional[int] = None, label: Optional[str] = None) -> dict:
        return self._json("GET", _model_path(self.model_name, version, label))

    def metadata(self, version: Optional[int] = None, label: Optional[str] = None) -> dict:
        return self._json("GET", _model_path(self.model_name, version, label) + "/metadata")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class GrpcClient:
    """PredictionService/ModelService through the official stubs (thread-safe)."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_GRPC_PORT,
                 model_name: str = DEFAULT_MODEL_NAME, timeout: float = 30.0,
                 canary_share: float = 0.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
        self.model_name, self.timeout = model_name, timeout
        self.canary_share = routing.check_share(canary_share)
        self._channel = grpc.insecure_channel(
            f"{host}:{port}", options=[("grpc.max_receive_message_length", (1 << 31) - 1),
                                       ("grpc.max_send_message_length", (1 << 31) - 1)])
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _spec(self, request, signature_name: Optional[str], version: Optional[int],
              label: Optional[str]) -> None:
        request.model_spec.name = self.model_name
        if signature_name:
            request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        elif label is not None:
            request.model_spec.version_label = label

    def _call(self, method, request):
        import grpc
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise ServingClientError(err.code().name, err.details()) from err

    def predict_tensors(self, inputs: Dict[str, Any], signature_name: Optional[str] = None,
                        version: Optional[int] = None, label: Optional[str] = None
                        ) -> Dict[str, Any]:
        """Predict with {alias: array-like}; returns {alias: numpy array}."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        request = predict_pb2.PredictRequest()
        self._spec(request, signature_name, version, label)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.prediction.Predict, request)
        return {alias: tf.make_ndarray(t) for alias, t in response.outputs.items()}

    def predict(self, instances: Optional[list] = None, inputs: Any = None,
                signature_name: Optional[str] = None, version: Optional[int] = None,
                label: Optional[str] = None) -> dict:
        """REST-style JSON in and out, carried over gRPC (dtypes read from the metadata)."""
        from hyperrec.serving import json_request, json_response
        signature = signature_name or features.SERVING_DEFAULT
        signature_def = self.signature_defs(version, label).get(signature)
        if signature_def is None:
            raise ServingClientError("FAILED_PRECONDITION",
                                     f'Serving signature key "{signature}" not found.')
        dtypes = {alias: info.dtype for alias, info in sorted(signature_def.inputs.items())}
        doc: Dict[str, Any] = {"instances": instances} if instances is not None else {}
        if inputs is not None:
            doc["inputs"] = inputs
        arrays, request_format = json_request.predict_inputs(doc, dtypes)
        outputs = self.predict_tensors(arrays, signature_name, version, label)
        return json.loads(json_response.predict_outputs(outputs, request_format))

    def recommend(self, user_id: str, history: Sequence[str], device: str = "", k: int = 10,
                  timestamp: Optional[int] = None, version: Optional[int] = None,
                  label: Optional[str] = None,
                  exclude_item_ids: Optional[Sequence[str]] = None) -> Recommendations:
        import numpy as np
        label = routed_label(user_id, self.canary_share, version, label)
        row = recommend_instance(user_id, history, device, k, timestamp, exclude_item_ids)
        dtypes = {features.USER_ID: object, features.HISTORY: object, features.DEVICE: object,
                  features.TIMESTAMP: np.int64, features.K: np.int32,
                  features.EXCLUDE_ITEM_IDS: object}
        outputs = self.predict_tensors(
            {name: np.array([row[name]], dtype=dtype) for name, dtype in dtypes.items()
             if name in row},
            recommend_signature(exclude_item_ids), version, label)
        ids = [i.decode("utf-8") for i in outputs[features.ITEM_IDS][0]]
        return list(zip(ids, [float(s) for s in outputs[features.SCORES][0]]))

    def status(self, version: Optional[int] = None, label: Optional[str] = None):
        from tensorflow_serving.apis import get_model_status_pb2
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request, None, version, label)
        return self._call(self.models.GetModelStatus, request)

    def metadata(self, version: Optional[int] = None, label: Optional[str] = None):
        from tensorflow_serving.apis import get_model_metadata_pb2
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request, None, version, label)
        return self._call(self.prediction.GetModelMetadata, request)

    def signature_defs(self, version: Optional[int] = None, label: Optional[str] = None) -> dict:
        from tensorflow_serving.apis import get_model_metadata_pb2
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        self.metadata(version, label).metadata["signature_def"].Unpack(signature_map)
        return dict(signature_map.signature_def)

    def close(self) -> None:
        self._channel.close()


def make_client(use_grpc: bool, host: str, port: Optional[int], model_name: str,
                timeout: float = 30.0, canary_share: float = 0.0):
    if use_grpc:
        return GrpcClient(host, port or DEFAULT_GRPC_PORT, model_name, timeout, canary_share)
    return RestClient(host, port or DEFAULT_REST_PORT, model_name, timeout, canary_share)
