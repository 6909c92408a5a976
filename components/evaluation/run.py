"""One evaluation: rank the task with the models and the baselines, score every slice."""
from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from hyperrec.components.evaluation import (baselines, metrics, model_ranking, personalisation,
                                           protocol)


def evaluate(task: protocol.Task, model_dirs: Mapping[str, str], *, history_length: int,
             ks: Sequence[int] = metrics.DEFAULT_KS, mrr_depth: int = 100,
             baseline_config: baselines.BaselineConfig = baselines.BaselineConfig(),
             baseline_names: Sequence[str] = baselines.BASELINES,
             extra_rankings: Optional[Mapping[str, np.ndarray]] = None,
             n_resamples: int = 1000, seed: int = 0,
             truth: Optional[Mapping[str, Any]] = None,
             max_users: Optional[int] = None) -> Dict[str, object]:
    """The metrics result (metrics.evaluate) plus the chosen baseline hyper-parameters, the
    seconds each method took and how personal each method's lists are (`personalisation`,
    see personalisation.summarise; taste match when `truth`, the synthetic generator's
    ground_truth.json, is given). `model_dirs` maps a method name to a SavedModel with a
    `recommend` signature; `extra_rankings` are precomputed [users, depth] rankings of the
    task's users. `max_users` evaluates a seeded sample of at most that many users
    (protocol.sample_rows with `seed`; every method ranks the same sample; recorded as
    `sampled_users`): how a 10^6-item catalogue is evaluated (README, "At 10^6 items")."""
    n_users = len(task.users)
    rows = protocol.sample_rows(n_users, max_users, seed)
    if rows is not None:
        task = task.subset_users(rows)
        extra_rankings = {name: np.asarray(ranked)[rows]
                          for name, ranked in (extra_rankings or {}).items()}
    depth = max(max(ks), mrr_depth)
    rankings: Dict[str, np.ndarray] = {}
    seconds: Dict[str, float] = {}
    for name, model_dir in model_dirs.items():
        start = time.monotonic()
        rankings[name] = model_ranking.rank_with_model(model_dir, task, depth, history_length)
        seconds[name] = time.monotonic() - start
    start = time.monotonic()
    baseline_rankings, chosen = baselines.rank_baselines(task, depth, baseline_config,
                                                         baseline_names)
    seconds["baselines"] = time.monotonic() - start
    rankings.update(baseline_rankings)
    for name, ranked in (extra_rankings or {}).items():
        rankings[name] = protocol.exclude_and_truncate(ranked, task.exclusions(), depth)
    slices = {name: task.slice_targets(name) for name in protocol.SLICES}
    result = metrics.evaluate(rankings, slices, task.popularity, ks=ks,
                              n_resamples=n_resamples, seed=seed)
    result.update(mrr_depth=depth, baseline_hyperparameters=chosen, seconds=seconds,
                  n_catalogue=len(task.catalogue.item_ids),
                  n_cold_items=int(task.catalogue.cold.sum()), cutoff=task.cutoff,
                  personalisation=personalisation.summarise(rankings, task, truth))
    # Eval positives on items first seen after the cutoff: no method could rank them.
    result["n_unavailable_targets"] = task.n_unavailable_targets
    if len(task.users) < n_users:
        result["sampled_users"] = {"n": len(task.users), "of": n_users, "seed": seed}
    return result
