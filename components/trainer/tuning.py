"""Hyperparameter search: the `tuner_fn` that TFX's Tuner component calls (exposed by the
package, `hyperrec.components.trainer.tuner_fn`).

keras-tuner's RandomSearch samples model sizes, the batch size and the learning rate around
the configured values, trains each trial for a tiny budget (one epoch on the real input
pipeline over as many rows as ModelConfig.tune_steps batches of the configured size: a
larger batch takes fewer steps, so it is not also a longer run) and ranks trials on the
Trainer's validation slice (the end of the TRAIN split, never the eval split the gates
judge): by the ranking metric `val_<validation_metric>` (components/evaluation/ranking_validation.py),
else by the validation loss.
The Tuner component writes the best trial's HyperParameters; the Trainer receives them as
fn_args.hyperparameters and `habits.apply_hyperparameters` overrides the ModelConfig
fields they name, so every hyperparameter here is named after a ModelConfig field.

Keras: keras-tuner is pinned below 1.4 (requirements.in). From 1.4 it imports Keras 3
whenever Keras 3 is installed (TFX needs it installed), rejects our tf-keras model with
FatalTypeError (keras-tuner#1039) and ignores TF_USE_LEGACY_KERAS; 1.3.x builds on
`tf.keras`, which the project resolves to tf-keras.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import keras_tuner as kt
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import ranking_validation as validation
from hyperrec.components.trainer import build, callbacks, distribution, habits
from hyperrec.components.trainer.input import (
    TrainingData, build_catalog_batches, build_dataset, build_sampled_negatives,
    catalog_content, catalog_file_patterns, recent_count_table, with_sampled_negatives)

LOSS_OBJECTIVE = "val_loss"
PROJECT_NAME = "hyperrec_tuning"


def _around(value: int) -> List[int]:
    """Sizes to try: half, the configured value, double (at least 4)."""
    return sorted({max(4, value // 2), value, value * 2})


def trial_steps(model_config: config_lib.ModelConfig, batch_size: int) -> int:
    """Steps of a trial with `batch_size`: tune_steps batches of the configured size, in
    rows (at least one step)."""
    return max(1, round(model_config.tune_steps * model_config.batch_size / batch_size))


def search_space(model_config: config_lib.ModelConfig) -> kt.HyperParameters:
    """Embedding sizes, the batch size (the in-batch softmax's candidates: on the Online
    Retail import 512 rows beat 64 by far, components/evaluation/README.md), the learning
    rate, the softmax temperature, the id dropout (how much the item tower must lean on
    content: cold items) and, with the recent-popularity term, its window, centred on the
    configured values (the configured value is each default)."""
    hp = kt.HyperParameters()
    hp.Choice("embedding_dim", _around(model_config.embedding_dim),
              default=model_config.embedding_dim)
    hp.Choice("id_embedding_dim", _around(model_config.id_embedding_dim),
              default=model_config.id_embedding_dim)
    hp.Choice("batch_size", _around(model_config.batch_size), default=model_config.batch_size)
    hp.Float("learning_rate", model_config.learning_rate / 3, model_config.learning_rate * 3,
             sampling="log", default=model_config.learning_rate)
    hp.Float("temperature", model_config.temperature / 2, model_config.temperature * 2,
             sampling="log", default=model_config.temperature)
    hp.Choice("id_dropout", sorted({0.0, 0.1, 0.2, model_config.id_dropout}),
              default=model_config.id_dropout)
    if model_config.recent_popularity_counts:
        hp.Choice("recent_popularity_days",
                  sorted({3, 7, 14, model_config.recent_popularity_days}),
                  default=model_config.recent_popularity_days)
    return hp


class TwoTowerHyperModel(kt.HyperModel):
    """Builds the Trainer's model (build.build_model) for a trial's hyperparameters."""

    def __init__(self, model_config: config_lib.ModelConfig, data_config: config_lib.DataConfig,
                 transform_config: config_lib.TransformConfig,
                 tft_output: tft.TFTransformOutput, content: Optional[Tuple[Any, Any]],
                 events: Optional[validation.protocol.Events] = None,
                 sampled_negatives: Optional[Tuple[tf.data.Dataset, int]] = None) -> None:
        super().__init__(name="two_tower")
        # input.build_sampled_negatives' (batches, pool size), joined to each trial's
        # batches after they are cut to the trial's batch size; None: in-batch negatives.
        self.sampled_negatives = sampled_negatives
        self.model_config = model_config
        self.data_config = data_config
        self.transform_config = transform_config
        self.tft_output = tft_output
        self.content = content
        self.events = events  # the train split's events: the recent-popularity count tables
        self._recent_counts: Dict[int, Tuple[int, Any]] = {}

    def recent_counts(self, model_config: config_lib.ModelConfig) -> Optional[Tuple[int, Any]]:
        """The count table of the trial's window (built once per window), as the Trainer
        builds it; None without the recent-popularity term."""
        if not model_config.recent_popularity_counts:
            return None
        days = model_config.recent_popularity_days
        if days not in self._recent_counts:
            self._recent_counts[days] = recent_count_table(
                model_config, self.tft_output, self.transform_config, self.events)
        return self._recent_counts[days]

    def build(self, hp: kt.HyperParameters) -> tf.keras.Model:
        model_config = habits.apply_hyperparameters(self.model_config, hp.get_config())
        # The schedule spans the trial's steps, as it spans the full run in the Trainer.
        return build.build_model(model_config, self.data_config, self.transform_config,
                                 self.tft_output,
                                 total_steps=trial_steps(self.model_config,
                                                         model_config.batch_size),
                                 content=self.content,
                                 recent_counts=self.recent_counts(model_config),
                                 catalogue_size=(self.sampled_negatives[1]
                                                 if self.sampled_negatives else 0))

    def fit(self, hp: kt.HyperParameters, model: tf.keras.Model, *args: Any,
            **kwargs: Any) -> Any:
        """model.fit on batches of the trial's size, for the trial's steps (trial_steps)."""
        batch_size = habits.apply_hyperparameters(self.model_config,
                                                  hp.get_config()).batch_size
        if batch_size != self.model_config.batch_size:
            kwargs["x"] = kwargs["x"].unbatch().batch(batch_size)
            kwargs["steps_per_epoch"] = trial_steps(self.model_config, batch_size)
        if self.sampled_negatives is not None:
            kwargs["x"] = with_sampled_negatives(kwargs["x"], self.sampled_negatives[0])
        return model.fit(*args, **kwargs)


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """TFX's Tuner component calls this function: the keras-tuner search and the arguments
    of its `search` (fit) call.

    fn_args: as for run_fn (train/eval files, data accessor, transform graph,
    custom_config {"model", "data", "transform"}) plus working_dir for the trials' state.
    """
    model_config, data_config, transform_config = habits.read_configs(
        fn_args.custom_config, hyperparameters=None)
    habits.seed_everything(model_config)
    train_files, accessor = fn_args.train_files, fn_args.data_accessor
    data = TrainingData(tft_output=tft.TFTransformOutput(fn_args.transform_graph_path))
    strategy_name = model_config.strategy
    if strategy_name == "multi_worker_mirrored" or (
            strategy_name == "auto"
            and distribution.auto_strategy_name() == "multi_worker_mirrored"):
        strategy_name = "one_device"  # trials are single-host (no distributed oracle here)
    strategy = distribution.create_strategy(strategy_name, model_config.tpu)

    catalog_patterns = catalog_file_patterns(train_files)
    data.catalog = build_catalog_batches(catalog_patterns, accessor, data.tft_output)
    content = catalog_content(data.catalog, data.tft_output, transform_config, data_config)
    if model_config.validation_days <= 0:
        raise ValueError("the Tuner ranks trials on the validation slice: "
                         "ModelConfig.validation_days must be > 0")
    data.events = validation.read_events(train_files)
    data.split = validation.split_time(data.events.timestamps, model_config.validation_days)
    trial_callbacks, objective = [], kt.Objective(LOSS_OBJECTIVE, direction="min")
    if model_config.validation_metric:
        data.validation_catalogue = validation.protocol.read_catalogue(
            validation.examples_uri(train_files))
        trial_callbacks.append(callbacks.ranking_validation(model_config, data_config, data))
        objective = kt.Objective(f"val_{model_config.validation_metric}", direction="max")
    sampled_negatives = (build_sampled_negatives(
        catalog_patterns, accessor, data.tft_output, model_config.sampled_negatives,
        model_config.seed) if model_config.sampled_negatives else None)
    tuner = kt.RandomSearch(
        TwoTowerHyperModel(model_config, data_config, transform_config, data.tft_output,
                           content, data.events, sampled_negatives),
        objective=objective,
        max_trials=model_config.tune_max_trials, hyperparameters=search_space(model_config),
        seed=model_config.seed, distribution_strategy=strategy,
        directory=fn_args.working_dir, project_name=PROJECT_NAME, overwrite=True)
    train_dataset = build_dataset(train_files, accessor, data.tft_output,
                                  model_config.batch_size, shuffle=True,
                                  seed=model_config.seed, num_epochs=None, before=data.split)
    eval_steps = model_config.eval_steps or None
    validation_dataset = build_dataset(train_files, accessor, data.tft_output,
                                       model_config.batch_size, shuffle=False,
                                       seed=model_config.seed,
                                       num_epochs=None if eval_steps else 1, since=data.split)
    fit_kwargs: Dict[str, Any] = dict(
        x=train_dataset, validation_data=validation_dataset, epochs=1,
        steps_per_epoch=model_config.tune_steps, validation_steps=eval_steps,
        callbacks=trial_callbacks, verbose=2)
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs=fit_kwargs)

