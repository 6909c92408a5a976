"""TF Serving's JSON tensor rules (json_tensor.cc) as unit tests of serving/json_request.py,
json_response.py and json_examples.py."""
import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import json
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
from tensorflow.core.framework import types_pb2

from hyperrec.serving import (errors, json_examples, json_parsing, json_request, json_response,
                              json_tensors)

pytestmark = pytest.mark.timeout(60)

FLOAT, INT32, INT64, STRING, BOOL = (types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT64,
                                     types_pb2.DT_STRING, types_pb2.DT_BOOL)


def predict_json(outputs, request_format=json_request.ROW):
    return json_response.predict_outputs(outputs, request_format).decode()


@pytest.mark.parametrize("value,text", [
    (2.5, "2.5"), (3.0, "3.0"), (0.1, "0.1"), (1 / 3, "0.333333343"), (9_000_000.0, "9e+06"),
    (1234567.0, "1234567.0"), (3e-05, "3e-05"), (-0.0, "-0.0"), (float("nan"), "NaN"),
    (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
])
def test_floats_are_written_like_tf_serving(value, text):
    array = np.array([value], np.float32)
    assert predict_json({"y": array}) == '{"predictions": [' + text + "]}"
    assert json_response.tensor_json(array, "y") == "[" + text + "]"


def test_float64_keeps_full_precision():
    assert json_response.tensor_json(np.array([0.1, 1 / 3]), "y") == "[0.1, 0.33333333333333331]"


def test_row_and_columnar_outputs():
    outputs = {"scores": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
               "ids": np.array([[b"a", b"b"], [b"c", b"d"]], object),
               "raw_bytes": np.array([b"\x00\xff", b"hi"], object)}
    rows = json.loads(predict_json(outputs))
    assert rows == {"predictions": [
        {"ids": ["a", "b"], "raw_bytes": {"b64": "AP8="}, "scores": [1.0, 2.0]},
        {"ids": ["c", "d"], "raw_bytes": {"b64": "aGk="}, "scores": [3.0, 4.0]}]}
    columns = json.loads(predict_json(outputs, json_request.COLUMNAR))
    assert columns["outputs"]["scores"] == [[1.0, 2.0], [3.0, 4.0]]
    assert json.loads(predict_json({"n": np.array(7, np.int64)}, json_request.COLUMNAR)) == {
        "outputs": 7}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30)


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
       indent=st.sampled_from([None, 0, 2]))
def test_piecewise_parse_reads_documents_as_the_whole_parse_does(doc, indent):
    body = json.dumps(doc, indent=indent).encode()
    assert json_parsing.parse_json_in_pieces(body) == json_parsing.parse_json(body)


@pytest.mark.parametrize("body", [
    b"", b"[1, 2]", b'{"a": [1, 2,]}', b'{"a" 1}', b'{"a": 1} x', b'{"a": [1 2]}', b"{1: 2}",
    b'{"a": "\xff"}', b'{"a": [NaN, Infinity, -Infinity]}', b'{"a": [1e999]}',
    b'{"instances": [{"x": 1}, {"x": 2}]', b'  {"a": [[1], [2]], "b": {"c": [3]}}  ',
    b'{"a": [-18446744073709551615, 18446744073709551615, 18446744073709551616]}',
    b'{"a": [NaN, 18446744073709551616, -9223372036854775809]}',
])
def test_piecewise_parse_answers_bad_bodies_as_the_whole_parse_does(body):
    try:
        expected = json_parsing.parse_json(body)
    except errors.ServingError as err:
        with pytest.raises(errors.ServingError) as caught:
            json_parsing.parse_json_in_pieces(body)
        assert str(caught.value) == str(err)
    else:
        got = json_parsing.parse_json_in_pieces(body)
        assert json.dumps(got) == json.dumps(expected)  # NaN != NaN, its text is equal


def test_lenient_parse_reads_integers_as_orjson_does_and_names_a_byte_order_mark():
    """NaN sends the body down the standard library's path; its integers beyond int64's
    minimum or uint64's maximum are doubles there too, as orjson reads them."""
    doc = json_parsing.parse_json(b'{"a": [NaN, 18446744073709551615, 18446744073709551616]}')
    assert math.isnan(doc["a"][0])
    assert doc["a"][1:] == [18446744073709551615, 18446744073709551616.0]
    assert [type(value) for value in doc["a"][1:]] == [int, float]
    with pytest.raises(errors.ServingError) as caught:
        json_parsing.parse_json(b'\xef\xbb\xbf{"a": NaN}')
    assert caught.value.message == ("JSON Parse error: Invalid value. (Unexpected UTF-8 BOM "
                                 "(decode using utf-8-sig)) at offset: 0")


@pytest.mark.parametrize("array", [
    np.array([[1 / 3, 2.5e-7, -0.0], [np.nan, np.inf, 1e30]], np.float32),
    np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7,
    np.array([0.1, 65504.0], np.float16),
    np.array([[1, -2], [3, 4]], np.int32),
    np.array([True, False]),
    np.array([[b"a", b"\xff"], [b"", b"q\"uote"]], object),
    np.zeros((2, 0), np.float32),
])
@pytest.mark.parametrize("name", ["y", "y_bytes"])
def test_rows_of_several_outputs_are_each_rows_tensor_json(array, name):
    """Row answers write each output once for the whole batch; each row's text must be what
    tensor_json writes for that row alone."""
    outputs = {name: array, "other": np.arange(array.shape[0], dtype=np.int64)}

    def row(i):
        texts = {name: json_response.tensor_json(array[i, ...], name), "other": str(i)}
        return "{" + ", ".join(f'"{key}": {texts[key]}' for key in sorted(texts)) + "}"
    expected = '{"predictions": [' + ", ".join(row(i) for i in range(array.shape[0])) + "]}"
    assert predict_json(outputs) == expected


def test_row_outputs_need_a_shared_batch_dimension():
    with pytest.raises(errors.ServingError, match="has no shape information"):
        predict_json({"y": np.array(1.0, np.float32)})
    with pytest.raises(errors.ServingError, match="inconsistent batch size"):
        predict_json({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)})


def inputs(doc, dtypes):
    return json_request.predict_inputs(doc, dtypes)


def test_instances_stack_rows_and_inputs_take_tensors_as_they_are():
    tensors, request_format = inputs({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"x": FLOAT})
    assert request_format == json_request.ROW
    assert tensors["x"].dtype == np.float32 and tensors["x"].tolist() == [[1, 2], [3, 4]]
    tensors, request_format = inputs({"inputs": {"x": 5, "s": {"b64": "aGk="}}},
                                     {"x": INT64, "s": STRING})
    assert request_format == json_request.COLUMNAR
    assert tensors["x"].shape == () and tensors["x"].dtype == np.int64
    assert tensors["s"].tolist() == b"hi"


@pytest.mark.parametrize("doc,dtypes,message", [
    ({"instances": [1.5]}, {"x": INT32}, "is not of expected type: int32"),
    ({"instances": [2 ** 31]}, {"x": INT32}, "is not of expected type: int32"),
    ({"instances": [2 ** 63]}, {"x": INT64}, "is not of expected type: int64"),
    ({"instances": [1]}, {"x": BOOL}, "is not of expected type: bool"),
    ({"instances": [True]}, {"x": STRING}, "is not of expected type: string"),
    ({"instances": [{"b64": "aGk=", "x": 1}]}, {"x": STRING}, "does not have named input: b64"),
    ({"inputs": [[1.0], 2.0]}, {"x": FLOAT}, "found at incorrect level"),
    ({"inputs": [1.0, [2.0]]}, {"x": FLOAT}, "Encountered list at unexpected level"),
    ({"instances": [1.0]}, {"x": types_pb2.DT_HALF}, "Conversion of JSON Value"),
])
def test_typed_conversion_errors(doc, dtypes, message):
    with pytest.raises(errors.ServingError, match=message):
        inputs(doc, dtypes)


def test_the_fast_float_path_agrees_with_the_exact_one():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 64)).tolist()
    fast, _ = inputs({"instances": values}, {"x": FLOAT})
    np.testing.assert_array_equal(fast["x"], np.array(values, np.float32))
    mixed = [row[:-1] + [1] for row in values]  # an int leaf takes the exact path
    exact, _ = inputs({"instances": mixed}, {"x": FLOAT})
    np.testing.assert_array_equal(exact["x"], np.array(mixed, np.float32))
    with pytest.raises(errors.ServingError, match="without loss of precision"):
        inputs({"instances": [[1.0, 1e39]]}, {"x": FLOAT})


def test_classify_regress_examples():
    request_input = json_examples.classify_regress_input({
        "context": {"country": "de"},
        "examples": [{"x": 1.5, "n": 2, "flag": True, "tags": ["a", "b"],
                      "img": {"b64": "aGk="}}]})
    example = request_input.example_list_with_context.examples[0]
    feature = example.features.feature
    assert list(feature["x"].float_list.value) == [1.5]
    assert list(feature["n"].int64_list.value) == [2]
    assert list(feature["flag"].int64_list.value) == [1]
    assert list(feature["tags"].bytes_list.value) == [b"a", b"b"]
    assert list(feature["img"].bytes_list.value) == [b"hi"]
    context = request_input.example_list_with_context.context.features.feature
    assert list(context["country"].bytes_list.value) == [b"de"]
    with pytest.raises(errors.ServingError, match="uint64 element"):
        json_examples.classify_regress_input({"examples": [{"n": 2 ** 63}]})
    with pytest.raises(errors.ServingError, match="unexpected JSON type: Null"):
        json_examples.classify_regress_input({"examples": [{"n": None}]})


_leaves = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1.0, -1.0, 2.0 ** 24, 2.0 ** 25, 3.5e38, -0.0]),
    st.integers(min_value=-(2 ** 60), max_value=2 ** 60),
    st.sampled_from([0, 1, 2 ** 24, 2 ** 24 - 1, 2 ** 53 + 1]),
    st.booleans(), st.none(), st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(_leaves, min_size=0, max_size=4), min_size=1, max_size=4),
       dtype=st.sampled_from([FLOAT, types_pb2.DT_DOUBLE]))
def test_fast_float_path_and_exact_walk_accept_and_refuse_the_same_tensors(rows, dtype):
    """Whatever the leaves (bools and big ints look like floats to numpy), the numpy path
    either declines or returns exactly what the element-by-element walk returns."""
    shape = json_tensors.dense_shape(rows)
    fast = json_tensors._dense_floats(rows, shape, dtype)
    try:
        exact = []
        json_tensors._TensorFiller(dtype).fill(rows, shape, exact)
        expected = json_tensors.to_array(exact, shape, dtype)
    except errors.ServingError:
        assert fast is None
        return
    if fast is not None:
        np.testing.assert_array_equal(json_tensors.to_array(fast, shape, dtype), expected)
        assert json_tensors.to_array(fast, shape, dtype).dtype == expected.dtype


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(5, dtype=np.int64),
    np.array([True, False]), np.zeros((2, 0), np.float32), np.array(3.0, np.float32),
    np.array([[1.5]]), np.array([7], np.int32), np.arange(6, dtype=np.uint8).reshape(2, 3),
    np.arange(4, dtype=np.uint16), np.array([b"a", b"bc"], object),
])
def test_tensor_proto_conversions_match_tensorflow(array):
    """The server's proto <-> array shortcuts give TensorFlow's bytes and arrays."""
    import tensorflow as tf

    from hyperrec.serving import inference
    reference = tf.make_tensor_proto(array)
    assert inference.array_to_tensor(array).SerializeToString() == \
        reference.SerializeToString()
    back = inference.tensor_to_array("x", reference)
    expected = tf.make_ndarray(reference)
    assert back.dtype == expected.dtype and back.shape == expected.shape
    np.testing.assert_array_equal(back, expected)


_EDGE_FLOAT32 = [0.0, -0.0, 1.0, 0.1, 1e-45, 1.17549435e-38, 3.4028235e38, 2.0 ** 24, 2.0 ** 31,
                 12345.03125, 1073740000.0, 999999.5, 9999995.0, 0.99999994, 1e-5, 1e6, 1e7,
                 123456.5, 100000.0, 5e-324, float("nan"), float("inf"), float("-inf")]


@settings(max_examples=200, deadline=None)
@given(bits=st.lists(st.integers(min_value=0, max_value=2 ** 32 - 1), min_size=1, max_size=64),
       edges=st.lists(st.sampled_from(_EDGE_FLOAT32), max_size=8))
def test_vectorised_float32_writer_matches_the_per_value_rule(bits, edges):
    """Any float32 bit pattern (and known edge values) comes out exactly as `_float32_text`
    writes it; the float64 shortcut must never change a digit."""
    array = np.concatenate([np.array(bits, np.uint32).view(np.float32),
                            np.array(edges, np.float64).astype(np.float32)])
    expected = [json_response.float32_text(value) for value in array.astype(np.float64).tolist()]
    assert json_response._float_texts(array) == expected


def test_float32_writer_on_decimal_grids():
    """Values that are short decimals (where "%g" round-trips) across the exponent range."""
    grid = np.concatenate([np.arange(-2000, 2000) * 10.0 ** power for power in range(-40, 36, 3)])
    array = grid.astype(np.float32)
    expected = [json_response.float32_text(value) for value in array.astype(np.float64).tolist()]
    assert json_response._float_texts(array) == expected


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.floats(min_value=float(np.float32(1e-4)), max_value=1e9, width=32),
                       min_size=1, max_size=64),
       signs=st.lists(st.booleans(), min_size=64, max_size=64))
def test_float32_writer_in_the_fixed_notation_range(values, signs):
    """Where printf writes fixed notation (exponent -4 up to the precision) the writer takes
    its one-orjson-call path; six- and nine-digit values must come out as printf's."""
    array = np.array([-v if negative else v for v, negative in zip(values, signs)], np.float32)
    expected = [json_response.float32_text(value) for value in array.astype(np.float64).tolist()]
    assert json_response._float_texts(array) == expected


def test_float32_writer_on_exact_ties_at_the_ninth_digit():
    """Exact float32 values whose tenth significant digit is a final 5: printf rounds the
    tie half to even, and so must the vectorised path."""
    ties = np.array([1955245.625, 1133305.875, 1478832.375, 1245600.125, 1905088.125,
                     -1610865.125], np.float32)
    expected = [json_response.float32_text(value) for value in ties.astype(np.float64).tolist()]
    assert expected[0] == "1955245.62" and expected[1] == "1133305.88"
    assert json_response._float_texts(ties) == expected
