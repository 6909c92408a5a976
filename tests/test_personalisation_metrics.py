"""Personalisation metrics (components/evaluation/personalisation.py) against hand-computed
values on tiny rankings: list difference, overlap with a reference list, taste match, the
own-history reference row and the result block run.evaluate stores."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from hyperrec.components.evaluation import gate, personalisation, protocol


def test_identical_lists_have_distance_zero_and_disjoint_lists_distance_one():
    same = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2]])  # one set, three orders
    result = personalisation.list_difference(same, k=3, n_catalogue=10)
    assert result == {"jaccard_distance": 0.0, "coverage": 0.3, "n_users": 3}
    disjoint = np.array([[0, 1], [2, 3], [4, 5]])
    result = personalisation.list_difference(disjoint, k=2, n_catalogue=6)
    assert result == {"jaccard_distance": 1.0, "coverage": 1.0, "n_users": 3}


def test_jaccard_distance_is_the_mean_over_every_pair_with_padding_and_k():
    # k = 3: A = {0, 1, 2}, B = {1, 2} (-1 padding), C = {5}; item 9 lies beyond k.
    # d(A,B) = 1 - 2/3, d(A,C) = 1, d(B,C) = 1.
    rankings = np.array([[0, 1, 2, 9], [1, 2, -1, -1], [5, -1, -1, 9]])
    result = personalisation.list_difference(rankings, k=3, n_catalogue=20)
    assert result["jaccard_distance"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert result["coverage"] == pytest.approx(4 / 20)  # {0, 1, 2, 5}
    assert result["n_users"] == 3


def test_users_with_an_empty_list_are_no_pair_and_one_user_has_no_distance():
    rankings = np.array([[0, 1], [-1, -1], [0, 2]])  # d = 1 - 1/3 between rows 0 and 2
    result = personalisation.list_difference(rankings, k=2, n_catalogue=4)
    assert result["jaccard_distance"] == pytest.approx(2 / 3)
    assert result["n_users"] == 2
    alone = personalisation.list_difference(np.array([[3, -1]]), k=2, n_catalogue=4)
    assert alone == {"jaccard_distance": None, "coverage": 0.25, "n_users": 1}


def test_the_blocked_product_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    rankings = np.stack([rng.choice(30, 5, replace=False) for _ in range(40)])
    rankings[3, 2:] = -1
    sets = [set(row[row >= 0].tolist()) for row in rankings]
    expected = np.mean([1 - len(a & b) / len(a | b)
                        for a, b in itertools.combinations(sets, 2)])
    result = personalisation.list_difference(rankings, k=5, n_catalogue=30,
                                             users_per_block=7)  # several uneven blocks
    assert result["jaccard_distance"] == pytest.approx(expected)


def test_overlap_is_the_share_of_the_top_k_also_in_the_reference_top_k():
    rankings = np.array([[0, 1, 2, 3], [4, 5, -1, -1], [-1, -1, -1, -1]])
    reference = np.array([[1, 0, 9, 8], [6, 7, 5, -1], [0, 1, 2, 3]])
    # k = 2: user 0 {0, 1} vs {1, 0}: 1; user 1 {4, 5} vs {6, 7}: 0; user 2 has no list.
    assert personalisation.overlap_with(rankings, reference, k=2) == pytest.approx(0.5)
    # k = 3: user 0 {0, 1, 2} vs {1, 0, 9}: 2/3; user 1 {4, 5} vs {6, 7, 5}: 1/2.
    assert personalisation.overlap_with(rankings, reference, k=3) == pytest.approx(
        (2 / 3 + 1 / 2) / 2)
    assert personalisation.overlap_with(rankings[2:], reference[2:], k=2) is None
    with pytest.raises(ValueError, match="same users"):
        personalisation.overlap_with(rankings, reference[:2])


TRUTH = {
    "users": {"u1": {"fav_categories": ["dress", "hat"], "fav_colours": ["red"],
                     "fav_style": "casual"},
              "u2": {"fav_categories": ["bag"], "fav_colours": ["blue", "red"],
                     "fav_style": "formal"}},
    "items": {"a": {"category": "dress", "colour": "red", "style": "casual"},
              "b": {"category": "hat", "colour": "blue", "style": "formal"},
              "c": {"category": "bag", "colour": "green", "style": "casual"},
              "d": {"category": "bag", "colour": "red", "style": "formal"}},
}
ITEMS = ["a", "b", "c", "d", "unknown"]


def test_taste_match_counts_favourite_category_colour_and_style_per_user():
    # u1's top-3: a (dress red casual), b (hat blue formal), unknown -> category 2/3,
    # colour 1/3, style 1/3. u2's top-2 (-1 padded): c (bag green casual), d (bag red
    # formal) -> category 1, colour 1/2, style 1/2. u3 is unknown to the truth.
    rankings = np.array([[0, 1, 4, 2], [2, 3, -1, -1], [0, 1, 2, 3]])
    match = personalisation.taste_match(rankings, 3, ["u1", "u2", "u3"], ITEMS, TRUTH)
    assert match["n_users"] == 2
    assert match["category"] == pytest.approx((2 / 3 + 1) / 2)
    assert match["colour"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert match["style"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_taste_match_without_known_users_is_none():
    match = personalisation.taste_match(np.array([[0, 1]]), 2, ["nobody"], ITEMS, TRUTH)
    assert match == {"n_users": 0, "category": None, "colour": None, "style": None}


def _train(histories):
    """A train split in which user u{i+1} engaged with histories[i] in that order (clicks a
    minute apart) and was also shown item "a" without engaging (an impression, not history)."""
    rows = [(f"u{user + 1}", item, 60 * (step + 1), "click")
            for user, items in enumerate(histories) for step, item in enumerate(items)]
    rows += [(f"u{user + 1}", "a", 10_000, "impression") for user in range(len(histories))]
    users, items, timestamps, events = (list(column) for column in zip(*rows)) if rows else (
        [], [], [], [])
    return protocol.Events(
        users=np.array(users, object), items=np.array(items, object),
        timestamps=np.array(timestamps, np.int64), events=np.array(events, object),
        labels=np.array([int(e != "impression") for e in events], np.int64),
        devices=np.array(["web"] * len(rows), object))


def _task(history, excluded, catalogue=ITEMS):
    """A protocol.Task with only what the personalisation block reads filled in; the train
    split holds `history` (task.history, the model's feature, is cut to one item, so the
    own-history row must come from the split)."""
    n = len(history)
    return protocol.Task(
        catalogue=protocol.Catalogue(np.array(catalogue, dtype=object),
                                     np.zeros(len(catalogue), bool)),
        cutoff=0, users=[f"u{i + 1}" for i in range(n)],
        excluded=[np.array(e, np.int64) for e in excluded], history=[h[-1:] for h in history],
        devices=["web"] * n, targets=[np.array([0])] * n, new_user=np.zeros(n, bool),
        popularity=np.zeros(len(catalogue)), train=_train(history))


def test_own_history_is_the_last_engaged_items_most_recent_first_padded():
    task = _task([["a", "b", "c"], ["gone", "d"]], [[0, 1, 2], [3]])
    np.testing.assert_array_equal(personalisation.own_history_ranking(task, n=2),
                                  [[2, 1], [3, -1]])  # "gone" is outside the catalogue
    np.testing.assert_array_equal(personalisation.own_history_ranking(task, n=4),
                                  [[2, 1, 0, -1], [3, -1, -1, -1]])


def test_sample_users_are_the_most_active_ties_by_order():
    task = _task([[]] * 5, [[0], [0, 1, 2], [0, 1], [1, 2, 3], []])
    assert personalisation.sample_user_rows(task, 3) == [1, 3, 2]


def test_summary_block_holds_every_method_the_own_history_row_and_samples():
    # u1 history a, b (most recent last); u2 history c.
    task = _task([["a", "b"], ["c"]], [[0, 1], [2]])
    rankings = {"model": np.array([[2, 3], [0, 3]]),
                personalisation.REFERENCE: np.array([[2, 4], [1, 4]])}
    block = personalisation.summarise(rankings, task, TRUTH, k=2, n_samples=1)
    model = block["methods"]["model"]
    # {c, d} vs {a, d}: distance 1 - 1/3; covers c, d, a of 5 items.
    assert model["jaccard_distance@2"] == pytest.approx(2 / 3)
    assert model["coverage@2"] == pytest.approx(3 / 5)
    # u1: {c, d} vs {c, unknown}: 1/2; u2: {a, d} vs {b, unknown}: 0.
    assert model["overlap_recent_popular@2"] == pytest.approx(0.25)
    # u1 (dress/hat, red, casual): c no/no/yes, d no/yes/no; u2 (bag, blue/red, formal):
    # a no/yes/no, d yes/yes/yes.
    assert model["taste_category@2"] == pytest.approx((0 + 1 / 2) / 2)
    assert model["taste_colour@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert model["taste_style@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # Own history, most recent first: u1 b, a (hat blue formal, dress red casual); u2 c.
    assert block[personalisation.OWN_HISTORY] == {
        "taste_category@2": pytest.approx((1 + 1) / 2),
        "taste_colour@2": pytest.approx((1 / 2 + 0) / 2),
        "taste_style@2": pytest.approx((1 / 2 + 0) / 2)}
    assert block["reference"] == personalisation.REFERENCE and block["has_truth"]
    [sample] = block["sample_users"]
    assert sample == {"user_id": "u1", "n_train_items": 2, "history": ["a", "b"],
                      "lists": {"model": ["c", "d"], personalisation.REFERENCE: ["c", "unknown"]},
                      "taste": {"category": ["dress", "hat"], "colour": ["red"],
                                "style": "casual"}}
    assert sorted(block["sample_items"]) == ["a", "b", "c", "d"]
    assert json.loads(json.dumps(block)) == block


def test_summary_without_truth_or_reference_has_list_difference_only():
    task = _task([["a"], ["b"]], [[0], [1]])
    block = personalisation.summarise({"model": np.array([[2, 3], [2, 3]])}, task, k=2)
    assert block["methods"] == {"model": {"jaccard_distance@2": 0.0, "coverage@2": 0.4}}
    assert block["reference"] is None and not block["has_truth"]
    assert personalisation.OWN_HISTORY not in block and "sample_items" not in block
    assert [s["user_id"] for s in block["sample_users"]] == ["u1", "u2"]


def test_the_text_table_has_a_row_per_method_and_the_own_history_row():
    task = _task([["a", "b"], ["c"]], [[0, 1], [2]])
    rankings = {"model": np.array([[2, 3], [0, 3]]),
                personalisation.REFERENCE: np.array([[2, 4], [1, 4]])}
    result = {"personalisation": personalisation.summarise(rankings, task, TRUTH, k=2)}
    lines = gate.personalisation_table(result).splitlines()
    assert lines[0] == ("personalisation of the top-2 lists, 2 users (own_last_10: the users' "
                        "own past items, not a recommender)")
    assert lines[1].split() == ["taste_category@2", "taste_colour@2", "taste_style@2",
                                "jaccard_distance@2", "coverage@2",
                                "overlap_recent_popular@2"]
    assert lines[2].split() == ["model", "0.2500", "0.7500", "0.5000", "0.6667", "0.6000",
                                "0.2500"]
    assert lines[4].split() == ["own_last_10", "1.0000", "0.2500", "0.2500", "-", "-", "-"]
    assert gate.personalisation_table({}) == "personalisation: not measured"


def test_the_evaluator_reads_the_ground_truth_of_a_synthetic_data_root_only(tmp_path):
    from hyperrec.components.evaluation import component
    from hyperrec.data import contract

    assert component.read_ground_truth("") is None
    assert component.read_ground_truth(str(tmp_path)) is None  # imported data: no truth
    (tmp_path / contract.GROUND_TRUTH_FILE).write_text(json.dumps(TRUTH))
    assert component.read_ground_truth(str(tmp_path)) == TRUTH
    config = json.loads(component.executor_config({}, 10, "digest", str(tmp_path)))
    assert config["data_root"] == str(tmp_path)


def test_random_items_are_seeded_and_drawn_from_the_candidates_only():
    task = _task([["a"], ["b"], ["c"]], [[0], [0, 1, 2], [1, 2, 3, 4]])
    first = personalisation.random_ranking(task, 3, seed=3)
    np.testing.assert_array_equal(first, personalisation.random_ranking(task, 3, seed=3))
    for row, excluded in zip(first, task.exclusions()):
        drawn = row[row >= 0]
        candidates = set(range(len(task.catalogue.item_ids))) - set(excluded)
        assert len(set(drawn)) == len(drawn) == min(3, len(candidates))
        assert set(drawn) <= candidates
