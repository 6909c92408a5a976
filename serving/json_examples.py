"""TF Serving's REST classify/regress: JSON tf.Examples in, results out.

Mirrors json_tensor.cc's FillClassificationRequestFromJson / MakeJsonFromClassificationResult
(and the regression twins), including the error messages: `examples` (and an optional
`context`) are JSON objects of feature name -> value or list of values, whose JSON types pick
the feature's kind (string or {"b64": ...}: bytes, integer or bool: int64, float: float).
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import input_pb2

from hyperrec.serving import errors
from hyperrec.serving.json_parsing import INT64_RANGE, json_type, value_text
from hyperrec.serving.json_tensors import (FLOAT32_MAX, decode_b64_object, is_b64_object,
                                           lossy)
from hyperrec.serving.json_response import float32_text

_CONTEXT_KEY = "context"
_EXAMPLES_KEY = "examples"


def _feature_kind_error(name: str, feature: feature_pb2.Feature) -> errors.ServingError:
    kind = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}.get(
        feature.WhichOneof("kind"), "UNKNOWN")
    return errors.invalid_argument(
        f"Unexpected element type in feature: {name} expecting type: {kind}")


def _check_kind(name: str, feature: feature_pb2.Feature, kind: str) -> None:
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise _feature_kind_error(name, feature)


def _add_feature_value(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    if value is None or isinstance(value, list) or (
            isinstance(value, dict) and not is_b64_object(value)):
        raise errors.invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
    if type(value) is bool:
        _check_kind(name, feature, "int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        _check_kind(name, feature, "bytes_list")
        feature.bytes_list.value.append(decode_b64_object(value))
    elif isinstance(value, str):
        _check_kind(name, feature, "bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif type(value) is float:
        _check_kind(name, feature, "float_list")
        if math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise lossy(value, "float")
        feature.float_list.value.append(value)
    else:
        _check_kind(name, feature, "int64_list")
        if not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            if 0 <= value < (1 << 64):
                raise errors.invalid_argument(
                    f"Feature: {name} has uint64 element. Only int64 is supported.")
            raise lossy(value, "int64")
        feature.int64_list.value.append(value)


def _example_from_json(value: Any, example: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise errors.invalid_argument(
            f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for element in (content if isinstance(content, list) else [content]):
            _add_feature_value(element, name, feature)
        example.features.feature[name].CopyFrom(feature)


def classify_regress_input(doc: Mapping[str, Any]) -> input_pb2.Input:
    """A parsed classify/regress body (`examples`, optional `context`) -> serving Input."""
    request_input = input_pb2.Input()
    has_context = _CONTEXT_KEY in doc
    if has_context:
        _example_from_json(doc[_CONTEXT_KEY],
                           request_input.example_list_with_context.context)
    if _EXAMPLES_KEY not in doc:
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} When method is classify, key '{_EXAMPLES_KEY}' is "
            "expected and was not found")
    examples = doc[_EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} Expecting '{_EXAMPLES_KEY}' value to be an "
            "list/array")
    if not examples:
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} '{_EXAMPLES_KEY}' value is an empty array")
    for value in examples:
        target = (request_input.example_list_with_context.examples.add() if has_context
                  else request_input.example_list.examples.add())
        _example_from_json(value, target)
    return request_input


def classification_json(result) -> bytes:
    """ClassificationResult -> `{"results": [[[label, score], ...], ...]}`."""
    if not result.classifications:
        raise errors.invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        rows.append("[" + ", ".join(
            f"[{json.dumps(item.label)}, {float32_text(item.score)}]"
            for item in classifications.classes) + "]")
    return ('{"results": [' + ", ".join(rows) + "]}").encode("utf-8")


def regression_json(result) -> bytes:
    """RegressionResult -> `{"results": [value, ...]}`."""
    if not result.regressions:
        raise errors.invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(float32_text(item.value) for item in result.regressions)
    return ('{"results": [' + values + "]}").encode("utf-8")
