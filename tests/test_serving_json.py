"""TF Serving's JSON tensor rules (json_tensor.cc) as unit tests of serving/json_codec.py."""
import serving  # noqa: F401  (Keras env before TensorFlow)

import json

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from serving import errors, json_codec

pytestmark = pytest.mark.timeout(60)

FLOAT, INT32, INT64, STRING, BOOL = (types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT64,
                                     types_pb2.DT_STRING, types_pb2.DT_BOOL)


def predict_json(outputs, request_format=json_codec.ROW):
    return json_codec.predict_outputs(outputs, request_format).decode()


@pytest.mark.parametrize("value,text", [
    (2.5, "2.5"), (3.0, "3.0"), (0.1, "0.1"), (1 / 3, "0.333333343"), (9_000_000.0, "9e+06"),
    (1234567.0, "1234567.0"), (3e-05, "3e-05"), (-0.0, "-0.0"), (float("nan"), "NaN"),
    (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
])
def test_floats_are_written_like_tf_serving(value, text):
    array = np.array([value], np.float32)
    assert predict_json({"y": array}) == '{"predictions": [' + text + "]}"
    assert json_codec.tensor_json(array, "y") == "[" + text + "]"


def test_float64_keeps_full_precision():
    assert json_codec.tensor_json(np.array([0.1, 1 / 3]), "y") == "[0.1, 0.33333333333333331]"


def test_row_and_columnar_outputs():
    outputs = {"scores": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
               "ids": np.array([[b"a", b"b"], [b"c", b"d"]], object),
               "raw_bytes": np.array([b"\x00\xff", b"hi"], object)}
    rows = json.loads(predict_json(outputs))
    assert rows == {"predictions": [
        {"ids": ["a", "b"], "raw_bytes": {"b64": "AP8="}, "scores": [1.0, 2.0]},
        {"ids": ["c", "d"], "raw_bytes": {"b64": "aGk="}, "scores": [3.0, 4.0]}]}
    columns = json.loads(predict_json(outputs, json_codec.COLUMNAR))
    assert columns["outputs"]["scores"] == [[1.0, 2.0], [3.0, 4.0]]
    assert json.loads(predict_json({"n": np.array(7, np.int64)}, json_codec.COLUMNAR)) == {
        "outputs": 7}


def test_row_outputs_need_a_shared_batch_dimension():
    with pytest.raises(errors.ServingError, match="has no shape information"):
        predict_json({"y": np.array(1.0, np.float32)})
    with pytest.raises(errors.ServingError, match="inconsistent batch size"):
        predict_json({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)})


def inputs(doc, dtypes):
    return json_codec.predict_inputs(doc, dtypes)


def test_instances_stack_rows_and_inputs_take_tensors_as_they_are():
    tensors, request_format = inputs({"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"x": FLOAT})
    assert request_format == json_codec.ROW
    assert tensors["x"].dtype == np.float32 and tensors["x"].tolist() == [[1, 2], [3, 4]]
    tensors, request_format = inputs({"inputs": {"x": 5, "s": {"b64": "aGk="}}},
                                     {"x": INT64, "s": STRING})
    assert request_format == json_codec.COLUMNAR
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
    request_input = json_codec.classify_regress_input({
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
        json_codec.classify_regress_input({"examples": [{"n": 2 ** 63}]})
    with pytest.raises(errors.ServingError, match="unexpected JSON type: Null"):
        json_codec.classify_regress_input({"examples": [{"n": None}]})
