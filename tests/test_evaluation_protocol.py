"""The ranking protocol (users, targets, exclusions, slices) and the RecTools baselines,
against hand-built logs with hand-computed expectations."""
from __future__ import annotations

import numpy as np
import pytest

from hyperrec.schemas import features
from hyperrec.components.evaluation import baselines, protocol

DAY = features.SECONDS_PER_DAY
CUTOFF = 100 * DAY


def _events(rows):
    """rows: (user, item, day, event[, device])."""
    rows = [r + ("mobile",) if len(r) == 4 else r for r in rows]
    return protocol.Events(
        users=np.array([r[0] for r in rows], object), items=np.array([r[1] for r in rows], object),
        timestamps=np.array([int(r[2] * DAY) for r in rows], np.int64),
        events=np.array([r[3] for r in rows], object),
        labels=np.array([int(r[3] in features.POSITIVE_EVENTS) for r in rows], np.int64),
        devices=np.array([r[4] for r in rows], object))


CATALOGUE = protocol.Catalogue(item_ids=np.array(["a", "b", "c", "d", "e"], object))
TRAIN = _events([
    ("u1", "a", 10, "click"), ("u1", "b", 20, "purchase"), ("u1", "c", 30, "impression", "desktop"),
    ("u1", "a", 40, "click"),
    ("u2", "b", 95, "click"),  # first seen 5 days before the cutoff: a new user
    ("u3", "c", 50, "impression"),  # no train positive: not evaluated
])
EVAL = _events([
    ("u1", "a", 101, "purchase"),  # already in u1's train history: not a target
    ("u1", "c", 102, "click"), ("u1", "e", 103, "click"), ("u1", "d", 104, "impression"),
    ("u2", "b", 101, "click"),  # only a repeat: u2 has no new positive
    ("u2", "zz", 102, "click"),  # not in the catalogue: nobody can rank it
    ("u3", "d", 101, "click"),
])


def test_task_users_targets_exclusions_and_slices():
    task = protocol.build_task(TRAIN, EVAL, CATALOGUE, history_length=2, new_user_days=7,
                               cutoff=CUTOFF)
    assert task.users == ["u1"]  # u2: no new eval positive; u3: no train positive
    np.testing.assert_array_equal(task.targets[0], [2, 4])  # c, e
    np.testing.assert_array_equal(task.excluded[0], [0, 1])  # a, b: the WHOLE history
    assert task.history == [["b", "a"]]  # last 2 engaged, oldest first, as ExampleGen
    assert task.devices == ["mobile"]  # device of the last train event (day 40)
    # popularity: share of the 2 users with train positives who engaged with the item.
    np.testing.assert_allclose(task.popularity, [0.5, 1.0, 0, 0, 0])
    # Cold: nobody engaged with it in train (c was only shown; d and e never appear there).
    assert task.catalogue.cold.tolist() == [False, False, True, True, True]
    assert [t.tolist() for t in task.slice_targets("warm_items")] == [[]]
    assert [t.tolist() for t in task.slice_targets("cold_items")] == [[2, 4]]
    assert task.n_unavailable_targets == 0  # no first_seen: every item is always available
    assert not task.new_user[0]
    assert [t.tolist() for t in task.slice_targets("new_users")] == [[]]
    with pytest.raises(ValueError, match="unknown slice"):
        task.slice_targets("weekend")


def test_new_users_and_default_cutoff():
    eval_events = _events([("u2", "c", 101, "click"), ("u1", "d", 102, "click")])
    task = protocol.build_task(TRAIN, eval_events, CATALOGUE, history_length=5, new_user_days=7)
    assert task.cutoff == 101 * DAY  # the first eval event
    assert task.users == ["u1", "u2"]
    assert task.new_user.tolist() == [False, True]
    assert [t.tolist() for t in task.slice_targets("returning_users")] == [[3], []]


def test_query_times_are_the_cutoff_or_each_users_first_eval_event():
    eval_events = _events([("u1", "d", 102, "impression"), ("u2", "c", 101.5, "click"),
                           ("u1", "d", 103, "click"), ("u2", "d", 104, "purchase")])
    task = protocol.build_task(TRAIN, eval_events, CATALOGUE, history_length=5, new_user_days=7)
    assert task.users == ["u1", "u2"]
    assert task.query_timestamps().tolist() == [int(101.5 * DAY)] * 2  # the cutoff
    # u1's first eval event is an impression (a visit), before their first eval positive.
    assert task.query_timestamps("first_eval_event").tolist() == [102 * DAY, int(101.5 * DAY)]
    with pytest.raises(ValueError, match="unknown query time 'noon'"):
        task.query_timestamps("noon")


def test_empty_eval_split_is_an_error():
    with pytest.raises(ValueError, match="eval split is empty"):
        protocol.build_task(TRAIN, EVAL.subset(np.zeros(len(EVAL), bool)), CATALOGUE,
                            history_length=2, new_user_days=7)


def test_exclude_and_truncate():
    out = protocol.exclude_and_truncate([[3, 0, 3, -1, 1, 2], [4]], [np.array([0]), np.array([])],
                                        depth=3)
    np.testing.assert_array_equal(out, [[3, 1, 2], [4, -1, -1]])


# ---- candidates: only items available at the query time -----------------------------------
# f is every train user's favourite (engaged by u1, u2, u4: as a leaked launch date would
# leave it), but its first_seen is day 103, after the cutoff (day 100): at the cutoff nobody
# may rank it. g is listed at the cutoff and nobody engaged with it in train: a cold item.
FIRST_SEEN_CATALOGUE = protocol.Catalogue(
    item_ids=np.array(["a", "b", "c", "d", "f", "g"], object),
    first_seen=np.array([0, 0, 0, 0, 103 * DAY, 100 * DAY], np.int64))
F, G = 4, 5
FIRST_SEEN_TRAIN = _events([
    ("u1", "a", 80, "click"), ("u2", "b", 81, "click"), ("u3", "c", 82, "click"),
    ("u4", "d", 83, "click"), ("u1", "f", 84, "click"), ("u2", "f", 85, "click"),
    ("u4", "f", 86, "click"), ("u5", "a", 87, "click"), ("u6", "b", 88, "click"),
    # the baselines' validation slice (the last 7 train days)
    ("u1", "c", 95, "click"), ("u2", "d", 96, "click"), ("u3", "a", 97, "click"),
])
FIRST_SEEN_EVAL = _events([
    ("u1", "b", 101, "click"), ("u1", "g", 102, "purchase"), ("u2", "a", 104, "click"),
    ("u3", "d", 104, "click"),  # u3's first eval event is after f's first_seen
    # f was not available at the cutoff: dropped and counted, and u5 and u6, whose only
    # new positive it is, are not evaluated.
    ("u5", "f", 102, "click"), ("u6", "f", 104, "click"),
])


def _first_seen_task():
    return protocol.build_task(FIRST_SEEN_TRAIN, FIRST_SEEN_EVAL, FIRST_SEEN_CATALOGUE,
                               history_length=3, new_user_days=7, cutoff=CUTOFF)


def test_targets_not_yet_available_at_the_cutoff_are_dropped_and_counted():
    task = _first_seen_task()
    assert task.users == ["u1", "u2", "u3"]
    assert [t.tolist() for t in task.targets] == [[1, G], [0], [3]]
    assert task.n_unavailable_targets == 2  # u5's and u6's f
    # Cold: available at the cutoff and engaged with by nobody in train (f is not available).
    assert task.catalogue.cold.tolist() == [False] * 5 + [True]
    assert [t.tolist() for t in task.slice_targets("cold_items")] == [[G], [], []]
    assert [e.tolist() for e in task.exclusions()] == [[0, 2, F], [1, 3, F], [0, 2, F]]
    # Queried at their next visit, u3 (day 104) may be shown f, which exists by then.
    assert [e.tolist() for e in task.exclusions("first_eval_event")] == [
        [0, 2, F], [1, 3, F], [0, 2]]


def test_an_item_first_seen_after_the_query_time_is_never_ranked_by_any_method():
    from hyperrec.components.evaluation import run

    task = _first_seen_task()
    everything_f_first = np.array([[F, G, 0, 1, 2, 3]] * len(task.users))
    result = run.evaluate(task, {}, history_length=3, ks=(1, 3), mrr_depth=6,
                          extra_rankings={"f_first": everything_f_first}, n_resamples=10)
    assert result["n_unavailable_targets"] == 2
    baseline_rankings, _ = baselines.rank_baselines(task, depth=6)
    assert sorted(baseline_rankings) == sorted(baselines.BASELINES)
    for name, ranked in baseline_rankings.items():
        assert F not in ranked, name
    assert result["slices"]["overall"]["metrics"]["f_first"]["recall@1"]["value"] > 0
    f_first = protocol.exclude_and_truncate(everything_f_first, task.exclusions(), 6)
    assert F not in f_first and f_first[0].tolist() == [G, 1, 3, -1, -1, -1]


def test_a_model_that_ranks_a_future_item_first_never_gets_it_through():
    import tensorflow as tf

    from hyperrec.components.evaluation import model_ranking

    task = _first_seen_task()
    requests = []

    def recommend_f_first(request):
        """A `recommend` that puts f first and ignores every exclusion it is sent."""
        requests.append(request)
        rows = len(request[features.USER_ID].numpy())
        return {features.ITEM_IDS: tf.constant([["f", "g", "a", "b", "c", "d"]] * rows)}

    at_cutoff = model_ranking.rank_task(recommend_f_first, task, depth=4)
    assert F not in at_cutoff
    assert at_cutoff.tolist() == [[G, 1, 3, -1], [G, 0, 2, -1], [G, 1, 3, -1]]
    # The model is told too: f is among every row's exclusions at the cutoff.
    sent = requests[0][model_ranking.EXCLUDE_ITEM_IDS].numpy()
    assert all(b"f" in row for row in sent)
    at_visit = model_ranking.rank_task(recommend_f_first, task, depth=4,
                                       query_time="first_eval_event")
    assert F not in at_visit[:2] and at_visit[2].tolist() == [F, G, 1, 3]


# ---- baselines: RecTools models against hand-computed rankings ---------------------------
# Items a b c d; u1 {a,b}, u2 {a,b}, u3 {a,c}, u4 {d}, u5 {a}; cosines with a over users:
# a has 4 users, b 2 (both with a), c 1 (with a): cos(a,b) = 2/(2*sqrt2) = 0.71,
# cos(a,c) = 1/(2*1) = 0.5, cos(a,d) = 0.
KNN_LOG = _events([("u1", "a", 1, "click"), ("u1", "b", 1, "click"), ("u2", "a", 2, "click"),
                   ("u2", "b", 2, "click"), ("u3", "a", 3, "click"), ("u3", "c", 3, "click"),
                   ("u4", "d", 4, "click"), ("u5", "a", 5, "click")])
KNN_CATALOGUE = protocol.Catalogue(np.array(["a", "b", "c", "d"], object))
INDEX = KNN_CATALOGUE.index()


def _rank(name, value, users, depth=3, log=KNN_LOG, config=baselines.BaselineConfig()):
    frame = baselines.interactions_frame(log)
    excluded = [np.array(sorted(INDEX[i] for i in frame[frame.user_id == u].item_id))
                for u in users]
    return baselines.rank(baselines.make_model(name, value, config), frame, users, excluded,
                          INDEX, depth)


def test_itemknn_ranks_by_cosine_and_keeps_top_k_neighbours():
    np.testing.assert_array_equal(_rank(baselines.ITEM_KNN, 10, ["u5"]), [[1, 2, -1]])  # b, c
    # implicit's K counts the item itself: K=2 keeps a and its nearest neighbour b only.
    np.testing.assert_array_equal(_rank(baselines.ITEM_KNN, 2, ["u5"]), [[1, -1, -1]])


def test_most_popular_all_time_and_recent():
    # Distinct users: a 4, b 2, c 1, d 1 (ties by RecTools' stable order). u4 has d.
    ranked = _rank(baselines.MOST_POPULAR, None, ["u4"])
    np.testing.assert_array_equal(ranked[0][:2], [0, 1])
    # Last 1.5 days of the log (days 3.5-5): only d (day 4) and a (day 5), one user each.
    recent = _rank(baselines.RECENT_POPULAR, None, ["u3"],
                   config=baselines.BaselineConfig(recent_days=1.5))
    np.testing.assert_array_equal(recent, [[3, -1, -1]])  # d; a and c are u3's own


def test_ease_matches_the_closed_form():
    # EASE (Steck 2019): P = (X'X + lambda I)^-1, B = I - P / diag(P), zero diagonal;
    # scores = x_u B. For u5 = {a} the scores of b, c, d are B[a, b], B[a, c], B[a, d].
    x = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]], float)
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(4))
    b = -p / np.diag(p)
    expected = [1 + int(i) for i in np.argsort(-b[0, 1:])]
    # B[a,d] = 0 (d never co-occurs with a); b before c as it co-occurs more.
    assert expected == [1, 2, 3] and abs(b[0, 3]) < 1e-12
    ranked = _rank(baselines.EASE, 2.0, ["u5"])
    np.testing.assert_array_equal(ranked[0][:2], expected[:2])


def _rotating_task():
    """Eight users clicking a rotation of a-d on days 1, 2 (train) and 9 (eval)."""
    log = _events([(f"u{i}", "abcd"[(i + j) % 4], day, "click")
                   for i in range(8) for j, day in enumerate((1, 2, 9))])
    return protocol.build_task(log.subset(log.timestamps < 9 * DAY),
                               log.subset(log.timestamps >= 9 * DAY), KNN_CATALOGUE,
                               history_length=1, new_user_days=7)


def test_selection_widens_a_grid_whose_best_value_is_at_its_edge():
    # A one-value grid is at both edges: the search must widen it until the choice is inside.
    task = _rotating_task()
    chosen = baselines.select(baselines.EASE, [10.0], task,
                              baselines.BaselineConfig(selection_metric="recall@1"),
                              step=10.0)
    assert len(chosen["grid"]) >= 3
    assert chosen["grid"][0] < chosen["value"] < chosen["grid"][-1]
    assert len(chosen["scores"]) == len(chosen["grid"])


@pytest.mark.parametrize("extensions", [0, 1])
def test_selection_stops_at_the_edge_when_no_extension_is_left(extensions):
    # A one-value grid is at its edge on every pass (a two-value grid too): with the extensions
    # spent the edge value is the choice, and every value of the returned grid has a score.
    task = _rotating_task()
    chosen = baselines.select(baselines.EASE, [10.0], task,
                              baselines.BaselineConfig(selection_metric="recall@1",
                                                       max_grid_extensions=extensions),
                              step=10.0)
    assert len(chosen["grid"]) == extensions + 1
    assert chosen["value"] in (chosen["grid"][0], chosen["grid"][-1])
    assert len(chosen["scores"]) == len(chosen["grid"])
