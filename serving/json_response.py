"""TF Serving's REST predict responses: output tensors to JSON text.

Floats are written like TF Serving writes them (json_tensor.cc): the shortest of six
significant digits or full precision that round-trips, always with a decimal point or
exponent; outputs whose name ends in `_bytes` are written as `{"b64": "..."}`; row requests
are answered with `predictions`, columnar ones with `outputs`.
"""
from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any, Callable, List, Mapping

import numpy as np
import orjson

from hyperrec.serving import errors
from hyperrec.serving.json_request import COLUMNAR

_BYTES_SUFFIX = "_bytes"


def _as_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _printf_text(value: float, narrow: Callable[[float], float], full_digits: int) -> str:
    """TF Serving's float text: "%g" when it reads back (through `narrow`) as the value,
    else `full_digits` significant digits; always with a point or exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = "%g" % value
    if narrow(float(text)) != value:
        text = "%.*g" % (full_digits, value)
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def float32_text(value: float) -> str:
    return _printf_text(value, _as_float32, 9)


def _float64_text(value: float) -> str:
    return _printf_text(value, float, 17)


def _string_text(value: bytes) -> str:
    return json.dumps(value.decode("utf-8", "replace"), ensure_ascii=False)


def _b64_text(value: bytes) -> str:
    return '{"b64": "' + base64.b64encode(value).decode("ascii") + '"}'


def _leaf_writer(array: np.ndarray, name: str) -> Callable[[Any], str]:
    kind = array.dtype
    if kind == np.float32 or kind == np.float16:
        return float32_text
    if kind == np.float64:
        return _float64_text
    if kind == np.bool_:
        return lambda value: "true" if value else "false"
    if kind.kind in "iu":
        return str
    if kind.kind in "OSU":
        def as_bytes(value: Any) -> bytes:
            return value if isinstance(value, bytes) else str(value).encode("utf-8")
        if name.endswith(_BYTES_SUFFIX):
            return lambda value: _b64_text(as_bytes(value))
        return lambda value: _string_text(as_bytes(value))
    raise errors.invalid_argument(f"Failed to write JSON value for tensor type: {kind}")


def _nested_text(value: Any, leaf: Callable[[Any], str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_nested_text(element, leaf) for element in value) + "]"
    return leaf(value)


def _float_texts(array: np.ndarray) -> List[str]:
    """Every element of a float array written as `float32_text`/`_float64_text` would."""
    flat = array.ravel()
    if flat.dtype != np.float32:
        return [_float64_text(value) for value in flat.tolist()]
    return _float32_texts(flat)


# 10**0 .. 10**22: exactly representable doubles (from exact integers, not pow()).
_POWERS_OF_TEN = np.array([float(10 ** i) for i in range(23)])
_EXPONENT_TEXT = {exponent: "e%+03d" % exponent for exponent in range(-50, 50)}  # printf's


def _float32_texts(flat: np.ndarray) -> List[str]:
    """`float32_text` of every element, without a printf per element where it can.

    `float32_text` prints six significant digits ("%g") when they round-trip to the same
    float32, else nine ("%.9g"). Both decisions are made here for the whole array in float64
    arithmetic, which carries 29 more bits than float32, so they are exact unless an element
    sits within about 1e-12 of a decision edge (a rounding tie, a power of ten, a float32
    rounding boundary); such elements, and non-finite ones, are written by `float32_text`.

    printf's text is then a function of the rounded significant digits and the decimal
    exponent alone. The double nearest to digits / 10**k (both exact, so one correctly
    rounded division) has exactly those digits as its shortest representation, which is
    what orjson prints, in fixed notation for these magnitudes. So one orjson call writes
    every element: the value itself where printf uses fixed notation (exponent -4 up to the
    precision), else the mantissa, to which printf's exponent ("e-05") is appended.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        values = flat.astype(np.float64)  # "invalid" here: a signalling NaN's bit pattern
        magnitude = np.abs(values)
        exponent = np.floor(np.log10(magnitude))
        scale = 10.0 ** (5.0 - exponent)
        scaled = magnitude * scale  # six significant digits before the point
        digits = np.round(scaled)
        six = digits / scale
        low = (six * (1.0 - 1e-12)).astype(np.float32)
        high = (six * (1.0 + 1e-12)).astype(np.float32)
        unsure = ~np.isfinite(values) | (low != high) | \
            (np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6) | \
            (digits < 1e5) | (digits >= 1e6)
        zero = magnitude == 0
        unsure &= ~zero
        round_trips = (low == magnitude.astype(np.float32)) | zero

        precision = np.where(round_trips, 6, 9)
        candidate = ~unsure & ~zero
        shift = np.where(candidate, precision - 1 - exponent, 0.0)
        scaled_p = magnitude * 10.0 ** shift  # `precision` significant digits before the point
        digits_p = np.round(scaled_p)
        known = candidate & (np.abs(scaled_p - np.floor(scaled_p) - 0.5) >= 1e-6) & \
            (digits_p >= _POWERS_OF_TEN[precision - 1]) & (digits_p < _POWERS_OF_TEN[precision])
        fixed = known & (exponent >= -4) & (exponent < precision)  # then shift is 0 .. 12
        scientific = known & ~fixed
        divisor = _POWERS_OF_TEN[np.where(fixed, shift, precision - 1).astype(np.intp)]
        nearest = np.where(known, np.copysign(digits_p / divisor, values), values)
        nearest[~known & ~zero] = 0.0  # written below by `float32_text`
    texts = orjson.dumps(nearest, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    for index, power in zip(np.flatnonzero(scientific).tolist(),
                            exponent[scientific].astype(np.intp).tolist()):
        mantissa = texts[index]
        if mantissa.endswith(".0"):  # printf writes "1e-05", not "1.0e-05"
            mantissa = mantissa[:-2]
        texts[index] = mantissa + _EXPONENT_TEXT[power]
    for index in np.flatnonzero(~known & ~zero).tolist():  # edges and non-finite: rare
        texts[index] = float32_text(float(values[index]))
    return texts


def _nested_from_flat(texts: List[str], shape: tuple) -> str:
    if not shape:
        return texts[0]
    if len(shape) == 1:
        return "[" + ", ".join(texts) + "]"
    step = len(texts) // shape[0] if shape[0] else 0
    return "[" + ", ".join(_nested_from_flat(texts[i * step:(i + 1) * step], shape[1:])
                           for i in range(shape[0])) + "]"


def tensor_json(array: np.ndarray, name: str) -> str:
    """One output tensor as JSON text (nested lists; a scalar as a bare value)."""
    if array.dtype in (np.float32, np.float64, np.float16) and array.size:
        texts = _float_texts(array.astype(np.float32) if array.dtype == np.float16 else array)
        return _nested_from_flat(texts, array.shape)
    return _nested_text(array.tolist(), _leaf_writer(array, name))


def _row_texts(array: np.ndarray, name: str) -> List[str]:
    """`tensor_json(array[i, ...], name)` for every row i, with the float text of the whole
    array written at once (per row, numpy's overhead would dominate)."""
    if array.dtype in (np.float32, np.float64, np.float16) and array.size:
        texts = _float_texts(array.astype(np.float32) if array.dtype == np.float16 else array)
        step = len(texts) // array.shape[0]
        return [_nested_from_flat(texts[i * step:(i + 1) * step], array.shape[1:])
                for i in range(array.shape[0])]
    leaf = _leaf_writer(array, name)
    return [_nested_text(row, leaf) for row in array.tolist()]


def predict_outputs(outputs: Mapping[str, np.ndarray], request_format: str) -> bytes:
    """Signature outputs -> `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar)."""
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format == COLUMNAR:
        if len(names) == 1:
            body = tensor_json(outputs[names[0]], names[0])
        else:
            body = "{" + ", ".join(f"{json.dumps(name)}: {tensor_json(outputs[name], name)}"
                                   for name in names) + "}"
        return ('{"outputs": ' + body + "}").encode("utf-8")

    batch_size = -1
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise errors.invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch_size >= 0 and array.shape[0] != batch_size:
            raise errors.invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch_size}")
        batch_size = array.shape[0]
    rows = []
    if len(names) == 1:
        # The whole batch at once: "[row, row, ...]" is exactly the predictions list.
        return ('{"predictions": ' + tensor_json(outputs[names[0]], names[0]) + "}").encode(
            "utf-8")
    keys = {name: json.dumps(name) for name in names}
    row_texts = {name: _row_texts(outputs[name], name) for name in names}
    for index in range(batch_size):
        rows.append("{" + ", ".join(f"{keys[name]}: {row_texts[name][index]}" for name in names)
                    + "}")
    return ('{"predictions": [' + ", ".join(rows) + "]}").encode("utf-8")
