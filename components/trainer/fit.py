"""The fit loop: model selection on the validation slice, then the refit on the whole train split.

- an epoch is a fixed number of steps over a repeated train split (one pass when
  train_steps is unset), so every replica and worker runs the same number of steps and a
  learning-rate schedule knows the total (`plan_training`);
- model selection on a validation slice carved from the END of the train split (the last
  ModelConfig.validation_days; components/evaluation/ranking_validation.py), never on the eval split the
  gates judge: early stopping and best-weight restoring watch `early_stopping_monitor`
  (by default the ranking metric val_recall@10, computed with the evaluation protocol);
- then, with `refit_full_train`, a fresh model trains on the WHOLE train split (the most
  recent days matter most to a recommender) for the selected number of epochs;
- mixed negatives (ModelConfig.sampled_negatives): each training batch is zipped with a
  batch of catalogue items drawn uniformly (input.build_sampled_negatives).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import ranking_validation as validation
from hyperrec.components.model.two_tower import TwoTowerModel
from hyperrec.components.trainer import build, callbacks, habits
from hyperrec.components.trainer.input import TrainingData


class Fitted(NamedTuple):
    """A fit's model and Keras history; exposure_weight: the served score's exposure weight
    chosen on the validation slice (`choose_exposure_weight`; the selection's only)."""

    model: TwoTowerModel
    history: tf.keras.callbacks.History
    exposure_weight: Optional[float] = None


@dataclasses.dataclass
class TrainingPlan:
    """How long training runs: epochs of `steps_per_epoch` steps; eval steps or None (the
    whole eval split)."""

    epochs: int
    steps_per_epoch: int
    eval_steps: Optional[int]

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_training(model_config: config_lib.ModelConfig, data: TrainingData,
                  train_count: Optional[int]) -> TrainingPlan:
    """Steps from ModelConfig (else the Trainer's train args, data.train_steps), else one
    pass per epoch over `train_count` rows; eval steps as data resolved them."""
    if data.train_steps:
        steps_per_epoch = math.ceil(data.train_steps / model_config.epochs)
    else:
        steps_per_epoch = max(1, math.ceil(train_count / model_config.batch_size))
    return TrainingPlan(model_config.epochs, steps_per_epoch, data.eval_steps)


def select(configs: habits.Configs, data: TrainingData, strategy: tf.distribute.Strategy,
           model_run_dir: str) -> Fitted:
    """Trains on the train split before the validation slice, early stopping on the slice
    (on the whole train split, no early stopping, without a slice)."""
    model_config = configs.model
    validator = None
    if data.split is not None and model_config.validation_metric:
        validator = callbacks.ranking_validation(model_config, configs.data, data)
    plan = plan_training(model_config, data, data.train_count)
    with strategy.scope():
        model = build.build_model(model_config, configs.data, configs.transform,
                                  data.tft_output, plan.total_steps, data.content,
                                  data.recent_counts, data.catalogue_size)
    history = model.fit(
        data.training_batches(data.train), epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch, validation_data=data.validation,
        validation_steps=plan.eval_steps if data.validation is not None else None,
        callbacks=callbacks.training_callbacks(
            model_config, model_run_dir, [validator] if validator else [],
            early_stopping=data.split is not None), verbose=2)
    logging.info("training history: %s", history.history)
    return Fitted(model, history, choose_exposure_weight(model_config, model, validator))


def refit_full_train(selected: Fitted, configs: habits.Configs, data: TrainingData,
                     strategy: tf.distribute.Strategy, model_run_dir: str,
                     ) -> Optional[Fitted]:
    """A fresh model trained on the WHOLE train split for the selected number of epochs
    (None without a validation slice or with refit_full_train off: the selection's model
    is the trained one)."""
    model_config = configs.model
    if data.full_train is None:  # no validation slice, or refit_full_train off
        return None
    # The selected length, now on every train row; the schedule spans the configured
    # epochs as in the selection run (more steps per epoch, the same shape per epoch), so
    # epoch e sees the learning rates it saw there.
    epochs = best_epoch(selected.history, model_config.early_stopping_monitor) + 1
    full = plan_training(model_config, data, train_count=len(data.events))
    logging.info("refitting on the whole train split for %d epochs", epochs)
    habits.seed_everything(model_config)
    with strategy.scope():
        model = build.build_model(model_config, configs.data, configs.transform,
                                  data.tft_output, full.total_steps, data.content,
                                  data.recent_counts, data.catalogue_size)
    refit = model.fit(
        data.training_batches(data.full_train),
        epochs=epochs, steps_per_epoch=full.steps_per_epoch,
        callbacks=callbacks.training_callbacks(model_config, model_run_dir, phase="refit",
                                               early_stopping=False), verbose=2)
    return Fitted(model, refit)


def choose_exposure_weight(model_config: config_lib.ModelConfig, model: TwoTowerModel,
                           validator: Optional[validation.RankingValidation]) -> float:
    """The weight of the served score's exposure term ("affinity" served score): the best of
    model_config.exposure_weights on the validation slice's ranking metric, fitted on top of
    the trained towers (which cannot lean on it); the configured exposure_weight without a
    validation slice or with the "retrieval" served score."""
    if model_config.served_score != "affinity" or validator is None:
        return model_config.exposure_weight
    best, scores = validator.best_setting(model_config.exposure_weights,
                                          model.exposure_weight.assign)
    logging.info("exposure weight %g chosen on the validation slice (%s by weight: %s)", best,
                 model_config.validation_metric,
                 ", ".join(f"{weight:g}: {value:.4f}" for weight, value in scores.items()))
    return best


def best_epoch(history: tf.keras.callbacks.History, monitor: str) -> int:
    """The epoch (0-based) whose `monitor` value was best (the first of ties).

    An epoch number, not a position in the history: a run resumed by BackupAndRestore records
    only the epochs from the restored one on (history.epoch starts there).
    """
    values = history.history.get(monitor)
    if not values:
        return history.epoch[-1] if history.epoch else -1
    index = int(np.argmin(values) if callbacks.monitor_mode(monitor) == "min"
                else np.argmax(values))
    return int(history.epoch[index])
