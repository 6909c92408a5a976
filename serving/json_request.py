"""TF Serving's REST request bodies: JSON to the tensors a predict call runs on.

Mirrors tensorflow_serving/util/json_tensor.cc rule for rule, including its error messages:
predict takes the row format (`instances`: one element per batch row, objects when the
signature has several inputs) or the columnar format (`inputs`: one value per input);
binary strings travel as `{"b64": "..."}`; numbers are checked against the signature's dtype
(no silent float -> int, no lossy int -> float).

Parsing the body is json_parsing.py, each value to a typed tensor json_tensors.py; this module
reads the two formats into one tensor per input.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from hyperrec.serving import errors
from hyperrec.serving.json_parsing import value_text
from hyperrec.serving.json_tensors import (
    dense_shape, is_b64_object, json_tensor, leaf_values, shape_text, to_array)

ROW = "row"  # request had `instances`: answer with `predictions`
COLUMNAR = "columnar"  # request had `inputs`: answer with `outputs`
_INSTANCES_KEY = "instances"
_INPUTS_KEY = "inputs"


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
        shape = dense_shape(value)
        values = leaf_values(value, shape, self.input_dtypes[name])
        if name not in self.sizes:
            self.sizes[name] = len(values)
            self.shapes[name] = shape
        elif self.sizes[name] != len(values):
            raise errors.invalid_argument(
                f"Expecting tensor size: {self.sizes[name]} but got: {len(values)}")
        elif self.shapes[name] != shape:
            raise errors.invalid_argument(
                f"Expecting shape {shape_text(self.shapes[name])} but got: {shape_text(shape)}")
        self.rows.setdefault(name, []).append(values)

    def tensors(self, count: int) -> Dict[str, np.ndarray]:
        return {name: to_array(_concatenate(rows), [count] + self.shapes[name],
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
        return {name: json_tensor(value, dtype)[0]}
    tensors = {}
    for name, dtype in input_dtypes.items():
        if name not in value:
            raise errors.invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_tensor(value[name], dtype)[0]
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
