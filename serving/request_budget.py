"""The per-request budget: what decoding one request's inputs may cost, checked before decoding.

A request's memory grows with instances x features x bytes per value, not with its size on
the wire: a 13 MB REST body of 100,000 `recommend` rows becomes about 100 MB of parsed JSON
and 70 MB of tensors, and a 20-byte gRPC TensorProto claiming shape [2**28] with one float
would become a 1 GiB array (tf.make_ndarray repeats a single value to fill the shape). So
every predict/classify/regress request is priced, REST and gRPC alike, before its values are
decoded, and one over `--request_budget_bytes` is refused naming the limit: REST `413
{"error": ...}` (what the body limit answers), gRPC RESOURCE_EXHAUSTED (what gRPC answers
a message over its limit), with the same message.

The price is values x bytes per value + the request's own bytes:
- REST, before parsing: an upper bound on the JSON values (every scalar, array and object),
  counted at C speed as separators + opening brackets + 1 (a container of n members has
  n - 1 commas; commas and brackets inside strings only raise the bound), at
  JSON_VALUE_BYTES each: what a value measured, parsed and then converted to its tensor.
  String contents are paid by the body bytes.
- gRPC, before any tensor is converted: each input's elements (the product of its
  tensor_shape, which is what conversion allocates whatever the proto carries) at the
  dtype's size (numeric) or STRING_VALUE_BYTES (strings); for classify/regress, the features
  of every tf.Example at STRING_VALUE_BYTES; plus the message's byte size.
"""
from __future__ import annotations

import ctypes

from tensorflow.core.framework import types_pb2

from hyperrec.serving import errors
from hyperrec.serving.http_limits import REQUEST_BUDGET_FLAG
# Measured (bench/bench_serving.py --memory): parsing 100,000 recommend rows (900,000 values
# by the bound below) grew the process by 101 MiB and their tensors by 69 MiB: ~190 bytes each.
JSON_VALUE_BYTES = 192
# A string element converted from a proto: a Python bytes object (33 bytes + contents), its
# slot in an object array (8) and TensorFlow's tstring (24); contents are paid by ByteSize().
STRING_VALUE_BYTES = 64
_ITEM_BYTES = {types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8, types_pb2.DT_INT32: 4,
               types_pb2.DT_INT64: 8, types_pb2.DT_INT16: 2, types_pb2.DT_INT8: 1,
               types_pb2.DT_UINT8: 1, types_pb2.DT_UINT16: 2, types_pb2.DT_UINT32: 4,
               types_pb2.DT_UINT64: 8, types_pb2.DT_BOOL: 1, types_pb2.DT_HALF: 2,
               types_pb2.DT_BFLOAT16: 2, types_pb2.DT_COMPLEX64: 8,
               types_pb2.DT_COMPLEX128: 16}


# A request estimated above this returns the memory it freed to the system when done.
TRIM_AFTER_BYTES = 32 * 1024 * 1024


class OverBudget(errors.ServingError):
    """A request whose inputs would cost more than the budget to decode: RESOURCE_EXHAUSTED
    on gRPC, 413 on REST."""

    http_status = 413

    def __init__(self, message: str):
        super().__init__(errors.Code.RESOURCE_EXHAUSTED, message)


def _check(what: str, values: int, values_bytes: int, payload_bytes: int, budget: int) -> int:
    """values_bytes + payload_bytes, or OverBudget when that exceeds `budget`."""
    cost = values_bytes + payload_bytes
    if budget and cost > budget:
        raise OverBudget(
            f"{what} would cost about {cost} bytes to decode ({values} values taking "
            f"{values_bytes} bytes, plus {payload_bytes} bytes of request), over the "
            f"per-request budget of {budget} bytes ({REQUEST_BUDGET_FLAG})")
    return cost


def json_values_bound(body: bytes) -> int:
    """At least the number of JSON values in `body`, without parsing it."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def check_json_body(body: bytes, budget: int) -> int:
    """The estimated cost of decoding a REST body; OverBudget above `budget` (0: none)."""
    # Bytes alone over the budget need no count.
    values = 0 if budget and len(body) > budget else json_values_bound(body)
    return _check("Request body", values, values * JSON_VALUE_BYTES, len(body), budget)


def check_predict_request(request, budget: int) -> int:
    """The estimated cost of a PredictRequest's input tensors (by their shapes, whatever the
    protos carry); OverBudget above `budget` (0: none)."""
    values = values_bytes = 0
    for tensor in request.inputs.values():
        elements = 1
        for dim in tensor.tensor_shape.dim:
            elements *= max(dim.size, 0)
        values += elements
        values_bytes += elements * _ITEM_BYTES.get(tensor.dtype, STRING_VALUE_BYTES)
    return _check("PredictRequest", values, values_bytes, request.ByteSize(), budget)


def check_examples_request(request, budget: int) -> int:
    """The estimated cost of a Classification/RegressionRequest's tf.Examples (features, each
    priced as a string value); OverBudget above `budget` (0: none)."""
    request_input = request.input
    if request_input.WhichOneof("kind") == "example_list_with_context":
        examples = request_input.example_list_with_context.examples
        context = len(request_input.example_list_with_context.context.features.feature)
    else:
        examples, context = request_input.example_list.examples, 0
    values = sum(len(example.features.feature) + context for example in examples)
    return _check(type(request).__name__, values, values * STRING_VALUE_BYTES,
                  request.ByteSize(), budget)


def _malloc_trim():
    """glibc's malloc_trim from the symbols already in the process (no library search, which
    would start a subprocess), or None elsewhere."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_TRIM = _malloc_trim()


def release_after(cost: int) -> None:
    """After a request estimated at `cost` bytes: above TRIM_AFTER_BYTES, hands the heap
    pages its decoding freed back to the system (glibc's malloc_trim). Without it the
    process keeps them: RSS after one 100,000-row request stayed 200 MiB above what it was
    before (serving/README.md, "Memory at rest")."""
    if _TRIM is not None and cost > TRIM_AFTER_BYTES:
        _TRIM(0)
