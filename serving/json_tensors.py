"""JSON values to typed tensors by json_tensor.cc's rules: each leaf checked against the
signature's dtype (no silent float -> int, no lossy int -> float), `{"b64": ...}` strings,
and the dense shape every row must agree on."""
from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tensorflow.core.framework import types_pb2

from hyperrec.serving import errors
from hyperrec.serving.json_parsing import INT64_RANGE, json_type, value_text

_B64_KEY = "b64"

FLOAT32_MAX = float(np.finfo(np.float32).max)
_MAX_EXACT_FLOAT32_INT = (1 << 24) - 1
_MAX_EXACT_FLOAT64_INT = (1 << 53) - 1
_INT32 = (-(1 << 31), (1 << 31) - 1)

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


def dense_shape(value: Any) -> List[int]:
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


def to_array(values: Sequence[Any], shape: List[int], dtype: int) -> np.ndarray:
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


def leaf_values(value: Any, shape: List[int], dtype: int) -> Sequence[Any]:
    """The checked, converted leaf values (a flat list or array) of a JSON tensor claiming
    `shape`."""
    values = _dense_floats(value, shape, dtype)
    if values is None:
        values = []
        _TensorFiller(dtype).fill(value, shape, values)
    return values


def json_tensor(value: Any, dtype: int) -> Tuple[np.ndarray, List[int], int]:
    """One JSON tensor -> (array, shape, number of values)."""
    shape = dense_shape(value)
    values = leaf_values(value, shape, dtype)
    return to_array(values, shape, dtype), shape, len(values)


def shape_text(shape: List[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
