"""tf.distribute on CPU: strategy choice, MirroredStrategy over two logical CPU devices, and
MultiWorkerMirroredStrategy with two worker processes on localhost.

Trainings run `run_fn` in subprocesses (TRAIN_SCRIPT): logical devices must be configured
before TensorFlow initialises, multi-worker training needs one process per worker, and the
test process itself stays a plain single-device TensorFlow. Data: the shared synthetic
examples and Transform analysis of tests/test_transform.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Dict, Iterable, Optional

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import portpicker
import pytest
import tensorflow as tf

from hyperrec.components.trainer import distribution

import test_model

# A run_fn training in a fresh process: argv[1] is a JSON spec with the data paths, where
# the model goes, ModelConfig overrides and how many logical CPU devices to create.
TRAIN_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    spec = json.load(open(sys.argv[1]))
    import hyperrec.components  # Keras 2 before TensorFlow
    import tensorflow as tf
    if spec.get("logical_cpus", 1) > 1:  # before anything initialises the runtime
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
    import test_model
    from hyperrec.components import trainer
    fn_args = test_model.make_fn_args(spec["examples"], spec["transform"], spec["model_root"])
    fn_args.custom_config["model"].update(spec["model"])
    trainer.run_fn(fn_args)
""")

# Everything that draws random numbers during training is off, so two strategies that
# compute the same function see the same numbers: differences are arithmetic only.
NO_RANDOMNESS = {"dropout": 0.0, "id_dropout": 0.0}


@pytest.fixture(scope="module")
def data(synthetic_data) -> Dict[str, str]:
    """Synthetic splits + Transform analysis, built once per session (tests/conftest.py)."""
    return synthetic_data


def start_training(data: Dict[str, str], model_root: str, model: Dict[str, object],
                   logical_cpus: int = 1, env: Optional[Dict[str, str]] = None,
                   run_dir: Optional[str] = None) -> subprocess.Popen:
    """Starts TRAIN_SCRIPT in a fresh process writing under model_root.

    Its spec, script and log (<run_dir>.log) live in run_dir (default model_root), so
    several processes can share one model_root (multi-worker).
    """
    run_dir = run_dir or model_root
    os.makedirs(run_dir, exist_ok=True)
    spec_path = os.path.join(run_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump({**data, "model_root": model_root, "model": model,
                   "logical_cpus": logical_cpus}, f)
    script = os.path.join(run_dir, "train.py")
    with open(script, "w") as f:
        f.write(TRAIN_SCRIPT)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    process_env = dict(os.environ, **(env or {}))
    process_env["PYTHONPATH"] = os.pathsep.join(
        [tests_dir, os.path.dirname(tests_dir), process_env.get("PYTHONPATH", "")])
    log = open(run_dir + ".log", "w")
    return subprocess.Popen([sys.executable, "-u", script, spec_path], stdout=log,
                            stderr=subprocess.STDOUT, env=process_env)


# A hang guard, not a speed check: on a loaded 2-core CI machine a multi-worker training of
# a few steps took over 400 s (37 s a step while two pipeline modules ran beside it).
HANG_GUARD_SECONDS = 1200


def finish(process: subprocess.Popen, run_dir: str, timeout: int = HANG_GUARD_SECONDS) -> str:
    """Waits for a training process; fails with its log tail if it failed, else returns
    the log."""
    returncode = process.wait(timeout=timeout)
    with open(run_dir + ".log") as f:
        log = f.read()
    assert returncode == 0, log[-5000:]
    return log


@contextlib.contextmanager
def stopped_on_failure(processes: Iterable[subprocess.Popen]):
    """Kills (SIGKILL: a multi-worker training ignores SIGTERM) the trainings still running
    when the block fails, say on a timeout, so that none keeps the cores busy afterwards."""
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def read_history(model_root: str) -> Dict[str, object]:
    with open(os.path.join(model_root, "model_run", "history.json")) as f:
        return json.load(f)


# ---- strategy choice --------------------------------------------------------------------------
def test_auto_picks_from_the_devices_present(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(distribution.glob, "glob", lambda pattern: [])
    gpus = tf.config.list_physical_devices("GPU")
    expected = "mirrored" if len(gpus) > 1 else "one_device"
    assert distribution.auto_strategy_name() == expected
    strategy = distribution.create_strategy("auto")
    assert strategy.num_replicas_in_sync == 1 or len(gpus) > 1

    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 0}}))
    assert distribution.auto_strategy_name() == "multi_worker_mirrored"
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert distribution.auto_strategy_name() == "tpu"


def test_unknown_strategy_and_tpu_without_tpu_are_clear_errors(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(distribution.glob, "glob", lambda pattern: [])
    with pytest.raises(ValueError, match="unknown strategy"):
        distribution.create_strategy("parameter_server")
    with pytest.raises(ValueError, match="no TPU"):
        distribution.create_strategy("tpu")


def test_single_process_writes_to_the_real_directory():
    strategy = distribution.create_strategy("one_device")
    assert distribution.is_chief(strategy)
    assert distribution.write_dir("/models/x", strategy) == "/models/x"


# ---- MirroredStrategy over two logical CPUs; the same seed twice --------------------------------
SMALL_TRAINING = {**NO_RANDOMNESS, "train_steps": 12, "epochs": 3, "batch_size": 32,
                  "early_stopping_patience": 0, "seed": 5}


@pytest.fixture(scope="module")
def trainings(data, tmp_path_factory) -> Dict[str, str]:
    """Three trainings side by side, each in a fresh process: one device twice (same seed)
    and MirroredStrategy over two logical CPU devices. Returns their model roots."""
    root = tmp_path_factory.mktemp("trainings")
    runs = {"one": ({"strategy": "one_device"}, 1),
            "one_again": ({"strategy": "one_device"}, 1),
            "mirrored": ({"strategy": "mirrored"}, 2)}
    processes = {name: start_training(data, str(root / name), {**SMALL_TRAINING, **model},
                                      logical_cpus=cpus)
                 for name, (model, cpus) in runs.items()}
    with stopped_on_failure(processes.values()):
        for name, process in processes.items():
            finish(process, str(root / name))
    return {name: str(root / name) for name in runs}


def test_mirrored_two_replicas_matches_one_device(trainings):
    single, mirrored = read_history(trainings["one"]), read_history(trainings["mirrored"])
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    assert mirrored["strategy"].startswith("MirroredStrategy")
    # Tolerance: both runs compute the same global-batch loss and gradient (the retrieval
    # softmax sees all 32 candidates through the all-gather, losses are normalised by
    # global counts), so they differ only by float32 rounding: per-replica partial sums and
    # the all-reduce add in another order (relative 1e-7 per op), and Adam, dividing by
    # sqrt(second moment), can amplify rounding in tiny gradients over the 12 steps.
    # Measured: at most 9e-7 relative. 1e-4 leaves two orders of margin while any real
    # difference (local-only negatives: 16 instead of 32 candidates changes the softmax
    # loss by ~10%; a 1/replicas scaling error: by 50%) is orders of magnitude larger.
    for key in ("loss", "retrieval_loss", "ranking_loss", "val_loss", "val_retrieval_loss"):
        np.testing.assert_allclose(mirrored["metrics"][key], single["metrics"][key],
                                   rtol=1e-4, err_msg=key)


def test_same_seed_gives_identical_weights_in_fresh_processes(trainings):
    """Consistency: two trainings with the same seed, each in a fresh process, export
    bit-identical variables (seeded initialisers, seeded shuffling, deterministic map)."""
    first, second = (tf.train.load_checkpoint(os.path.join(trainings[name], "serving_model",
                                                           "variables", "variables"))
                     for name in ("one", "one_again"))
    names = sorted(first.get_variable_to_shape_map())
    assert names == sorted(second.get_variable_to_shape_map())
    tables = [n for n in names if "embedding" in n and n.endswith("VARIABLE_VALUE")]
    assert tables  # the comparison covers the model's trained tables, not just bookkeeping
    for name in names:
        np.testing.assert_array_equal(first.get_tensor(name), second.get_tensor(name),
                                      err_msg=name)


def test_mirrored_training_splits_the_sampled_negatives_over_the_replicas(data, tmp_path):
    """Mixed negatives under MirroredStrategy: the joined dataset distributes (rows and
    samples split over the replicas) and training runs to the export."""
    model_root = str(tmp_path / "mirrored_mixed")
    finish(start_training(data, model_root, {
        **NO_RANDOMNESS, "train_steps": 4, "epochs": 1, "batch_size": 32,
        "validation_days": 0.0, "strategy": "mirrored", "sampled_negatives": 8},
        logical_cpus=2), model_root)
    history = read_history(model_root)
    assert history["replicas"] == 2
    assert np.all(np.isfinite(history["metrics"]["retrieval_loss"]))


# ---- MultiWorkerMirroredStrategy: two worker processes on localhost ---------------------------
def test_multi_worker_training_completes_and_the_chief_exports(data, tmp_path):
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    model_root = str(tmp_path / "mwms")
    model = {**NO_RANDOMNESS, "train_steps": 6, "epochs": 2, "batch_size": 32,
             "strategy": "multi_worker_mirrored"}
    # Both workers get the SAME output locations, as TFX gives every replica of a Trainer.
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        run_dir = f"{model_root}_worker{index}"
        workers.append((start_training(data, model_root, model, env={"TF_CONFIG": tf_config},
                                       run_dir=run_dir), run_dir))
    with stopped_on_failure([process for process, _ in workers]):
        for process, run_dir in workers:
            finish(process, run_dir)

    history = read_history(model_root)
    assert history["replicas"] == 2
    assert history["strategy"].startswith("MultiWorkerMirroredStrategy")
    serving_dir = os.path.join(model_root, "serving_model")
    assert tf.saved_model.contains_saved_model(serving_dir)
    # The non-chief worker exported to a temporary sibling and removed it.
    assert not [d for d in os.listdir(model_root) if "workertemp" in d], os.listdir(model_root)
    loaded = tf.saved_model.load(serving_dir)
    assert {"serving_default", "recommend", "embed_items"} <= set(loaded.signatures)

