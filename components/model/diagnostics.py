"""How personal a served score is, and whether the embeddings have collapsed.

The served score of user u and catalogue item i (trainer/signatures.py `recommend`) is a sum
of terms: the query-item dot product (the only term that depends on u), the item's retrieval
bias, its recent-popularity prior and its freshness at the request time. A recommender whose
lists follow each user's tastes needs the dot product to move the ranking: its spread over
candidates must be comparable with the spread of the global terms, and a visible share of
the score's variance must depend on who asks. `score_decomposition` measures exactly that
on a [users, items] score matrix; `embedding_spread` tells whether the catalogue embeddings
still point in different directions (mean pairwise cosine near 1 and an effective rank near
1 mean every item embeds alike, so the dot product is one more popularity term).

Measured on the `make demo` model before the affinity task (model/affinity.py): 2.8 % of
the score variance depended on the user and the catalogue's mean pairwise cosine was 0.90.
"""
from __future__ import annotations

import warnings
from typing import Dict, Mapping, Optional

import numpy as np


def embedding_spread(embeddings: np.ndarray) -> Dict[str, float]:
    """{"mean_pairwise_cosine", "effective_rank"} of [n, dim] embeddings.

    mean_pairwise_cosine: the mean cosine over distinct pairs (1 = all alike).
    effective_rank: exp of the entropy of the normalised singular values of the unit rows
    (Roy & Vetterli 2007): 1 for rows on one line, dim for rows spread over every direction.
    """
    rows = np.asarray(embeddings, np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.maximum(norms, 1e-12)
    n = len(unit)
    if n < 2:
        return {"mean_pairwise_cosine": float("nan"), "effective_rank": float("nan")}
    total = unit.sum(axis=0)
    # sum over all ordered pairs i != j of cos = |sum|^2 - n (each unit row has |row|^2 = 1)
    mean_cosine = (float(total @ total) - n) / (n * (n - 1))
    singular = np.linalg.svd(unit, compute_uv=False)
    p = singular / max(singular.sum(), 1e-12)
    p = p[p > 0]
    return {"mean_pairwise_cosine": float(mean_cosine),
            "effective_rank": float(np.exp(-(p * np.log(p)).sum()))}


def user_variance_share(scores: np.ndarray) -> float:
    """The share of the score variance over candidates that depends on who asks.

    scores: [users, items], NaN where an item was not a candidate of that user (excluded).
    Each user's row is centred (a per-user constant never changes a ranking); what remains
    is the item's shared part (the column mean over users) plus a user-specific residual.
    Returns var(residual) / var(centred rows): 0 when every user gets the same ordering."""
    with warnings.catch_warnings():  # an item no user could get has an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        centred = scores - np.nanmean(scores, axis=1, keepdims=True)
        shared = np.nanmean(centred, axis=0, keepdims=True)
    residual = centred - shared
    total = np.nanmean(centred ** 2)
    return float(np.nanmean(residual ** 2) / total) if total > 0 else 0.0


def score_decomposition(dot: np.ndarray, item_terms: Mapping[str, np.ndarray],
                        excluded: Optional[np.ndarray] = None) -> Dict[str, object]:
    """The served score's terms and how much each moves a ranking.

    dot: [users, items] query-item dot products; item_terms: name -> [items] the terms that
    are the same for every user (bias, prior, freshness at the query time), on the score's
    scale; excluded: [users, items] bool, True where the item is not a candidate.
    Returns {"terms": {name: {"variance_over_items": mean over users of the variance across
    that user's candidates}}, "dot_variance_over_users": mean over items of the dot
    product's variance across users, "user_variance_share": user_variance_share of the
    total}."""
    dot = np.asarray(dot, np.float64)
    mask = np.zeros_like(dot, bool) if excluded is None else np.asarray(excluded, bool)
    total = dot + sum(np.asarray(v, np.float64)[np.newaxis, :] for v in item_terms.values())
    total = np.where(mask, np.nan, total)
    masked_dot = np.where(mask, np.nan, dot)
    terms = {"dot": float(np.nanmean(np.nanvar(masked_dot, axis=1)))}
    for name, values in item_terms.items():
        per_user = np.where(mask, np.nan, np.broadcast_to(np.asarray(values, np.float64),
                                                          dot.shape))
        terms[name] = float(np.nanmean(np.nanvar(per_user, axis=1)))
    return {"terms": {name: {"variance_over_items": value} for name, value in terms.items()},
            "dot_variance_over_users": float(np.nanmean(np.nanvar(masked_dot, axis=0))),
            "user_variance_share": user_variance_share(total)}


def served_scores(recommend, users, histories, devices, timestamps, item_ids: np.ndarray,
                  batch_size: int = 256) -> np.ndarray:
    """[users, items] the scores `recommend` serves for every catalogue item (NaN where it
    excludes one: the request's history), items in the order of `item_ids`.

    recommend: a `recommend` signature or ServingModule.recommend, called with k = the
    catalogue size; users / histories / devices / timestamps: the requests, one per user."""
    import tensorflow as tf  # the numpy measures above need no TensorFlow

    from hyperrec.schemas import features

    keys = np.array([str(item).encode() for item in item_ids], dtype=object)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    scores = np.full((len(users), len(item_ids)), np.nan)
    width = max([len(h) for h in histories] + [1])
    for start in range(0, len(users), batch_size):
        end = min(start + batch_size, len(users))
        outputs = recommend({
            features.USER_ID: tf.constant(list(users[start:end]), tf.string),
            features.HISTORY: tf.constant([list(h) + [""] * (width - len(h))
                                           for h in histories[start:end]], tf.string),
            features.DEVICE: tf.constant(list(devices[start:end]), tf.string),
            features.TIMESTAMP: tf.constant(np.asarray(timestamps[start:end]), tf.int64),
            features.K: tf.constant([len(item_ids)] * (end - start), tf.int32)})
        ids = outputs[features.ITEM_IDS].numpy().astype(object)
        values = outputs[features.SCORES].numpy()
        found = (ids != b"") & (values > EXCLUDED_FLOOR)
        rows, _ = np.nonzero(found)
        columns = order[np.searchsorted(sorted_keys, ids[found])]
        scores[start + rows, columns] = values[found]
    return scores


# `recommend` marks excluded items with a score far below any real one (export.EXCLUDED_SCORE).
EXCLUDED_FLOOR = -1e8
