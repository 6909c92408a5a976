"""Reproducibility (issue 25, item 6): the same commit and seed give the same model, so the
same `recommend` answers and the same exported catalogue, and a served answer does not
depend on the batch it was computed in.

Two trainings with the default ModelConfig (op determinism on) and the same seed run side by
side, each in a fresh process as tests/test_distribution.py runs them; dropout, id dropout
and shuffling stay on, since seeded randomness must repeat, not be absent. Data: the shared
synthetic examples and Transform analysis (tests/conftest.py).
"""
from __future__ import annotations

from typing import Dict, List

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.schemas import features

import test_transform as synthetic
from test_distribution import finish, start_training, stopped_on_failure

# A few steps are enough: any unseeded or order-dependent op shows after the first update.
TRAINING = {"train_steps": 12, "epochs": 2, "batch_size": 32, "seed": 11}
BATCH = 32
K = 10


@pytest.fixture(scope="module")
def models(synthetic_data, tmp_path_factory) -> Dict[str, object]:
    """The two same-seed trainings' exported SavedModels, loaded."""
    root = tmp_path_factory.mktemp("reproducibility")
    runs = ("first", "second")
    processes = {name: start_training(synthetic_data, str(root / name), TRAINING)
                 for name in runs}
    with stopped_on_failure(processes.values()):
        for name, process in processes.items():
            finish(process, str(root / name))
    return {name: tf.saved_model.load(str(root / name / "serving_model")) for name in runs}


@pytest.fixture(scope="module")
def requests() -> Dict[str, np.ndarray]:
    """BATCH recommend rows from the synthetic eval split, histories padded as a client
    pads them."""
    items = synthetic.catalog_items(synthetic.TEST_DATA_CONFIG.image_size)
    _, evaluation = synthetic.interaction_rows(items, synthetic.TEST_DATA_CONFIG.history_length)
    rows = evaluation[:BATCH]
    length = synthetic.TEST_DATA_CONFIG.history_length
    return {
        features.USER_ID: np.array([r[features.USER_ID] for r in rows]),
        features.HISTORY: np.array([(r[features.HISTORY] + [""] * length)[:length]
                                    for r in rows]),
        features.DEVICE: np.array([r[features.DEVICE] for r in rows]),
        features.TIMESTAMP: np.array([r[features.TIMESTAMP] for r in rows], np.int64),
        features.K: np.full(len(rows), K, np.int32),
    }


def recommend(model, request: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    outputs = model.signatures[features.RECOMMEND](
        **{name: tf.constant(values) for name, values in request.items()})
    return {"ids": outputs[features.ITEM_IDS].numpy().astype(str),
            "scores": outputs[features.SCORES].numpy()}


def one_row_at_a_time(model, request: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    answers: List[Dict[str, np.ndarray]] = [
        recommend(model, {name: values[i:i + 1] for name, values in request.items()})
        for i in range(len(request[features.USER_ID]))]
    return {key: np.concatenate([a[key] for a in answers]) for key in ("ids", "scores")}


def test_op_determinism_is_the_default():
    # Measured on the tiny Trainer on CPU: no measurable cost (trainer.seed_everything).
    assert config_lib.ModelConfig().deterministic


def test_same_seed_gives_identical_recommendations(models, requests):
    first, second = (recommend(models[name], requests) for name in ("first", "second"))
    assert first["ids"].shape == (BATCH, K)
    np.testing.assert_array_equal(first["ids"], second["ids"])
    np.testing.assert_array_equal(first["scores"], second["scores"])


def test_same_seed_gives_identical_catalogue_embeddings(models):
    first, second = models["first"], models["second"]
    np.testing.assert_array_equal(first.catalog_item_ids.numpy(), second.catalog_item_ids.numpy())
    np.testing.assert_array_equal(first.catalog_embeddings.numpy(),
                                  second.catalog_embeddings.numpy())


def test_recommend_is_the_same_at_batch_size_1_and_32(models, requests):
    batched = recommend(models["first"], requests)
    single = one_row_at_a_time(models["first"], requests)
    np.testing.assert_array_equal(single["ids"], batched["ids"])
    # A batched matmul may add in another order than a one-row one: float32 rounding only.
    np.testing.assert_allclose(single["scores"], batched["scores"], rtol=0, atol=1e-5)
