"""Every knob of hyperrec in one place: nested dataclass configs and named experiments.

An experiment (`tiny`, `small`, `default`) is a complete `HyperrecConfig`; the command line
overrides single fields with dotted paths (`--set model.embedding_dim=64`). Components receive
their section as a plain dict (TFX `custom_config`) and rebuild the dataclass with `from_dict`,
so the values a run used are recorded in MLMD with the execution.

`hyperrec.components.config` is the one name to import; its modules hold one job each:
sections.py (the dataclasses and their defaults), experiments.py (the named experiments and
`load`), sizing.py (a configuration sized from an import's profile) and overrides.py
(`from_dict` and `--set` parsing).
"""
from __future__ import annotations

import os

from hyperrec.components.config.experiments import EXPERIMENTS, load
from hyperrec.components.config.overrides import OverrideError, from_dict, with_overrides
from hyperrec.components.config.sections import (
    HISTORY_POOLINGS, PRETRAINED_MODES, RECENT_POPULARITY_EVENTS, SERVED_SCORES, CanaryConfig,
    DataConfig, EvalConfig, HyperrecConfig, InfraValidationConfig, ModelConfig,
    MonitoringConfig, PretrainedConfig, TransformConfig, UnknownPretrainedMode)
from hyperrec.components.config.sizing import (
    COMPACT_EVENTS, EVAL_SHARE, FRESHNESS_DERIVED_SHARE, GATE_ALL_FROM, GATE_POPULARITY_FROM,
    MAX_SPANS, SIZED, eval_days_for, sized, span_days_for)

__all__ = [
    "EXPERIMENTS", "load", "OverrideError", "from_dict", "with_overrides", "HISTORY_POOLINGS",
    "PRETRAINED_MODES", "RECENT_POPULARITY_EVENTS", "SERVED_SCORES", "CanaryConfig",
    "DataConfig", "EvalConfig", "HyperrecConfig", "InfraValidationConfig", "ModelConfig",
    "MonitoringConfig", "PretrainedConfig", "TransformConfig", "UnknownPretrainedMode",
    "COMPACT_EVENTS", "EVAL_SHARE", "FRESHNESS_DERIVED_SHARE", "GATE_ALL_FROM",
    "GATE_POPULARITY_FROM", "MAX_SPANS", "SIZED", "eval_days_for", "sized", "span_days_for",
    "project_root"]


def project_root() -> str:
    """The checkout's root (where schemas/ and the curated schema files live)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
