"""The requests a candidate is probed with and the two APIs that send them: one call per
signature (the warmup's, else synthesised inputs), over REST (TF Serving's JSON) and gRPC."""
from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hyperrec.schemas import features
from hyperrec.components.infra_validation.candidate_server import Refusal

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_INIT_OP = "__saved_model_init_op"


@dataclasses.dataclass
class Call:
    """One request: a signature and its inputs (numpy arrays, batch first)."""
    signature: str
    inputs: Dict[str, np.ndarray]

    @property
    def batch(self) -> int:
        return int(min(len(v) for v in self.inputs.values())) if self.inputs else 0


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_json(array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        flat = [_json_value(v if not isinstance(v, str) else v.encode("utf-8"))
                for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim \
            else flat[0]
    return array.tolist()


def _from_json(value: Any) -> np.ndarray:
    def leaf(v: Any) -> Any:
        if isinstance(v, dict) and "b64" in v:
            return base64.b64decode(v["b64"])
        if isinstance(v, list):
            return [leaf(x) for x in v]
        return v.encode("utf-8") if isinstance(v, str) else v
    converted = leaf(value)
    array = np.array(converted, dtype=object)
    if array.size and all(isinstance(v, (int, float, bool)) for v in array.reshape(-1)):
        return np.array(converted)
    return array


class RestApi:
    """TF Serving's REST API on one keep-alive connection, standard library only."""

    def __init__(self, port: int, model_name: str, timeout: float):
        self.path = f"/v1/models/{model_name}"
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def _exchange(self, method: str, path: str, payload: Optional[dict] = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        try:
            self.connection.request(method, path, body=body,
                                    headers={"Content-Type": "application/json"})
            answer = self.connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            raise
        parsed = json.loads(data.decode("utf-8")) if data else {}
        if answer.status != 200:
            raise Refusal("request", f"REST {answer.status}: {parsed.get('error', data[:300])}")
        return parsed

    def status(self) -> dict:
        return self._exchange("GET", self.path)

    def predict(self, call: Call) -> Dict[str, np.ndarray]:
        answer = self._exchange("POST", self.path + ":predict", {
            "signature_name": call.signature,
            "inputs": {name: _to_json(value) for name, value in call.inputs.items()}})
        outputs = answer.get("outputs")
        if not isinstance(outputs, dict):  # a single output is answered bare
            outputs = {"": outputs}
        return {name: _from_json(value) for name, value in outputs.items()}

    def close(self) -> None:
        self.connection.close()


class GrpcApi:
    """PredictionService through the official tensorflow_serving.apis stubs."""

    def __init__(self, port: int, model_name: str, timeout: float):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc
        self.model_name, self.timeout = model_name, timeout
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1),
                                          ("grpc.max_send_message_length", -1)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(self, call: Call) -> Dict[str, np.ndarray]:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = call.signature
        for name, value in call.inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise Refusal("request", f"gRPC {err.code().name}: {err.details()}") from err
        return {name: tf.make_ndarray(t) for name, t in response.outputs.items()}

    def close(self) -> None:
        self.channel.close()


# ---------------------------------------------------------------- requests

def signature_defs(model_dir: str) -> Dict[str, Any]:
    """{name: SignatureDef} of the serving MetaGraph (saved_model.pb, parsed as protobuf)."""
    from tensorflow.core.protobuf import saved_model_pb2
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags or len(saved_model.meta_graphs) == 1:
            return {name: sig for name, sig in meta_graph.signature_def.items()
                    if name != _INIT_OP}
    return {}


def warmup_calls(model_dir: str) -> List[Call]:
    """The PredictRequests of the model's warmup file (other log kinds are left out)."""
    path = os.path.join(model_dir, WARMUP_FILE)
    if not os.path.isfile(path):
        return []
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    calls = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") == "predict_log":
            request = log.predict_log.request
            calls.append(Call(request.model_spec.signature_name or features.SERVING_DEFAULT,
                              {name: tf.make_ndarray(t) for name, t in request.inputs.items()}))
    return calls


def _example_columns(calls: Sequence[Call]) -> Tuple[Dict[str, List[list]], int]:
    """Per feature name, the value lists of the tf.Examples any warmup request carries
    (in an `examples` input), and how many examples that is."""
    import tensorflow as tf
    serialized = next((call.inputs[features.EXAMPLES] for call in calls
                       if features.EXAMPLES in call.inputs), None)
    if serialized is None:
        return {}, 0
    columns: Dict[str, List[list]] = {}
    for index, data in enumerate(serialized.reshape(-1)):
        for name, feature in tf.train.Example.FromString(data).features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value) if kind else []
            columns.setdefault(name, [[] for _ in range(len(serialized))])[index] = values
    return columns, len(serialized)


def _synthesised_input(info: Any, columns: Dict[str, List[list]], batch: int,
                       name: str) -> np.ndarray:
    import tensorflow as tf
    dtype = tf.as_dtype(info.dtype)
    numpy_type = object if dtype == tf.string else dtype.as_numpy_dtype
    filler = b"" if dtype == tf.string else 0
    dims = [d.size for d in info.tensor_shape.dim]
    if name == features.K and dtype.is_integer:
        return np.full([batch], 10, numpy_type)
    if name in columns:
        rows = columns[name]
        if len(dims) >= 2:
            width = max([len(r) for r in rows] + [1])
            return np.array([r + [filler] * (width - len(r)) for r in rows], numpy_type)
        return np.array([r[0] if r else filler for r in rows], numpy_type)
    shape = [batch] + [d if d > 0 else 1 for d in dims[1:]]
    return np.full(shape, filler, numpy_type)


def build_calls(model_dir: str, signatures: Dict[str, Any]) -> Tuple[List[Call], int]:
    """The warmup requests (for the signatures the model has) plus one request for every
    other signature; and how many warmup requests the file held."""
    warmup = warmup_calls(model_dir)
    calls = [c for c in warmup if c.signature in signatures]
    columns, examples = _example_columns(warmup)
    batch = min(examples, 4) or 1
    columns = {name: rows[:batch] for name, rows in columns.items()}
    if examples:
        serialized = next(c.inputs[features.EXAMPLES] for c in warmup
                          if features.EXAMPLES in c.inputs)
        columns[features.EXAMPLES] = [[v] for v in serialized.reshape(-1)[:batch]]
    covered = {c.signature for c in calls}
    for name in sorted(set(signatures) - covered):
        inputs = signatures[name].inputs
        calls.append(Call(name, {alias: _synthesised_input(info, columns, batch, alias)
                                 for alias, info in sorted(inputs.items())}))
    return calls, len(warmup)
