"""TF Serving's REST request bodies: JSON to the tensors a predict call runs on.

Mirrors tensorflow_serving/util/json_tensor.cc rule for rule, including its error messages:
predict takes the row format (`instances`: one element per batch row, objects when the
signature has several inputs) or the columnar format (`inputs`: one value per input);
binary strings travel as `{"b64": "..."}`; numbers are checked against the signature's dtype
(no silent float -> int, no lossy int -> float).
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import orjson
from tensorflow.core.framework import types_pb2

from hyperrec.serving import errors

ROW = "row"  # request had `instances`: answer with `predictions`
COLUMNAR = "columnar"  # request had `inputs`: answer with `outputs`

_SIGNATURE_KEY = "signature_name"
_INSTANCES_KEY = "instances"
_INPUTS_KEY = "inputs"
_B64_KEY = "b64"

FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_EXACT_FLOAT32_INT = (1 << 24) - 1
_MAX_EXACT_FLOAT64_INT = (1 << 53) - 1
_INT32 = (-(1 << 31), (1 << 31) - 1)
INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1

# DataTypeString() names, used in TF Serving's messages.
_DTYPE_NAMES = {
    types_pb2.DT_FLOAT: "float", types_pb2.DT_DOUBLE: "double", types_pb2.DT_INT32: "int32",
    types_pb2.DT_UINT8: "uint8", types_pb2.DT_INT16: "int16", types_pb2.DT_INT8: "int8",
    types_pb2.DT_STRING: "string", types_pb2.DT_INT64: "int64", types_pb2.DT_BOOL: "bool",
    types_pb2.DT_UINT32: "uint32", types_pb2.DT_UINT64: "uint64", types_pb2.DT_HALF: "half",
}
NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32, types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_STRING: object, types_pb2.DT_INT64: np.int64,
    types_pb2.DT_BOOL: np.bool_, types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64,
}


def dtype_name(dtype: int) -> str:
    if dtype in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype]
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return str(dtype)


# ---- parsing -------------------------------------------------------------------------------

def value_text(value: Any, limit: int = 512) -> str:
    """A JSON value as text for an error message (bounded: bodies can be large)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _nonfinite_constant(name: str) -> float:
    """NaN and +-Infinity, which TF Serving (rapidjson kParseNanAndInfFlag) also accepts."""
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def parse_json(body: bytes) -> Dict[str, Any]:
    """The request body as a JSON object, or INVALID_ARGUMENT like TF Serving's ParseJson.

    Strict JSON goes through orjson (C; about 10x the standard library on numeric bodies).
    Whatever orjson refuses (NaN/Infinity literals, lone surrogates, integers beyond 64
    bits, bad bytes) takes the standard library's path, which accepts what TF Serving
    accepts and words the errors.
    """
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_json_lenient(body)
    if not isinstance(doc, dict):
        raise errors.invalid_argument(f"JSON Value: {value_text(doc)} Is not object")
    return doc


# Containers parsed member by member: arrays down to this depth (the top object is 0), objects
# down to the next shallower one, so `instances` rows and `inputs` rows each take one call.
_PIECEWISE_ARRAY_DEPTH = 3
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def parse_json_in_pieces(body: bytes) -> Dict[str, Any]:
    """`parse_json`, for large bodies on a thread beside the event loop.

    orjson holds the GIL for a whole document (about 0.4 s for 3.6 MB), which would stall the
    loop for as long. Here the document's outer containers are walked in Python and their
    members parsed one standard-library call each, so the GIL changes hands between members.
    The result is what the standard library's parser makes of the document, which is what
    `parse_json` returns for it; anything this walk does not take (bad JSON, bad bytes, a
    top level that is not an object) goes to `parse_json`, for its error messages.
    """
    try:
        text = body.decode("utf-8")
        doc, end = _piecewise_value(text, _WHITESPACE.match(text, 0).end(), 0)
        if isinstance(doc, dict) and _WHITESPACE.match(text, end).end() == len(text):
            return doc
    except (ValueError, IndexError, RecursionError):  # JSONDecodeError is a ValueError
        pass
    return parse_json(body)


def _orjson_int(text: str) -> Any:
    """An integer literal as orjson (and rapidjson, TF Serving's parser) reads it: beyond
    int64's minimum or uint64's maximum it is a double."""
    value = int(text)
    return value if INT64_RANGE[0] <= value <= _UINT64_MAX else float(text)


# The standard library reads numbers as orjson does on both paths that use it (the lenient
# fallback and the piecewise walk), so a body gives the same values whichever path it takes.
_DECODER_OPTIONS = dict(parse_constant=_nonfinite_constant, parse_int=_orjson_int)
_DECODER = json.JSONDecoder(**_DECODER_OPTIONS)


def _piecewise_value(text: str, index: int, depth: int) -> Tuple[Any, int]:
    """(value, end) of the JSON value starting at `index`."""
    opening = text[index]
    if opening == "[" and depth < _PIECEWISE_ARRAY_DEPTH:
        closing, value = "]", []
    elif opening == "{" and depth < _PIECEWISE_ARRAY_DEPTH - 1:
        closing, value = "}", {}
    else:
        return _DECODER.raw_decode(text, index)
    index = _WHITESPACE.match(text, index + 1).end()
    if text[index] == closing:
        return value, index + 1
    while True:
        if closing == "}":
            key, index = _DECODER.raw_decode(text, index)
            if not isinstance(key, str):
                raise ValueError("object key is not a string")
            index = _WHITESPACE.match(text, index).end()
            if text[index] != ":":
                raise ValueError("missing ':'")
            index = _WHITESPACE.match(text, index + 1).end()
            value[key], index = _piecewise_value(text, index, depth + 1)
        else:
            element, index = _piecewise_value(text, index, depth + 1)
            value.append(element)
        index = _WHITESPACE.match(text, index).end()
        if text[index] == closing:
            return value, index + 1
        if text[index] != ",":
            raise ValueError(f"expected ',' or '{closing}'")
        index = _WHITESPACE.match(text, index + 1).end()


def _parse_json_lenient(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise errors.invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}") from err
    try:
        # json.loads rather than _DECODER.decode: it also names a leading byte order mark.
        doc = json.loads(text, **_DECODER_OPTIONS)
    except json.JSONDecodeError as err:
        raise errors.invalid_argument(
            f"JSON Parse error: Invalid value. ({err.msg}) at offset: {err.pos}") from err
    except RecursionError as err:
        raise errors.invalid_argument("JSON Parse error: document nested too deeply") from err
    return doc


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional `signature_name` ("" when absent), which must be a string."""
    if _SIGNATURE_KEY not in doc:
        return ""
    name = doc[_SIGNATURE_KEY]
    if not isinstance(name, str):
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} not formatted correctly. "
            "'signature_name' key must be a string value.")
    return name


# ---- JSON values -> typed tensor values ----------------------------------------------------

def _type_error(value: Any, dtype: int) -> errors.ServingError:
    return errors.invalid_argument(
        f"JSON Value: {value_text(value)} Type: {json_type(value)} is not of expected type: "
        f"{dtype_name(dtype)}")


def lossy(value: Any, target: str) -> errors.ServingError:
    return errors.invalid_argument(
        f"Cannot convert JSON value: {value_text(value)} to {target} without loss of precision.")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)  # bool is an int subclass but not a JSON number


def _float_converter(dtype: int, max_exact_int: int, target: str,
                     max_magnitude: float) -> Callable[[Any], float]:
    """A JSON number as `dtype`, refusing integers beyond `max_exact_int` and finite floats
    beyond `max_magnitude` (both would lose precision)."""
    def convert(value: Any) -> float:
        if not _is_number(value):
            raise _type_error(value, dtype)
        if type(value) is int:
            if abs(value) > max_exact_int:
                raise lossy(value, target)
            return float(value)
        if math.isfinite(value) and abs(value) > max_magnitude:
            raise lossy(value, target)
        return value
    return convert


_to_float32 = _float_converter(types_pb2.DT_FLOAT, _MAX_EXACT_FLOAT32_INT, "float", FLOAT32_MAX)
_to_float64 = _float_converter(types_pb2.DT_DOUBLE, _MAX_EXACT_FLOAT64_INT, "double", math.inf)


def _integer(dtype: int, low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    return convert


def _to_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _type_error(value, types_pb2.DT_BOOL)
    return value


def _to_bytes(value: Any) -> bytes:
    if type(value) is not str:
        raise _type_error(value, types_pb2.DT_STRING)
    return value.encode("utf-8", "surrogatepass")


_LEAF_CONVERTERS: Dict[int, Callable[[Any], Any]] = {
    types_pb2.DT_FLOAT: _to_float32,
    types_pb2.DT_DOUBLE: _to_float64,
    types_pb2.DT_INT32: _integer(types_pb2.DT_INT32, *_INT32),
    types_pb2.DT_INT16: _integer(types_pb2.DT_INT16, *_INT32),
    types_pb2.DT_INT8: _integer(types_pb2.DT_INT8, *_INT32),
    types_pb2.DT_UINT8: _integer(types_pb2.DT_UINT8, *_INT32),
    types_pb2.DT_INT64: _integer(types_pb2.DT_INT64, *INT64_RANGE),
    types_pb2.DT_UINT32: _integer(types_pb2.DT_UINT32, 0, (1 << 32) - 1),
    types_pb2.DT_UINT64: _integer(types_pb2.DT_UINT64, 0, (1 << 64) - 1),
    types_pb2.DT_BOOL: _to_bool,
    types_pb2.DT_STRING: _to_bytes,
}


def is_b64_object(value: Any) -> bool:
    """`{"b64": "<base64>"}`: exactly one key, `b64`, holding a string."""
    return (isinstance(value, dict) and len(value) == 1 and _B64_KEY in value
            and isinstance(value[_B64_KEY], str))


def decode_b64_object(value: Any) -> bytes:
    if not is_b64_object(value):
        raise errors.invalid_argument(
            f"JSON Value: {value_text(value)} not formatted correctly for base64 data")
    text = "".join(value[_B64_KEY].split())
    text += "=" * (-len(text) % 4)  # absl's Base64Unescape accepts unpadded input
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise errors.invalid_argument("Unable to base64 decode") from err


def _dense_shape(value: Any) -> List[int]:
    """The shape a nested list claims, read along its first elements (GetDenseTensorShape)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


class _TensorFiller:
    """Collects the leaf values of one JSON tensor, checking it is dense and well typed."""

    def __init__(self, dtype: int):
        self.dtype = dtype
        self.convert = _LEAF_CONVERTERS.get(dtype)

    def fill(self, value: Any, shape: List[int], out: List[Any]) -> None:
        self._fill(value, 0, shape, out)

    def _fill(self, value: Any, level: int, shape: List[int], out: List[Any]) -> None:
        rank = len(shape)
        if not isinstance(value, list):
            if level != rank:
                raise errors.invalid_argument(
                    f"JSON Value: {value_text(value)} found at incorrect level: {level + 1} in "
                    f"the JSON DOM. Expected at level: {rank}")
            if isinstance(value, dict):
                if self.dtype != types_pb2.DT_STRING:
                    raise _type_error(value, self.dtype)
                out.append(decode_b64_object(value))
                return
            if self.convert is None:
                raise errors.unimplemented(
                    f"Conversion of JSON Value: {value_text(value)} to type: "
                    f"{dtype_name(self.dtype)}")
            out.append(self.convert(value))
            return
        if level >= rank:
            raise errors.invalid_argument(
                f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(value) != shape[level]:
            raise errors.invalid_argument(
                f"Encountered list at unexpected size: {len(value)} at level: {level} "
                f"expected size: {shape[level]}")
        for element in value:
            self._fill(element, level + 1, shape, out)


def _dense_floats(value: Any, shape: List[int], dtype: int) -> Optional[np.ndarray]:
    """The leaves of a dense JSON float tensor as a flat array, or None (then the exact,
    element-by-element walk decides, with its exact error messages).

    Most predict traffic is lists of floats. numpy converts those at C speed, but it also
    converts what TF Serving refuses: bools (to 0/1) and integers too large for the dtype
    (rounded). Only integral values can have been either, so only those leaves have their
    JSON type looked at; strings, nulls, objects and ragged lists make numpy fail or pick
    another dtype and take the exact walk.
    """
    if dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE) or not shape:
        return None
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype != np.float64 or array.shape != tuple(shape):
        return None
    flat = array.ravel()
    with np.errstate(invalid="ignore"):
        integral = np.flatnonzero(np.floor(flat) == flat)
    if integral.size:
        leaves = np.array(value, dtype=object).ravel()
        if any(type(leaf) is not float for leaf in leaves[integral].tolist()):
            return None  # a bool or an int among them: the exact walk checks each one
    if dtype == types_pb2.DT_FLOAT:
        with np.errstate(invalid="ignore"):
            if np.any(np.isfinite(flat) & (np.abs(flat) > FLOAT32_MAX)):
                return None
        return flat.astype(np.float32)
    return flat


def _to_array(values: Sequence[Any], shape: List[int], dtype: int) -> np.ndarray:
    np_dtype = NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        raise errors.unimplemented(f"Conversion to type: {dtype_name(dtype)}")
    if isinstance(values, np.ndarray):
        return values.astype(np_dtype, copy=False).reshape(shape)
    if np_dtype is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif np_dtype in (np.int8, np.int16, np.uint8, np.uint32, np.uint64):
        # TF Serving stores these in int_val and narrows them: wrap, do not raise.
        wide = np.uint64 if np_dtype is np.uint64 else np.int64
        array = np.array(values, dtype=wide).astype(np_dtype)
    else:
        array = np.array(values, dtype=np_dtype)
    return array.reshape(shape)


def _leaf_values(value: Any, shape: List[int], dtype: int) -> Sequence[Any]:
    """The checked, converted leaf values (a flat list or array) of a JSON tensor claiming
    `shape`."""
    values = _dense_floats(value, shape, dtype)
    if values is None:
        values = []
        _TensorFiller(dtype).fill(value, shape, values)
    return values


def _json_tensor(value: Any, dtype: int) -> Tuple[np.ndarray, List[int], int]:
    """One JSON tensor -> (array, shape, number of values)."""
    shape = _dense_shape(value)
    values = _leaf_values(value, shape, dtype)
    return _to_array(values, shape, dtype), shape, len(values)


def _shape_text(shape: List[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class _RowBatch:
    """Stacks `instances` rows into one tensor per input, checking every row agrees."""

    def __init__(self, input_dtypes: Mapping[str, int]):
        self.input_dtypes = input_dtypes
        self.rows: Dict[str, List[Sequence[Any]]] = {}  # per input: each row's leaves
        self.sizes: Dict[str, int] = {}
        self.shapes: Dict[str, List[int]] = {}

    def add(self, value: Any, name: str) -> None:
        if name not in self.input_dtypes:
            raise errors.invalid_argument(f"JSON object: does not have named input: {name}")
        shape = _dense_shape(value)
        values = _leaf_values(value, shape, self.input_dtypes[name])
        if name not in self.sizes:
            self.sizes[name] = len(values)
            self.shapes[name] = shape
        elif self.sizes[name] != len(values):
            raise errors.invalid_argument(
                f"Expecting tensor size: {self.sizes[name]} but got: {len(values)}")
        elif self.shapes[name] != shape:
            raise errors.invalid_argument(
                f"Expecting shape {_shape_text(self.shapes[name])} but got: {_shape_text(shape)}")
        self.rows.setdefault(name, []).append(values)

    def tensors(self, count: int) -> Dict[str, np.ndarray]:
        return {name: _to_array(_concatenate(rows), [count] + self.shapes[name],
                                self.input_dtypes[name])
                for name, rows in self.rows.items()}


def _concatenate(rows: List[Sequence[Any]]) -> Sequence[Any]:
    """The rows' leaves in order: one array when every row came out of the fast path."""
    if all(isinstance(row, np.ndarray) for row in rows):
        return rows[0] if len(rows) == 1 else np.concatenate(rows)
    return [leaf for row in rows
            for leaf in (row.tolist() if isinstance(row, np.ndarray) else row)]


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64_object(value)


def _tensors_from_instances(doc: Mapping[str, Any], input_dtypes: Mapping[str, int]
                            ) -> Dict[str, np.ndarray]:
    instances = doc[_INSTANCES_KEY]
    if not isinstance(instances, list):
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} Excepting '{_INSTANCES_KEY}' to be an list/array")
    if not instances:
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} No values in '{_INSTANCES_KEY}' array")
    if not isinstance(instances[0], dict) and len(input_dtypes) > 1:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map")
    objects = _is_element_object(instances[0])
    input_names = set(input_dtypes)
    batch = _RowBatch(input_dtypes)
    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise errors.invalid_argument(
                    f"Expecting object but got list at item {index} of input list")
            for name, value in element.items():
                try:
                    batch.add(value, name)
                except errors.ServingError as err:
                    raise errors.invalid_argument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {err}") from err
            if set(element) != input_names:
                raise errors.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_text(element)} keys must be equal to: "
                    f"{','.join(sorted(input_names))}")
        else:
            if _is_element_object(element):
                raise errors.invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list")
            try:
                batch.add(element, next(iter(input_dtypes)))
            except errors.ServingError as err:
                raise errors.invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {err}"
                ) from err
    return batch.tensors(len(instances))


def _tensors_from_inputs(doc: Mapping[str, Any], input_dtypes: Mapping[str, int]
                         ) -> Dict[str, np.ndarray]:
    value = doc[_INPUTS_KEY]
    if not isinstance(value, dict) or is_b64_object(value):
        if len(input_dtypes) > 1:
            raise errors.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map")
        name, dtype = next(iter(input_dtypes.items()))
        return {name: _json_tensor(value, dtype)[0]}
    tensors = {}
    for name, dtype in input_dtypes.items():
        if name not in value:
            raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _json_tensor(value[name], dtype)[0]
    return tensors


def predict_inputs(doc: Mapping[str, Any], input_dtypes: Mapping[str, int]
                   ) -> Tuple[Dict[str, np.ndarray], str]:
    """A parsed predict body -> ({input alias: array}, ROW or COLUMNAR).

    `input_dtypes` maps the signature's input aliases to their DataType enums.
    """
    if not input_dtypes:
        raise errors.invalid_argument("Failed to get input map for signature")
    has_instances = _INSTANCES_KEY in doc
    has_inputs = _INPUTS_KEY in doc
    if has_instances and has_inputs:
        raise errors.invalid_argument(
            f"JSON Value: {value_text(doc)} Not formatted correctly expecting only one of "
            f"'{_INPUTS_KEY}' or '{_INSTANCES_KEY}' keys to exist ")
    if has_instances:
        return _tensors_from_instances(doc, input_dtypes), ROW
    if has_inputs:
        return _tensors_from_inputs(doc, input_dtypes), COLUMNAR
    raise errors.invalid_argument("Missing 'inputs' or 'instances' key")
