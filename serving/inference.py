"""The PredictionService methods on one servable, request proto in, response proto out.

Follows TF Serving's predict_util.cc, classifier.cc, regressor.cc and
get_model_metadata_impl.cc: the same signature checks, the same status codes and messages.
Both the gRPC API and (for classify, regress and metadata) the REST API run through here, so
the two answer identically.
"""
from __future__ import annotations

from typing import List

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, input_pb2,
                                     predict_pb2, regression_pb2)

from hyperrec.serving import errors
from hyperrec.serving.servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, Servable

SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


def _fill_model_spec(spec, servable: Servable, signature_name: str) -> None:
    spec.name = servable.model_name
    spec.version.value = servable.version
    spec.signature_name = signature_name


# Numeric dtypes whose TensorProto can carry the raw bytes in `tensor_content`: for these the
# conversions below skip tf.make_ndarray / tf.make_tensor_proto (~0.1 ms each per request)
# and give the same arrays and byte-identical protos.
_RAW_DTYPES = {tf.as_dtype(dtype).as_datatype_enum: np.dtype(dtype) for dtype in (
    np.float32, np.float64, np.int32, np.int64, np.int16, np.int8, np.uint8, np.uint16,
    np.uint32, np.uint64, np.bool_)}
# The dtypes tf.make_tensor_proto itself writes as tensor_content (tensor_util's
# _TENSOR_CONTENT_TYPES), for arrays of more than one element: all of the above but bool and
# uint16, which it writes as repeated values.
_RAW_ENUMS = {dtype: enum for enum, dtype in _RAW_DTYPES.items()
              if dtype not in (np.dtype(np.bool_), np.dtype(np.uint16))}


def tensor_to_array(alias: str, tensor_proto) -> np.ndarray:
    try:
        raw_dtype = _RAW_DTYPES.get(tensor_proto.dtype)
        if raw_dtype is not None and tensor_proto.tensor_content:
            shape = [dim.size for dim in tensor_proto.tensor_shape.dim]
            return np.frombuffer(tensor_proto.tensor_content, dtype=raw_dtype).reshape(shape)
        return tf.make_ndarray(tensor_proto)
    except Exception as err:
        raise errors.invalid_argument(f"tensor parsing error: {alias}") from err


def array_to_tensor(array: np.ndarray):
    enum = _RAW_ENUMS.get(array.dtype)
    if enum is None or array.size <= 1:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=enum,
                                   tensor_content=np.ascontiguousarray(array).tobytes())
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    return proto


# ---- predict -------------------------------------------------------------------------------

def check_predict_inputs(signature, aliases: List[str]) -> None:
    """TF Serving's VerifyRequestInputsSize and alias checks."""
    expected = set(signature.inputs)
    sent = set(aliases)
    if len(sent) != len(expected):
        extra = ",".join(sorted(sent - expected))
        missing = ",".join(sorted(expected - sent))
        raise errors.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{extra}}}. Missing but required: {{{missing}}}.")
    for alias in aliases:
        if alias not in expected:
            raise errors.invalid_argument(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                f"the set {{{','.join(sorted(expected))}}}.")


def predict_signature(servable: Servable, signature_name: str):
    """The SignatureDef a Predict call runs (TF Serving's RunPredict lookup).

    Like tensorflow_model_server's default (--enable_signature_method_name_check=false),
    any method name is accepted.
    """
    name = signature_name or DEFAULT_SIGNATURE
    signature = servable.signature_def(name)
    if signature is None:
        raise errors.failed_precondition(f'Serving signature key "{name}" not found.')
    return signature


def predict_outputs_filter(signature, output_filter) -> List[str]:
    seen = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


def predict(servable: Servable, request: predict_pb2.PredictRequest
            ) -> predict_pb2.PredictResponse:
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = predict_signature(servable, name)
    check_predict_inputs(signature, list(request.inputs))
    wanted = predict_outputs_filter(signature, request.output_filter)
    inputs = {alias: tensor_to_array(alias, tensor) for alias, tensor in request.inputs.items()}
    outputs = servable.run(name, inputs, wanted)
    response = predict_pb2.PredictResponse()
    _fill_model_spec(response.model_spec, servable, name)
    for alias, array in outputs.items():
        response.outputs[alias].CopyFrom(array_to_tensor(array))
    return response


# ---- classify / regress --------------------------------------------------------------------

def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The serialized tf.Examples of an Input; context features merged into each example.

    Concatenating two serialized messages merges them, with the example's own features
    winning over the context's (what InputToSerializedExampleTensor does).
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [example.SerializeToString()
                      for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        serialized = [context + example.SerializeToString()
                      for example in request_input.example_list_with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise errors.invalid_argument("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _method_signature(servable: Servable, signature_name: str, method: str, what: str):
    name = signature_name or DEFAULT_SIGNATURE
    signature = servable.signature_def(name)
    if signature is None:
        raise errors.invalid_argument(f"No signature was found with the name: {name}")
    if signature.method_name != method:
        raise errors.invalid_argument(
            f"Expected {what} signature method_name to be {method}. Was: "
            f"{signature.method_name}")
    if len(signature.inputs) != 1:  # classify and regress take serialized tf.Examples only
        raise errors.invalid_argument("Expected one input Tensor.")
    return name, signature


def classify(servable: Servable, request: classification_pb2.ClassificationRequest
             ) -> classification_pb2.ClassificationResponse:
    name, signature = _method_signature(servable, request.model_spec.signature_name,
                                        CLASSIFY_METHOD, "classification")
    if len(signature.outputs) not in (1, 2):
        raise errors.invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise errors.failed_precondition(
            f"No classification inputs found in SignatureDef: {signature}")
    wanted = [alias for alias in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if alias in signature.outputs]
    if not wanted:
        raise errors.failed_precondition(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}". Signature was: {signature}')
    examples = serialized_examples(request.input)
    outputs = servable.run(name, {CLASSIFY_INPUTS: examples}, wanted)
    classes, scores = outputs.get(CLASSIFY_CLASSES), outputs.get(CLASSIFY_SCORES)
    for label, tensor, kind in ((CLASSIFY_CLASSES, classes, "O"), (CLASSIFY_SCORES, scores, "f")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise errors.invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {list(tensor.shape)}")
        if tensor.dtype.kind != kind or (kind == "f" and tensor.dtype != np.float32):
            expected = "DT_STRING" if kind == "O" else "DT_FLOAT"
            raise errors.invalid_argument(
                f"Expected {label} Tensor of {expected}. Got: {tensor.dtype}")
        if tensor.shape[0] != len(examples):
            raise errors.invalid_argument(
                f"Expected {label} output batch size of {len(examples)}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise errors.invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    response = classification_pb2.ClassificationResponse()
    _fill_model_spec(response.model_spec, servable, name)
    for row in range(len(examples)):
        classifications = response.result.classifications.add()
        for column in range(num_classes):
            item = classifications.classes.add()
            if classes is not None:
                label = classes[row, column]
                item.label = label.decode("utf-8", "replace") if isinstance(label, bytes) \
                    else str(label)
            if scores is not None:
                item.score = float(scores[row, column])
    return response


def regress(servable: Servable, request: regression_pb2.RegressionRequest
            ) -> regression_pb2.RegressionResponse:
    name, signature = _method_signature(servable, request.model_spec.signature_name,
                                        REGRESS_METHOD, "regression")
    if len(signature.outputs) != 1:
        raise errors.invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise errors.failed_precondition(f"No regression inputs found in SignatureDef: {signature}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise errors.failed_precondition(
            f"No regression outputs found in SignatureDef: {signature}")
    examples = serialized_examples(request.input)
    values = servable.run(name, {REGRESS_INPUTS: examples}, [REGRESS_OUTPUTS])[REGRESS_OUTPUTS]
    if values.dtype != np.float32:
        raise errors.invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise errors.invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}")
    if values.shape[0] != len(examples):
        raise errors.invalid_argument(
            "Input batch size did not match output batch size: "
            f"{len(examples)} vs. {values.shape[0]}")
    response = regression_pb2.RegressionResponse()
    _fill_model_spec(response.model_spec, servable, name)
    for value in values.reshape(-1):
        response.result.regressions.add().value = float(value)
    return response


# ---- metadata ------------------------------------------------------------------------------

def metadata(servable: Servable, request: get_model_metadata_pb2.GetModelMetadataRequest
             ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.metadata_field:
        raise errors.invalid_argument(
            "GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise errors.invalid_argument(f"Metadata field {field} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def signature_def_map(response: get_model_metadata_pb2.GetModelMetadataResponse
                      ) -> get_model_metadata_pb2.SignatureDefMap:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
    return signature_map
