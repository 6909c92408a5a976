"""The Keras callbacks of a Trainer fit: resuming, model selection, logs and progress.

- BackupAndRestore under the model run directory: a killed training, rerun with the same
  output locations (an orchestrator's retry), resumes from the last finished epoch of the
  phase it was in (selection, refit);
- the ranking metric on the validation slice (`ranking_validation`, components/model/
  validation.py) and early stopping with best-weight restoring on `early_stopping_monitor`;
- TensorBoard logs, and a progress line inside long epochs (`EpochProgress`).
"""
from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from absl import logging
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import ranking_validation as validation
from hyperrec.components.model.two_tower import TwoTowerModel
from hyperrec.components.trainer import catalogue_embedding, signatures
from hyperrec.components.trainer.input import TrainingData
from hyperrec.schemas import features

PROGRESS_INTERVAL_S = 30.0


class BackupAndRestore(tf.keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, also under OneDeviceStrategy.

    Keras lists the strategies it has tested the callback with and refuses the others;
    OneDeviceStrategy is missing from that list although its variables are plain ones that
    the checkpoint handles as without a strategy (tests/test_training_habits.py kills and
    resumes a run under it).
    """

    def __init__(self, backup_dir: str, **kwargs: Any) -> None:
        super().__init__(backup_dir, **kwargs)
        self._supported_strategies = self._supported_strategies + (
            tf.distribute.OneDeviceStrategy,)


def monitor_mode(monitor: str) -> str:
    """"min" for losses, "max" for every other metric (AUC, recall@k, NDCG@k, MRR: Keras'
    "auto" would minimise a name it does not recognise, such as val_recall@10)."""
    return "min" if monitor.endswith("loss") else "max"


def backup_root(model_config: config_lib.ModelConfig, model_run_dir: str) -> str:
    """Where BackupAndRestore keeps each phase's backup (ModelConfig.backup_dir, else
    under the model run directory)."""
    return model_config.backup_dir or os.path.join(model_run_dir, "backup")


def training_callbacks(model_config: config_lib.ModelConfig, model_run_dir: str,
                       validation_callbacks: Sequence[tf.keras.callbacks.Callback] = (),
                       phase: str = "selection", early_stopping: bool = True,
                       ) -> List[tf.keras.callbacks.Callback]:
    """BackupAndRestore, the validation callbacks (they add to the epoch's logs, so they
    come before the callbacks that read them), early stopping (when asked and patience > 0)
    and TensorBoard."""
    # One backup per training phase (selection, refit): a rerun resumes the phase it was in.
    callbacks: List[tf.keras.callbacks.Callback] = [
        BackupAndRestore(os.path.join(backup_root(model_config, model_run_dir), phase))]
    callbacks.extend(validation_callbacks)
    if early_stopping and model_config.early_stopping_patience > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor=model_config.early_stopping_monitor,
            mode=monitor_mode(model_config.early_stopping_monitor),
            patience=model_config.early_stopping_patience, restore_best_weights=True,
            verbose=1))
    # Non-chief workers write TensorBoard events to a temporary directory (Keras does it).
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=model_run_dir,
                                                    update_freq="epoch", profile_batch=0))
    callbacks.append(EpochProgress())  # a line every 30 s inside an epoch
    return callbacks


def ranking_validation(model_config: config_lib.ModelConfig,
                       data_config: config_lib.DataConfig, data: TrainingData,
                       ) -> validation.RankingValidation:
    """The callback that logs val_<validation_metric> on the validation slice (data.split
    on: data.events and data.validation_catalogue), ranking data.catalog with the model's
    current weights through the serving module's recommend."""
    tft_layer = data.tft_output.transform_features_layer()
    task = validation.validation_task(data.events, data.validation_catalogue, data.split,
                                      data_config.history_length)

    def embedded(model: TwoTowerModel):
        # Recent popularity as it was when the slice began, not at the end of train.
        return catalogue_embedding.embed_catalog(
            model, tft_layer, data.catalog, model_config.serving_popularity_weight,
            prior_day=data.split / features.SECONDS_PER_DAY)

    def build_module(model: TwoTowerModel) -> signatures.ServingModule:
        catalogue = embedded(model)
        # Built on a fresh thread, outside the training strategy's (thread-local) scope: a
        # multi-worker strategy would make the catalogue variables collective, and
        # collectives have no string type (the item ids).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(signatures.ServingModule, model, data.tft_output,
                               *catalogue).result()

    def refresh(module: signatures.ServingModule, model: TwoTowerModel) -> None:
        _, embeddings, bias, _, prior = embedded(model)
        module.catalog_embeddings.assign(embeddings)
        module.catalog_score_bias.assign(bias)
        module.catalog_prior.assign(prior)

    logging.info("validation slice: %d users ranked on %s", len(task.users),
                 model_config.validation_metric)
    return validation.RankingValidation(task, model_config.validation_metric, build_module,
                                        refresh)


class EpochProgress(tf.keras.callbacks.Callback):
    """Prints `epoch 2/4  step 130/400  loss 0.5312  41s` at most every `interval_s` seconds
    (and never more than once per batch) to stdout, which the CLI shows: Keras' `verbose=2`
    prints one line per epoch, at its end, so an epoch of minutes would look like a hang."""

    def __init__(self, interval_s: float = PROGRESS_INTERVAL_S,
                 write: Optional[Callable[[str], Any]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self._clock = clock
        self._epoch = 0
        self._epoch_start = self._last = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._epoch = epoch
        self._epoch_start = self._last = self._clock()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        now = self._clock()
        if now - self._last < self._interval_s:
            return
        self._last = now
        steps = self.params.get("steps")
        epochs = self.params.get("epochs")
        loss = (logs or {}).get("loss")
        parts = [f"epoch {self._epoch + 1}/{epochs}" if epochs else f"epoch {self._epoch + 1}",
                 f"step {batch + 1}/{steps}" if steps else f"step {batch + 1}"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{now - self._epoch_start:.0f}s")
        self._write("  ".join(parts))
