"""How personal the top-k lists are: do different users get different lists, and do the
lists follow each user's tastes?

Recall@k can be won by showing everyone the same popular items. Personalisation asks two
other questions of the same rankings ([users, depth] catalogue indices, -1 = none, as every
method's ranking in components/evaluation):

- list difference (any data): the mean pairwise Jaccard distance between users' top-k sets,
  1 - |A ∩ B| / |A ∪ B| over every pair of users (0: everyone gets the same list, 1: no two
  users share an item); catalogue coverage@k (distinct items in any top-k / catalogue size);
  and the overlap with a reference list, the share of a user's top-k that is also in the
  reference's top-k for that user (with recent-popular: how much of the list is just "what
  sells now").
- taste match (synthetic data only, where the generator's ground_truth.json knows each
  user's favourite categories, colours and style): the share of a user's top-k items whose
  category is a favourite category, whose colour is a favourite colour and whose style is the
  favourite style, averaged over users. The user's own last items (own_history_ranking) are
  the reference row a recommender should reach: they are the user's past, not a
  recommendation.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import sparse

from hyperrec.components.evaluation import protocol
from hyperrec.data import history as history_lib

K = 10
REFERENCE = "recent_popular"  # the list "what sells now" that overlap is measured against
OWN_HISTORY = "own_last_10"
N_SAMPLE_USERS = 3
TRAITS = ("category", "colour", "style")
# ground_truth.json: items[iid][trait] is the item's value; users[uid][_USER_KEY[trait]] the
# user's favourite value(s).
_USER_KEY = {"category": "fav_categories", "colour": "fav_colours", "style": "fav_style"}
USERS_PER_BLOCK = 1024  # rows of the pairwise product at a time (memory: block x users floats)


def _top_k_matrix(rankings: np.ndarray, k: int, n_catalogue: int) -> sparse.csr_matrix:
    """[users, catalogue] 1 where the item is in the user's top-k (-1 slots skipped)."""
    top = np.asarray(rankings, np.int64)[:, :k]
    rows, cols = np.nonzero(top >= 0)
    matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, top[rows, cols])),
                               shape=(len(top), n_catalogue))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a repeated item counts once, as in a set
    return matrix


def list_difference(rankings: np.ndarray, k: int = K, *, n_catalogue: int,
                    users_per_block: int = USERS_PER_BLOCK) -> Dict[str, Optional[float]]:
    """Mean pairwise Jaccard distance of users' top-k sets and catalogue coverage@k.

    Exact over all pairs of users with a non-empty top-k: the intersections are one sparse
    user x item product, taken a block of users at a time so 10k users fit in memory.
    `jaccard_distance` is None with fewer than two such users.
    """
    matrix = _top_k_matrix(rankings, k, n_catalogue)
    sizes = np.asarray(matrix.sum(1)).ravel()
    matrix = matrix[sizes > 0]
    sizes = sizes[sizes > 0]
    n = len(sizes)
    coverage = float(np.count_nonzero(np.asarray(matrix.sum(0)).ravel())) / n_catalogue
    if n < 2:
        return {"jaccard_distance": None, "coverage": coverage, "n_users": n}
    transposed = matrix.T.tocsc()
    total = 0.0
    for start in range(0, n, users_per_block):
        stop = min(start + users_per_block, n)
        intersection = (matrix[start:stop] @ transposed).toarray()
        union = sizes[start:stop, None] + sizes[None, :] - intersection
        distance = 1.0 - intersection / union
        # The diagonal (a user with themselves) is 0 and is not a pair.
        total += float(distance.sum())
    return {"jaccard_distance": total / (n * (n - 1)), "coverage": coverage, "n_users": n}


def overlap_with(rankings: np.ndarray, reference_rankings: np.ndarray, k: int = K
                 ) -> Optional[float]:
    """Mean over users of |top-k ∩ reference top-k| / |top-k| (same user, same row).

    Users whose top-k is empty are left out; None when no user is left.
    """
    top = np.asarray(rankings, np.int64)[:, :k]
    reference = np.asarray(reference_rankings, np.int64)[:, :k]
    if top.shape[0] != reference.shape[0]:
        raise ValueError(f"{top.shape[0]} ranking rows against {reference.shape[0]} "
                         f"reference rows: both must hold the same users")
    filled = top >= 0
    shared = ((top[:, :, None] == reference[:, None, :]) & (reference[:, None, :] >= 0)).any(2)
    # Each item counts once even if a ranking repeats it.
    shared &= filled & _first_occurrence(top)
    counted = (filled & _first_occurrence(top)).sum(1)
    keep = counted > 0
    if not keep.any():
        return None
    return float((shared.sum(1)[keep] / counted[keep]).mean())


def _first_occurrence(top: np.ndarray) -> np.ndarray:
    """bool [users, k]: the slot holds an item not seen earlier in the row."""
    earlier = (top[:, :, None] == top[:, None, :]) & np.tril(
        np.ones((top.shape[1], top.shape[1]), bool), -1)[None]
    return ~earlier.any(2)


def _codes(values: Sequence[object]) -> Dict[object, int]:
    return {value: code for code, value in enumerate(sorted(set(values), key=str))}


def taste_match(rankings: np.ndarray, k: int, user_ids: Sequence[str],
                item_ids: Sequence[str], truth: Mapping[str, object]
                ) -> Dict[str, Optional[float]]:
    """Share of each user's top-k items in the user's favourite category / colour / style,
    averaged over users (keys "category", "colour", "style"; "n_users" counted).

    `truth` is the parsed ground_truth.json (truth["users"][uid]["fav_categories" |
    "fav_colours" | "fav_style"], truth["items"][iid]["category" | "colour" | "style"]).
    Users the truth does not know and users with an empty top-k are left out; an item it
    does not know matches nothing. Values are None when no user is left.
    """
    users: Mapping[str, Mapping[str, object]] = truth.get("users", {})
    items: Mapping[str, Mapping[str, object]] = truth.get("items", {})
    top = np.asarray(rankings, np.int64)[:, :k]
    filled = top >= 0
    known = np.array([uid in users for uid in user_ids], bool)
    keep = known & filled.any(1)
    result: Dict[str, Optional[float]] = {"n_users": int(keep.sum())}
    for trait in TRAITS:
        item_values = [items.get(iid, {}).get(trait) for iid in item_ids]
        codes = _codes([v for v in item_values if v is not None])
        # Code len(codes) stands for "unknown": no user favours it.
        item_code = np.array([codes.get(v, len(codes)) if v is not None else len(codes)
                              for v in item_values], np.int64)
        favourite = np.zeros((len(user_ids), len(codes) + 1), bool)
        for row, uid in enumerate(user_ids):
            liked = users.get(uid, {}).get(_USER_KEY[trait], ())
            for value in ([liked] if isinstance(liked, str) else liked):
                if value in codes:
                    favourite[row, codes[value]] = True
        hits = favourite[np.arange(len(top))[:, None], item_code[np.maximum(top, 0)]] & filled
        share = hits.sum(1)[keep] / filled.sum(1)[keep]
        result[trait] = float(share.mean()) if keep.any() else None
    return result


def last_engaged_items(train: protocol.Events, users: Sequence[str], n: int = K
                       ) -> List[List[str]]:
    """Each user's last n engaged item ids in `train`, oldest first (read from the split, not
    task.history, whose length is the model's history_length)."""
    wanted = set(users)
    by_user: Dict[str, List[history_lib.Event]] = {}
    for user, item, timestamp, event in zip(train.users, train.items, train.timestamps,
                                            train.events):
        if user in wanted:
            by_user.setdefault(user, []).append((int(timestamp), item, event, None))
    return [history_lib.last_engaged(by_user.get(user, []), n) for user in users]


def own_history_ranking(task: protocol.Task, n: int = K) -> np.ndarray:
    """[users, n] the catalogue indices of each user's last n engaged train items, most
    recent first, -1 padded (items outside the catalogue are -1). The user's past, as a
    reference row for taste match: not a recommender (those items are excluded from every
    ranking)."""
    index = task.catalogue.index()
    rows = np.full((len(task.users), n), -1, np.int64)
    for row, history in enumerate(last_engaged_items(task.train, task.users, n)):
        recent = [index.get(item, -1) for item in reversed(history)]
        rows[row, :len(recent)] = recent
    return rows


def random_ranking(task: protocol.Task, n: int = K, seed: int = 0) -> np.ndarray:
    """[users, n] n items drawn uniformly without replacement from each user's candidates
    (available at the query time, not in their train history), -1 padded: the chance level
    of every list metric, the "random items" reference row. Seeded: the same task and seed
    give the same lists."""
    rng = np.random.default_rng(seed)
    everything = np.arange(len(task.catalogue.item_ids))
    rows = np.full((len(task.users), n), -1, np.int64)
    for row, excluded in enumerate(task.exclusions()):
        candidates = np.setdiff1d(everything, excluded, assume_unique=True)
        drawn = rng.choice(candidates, size=min(n, len(candidates)), replace=False)
        rows[row, :len(drawn)] = drawn
    return rows


def sample_user_rows(task: protocol.Task, n: int = N_SAMPLE_USERS) -> List[int]:
    """The n users with the most distinct engaged train items (ties: the first user id),
    shown in the report with their history and their lists. Deterministic for a task."""
    sizes = np.array([len(excluded) for excluded in task.excluded])
    return sorted(range(len(sizes)), key=lambda row: (-sizes[row], row))[:n]


def _scores(ranking: np.ndarray, reference: Optional[np.ndarray], k: int,
            n_catalogue: int) -> Dict[str, Optional[float]]:
    difference = list_difference(ranking, k, n_catalogue=n_catalogue)
    scores: Dict[str, Optional[float]] = {f"jaccard_distance@{k}": difference["jaccard_distance"],
                                          f"coverage@{k}": difference["coverage"]}
    if reference is not None:
        scores[f"overlap_{REFERENCE}@{k}"] = overlap_with(ranking, reference, k)
    return scores


def _taste_scores(ranking: np.ndarray, k: int, task: protocol.Task,
                  truth: Mapping[str, object]) -> Dict[str, Optional[float]]:
    match = taste_match(ranking, k, task.users, task.catalogue.item_ids.tolist(), truth)
    return {f"taste_{trait}@{k}": match[trait] for trait in TRAITS}


def columns(block: Mapping[str, object]) -> List[str]:
    """The metric names a summarise() block holds, in the order tables show them."""
    k = block["k"]
    names = [f"taste_{trait}@{k}" for trait in TRAITS] if block.get("has_truth") else []
    names += [f"jaccard_distance@{k}", f"coverage@{k}"]
    if block.get("reference"):
        names.append(f"overlap_{block['reference']}@{k}")
    return names


def _item_ids(row: np.ndarray, item_ids: np.ndarray) -> List[str]:
    return [str(item_ids[i]) for i in row if i >= 0]


def summarise(rankings: Mapping[str, np.ndarray], task: protocol.Task,
              truth: Optional[Mapping[str, object]] = None, k: int = K,
              n_samples: int = N_SAMPLE_USERS) -> Dict[str, object]:
    """The `personalisation` block of the evaluation result (JSON-ready).

    Per method: jaccard_distance@k, coverage@k, overlap_recent_popular@k (when recent-popular
    is among `rankings`) and, with `truth`, taste_{category,colour,style}@k. With `truth`,
    `own_last_10` holds the taste match of the users' own last k items. `sample_users`: the
    n_samples most active users' last k engaged train items (oldest first) and every
    method's top-k (item ids); with `truth`, their favourites and the traits of every item
    shown (`sample_items`).
    """
    n_catalogue = len(task.catalogue.item_ids)
    reference = rankings.get(REFERENCE)
    methods = {}
    for name, ranking in rankings.items():
        methods[name] = _scores(ranking, reference, k, n_catalogue)
        if truth:
            methods[name].update(_taste_scores(ranking, k, task, truth))
    block: Dict[str, object] = {"k": k, "n_users": len(task.users),
                                "reference": REFERENCE if reference is not None else None,
                                "methods": methods, "has_truth": bool(truth)}
    if truth:
        block[OWN_HISTORY] = _taste_scores(own_history_ranking(task, k), k, task, truth)
    item_ids = task.catalogue.item_ids
    rows = sample_user_rows(task, n_samples)
    histories = last_engaged_items(task.train, [task.users[row] for row in rows], k)
    samples = []
    for row, history in zip(rows, histories):
        user = task.users[row]
        sample: Dict[str, object] = {
            "user_id": user, "n_train_items": int(len(task.excluded[row])),
            "history": history,
            "lists": {name: _item_ids(ranking[row, :k], item_ids)
                      for name, ranking in rankings.items()}}
        if truth and user in truth.get("users", {}):
            sample["taste"] = {trait: truth["users"][user][_USER_KEY[trait]] for trait in TRAITS}
        samples.append(sample)
    block["sample_users"] = samples
    if truth:
        shown = {item for s in samples for item in s["history"]}
        shown |= {item for s in samples for ids in s["lists"].values() for item in ids}
        block["sample_items"] = {
            item: {trait: truth["items"][item].get(trait) for trait in TRAITS}
            for item in sorted(shown) if item in truth.get("items", {})}
    return block
