"""Model selection on a validation slice carved from the END of the train period.

The eval period is what the gates judge the model on, so training never looks at it: the
last `validation_days` of the train split are held out (`split_time`), the model trains on
what came before, and early stopping / best-weight restoring watch a metric on the slice.
The ranking metric (`RankingValidation`) follows components/evaluation's protocol one step
back in time: users with a train positive before the split and a new positive after it, the
full catalogue ranked by the model's own `recommend` path (trainer/signatures.py), each
user's whole history before the split excluded; it is logged as `val_<metric>` (e.g.
`val_recall@10`) at the end of every epoch, before early stopping reads the logs.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.components.evaluation import metrics, model_ranking, protocol
from hyperrec.components.model import diagnostics

# Users whose full score rows measure how personal the scores are (diagnostics.py).
DIAGNOSTIC_USERS = 200


def split_time(train_timestamps: np.ndarray, validation_days: float) -> int:
    """The first timestamp of the validation slice: `validation_days` before the train
    split's last event (so the slice holds at least that event). Raises ValueError when
    nothing before the slice would be left to train on."""
    if len(train_timestamps) == 0:
        raise ValueError("the train split is empty")
    split = int(train_timestamps.max()) - int(validation_days * features.SECONDS_PER_DAY)
    before = int((train_timestamps < split).sum())
    if before == 0:
        raise ValueError(
            f"a {validation_days}-day validation slice leaves {before} of "
            f"{len(train_timestamps)} train rows to train on; choose a length inside the "
            f"train period (ModelConfig.validation_days, 0 = no validation slice)")
    return split


def examples_uri(train_file_patterns: List[str]) -> str:
    """The Examples artifact of the Trainer's train split patterns (<uri>/Split-train/*)."""
    return os.path.dirname(os.path.dirname(train_file_patterns[0]))


def validation_task(train: protocol.Events, catalogue: protocol.Catalogue, split: int,
                    history_length: int) -> protocol.Task:
    """The protocol's task with train = events before `split`, eval = events from it."""
    before = train.subset(train.timestamps < split)
    after = train.subset(train.timestamps >= split)
    return protocol.build_task(before, after, catalogue, history_length=history_length,
                               new_user_days=0.0, cutoff=split)


class RankingValidation(tf.keras.callbacks.Callback):
    """Logs `val_<metric>` (recall@k / ndcg@k / mrr) on the validation task every epoch.

    `serving_module(model)` returns an object whose `recommend` ranks the catalogue with the
    model's current weights (trainer/signatures.ServingModule); it is built once and its
    catalogue embeddings refreshed each epoch (`refresh(module)`).
    """

    def __init__(self, task: protocol.Task, metric: str, build_module, refresh) -> None:
        super().__init__()
        if not task.users:
            raise ValueError("the validation slice has no user with a train positive before "
                             "it and a new positive in it: nothing to rank")
        self.task = task
        self.metric = metric
        self.depth = metrics_depth(metric)
        self._build_module = build_module
        self._refresh = refresh
        self._module = None
        self._module_model = None
        self._recommend = None

    def _sync_module(self) -> None:
        """The serving module with the model's current weights."""
        # A new model (the next Tuner trial, the refit) gets a module of its own.
        if self._module is None or self._module_model is not self.model:
            self._module = self._build_module(self.model)
            self._module_model = self.model
            self._recommend = tf.function(self._module.recommend, autograph=False,
                                          reduce_retracing=True)
        else:
            self._refresh(self._module, self.model)

    def _value(self) -> float:
        ranked = model_ranking.rank_task(self._recommend, self.task, self.depth)
        return float(metrics.per_user(ranked, self.task.targets, self.task.popularity,
                                      [self.depth])[self.metric].mean())

    def best_setting(self, values: Sequence[float], apply: Callable[[float], Any],
                     ) -> Tuple[float, Dict[float, float]]:
        """The value among `values` whose ranking scores best on the slice (the first of
        ties), and the score of each. apply(value) sets it on the model (e.g. the exposure
        weight of the served score); the best one is left applied to the model (the module
        syncs with it at its next use)."""
        scores: Dict[float, float] = {}
        for value in values:
            apply(value)
            self._sync_module()
            scores[value] = self._value()
        best = max(values, key=lambda value: scores[value])
        apply(best)
        return best, scores

    def personalisation(self) -> Dict[str, float]:
        """How personal the current scores are and how spread the catalogue embeddings
        (diagnostics.py), so a collapse shows in the training logs, not after a push."""
        users = slice(0, DIAGNOSTIC_USERS)
        scores = diagnostics.served_scores(
            self._recommend, self.task.users[users], self.task.history[users],
            self.task.devices[users], self.task.query_timestamps()[users],
            self.task.catalogue.item_ids)
        spread = diagnostics.embedding_spread(self._module.catalog_embeddings.numpy())
        return {"user_variance_share": diagnostics.user_variance_share(scores),
                "item_mean_cosine": spread["mean_pairwise_cosine"],
                "item_effective_rank": spread["effective_rank"]}

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._sync_module()
        value = self._value()
        if logs is not None:
            logs[f"val_{self.metric}"] = value
            logs.update({f"val_{name}": value
                         for name, value in self.personalisation().items()})


def metrics_depth(metric: str) -> int:
    """The ranking depth a metric name needs: k of "recall@k" / "ndcg@k"; 100 for mrr."""
    if metric == "mrr":
        return 100
    name, _, k = metric.partition("@")
    if name not in ("recall", "ndcg") or not k.isdigit() or int(k) < 1:
        raise ValueError(f"unknown ranking metric {metric!r}: recall@k, ndcg@k or mrr")
    return int(k)


def read_events(train_file_patterns: List[str]) -> protocol.Events:
    """The train split's events (the files the Trainer was given)."""
    files = sorted(f for pattern in train_file_patterns for f in glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no train files match {train_file_patterns}")
    return protocol.read_split(examples_uri(train_file_patterns), features.TRAIN_SPLIT)
