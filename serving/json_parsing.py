"""REST request bodies as JSON values, parsed as TF Serving's RapidJSON reader would: strict
or, for large bodies, piece by piece; NaN/Infinity constants and 64-bit integers kept exact;
the `signature_name` key checked."""
from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, Mapping, Tuple

import orjson

from hyperrec.serving import errors

_SIGNATURE_KEY = "signature_name"
INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1


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
