"""Ranking metrics per user, their means, and paired bootstrap intervals between methods.

A ranking is an int array [users, depth] of catalogue indices, best first, -1 where a method
had nothing left to rank. Per user u with target set T_u (|T_u| >= 1):

- recall@k   = |top-k ∩ T_u| / |T_u|
- ndcg@k     = sum_{r <= k, item_r in T_u} 1 / log2(r + 1)  /  sum_{r <= min(k, |T_u|)} 1 / log2(r + 1)
- mrr        = 1 / rank of the first target in the ranking (0 when none within the depth)
- popularity@k = mean train popularity (share of train users who engaged) of the top-k items
These are averaged over users. coverage@k = |union of all users' top-k| / catalogue size is a
set metric: its bootstrap recomputes the union on each resample.

Paired bootstrap: one set of user resamples (seeded) is shared by every method, so a
difference's interval reflects how the SAME users would score under the two methods.
"""
from __future__ import annotations

import itertools
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
from scipy import sparse

from hyperrec.components.evaluation import protocol

DEFAULT_KS = (10, 50)


def _hits(ranked: np.ndarray, targets: Sequence[np.ndarray]) -> np.ndarray:
    """bool [users, depth]: is the item at each rank one of the user's targets."""
    return protocol.row_isin(ranked, targets)


def per_user(ranked: np.ndarray, targets: Sequence[np.ndarray], popularity: np.ndarray,
             ks: Sequence[int]) -> Dict[str, np.ndarray]:
    """Each user-averaged metric as a value per user (users with no target must be dropped)."""
    n_targets = np.array([len(t) for t in targets], float)
    if np.any(n_targets == 0):
        raise ValueError("every evaluated user needs at least one target")
    if ranked.shape[1] < max(ks):
        raise ValueError(f"rankings of depth {ranked.shape[1]} are shorter than k={max(ks)}")
    hits = _hits(ranked, targets)
    discount = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    values: Dict[str, np.ndarray] = {}
    for k in ks:
        values[f"recall@{k}"] = hits[:, :k].sum(1) / n_targets
        ideal = np.cumsum(discount[:k])[np.minimum(n_targets, k).astype(int) - 1]
        values[f"ndcg@{k}"] = (hits[:, :k] * discount[:k]).sum(1) / ideal
        top = ranked[:, :k]
        filled = top >= 0
        pops = np.where(filled, popularity[np.maximum(top, 0)], 0.0)
        values[f"popularity@{k}"] = pops.sum(1) / np.maximum(filled.sum(1), 1)
    first = np.where(hits.any(1), hits.argmax(1) + 1, 0)
    values["mrr"] = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return values


def _membership(ranked: np.ndarray, k: int, n_items: int) -> sparse.csr_matrix:
    """[users, items] 1 where the item is in the user's top-k."""
    top = ranked[:, :k]
    rows, cols = np.nonzero(top >= 0)
    return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, top[rows, cols])),
                             shape=(len(ranked), n_items))


def coverage(ranked: np.ndarray, k: int, n_items: int) -> float:
    top = ranked[:, :k]
    return len(np.unique(top[top >= 0])) / n_items


def resample_counts(n_users: int, n_resamples: int, seed: int) -> np.ndarray:
    """[resamples, users]: how often each user is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_users, size=(n_resamples, n_users))
    counts = np.zeros((n_resamples, n_users), np.float32)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
    return counts


def _coverage_replicates(counts: np.ndarray, membership: sparse.csr_matrix, n_items: int,
                         chunk: int = 64) -> np.ndarray:
    """coverage per resample: an item is covered in a resample when any drawn user has it
    in their top-k. `chunk` resamples at a time: the [resamples, items] product of all of
    them at once holds up to resamples x covered items entries (GBs at 10^5 items)."""
    out = np.empty(len(counts))
    for start in range(0, len(counts), chunk):
        drawn = sparse.csr_matrix(counts[start:start + chunk] > 0, dtype=np.float32)
        covered = drawn @ membership
        out[start:start + chunk] = np.asarray((covered > 0).sum(1)).ravel() / n_items
    return out


def evaluate_slice(rankings: Mapping[str, np.ndarray], targets: Sequence[np.ndarray],
                   popularity: np.ndarray, ks: Sequence[int], counts: np.ndarray
                   ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, Dict[str, np.ndarray]]]:
    """Point values and bootstrap replicates of every metric for every method.

    `targets` holds only the slice's users (all with >= 1 target); `counts` resamples them.
    Returns ({method: {metric: value}}, {method: {metric: replicates [resamples]}}).
    """
    n_items = len(popularity)
    totals = counts.sum(1)
    points: Dict[str, Dict[str, float]] = {}
    replicates: Dict[str, Dict[str, np.ndarray]] = {}
    for method, ranked in rankings.items():
        values = per_user(ranked, targets, popularity, ks)
        points[method] = {name: float(v.mean()) for name, v in values.items()}
        replicates[method] = {name: (counts @ v) / totals for name, v in values.items()}
        for k in ks:
            points[method][f"coverage@{k}"] = coverage(ranked, k, n_items)
            replicates[method][f"coverage@{k}"] = _coverage_replicates(
                counts, _membership(ranked, k, n_items), n_items)
    return points, replicates


def interval(replicates: np.ndarray, level: float = 0.95) -> Tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def evaluate(rankings: Mapping[str, np.ndarray], slices: Mapping[str, Sequence[np.ndarray]],
             popularity: np.ndarray, *, ks: Sequence[int] = DEFAULT_KS,
             n_resamples: int = 1000, seed: int = 0, level: float = 0.95
             ) -> Dict[str, object]:
    """The whole result: per slice, each method's metrics with intervals and every pairwise
    difference (a - b for each ordered pair in `rankings` order) with its paired interval.

    `slices` maps a slice name to per-user targets over ALL users (empty = not in the slice).
    """
    methods = list(rankings)
    result: Dict[str, object] = {"ks": list(ks), "level": level, "n_resamples": n_resamples,
                                 "seed": seed, "methods": methods, "slices": {}}
    for number, (name, all_targets) in enumerate(slices.items()):
        keep = np.array([len(t) > 0 for t in all_targets], bool)
        entry: Dict[str, object] = {"n_users": int(keep.sum()),
                                    "n_targets": int(sum(len(t) for t in all_targets))}
        result["slices"][name] = entry
        if not keep.any():
            continue
        targets = [t for t, k in zip(all_targets, keep) if k]
        counts = resample_counts(len(targets), n_resamples, seed + number)
        points, reps = evaluate_slice({m: r[keep] for m, r in rankings.items()}, targets,
                                      popularity, ks, counts)
        entry["metrics"] = {
            m: {metric: {"value": value, "interval": list(interval(reps[m][metric], level))}
                for metric, value in points[m].items()} for m in methods}
        entry["differences"] = {
            f"{a} - {b}": {metric: {"value": points[a][metric] - points[b][metric],
                                    "interval": list(interval(reps[a][metric]
                                                              - reps[b][metric], level))}
                           for metric in points[a]}
            for a, b in itertools.permutations(methods, 2)}
    return result
