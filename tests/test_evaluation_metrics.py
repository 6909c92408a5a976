"""Ranking metrics, bootstrap intervals and the push gate against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from hyperrec.components.evaluation import gate, metrics

# Two users over a 4-item catalogue, ks = (2, 4).
# A: ranked 0,1,2,3 with targets {1, 3}; B: ranked 2 then nothing, target {2}.
RANKED = np.array([[0, 1, 2, 3], [2, -1, -1, -1]])
TARGETS = [np.array([1, 3]), np.array([2])]
POPULARITY = np.array([0.5, 0.25, 0.1, 0.0])
D2, D4 = 1 / np.log2(3), 1 / np.log2(5)  # discounts of ranks 2 and 4


def test_per_user_metrics_match_hand_computed_values():
    values = metrics.per_user(RANKED, TARGETS, POPULARITY, ks=(2, 4))
    np.testing.assert_allclose(values["recall@2"], [1 / 2, 1])
    np.testing.assert_allclose(values["recall@4"], [1, 1])
    # A: one hit at rank 2 of an ideal two hits at ranks 1-2.
    np.testing.assert_allclose(values["ndcg@2"], [D2 / (1 + D2), 1])
    np.testing.assert_allclose(values["ndcg@4"], [(D2 + D4) / (1 + D2), 1])
    np.testing.assert_allclose(values["mrr"], [1 / 2, 1])
    # Mean popularity of the FILLED top-k slots only.
    np.testing.assert_allclose(values["popularity@2"], [(0.5 + 0.25) / 2, 0.1])
    np.testing.assert_allclose(values["popularity@4"], [(0.5 + 0.25 + 0.1) / 4, 0.1])
    assert metrics.coverage(RANKED, 2, 4) == 3 / 4
    assert metrics.coverage(RANKED, 4, 4) == 1.0


def test_ndcg_ideal_uses_min_k_and_targets_and_mrr_zero_without_hit():
    # Three targets, k = 2: the ideal DCG has two hits; no hit anywhere -> mrr 0.
    ranked = np.array([[5, 6, 0, 1], [3, 4, 5, 6]])
    targets = [np.array([0, 1, 2]), np.array([0])]
    values = metrics.per_user(ranked, targets, np.zeros(7), ks=(2, 4))
    np.testing.assert_allclose(values["ndcg@2"], [0, 0])
    ideal3 = 1 + D2 + 0.5  # ranks 1..3 (1/log2(4) = 0.5)
    np.testing.assert_allclose(values["ndcg@4"], [(0.5 + D4) / ideal3, 0])
    np.testing.assert_allclose(values["recall@4"], [2 / 3, 0])
    np.testing.assert_allclose(values["mrr"], [1 / 3, 0])


def test_bad_inputs_are_named_errors():
    with pytest.raises(ValueError, match="at least one target"):
        metrics.per_user(RANKED, [np.array([1]), np.array([], np.int64)], POPULARITY, (2,))
    with pytest.raises(ValueError, match="shorter than k"):
        metrics.per_user(RANKED, TARGETS, POPULARITY, (10,))


def test_bootstrap_replicates_follow_the_resample_counts():
    # Resample 1 draws A twice, 2 draws B twice, 3 draws each once.
    counts = np.array([[2, 0], [0, 2], [1, 1]], np.float32)
    points, reps = metrics.evaluate_slice({"m": RANKED}, TARGETS, POPULARITY, (2, 4), counts)
    np.testing.assert_allclose(reps["m"]["recall@2"], [0.5, 1.0, 0.75])
    # Coverage@2 of the drawn users' union: A {0,1} -> 2/4, B {2} -> 1/4, both -> 3/4.
    np.testing.assert_allclose(reps["m"]["coverage@2"], [0.5, 0.25, 0.75])
    assert points["m"]["recall@2"] == 0.75


def test_paired_intervals_identical_methods_zero_and_a_better_method_positive():
    rng = np.random.default_rng(0)
    n = 200
    targets = [np.array([i % 50]) for i in range(n)]
    good = np.array([[i % 50] + [50 + j for j in range(9)] for i in range(n)])
    # "mixed" hits for half of the users only.
    mixed = np.where(np.arange(n)[:, None] % 2 == 0, good, good[::-1])
    rng.shuffle(mixed[1::2])
    result = metrics.evaluate({"good": good, "same": good.copy(), "mixed": mixed},
                              {"overall": targets}, np.zeros(60), ks=(1,), n_resamples=300,
                              seed=3)
    entry = result["slices"]["overall"]
    assert entry["differences"]["good - same"]["recall@1"] == {"value": 0.0,
                                                                "interval": [0.0, 0.0]}
    diff = entry["differences"]["good - mixed"]["recall@1"]
    assert diff["interval"][0] > 0 and diff["value"] > 0
    low, high = entry["metrics"]["good"]["recall@1"]["interval"]
    assert low == high == 1.0
    # Seeded: the same call gives the same intervals.
    again = metrics.evaluate({"good": good, "same": good.copy(), "mixed": mixed},
                             {"overall": targets}, np.zeros(60), ks=(1,), n_resamples=300,
                             seed=3)
    assert again["slices"] == result["slices"]


def _result(candidate: float, popular: float, blessed=None, interval=None):
    methods = {gate.CANDIDATE: candidate, "most_popular": popular}
    if blessed is not None:
        methods[gate.BLESSED] = blessed
    overall = {"n_users": 10, "n_targets": 12,
               "metrics": {m: {"recall@10": {"value": v, "interval": [v, v]}}
                           for m, v in methods.items()},
               "differences": {}}
    if blessed is not None:
        overall["differences"][f"{gate.CANDIDATE} - {gate.BLESSED}"] = {
            "recall@10": {"value": candidate - blessed, "interval": interval}}
    return {"level": 0.95, "slices": {"overall": overall}}


def test_gate_refuses_a_candidate_that_loses_to_most_popular_and_says_why():
    blessed, reason = gate.decide(_result(0.058, 0.061), gate.Gate())
    assert not blessed
    assert reason == "recall@10 0.0580 <= most_popular 0.0610"
    # A tie is not a win.
    assert not gate.decide(_result(0.061, 0.061), gate.Gate())[0]


def test_gate_blesses_a_winner_and_weighs_the_last_blessed_model():
    ok, reason = gate.decide(_result(0.08, 0.06), gate.Gate())
    assert ok and reason.startswith("recall@10 0.0800 > most_popular 0.0600")
    # Significantly worse than the last blessed one: the whole interval is below zero.
    ok, reason = gate.decide(_result(0.08, 0.06, 0.10, [-0.03, -0.01]), gate.Gate())
    assert not ok and "significantly worse than the last blessed model" in reason
    # Within max_regression, or an interval that includes zero: not a regression.
    assert gate.decide(_result(0.08, 0.06, 0.10, [-0.03, -0.01]),
                       gate.Gate(max_regression=0.02))[0]
    assert gate.decide(_result(0.08, 0.06, 0.09, [-0.03, 0.01]), gate.Gate())[0]


def test_gate_that_must_improve_on_the_blessed_model_refuses_a_tie_or_a_drop():
    strict = gate.Gate(must_beat=(), must_improve_on_blessed=True)
    ok, reason = gate.decide(_result(0.08, 0.06, 0.09, [-0.03, 0.01]), strict)
    assert not ok and reason == ("does not improve on the last blessed model "
                                 "(recall@10 0.0800 vs 0.0900)")
    assert not gate.decide(_result(0.08, 0.06, 0.08, [-0.02, 0.02]), strict)[0]
    ok, reason = gate.decide(_result(0.10, 0.06, 0.08, [-0.01, 0.05]), strict)
    assert ok and reason.endswith("; improves on the last blessed model (recall@10 0.1000 vs "
                                  "0.0800)")
    # A first run has nothing to improve on.
    assert gate.decide(_result(0.08, 0.06), strict) == (
        True, "no baseline required (must_beat is empty): baselines reported; "
              "no blessed model to compare with")


def test_a_smoke_configuration_requires_no_baseline_and_says_so():
    smoke = gate.Gate(must_beat=(), smoke_configuration="tiny")
    assert gate.decide(_result(0.05, 0.06), smoke) == (
        True, "smoke configuration (tiny): baselines reported, not required; "
              "no blessed model to compare with")
    # Named baselines are required even there (a test that needs the gate sets them).
    assert not gate.decide(_result(0.05, 0.06),
                           gate.Gate(must_beat=("most_popular",), smoke_configuration="tiny"))[0]


def test_gate_needs_tfma_too_and_names_unknown_settings():
    ok, reason = gate.decide(_result(0.08, 0.06), gate.Gate(), tfma_blessed=False)
    assert not ok and reason == "TFMA Evaluator did not bless"
    with pytest.raises(ValueError, match="not among"):
        gate.decide(_result(0.08, 0.06), gate.Gate(metric="recall@20"))
    with pytest.raises(ValueError, match="was not evaluated"):
        gate.decide(_result(0.08, 0.06), gate.Gate(must_beat=("ease",)))
    assert gate.decide({"level": 0.95, "slices": {"overall": {"n_users": 0, "n_targets": 0}}},
                       gate.Gate()) == (False, "no evaluated users: nothing shows the "
                                               "candidate is better")
