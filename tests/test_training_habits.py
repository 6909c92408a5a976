"""Training habits of run_fn: a killed training resumes, early stopping, the learning-rate
schedule (same-seed determinism is in tests/test_distribution.py, beside its trainings).

Trainings run in fresh processes (tests/test_distribution.py's TRAIN_SCRIPT) on the shared
synthetic data, so a SIGKILL hits a real training and seeds start from a clean runtime.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np

from hyperrec.components import trainer
from hyperrec.components import config as config_lib

from test_distribution import data, finish, read_history, start_training  # noqa: F401


def _epoch_lines(log: str) -> list:
    """The epoch numbers Keras printed ("Epoch 3/6" -> 3), in order."""
    return [int(line.split()[1].split("/")[0]) for line in log.splitlines()
            if line.startswith("Epoch ") and "/" in line.split()[1]]


def test_killed_training_resumes_from_the_last_backed_up_epoch(data, tmp_path):  # noqa: F811
    model_root = str(tmp_path / "model")
    epochs = 6
    model = {"train_steps": epochs * 8, "epochs": epochs, "batch_size": 32,
             "early_stopping_patience": 0}
    process = start_training(data, model_root, model)
    # Kill (SIGKILL: no cleanup, as a preempted machine) once epoch 3 has begun: epochs 1
    # and 2 have ended, and BackupAndRestore saves at every epoch end.
    deadline = time.monotonic() + 240
    killed_in = None
    while time.monotonic() < deadline and process.poll() is None:
        with open(model_root + ".log") as f:
            seen = _epoch_lines(f.read())
        if seen and seen[-1] >= 3:
            process.send_signal(signal.SIGKILL)
            killed_in = seen[-1]
            break
        time.sleep(0.05)
    assert process.wait(timeout=60) == -signal.SIGKILL, "training ended before the kill"
    backup_dir = os.path.join(model_root, "model_run", "backup")
    assert os.path.isdir(backup_dir) and os.listdir(backup_dir)
    assert not os.path.exists(os.path.join(model_root, "model_run", "history.json"))

    log = finish(start_training(data, model_root, model, run_dir=model_root + "_rerun"),
                 model_root + "_rerun")
    resumed = _epoch_lines(log)
    history = read_history(model_root)
    # Keras numbers epochs from 1 in its log and from 0 in History. The killed run had
    # finished epoch killed_in - 1 (or killed_in, if the kill landed between its backup and
    # the next "Epoch" line): the rerun continues there instead of starting at 1.
    assert resumed[0] in (killed_in, killed_in + 1), (killed_in, resumed)
    assert history["epochs"] == list(range(resumed[0] - 1, epochs))
    assert resumed[-1] == epochs
    assert not os.path.exists(backup_dir) or not os.listdir(backup_dir)  # done: removed


def test_early_stopping_stops_when_the_eval_metric_stops_improving(data, tmp_path):  # noqa: F811
    # A learning rate of 0 leaves the weights, hence val_loss, unchanged: no epoch improves
    # on the first, so patience 1 stops training after epoch 2 of 6.
    model_root = str(tmp_path / "model")
    finish(start_training(data, model_root, {
        "train_steps": 12, "epochs": 6, "batch_size": 32, "learning_rate": 0.0,
        "lr_schedule": "constant", "early_stopping_monitor": "val_loss",
        "early_stopping_patience": 1}), model_root)
    assert read_history(model_root)["epochs"] == [0, 1]


def test_warmup_cosine_learning_rate_schedule():
    model_config = config_lib.ModelConfig(learning_rate=0.01, warmup_fraction=0.1,
                                          min_lr_ratio=0.1)
    schedule = trainer.learning_rate(model_config, total_steps=100)
    rates = np.array([float(schedule(step)) for step in range(101)])
    assert rates[0] == 0.0
    np.testing.assert_allclose(rates[10], 0.01, rtol=1e-6)  # warmup ends at the peak
    assert np.all(np.diff(rates[:11]) > 0)  # linear warmup
    assert np.all(np.diff(rates[10:]) <= 1e-9)  # then only decays
    np.testing.assert_allclose(rates[100], 0.001, rtol=1e-5)  # to lr * min_lr_ratio
    constant = dataclasses.replace(model_config, lr_schedule="constant")
    assert trainer.learning_rate(constant, total_steps=100) == 0.01
