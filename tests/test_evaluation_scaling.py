"""Ranking evaluation that scales: the batched EASE solves against the dense closed form and
RecTools, the top-N item rule, the vectorised exclusion rule against the per-row one, and
the sampled-users path (bench/bench_ranking_eval.py measures time and memory)."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

from hyperrec.components.evaluation import baselines, ease, metrics, protocol, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    """bench/bench_ranking_eval.py (its deterministic synthetic log)."""
    spec = importlib.util.spec_from_file_location(
        "bench_ranking_eval", os.path.join(ROOT, "bench", "bench_ranking_eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dataset(n_users, n_items, density=0.15, seed=0):
    from rectools.dataset import Dataset

    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "weight": 1.0,
                          "datetime": pd.Timestamp(0)})
    dataset = Dataset.construct(frame)
    return dataset, dataset.get_user_item_matrix().toarray().astype(np.float64)


def _closed_form(x, lam, orientation):
    """Dense EASE scores of every user: Steck's x B, or RecTools' x B'."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return x @ (b if orientation == "steck" else b.T)


@pytest.mark.parametrize("orientation", ease.ORIENTATIONS)
@pytest.mark.parametrize("shape,solver", [((30, 50), "dual"), ((50, 30), "primal")])
def test_scalable_ease_equals_the_closed_form(shape, solver, orientation):
    dataset, x = _dataset(*shape)
    model = ease.ScalableEASEModel(7.0, orientation=orientation).fit(dataset)
    assert model.solver == solver and model.restricted_to is None
    users = np.arange(x.shape[0])
    np.testing.assert_allclose(model.scores(users), _closed_form(x, 7.0, orientation),
                               rtol=1e-9, atol=1e-9)


def test_the_default_orientation_ranks_as_rectools_ease_does():
    from rectools.models import EASEModel

    for shape in ((40, 60), (60, 40)):
        dataset, _ = _dataset(*shape, seed=1)
        users = dataset.user_id_map.external_ids
        ours = ease.ScalableEASEModel(3.0).fit(dataset).recommend(
            users, dataset, k=shape[1], filter_viewed=True)
        theirs = EASEModel(regularization=3.0, recommend_n_threads=1).fit(dataset).recommend(
            users, dataset, k=shape[1], filter_viewed=True)
        # Same (user, item) pairs, scores equal to RecTools' float32 weights.
        merged = theirs.merge(ours, on=["user_id", "item_id"], suffixes=("_r", "_s"))
        assert len(merged) == len(theirs) == len(ours)
        np.testing.assert_allclose(merged["score_s"], merged["score_r"], rtol=0, atol=1e-5)
        # The same order, up to swaps of scores closer than that tolerance.
        gap = np.abs(ours["score"].to_numpy() - theirs["score"].to_numpy())
        assert np.all((ours["item_id"].to_numpy() == theirs["item_id"].to_numpy()) | (gap < 1e-5))


def test_user_batches_do_not_change_the_ranking():
    dataset, x = _dataset(25, 40, seed=2)
    users = dataset.user_id_map.external_ids
    whole = ease.ScalableEASEModel(5.0).fit(dataset).recommend(users, dataset, k=7,
                                                                filter_viewed=True)
    one_by_one = ease.ScalableEASEModel(5.0, batch_bytes=1).fit(dataset)
    assert one_by_one.batch_size() == 1
    pd.testing.assert_frame_equal(
        one_by_one.recommend(users, dataset, k=7, filter_viewed=True), whole)
    # Viewed items are never recommended.
    seen = {(u, i) for u, i in zip(*np.nonzero(x))}
    internal = dataset.item_id_map.convert_to_internal
    for user, item in zip(whole["user_id"], whole["item_id"]):
        assert (dataset.user_id_map.convert_to_internal([user])[0],
                internal([item])[0]) not in seen


def test_past_max_dense_ease_is_fitted_on_the_most_popular_items_only():
    dataset, x = _dataset(40, 30, density=0.2, seed=3)
    model = ease.ScalableEASEModel(4.0, max_dense=10).fit(dataset)
    assert model.restricted_to == 10 and model.solver == "primal"
    users_per_item = (x > 0).sum(0)
    keep = np.sort(np.argsort(-users_per_item, kind="stable")[:10])
    np.testing.assert_array_equal(model.kept_items, keep)
    np.testing.assert_allclose(model.scores(np.arange(40)),
                               _closed_form(x[:, keep], 4.0, "rectools"), atol=1e-9)
    reco = model.recommend(dataset.user_id_map.external_ids, dataset, k=30, filter_viewed=True)
    assert set(dataset.item_id_map.convert_to_internal(reco["item_id"])) <= set(keep)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spd_inverse_works_in_place(dtype):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(1100, 1100))  # more than one 1024-row block
    spd = (a @ a.T + 1100 * np.eye(1100)).astype(dtype)
    expected = np.linalg.inv(spd.astype(np.float64))
    inverse = ease.spd_inverse_(spd)
    assert inverse is spd
    np.testing.assert_allclose(inverse, expected, rtol=1e-3 if dtype == np.float32 else 1e-10,
                               atol=1e-9)
    np.testing.assert_array_equal(inverse, inverse.T)
    with pytest.raises(np.linalg.LinAlgError):
        ease.spd_inverse_(-np.eye(3))


def _per_row_exclude_and_truncate(ranked_ids, excluded, depth):
    """The rule one row at a time (the implementation before it was vectorised)."""
    out = np.full((len(ranked_ids), depth), -1, np.int64)
    for row, (ranked, skip) in enumerate(zip(ranked_ids, excluded)):
        ranked = np.asarray(ranked, np.int64)
        ranked = ranked[(ranked >= 0) & ~np.isin(ranked, skip)]
        _, first = np.unique(ranked, return_index=True)
        ranked = ranked[np.sort(first)][:depth]
        out[row, :len(ranked)] = ranked
    return out


def test_vectorised_exclusion_rule_equals_the_per_row_rule():
    rng = np.random.default_rng(5)
    for _ in range(200):
        users, width, items = rng.integers(0, 6), rng.integers(0, 9), rng.integers(1, 12)
        depth = int(rng.integers(0, 7))
        excluded = [rng.choice(items, size=rng.integers(0, items), replace=False)
                    for _ in range(users)]
        dense = rng.integers(-1, items, size=(users, width))
        ragged = [rng.integers(-1, items, size=rng.integers(0, 9)) for _ in range(users)]
        for ranked in (dense, ragged):
            np.testing.assert_array_equal(
                protocol.exclude_and_truncate(ranked, excluded, depth),
                _per_row_exclude_and_truncate(ranked, excluded, depth))


def _synthetic_task(n_items=600, n_users=160):
    train, eval_events, catalogue = _bench().synthetic_log(n_items, n_users, seed=0)
    return protocol.build_task(train, eval_events, catalogue, history_length=5,
                               new_user_days=7)


def test_baselines_rank_as_with_rectools_ease_on_a_synthetic_log():
    task = _synthetic_task()
    config = baselines.BaselineConfig(ease_lambdas=(10.0, 100.0, 1000.0),
                                      knn_neighbours=(10, 50))
    names = (baselines.EASE,)
    ours, chosen = baselines.rank_baselines(task, 20, config, names)
    theirs, chosen_rectools = baselines.rank_baselines(
        task, 20, baselines.BaselineConfig(**{**config.__dict__, "ease_solver": "rectools"}),
        names)
    assert chosen["ease"]["value"] == chosen_rectools["ease"]["value"]
    np.testing.assert_allclose(chosen["ease"]["scores"], chosen_rectools["ease"]["scores"])
    assert chosen["ease"]["solver"] == "scalable"
    # Equal within RecTools' float32 weights: the same top-20 for (nearly) every user.
    same = np.mean(np.all(ours["ease"] == theirs["ease"], axis=1))
    assert same >= 0.98, same
    with pytest.raises(ValueError, match="unknown ease_solver"):
        baselines.make_model(baselines.EASE, 1.0, baselines.BaselineConfig(ease_solver="svd"))


def test_a_sample_of_users_ranks_and_scores_as_in_the_whole_task():
    task = _synthetic_task()
    names = (baselines.MOST_POPULAR, baselines.EASE)
    config = baselines.BaselineConfig(ease_lambdas=(10.0, 100.0, 1000.0))
    whole, _ = baselines.rank_baselines(task, 100, config, names)
    n = len(task.users) // 3
    rows = protocol.sample_rows(len(task.users), n, seed=7)
    assert len(rows) == n and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, protocol.sample_rows(len(task.users), n, seed=7))
    assert protocol.sample_rows(len(task.users), len(task.users), seed=7) is None
    sample = protocol.sample_users(task, n, seed=7)
    assert sample.users == [task.users[r] for r in rows]
    part, _ = baselines.rank_baselines(sample, 100, config, names)
    for name in names:
        np.testing.assert_array_equal(part[name], whole[name][rows])

    result = run.evaluate(task, {}, history_length=5, ks=(10,), baseline_config=config,
                          baseline_names=names, n_resamples=20, seed=7, max_users=n,
                          extra_rankings={"whole_ease": whole["ease"]})
    assert result["sampled_users"] == {"n": n, "of": len(task.users), "seed": 7}
    assert result["slices"]["overall"]["n_users"] == n
    expected = metrics.per_user(whole["ease"][rows], [task.targets[r] for r in rows],
                                task.popularity, [10])["recall@10"].mean()
    overall = result["slices"]["overall"]["metrics"]
    assert overall["ease"]["recall@10"]["value"] == pytest.approx(expected)
    assert overall["whole_ease"]["recall@10"]["value"] == pytest.approx(expected)


def test_validation_users_cap_the_users_that_score_the_grid():
    task = _synthetic_task()
    config = baselines.BaselineConfig(ease_lambdas=(10.0, 100.0, 1000.0), validation_users=20)
    _, chosen = baselines.rank_baselines(task, 10, config, (baselines.EASE,))
    assert chosen["ease"]["validation_users"] == 20


def test_the_evaluator_reads_the_sampling_fields_from_its_config():
    from hyperrec.components import config as config_lib
    from hyperrec.components.evaluation import component

    _, every_user = component.settings(config_lib.EvalConfig())
    assert every_user.validation_users is None
    _, sampled = component.settings(config_lib.EvalConfig(ranking_validation_users=500,
                                                          bootstrap_seed=3))
    assert (sampled.validation_users, sampled.sample_seed) == (500, 3)
