"""What image and text pretraining share: Keras' own steps and one progress line an epoch."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import tensorflow as tf


class PretrainingModel(tf.keras.Model):
    """Keras' own steps, not autograph-converted: converting them transpiles all of tf_keras
    (not on autograph's allowlist), tens of seconds per step function (see
    TwoTowerModel.train_step)."""

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data: Any) -> Dict[str, tf.Tensor]:
        return super().train_step(data)

    @tf.autograph.experimental.do_not_convert
    def predict_step(self, data: Any) -> tf.Tensor:
        return super().predict_step(data)


class EpochLines(tf.keras.callbacks.Callback):
    """One progress line per epoch through `report` (the CLI prints, tests stay quiet)."""

    def __init__(self, report: Callable[[str], None], what: str) -> None:
        super().__init__()
        self.report, self.what = report, what

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        values = " ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
        self.report(f"{self.what} epoch {epoch + 1}/{self.params['epochs']}: {values}")


def quiet(_: str) -> None:
    pass
