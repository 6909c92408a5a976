"""The Trainer's habits around a fit: its configs, its seeds, and what a finished run records.

- configs: the Trainer's custom_config {"model": ..., "data": ..., "transform": ...} as
  dicts; the Tuner's best hyperparameters (fn_args.hyperparameters) override ModelConfig
  fields;
- seeds: Python, NumPy and TF from ModelConfig.seed, op determinism when asked, so the same
  seed trains the same model;
- records in the ModelRun: history.json (per-epoch metrics of both phases), keras.json
  (which Keras trained it); a finished run keeps no backup.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
from typing import Any, Mapping, NamedTuple, Optional

import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components.trainer import callbacks, distribution


def apply_hyperparameters(model_config: config_lib.ModelConfig,
                          hyperparameters: Optional[Mapping[str, Any]],
                          ) -> config_lib.ModelConfig:
    """ModelConfig with the Tuner's best values (a keras_tuner HyperParameters config).

    Hyperparameters are named after ModelConfig fields (trainer/tuning.py); a value is
    cast to the field's type, so JSON ints and floats land as the config expects.
    """
    values = dict((hyperparameters or {}).get("values", {}))
    fields = {f.name: f for f in dataclasses.fields(model_config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"hyperparameters that are not ModelConfig fields: {unknown}")
    updates = {name: type(getattr(model_config, name))(value)
               for name, value in values.items()}
    return dataclasses.replace(model_config, **updates)


class Configs(NamedTuple):
    """The Trainer's configs: custom_config's "model", "data" and "transform"."""

    model: config_lib.ModelConfig
    data: config_lib.DataConfig
    transform: config_lib.TransformConfig


def read_configs(custom_config: Optional[Mapping[str, Any]],
                 hyperparameters: Optional[Mapping[str, Any]]) -> Configs:
    """The Trainer's custom_config ({"model": ..., "data": ..., "transform": ...} as dicts)
    as configs, the Tuner's best values (a keras_tuner HyperParameters config; None: none)
    applied to the model config."""
    custom_config = custom_config or {}
    model_config = config_lib.from_dict(config_lib.ModelConfig, custom_config.get("model") or {})
    return Configs(apply_hyperparameters(model_config, hyperparameters),
                   config_lib.from_dict(config_lib.DataConfig, custom_config.get("data") or {}),
                   config_lib.from_dict(config_lib.TransformConfig,
                                        custom_config.get("transform") or {}))


def seed_everything(model_config: config_lib.ModelConfig) -> None:
    """Python, NumPy and TF seeds; op determinism when the config asks for it."""
    tf.keras.utils.set_random_seed(model_config.seed)
    if model_config.deterministic:
        tf.config.experimental.enable_op_determinism()


def record_finished_run(model_run_dir: str, model_config: config_lib.ModelConfig,
                        history: tf.keras.callbacks.History, strategy: tf.distribute.Strategy,
                        refit: Optional[tf.keras.callbacks.History] = None) -> None:
    """keras.json and history.json in the ModelRun; the finished run's backups removed."""
    record_keras(model_run_dir)
    record_history(model_run_dir, history, strategy, refit)
    # Each phase's callback empties its own folder at the end; a finished run keeps none.
    finished_backups = callbacks.backup_root(model_config, model_run_dir)
    if tf.io.gfile.exists(finished_backups):
        tf.io.gfile.rmtree(finished_backups)


def record_history(model_run_dir: str, history: tf.keras.callbacks.History,
                    strategy: tf.distribute.Strategy,
                    refit: Optional[tf.keras.callbacks.History] = None) -> None:
    """history.json in the ModelRun: per-epoch metrics of the selection run (train and
    validation slice), the epochs this process ran (a resumed run starts after the restored
    epoch), the strategy, and the refit's epochs and metrics when there was one."""
    record = {"strategy": distribution.describe(strategy),
              "replicas": strategy.num_replicas_in_sync,
              "epochs": [int(e) for e in history.epoch],
              "metrics": {k: [float(v) for v in values]
                          for k, values in history.history.items()}}
    if refit is not None:
        record["refit"] = {"epochs": [int(e) for e in refit.epoch],
                           "metrics": {k: [float(v) for v in values]
                                       for k, values in refit.history.items()}}
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "history.json"), "w") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True))


def record_keras(model_run_dir: str) -> None:
    """Writes which Keras trained this model (tests compare it with a plain import)."""
    package = tf.keras.Model.__module__.split(".")[0]
    record = {"module": package,
              "version": importlib.metadata.version(
                  "tf-keras" if package == "tf_keras" else "keras")}
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "keras.json"), "w") as f:
        f.write(json.dumps(record))
