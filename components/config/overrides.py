"""Configs from plain values: `from_dict` (a component rebuilds its section from TFX
`custom_config`) and `--set section.field=value` overrides, each value checked against its
field's form at load."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable

from hyperrec.components.config.sections import HyperrecConfig


def from_dict(cls, values: Dict[str, Any]):
    """Rebuilds a (nested) config dataclass from `dataclasses.asdict` output."""
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value = values[field.name]
        if dataclasses.is_dataclass(field.default_factory if field.default_factory
                                    is not dataclasses.MISSING else None):
            value = from_dict(field.default_factory, value)
        elif isinstance(value, list):
            value = tuple(value)
        elif (isinstance(value, float) and value.is_integer()
              and type(field.default) is int):  # noqa: E721 (bool is not an int knob)
            value = int(value)  # protobuf Struct (ExampleGen's custom_config) stores doubles
        kwargs[field.name] = value
    return cls(**kwargs)


# ---- `--set` overrides: each value is checked against its field's form at load -----------
# Tuple fields whose entries may be fractional (the other numeric tuples take integers), and
# the entry type of tuple fields whose default is empty.
_FRACTIONAL_TUPLES = ("freshness_days", "exposure_weights", "ease_lambdas")
_EMPTY_TUPLE_ENTRIES = {"ranking_hidden_units": int, "must_beat": str}
# Sizes and counts that must be at least 1.
_AT_LEAST_ONE = ("image_size", "history_length", "window_spans", "text_max_tokens",
                 "text_vocab_size", "id_vocab_size", "num_oov_buckets", "embedding_dim",
                 "id_embedding_dim", "text_embedding_dim", "text_heads", "text_layers",
                 "batch_size", "epochs", "recommend_k")


class OverrideError(ValueError):
    """A `--set` value that does not fit its field: names the field, the expected form and
    an example."""

    def __init__(self, path: str, expected: str, example: str, text: str):
        super().__init__(f"{path} expects {expected}, e.g. --set {path}={example}; "
                         f"got {text!r}")


def _entry_kind(name: str, current: tuple) -> type:
    if not current:  # e.g. freshness_days=() of a sized config on derived first_seen
        return float if name in _FRACTIONAL_TUPLES else _EMPTY_TUPLE_ENTRIES.get(name, str)
    if all(isinstance(value, str) for value in current):
        return str
    return float if name in _FRACTIONAL_TUPLES or any(
        isinstance(value, float) for value in current) else int


def _number(text: str, kind: type) -> Any:
    """`text` as an int (kind int) or as an int/float (kind float); ValueError otherwise."""
    if kind is int:
        return int(text)
    try:
        return int(text)
    except ValueError:
        return float(text)


def _example(current: Any, kind: type) -> str:
    if isinstance(current, tuple):
        if current:
            return ",".join(str(value) for value in current[:4])
        return {int: "64,32", str: "most_popular,ease"}.get(kind, "a,b")
    if isinstance(current, bool):
        return "true"
    return str(current) if current not in (None, "") else {int: "100", str: "value"}[kind]


def _parse_value(path: str, text: str, current: Any) -> Any:
    """`text` as a value of the field at `path` whose value is `current`; OverrideError when
    it does not fit (a bool, an int, a number, a list of numbers or names, ...)."""
    name = path.rsplit(".", 1)[-1]
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise OverrideError(path, "true or false", "true", text)
        return text.lower() in ("true", "1")
    if isinstance(current, tuple):
        kind = _entry_kind(name, current)
        entries = [entry.strip() for entry in text.split(",")] if text else []
        try:
            if kind is str:
                if any(not entry or not entry.replace("_", "").replace("@", "").isalnum()
                       for entry in entries):
                    raise ValueError(text)
                return tuple(entries)
            return tuple(_number(entry, kind) for entry in entries)
        except ValueError:
            expected = {int: "a comma-separated list of integers",
                        float: "a comma-separated list of numbers",
                        str: "a comma-separated list of names"}[kind]
            raise OverrideError(path, f"{expected} (nothing after '=' for an empty list)",
                                _example(current, kind), text) from None
    if current is None:  # Optional[int]: none or an integer
        if text.lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            raise OverrideError(path, "an integer or none", "100", text) from None
    kind = type(current)
    try:
        value = _number(text, kind) if kind in (int, float) else kind(text)
    except ValueError:
        expected = {int: "an integer", float: "a number"}.get(kind, f"a {kind.__name__}")
        raise OverrideError(path, expected, _example(current, kind), text) from None
    if kind is float:
        value = float(value)
    if name in _AT_LEAST_ONE and value < 1:
        raise OverrideError(path, "an integer of at least 1", _example(current, kind), text)
    return value


def with_overrides(config: HyperrecConfig, overrides: Iterable[str]) -> HyperrecConfig:
    """Applies `section.field=value` overrides; an unknown path is an error, not a no-op, and
    a value that does not fit its field is refused here (OverrideError), not in a component
    minutes later."""
    config = from_dict(HyperrecConfig, dataclasses.asdict(config))
    for override in overrides:
        path, sep, text = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} is not of the form path=value")
        path = path.strip()
        *parents, leaf = path.split(".")
        target = config
        for part in parents:
            if not dataclasses.is_dataclass(getattr(target, part, None)):
                raise ValueError(f"unknown config section {part!r} in {override!r}")
            target = getattr(target, part)
        if leaf not in {f.name for f in dataclasses.fields(target)}:
            raise ValueError(f"unknown config field {leaf!r} in {override!r}")
        if dataclasses.is_dataclass(getattr(target, leaf)):
            raise ValueError(f"{path} is a config section; set one of its fields "
                             f"({path}.FIELD=VALUE)")
        setattr(target, leaf, _parse_value(path, text.strip(), getattr(target, leaf)))
    return config
