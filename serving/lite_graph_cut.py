"""Cutting the SavedModel's `recommend` graph where its TF-only ops end (`split_recommend`):
the device model's inputs are the Transform layer's outputs, the history's catalogue rows
and the request day; its outputs are the top-k rows and scores. `unsupported_ops` names the
ops that keep the whole signature from converting to builtin TFLite ops."""
from __future__ import annotations

import hyperrec.serving  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import dataclasses
import re
from typing import Any, Dict, List, Mapping

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features

HISTORY_ROWS = "history_rows"
REQUEST_DAY = "request_day"
K_INPUT = features.K
TOP_ROWS, TOP_SCORES = "top_rows", "top_scores"
# The Transform layer's query outputs, in the order its call returns them (sorted keys).
QUERY_XF = tuple(sorted((features.USER_ID_XF, features.HISTORY_XF, features.DEVICE_XF,
                         features.HOUR_XF, features.DAY_OF_WEEK_XF, features.EVENT_DAY_XF)))
_CALL_OPS = ("StatefulPartitionedCall", "PartitionedCall")


class LiteExportError(RuntimeError):
    """The SavedModel's recommend graph is not in the shape the cut expects."""


def unsupported_ops(model_dir: str, signature: str = features.RECOMMEND) -> List[str]:
    """The TF ops of `signature` that builtin TFLite lacks ([] when it converts whole)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(model_dir, signature_keys=[signature])
    try:
        converter.convert()
    except Exception as err:  # noqa: BLE001 (ConverterError; its text lists the ops)
        found = re.search(r"TF Select ops: ([^\n]+)", str(err))
        if found:
            return sorted(op.strip() for op in found.group(1).split(","))
        return [f"(conversion failed: {type(err).__name__}: {str(err)[-300:]})"]
    return []


@dataclasses.dataclass
class Split:
    """The device part of `recommend`: `function` (feeds -> {TOP_ROWS, TOP_SCORES}) and the
    feeds' names, dtypes and shapes."""
    function: Any
    inputs: Dict[str, tf.TensorSpec]


def _tensor_name(node: str, index: int) -> str:
    return f"{node}:{index}"


def split_recommend(loaded: Any, example: Mapping[str, np.ndarray]) -> Split:
    """Cuts the frozen `recommend` graph below the host ops (module docstring); `example`:
    host inputs (HostSide.inputs) giving the feeds' dtypes and ranks."""
    from tensorflow.python.framework import convert_to_constants
    signature = loaded.signatures[features.RECOMMEND]
    graph_def = convert_to_constants.convert_variables_to_constants_v2(
        signature).graph.as_graph_def()
    nodes = {node.name: node for node in graph_def.node}
    consumers: Dict[str, List[Any]] = {}
    for node in graph_def.node:
        for name in node.input:
            consumers.setdefault(name.lstrip("^"), []).append(node)
    calls = [n for n in graph_def.node if n.op in _CALL_OPS and "transform" in n.name]
    lookups = [n for n in graph_def.node if n.op == "LookupTableFindV2"]
    top_k = [n for n in graph_def.node if n.op == "TopKV2"]
    days = [n for n in graph_def.node if n.op == "Cast" and nodes[n.input[0]].op == "RealDiv"
            and nodes[n.input[0]].attr["T"].type == tf.float64.as_datatype_enum]
    if len(calls) != 1 or len(lookups) != 1 or len(top_k) != 1 or len(days) != 1:
        raise LiteExportError(
            f"recommend graph not understood: {len(calls)} Transform calls, {len(lookups)} "
            f"catalogue lookups, {len(top_k)} top-k ops, {len(days)} request-day casts")
    call = calls[0]
    outputs = sorted({int(name.split(":")[1]) if ":" in name else 0
                      for name in consumers if name.split(":")[0] == call.name})
    if max(outputs) >= len(QUERY_XF):
        raise LiteExportError(f"the Transform layer answers {max(outputs) + 1} query features, "
                              f"expected {len(QUERY_XF)}")
    feeds = {QUERY_XF[i]: (_tensor_name(call.name, i) if i else call.name) for i in outputs}
    feeds[HISTORY_ROWS] = lookups[0].name
    feeds[REQUEST_DAY] = days[0].name
    raw_k = next(n.name for n in graph_def.node if n.op == "Placeholder"
                 and n.name.rstrip("_0123456789") == K_INPUT or n.name == K_INPUT)
    specs = {name: tf.TensorSpec([None] * np.ndim(example[name]),
                                 tf.as_dtype(example[name].dtype), name=name)
             for name in list(feeds) + [K_INPUT]}
    fetches = [_tensor_name(top_k[0].name, 0), _tensor_name(top_k[0].name, 1)]

    # A graph of the device part alone: every consumer of a host tensor reads a placeholder
    # instead, a Shape of a raw string input reads the shape of the feed that stands for it
    # (the history's catalogue rows for the history, the request day for the batch), and
    # only what the top-k needs is kept (no Transform call, no hash table, no library).
    def source(name: str) -> Any:
        node = nodes[name.lstrip("^").split(":")[0]]
        while node.op == "Identity":
            node = nodes[node.input[0].split(":")[0]]
        return node

    order = list(feeds) + [K_INPUT]
    feed_of = {(n if ":" in n else _tensor_name(n, 0)): name
               for name, n in list(feeds.items()) + [(K_INPUT, raw_k)]}
    cut = tf.compat.v1.GraphDef()
    for name in order:
        placeholder = cut.node.add(name=f"lite/{name}", op="Placeholder")
        placeholder.attr["dtype"].type = specs[name].dtype.as_datatype_enum
    for node in graph_def.node:
        copy = cut.node.add()
        copy.CopyFrom(node)
        if node.op == "Shape" and source(node.input[0]).op == "Placeholder":
            raw = source(node.input[0]).name
            feed = HISTORY_ROWS if raw.startswith(features.HISTORY) else REQUEST_DAY
            copy.input[0] = f"lite/{feed}"
            copy.attr["T"].type = specs[feed].dtype.as_datatype_enum
            continue
        for index, name in enumerate(node.input):
            full = name if ":" in name else _tensor_name(name, 0)
            if full in feed_of:
                copy.input[index] = "lite/" + feed_of[full]
    cut = _expand_dims_for_new_axes(
        tf.compat.v1.graph_util.extract_sub_graph(cut, [top_k[0].name]))
    del cut.library.function[:]
    placeholders = [f"lite/{name}:0" for name in order]

    def body(*tensors):
        return tf.graph_util.import_graph_def(
            cut, input_map=dict(zip(placeholders, tensors)), return_elements=fetches, name="")

    wrapped = tf.compat.v1.wrap_function(body, [specs[name] for name in order])
    graph = wrapped.graph
    pruned = wrapped.prune(
        feeds=[graph.get_tensor_by_name(t.name) for t in wrapped.inputs],
        fetches={TOP_SCORES: graph.get_tensor_by_name(fetches[0]),
                 TOP_ROWS: graph.get_tensor_by_name(fetches[1])})
    return Split(pruned, {name: specs[name] for name in order})


def _const_values(node: Any) -> np.ndarray:
    return tf.make_ndarray(node.attr["value"].tensor)


def _expand_dims_for_new_axes(graph_def: Any) -> Any:
    """`x[:, :, tf.newaxis]` (a StridedSlice whose only effect is new axes) as ExpandDims:
    builtin TFLite's StridedSlice has no new_axis_mask."""
    nodes = {node.name: node for node in graph_def.node}
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    for node in graph_def.node:
        attr = node.attr
        new_axes = attr["new_axis_mask"].i if node.op == "StridedSlice" else 0
        if new_axes and not attr["shrink_axis_mask"].i:
            strides = nodes.get(node.input[3].split(":")[0])
            count = len(_const_values(strides)) if strides is not None else 0
            full = sum(1 << i for i in range(count) if not new_axes >> i & 1)
            positions = [i for i in range(count) if new_axes >> i & 1]
            if attr["ellipsis_mask"].i == 1 and count == 2 and new_axes == 2:
                full, positions = 0, [-1]  # x[..., tf.newaxis]
            elif attr["ellipsis_mask"].i:
                positions = []
            if (positions and strides is not None and strides.op == "Const"
                    and np.all(_const_values(strides) == 1)
                    and attr["begin_mask"].i & full == full and attr["end_mask"].i & full == full):
                current = node.input[0]
                for step, axis in enumerate(positions):
                    axis_node = out.node.add(name=f"{node.name}/lite_axis_{step}", op="Const")
                    axis_node.attr["dtype"].type = tf.int32.as_datatype_enum
                    axis_node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(axis, tf.int32))
                    last = step == len(positions) - 1
                    expand = out.node.add(
                        name=node.name if last else f"{node.name}/lite_expand_{step}",
                        op="ExpandDims", input=[current, axis_node.name])
                    expand.attr["T"].CopyFrom(attr["T"])
                    expand.attr["Tdim"].type = tf.int32.as_datatype_enum
                    current = expand.name
                continue
        out.node.add().CopyFrom(node)
    return out
