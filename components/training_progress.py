"""A progress line inside long Trainer epochs.

Keras' `verbose=2` prints one line per epoch, at its end: an epoch of minutes looks like a
hang. This callback prints `epoch 2/4  step 130/400  loss 0.5312  41s` at most every
`interval_s` seconds (and never more than once per batch), to stdout, which the CLI shows.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

PROGRESS_INTERVAL_S = 30.0


class EpochProgress(tf.keras.callbacks.Callback):
    """Prints steps/total and the running loss every `interval_s` seconds within an epoch."""

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
