"""The affinity task (model/affinity.py) and the personalisation diagnostics
(model/diagnostics.py), with hand-computed expectations."""
from __future__ import annotations

import math

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf

from hyperrec.components.model import diagnostics
from hyperrec.components.model.affinity import AffinityTask
from hyperrec.schemas import features


def test_embedding_spread_of_identical_and_orthogonal_rows():
    same = diagnostics.embedding_spread(np.tile([[3.0, 4.0]], (5, 1)))
    assert same["mean_pairwise_cosine"] == pytest.approx(1.0)
    assert same["effective_rank"] == pytest.approx(1.0)
    spread = diagnostics.embedding_spread(np.eye(4) * 2.0)
    assert spread["mean_pairwise_cosine"] == pytest.approx(0.0)
    assert spread["effective_rank"] == pytest.approx(4.0)
    # Two directions, 3 rows on one and 1 on the other: pairs (3 choose 2) = 3 of cos 1
    # out of 6 -> 0.5; singular values sqrt(3), 1 -> p = (0.634, 0.366).
    mixed = diagnostics.embedding_spread(np.array([[1, 0], [1, 0], [1, 0], [0, 1.0]]))
    assert mixed["mean_pairwise_cosine"] == pytest.approx(0.5)
    p = np.array([math.sqrt(3), 1.0]) / (math.sqrt(3) + 1)
    assert mixed["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_user_variance_share_is_zero_for_one_shared_ordering_and_one_for_opposite_tastes():
    shared = np.array([[3.0, 1.0, 0.0], [5.0, 3.0, 2.0]])  # same ordering, offset per user
    assert diagnostics.user_variance_share(shared) == pytest.approx(0.0)
    opposite = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert diagnostics.user_variance_share(opposite) == pytest.approx(1.0)
    # Centred rows [1, -1] and [0, 0]: shared part [0.5, -0.5], residuals +-0.5:
    # 0.25 / 0.5.
    half = np.array([[2.0, 0.0], [1.0, 1.0]])
    assert diagnostics.user_variance_share(half) == pytest.approx(0.5)
    # Excluded items (NaN) are left out, not read as scores.
    with_gap = np.array([[1.0, 0.0, np.nan], [0.0, 1.0, 7.0]])
    assert np.isfinite(diagnostics.user_variance_share(with_gap))


def test_score_decomposition_by_hand():
    dot = np.array([[1.0, -1.0], [-1.0, 1.0]])
    bias = np.array([0.5, -0.5])
    result = diagnostics.score_decomposition(dot, {"bias": bias})
    assert result["terms"]["dot"]["variance_over_items"] == pytest.approx(1.0)
    assert result["terms"]["bias"]["variance_over_items"] == pytest.approx(0.25)
    assert result["dot_variance_over_users"] == pytest.approx(1.0)
    # Totals [[1.5, -1.5], [-0.5, 0.5]]: centred the same; shared part [0.5, -0.5];
    # residuals +-1 -> 1 / 1.25.
    assert result["user_variance_share"] == pytest.approx(0.8)


def test_served_scores_put_each_score_in_its_item_column_and_nan_where_excluded():
    items = np.array(["a", "b", "c"], dtype=object)

    def recommend(request):  # a served ranking: "c" first, "a" excluded (history)
        rows = int(request[features.USER_ID].shape[0])
        return {features.ITEM_IDS: tf.constant([[b"c", b"b", b""]] * rows),
                features.SCORES: tf.constant([[2.0, 1.0, -1e9]] * rows)}

    scores = diagnostics.served_scores(recommend, ["u1", "u2"], [["a"], []], ["d", "d"],
                                       [0, 0], items)
    np.testing.assert_array_equal(np.isnan(scores), [[True, False, False]] * 2)
    np.testing.assert_allclose(scores[:, 1:], [[1.0, 2.0]] * 2)


def test_affinity_loss_is_the_binary_cross_entropy_of_cosine_over_temperature():
    task = AffinityTask(temperature=0.5)
    query = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    items = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    item_bias = tf.zeros([2])
    loss = task(query, items, item_bias, tf.constant([1, 0]))
    # Zero item biases and base rate (initialised to 0): logits are cosine / 0.5 = [2, 0].
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(0.0))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(task.loss_tracker.result()) == pytest.approx(expected, rel=1e-5)
    assert task.get_config()["temperature"] == 0.5


# ---- the "affinity" served score, through run_fn and the exported SavedModel ----------------
def test_served_affinity_score_takes_the_exposure_weight_chosen_on_validation(
        synthetic_data, tmp_path):
    """run_fn with served_score="affinity": the exposure weight is one of the grid's, chosen
    on the validation slice and carried by the SavedModel; the catalogue's demand term is
    temperature * weight * log(1 + a recent impression count) (a whole count per item), and
    a brand-new catalogue entry gets no demand at all."""
    import dataclasses
    import os
    import sys

    from hyperrec.components import trainer
    from hyperrec.components.trainer import export

    sys.path.insert(0, os.path.dirname(__file__))
    import test_model  # noqa: E402  (the model tests' synthetic data and sizes)

    grid = (0.0, 0.5, 2.0)
    model_config = dataclasses.replace(
        test_model.TEST_MODEL_CONFIG, affinity_weight=1.0, served_score="affinity",
        recent_popularity_events="shown", exposure_weights=grid, epochs=1)
    examples_root = str(tmp_path / "examples")
    rows = test_model.synthetic.write_examples(examples_root)
    fn_args = trainer.fn_args_for(
        examples_root, synthetic_data["transform"], str(tmp_path / "model"),
        {"model": dataclasses.asdict(model_config),
         "data": dataclasses.asdict(test_model.synthetic.TEST_DATA_CONFIG),
         "transform": dataclasses.asdict(test_model.synthetic.TEST_TRANSFORM_CONFIG)})
    trainer.run_fn(fn_args)

    loaded = tf.saved_model.load(fn_args.serving_model_dir)
    weight = float(loaded.model.exposure_weight.numpy())
    assert weight in grid
    prior = loaded.catalog_prior.numpy()
    temperature = model_config.temperature
    if weight > 0:
        counts = np.expm1(prior / (temperature * weight))
        np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
        assert counts.min() > -1e-3 and counts.max() >= 1  # the shop showed something lately
    else:
        np.testing.assert_array_equal(prior, 0.0)
    item = rows["items"][0]
    new_entry = loaded.new_catalogue_entries({
        name: tf.constant([item[name]], tf.float32 if name == features.PRICE else tf.string)
        for name in export.transform.ITEM_INPUTS})
    np.testing.assert_array_equal(new_entry[export.CATALOGUE_PRIOR].numpy(), [0.0])
