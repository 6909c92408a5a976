"""Ranks the task's users with an exported SavedModel's `recommend` signature.

The query is what serving would send at the cutoff: user id, the last `history_length`
engaged train items, the device of the user's last train event, timestamp = cutoff (or
each user's first eval event: protocol.QUERY_TIMES). The
user's WHOLE train history and every item not yet available at the query time must be
excluded (protocol.Task.exclusions): when the model has `recommend_excluding` (or
`recommend` has an `exclude_item_ids` input) it receives them; either way k is raised by the
number of excluded items and the result is filtered here, so the protocol holds with or
without that input.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from hyperrec.schemas import features
from hyperrec.components.evaluation import protocol

# The excluding variant of `recommend` (its own signature, or an input of `recommend`), used
# only when the model has it: older models stay comparable.
RECOMMEND_EXCLUDING = features.RECOMMEND_EXCLUDING
EXCLUDE_ITEM_IDS = features.EXCLUDE_ITEM_IDS


def _padded(rows: List[List[str]], width: Optional[int] = None) -> np.ndarray:
    """Rows cut or padded with "" to `width` (None: the longest row), at least one column."""
    if width is None:
        width = max([len(r) for r in rows] + [1])
    width = max(width, 1)
    return np.array([(list(r) + [""] * width)[:width] for r in rows], dtype=object)


# A batch's [batch, catalogue] float32 scores inside `recommend` stay under this many entries
# (64 MB): 256 users at 20k items, 16 at 10^6.
MAX_BATCH_SCORES = 1 << 24


def batch_size_for(n_items: int, most: int = 256) -> int:
    """Users per `recommend` call: `most`, fewer for a large catalogue (MAX_BATCH_SCORES)."""
    return max(1, min(most, MAX_BATCH_SCORES // max(1, n_items)))


def rank_task(recommend: Callable[[Dict[str, object]], Dict[str, object]],
              task: protocol.Task, depth: int, *, history_width: Optional[int] = None,
              k_covers_exclusions: bool = False, batch_size: Optional[int] = None,
              query_time: str = "cutoff") -> np.ndarray:
    """[users, depth] catalogue indices (-1 where it ran out) from `recommend`, called with
    one request dict per batch: the serving query at `query_time` (protocol.QUERY_TIMES;
    the cutoff by default) plus `exclude_item_ids` (the task's exclusions at that time).
    `history_width` pads/cuts the history (None: the batch's longest); with
    `k_covers_exclusions` k is raised by the most exclusions in the batch, so `depth` items
    are left after the exclusions are filtered here (for a `recommend` that may not drop
    them itself). `batch_size` users per call (None: batch_size_for the catalogue)."""
    import tensorflow as tf

    if batch_size is None:
        batch_size = batch_size_for(len(task.catalogue.item_ids))
    index = task.catalogue.index()
    ids = task.catalogue.item_ids
    timestamps = task.query_timestamps(query_time)
    exclusions = task.exclusions(query_time)
    ranked: List[List[int]] = []
    for start in range(0, len(task.users), batch_size):
        end = min(start + batch_size, len(task.users))
        excluded = [[ids[i] for i in exclusions[u]] for u in range(start, end)]
        k = depth + (max(len(e) for e in excluded) if k_covers_exclusions else 0)
        outputs = recommend({
            features.USER_ID: tf.constant(task.users[start:end], tf.string),
            features.HISTORY: tf.constant(_padded(task.history[start:end], history_width),
                                          tf.string),
            features.DEVICE: tf.constant(task.devices[start:end], tf.string),
            features.TIMESTAMP: tf.constant(timestamps[start:end], tf.int64),
            features.K: tf.constant([k] * (end - start), tf.int32),
            EXCLUDE_ITEM_IDS: tf.constant(_padded(excluded), tf.string)})
        for row in outputs[features.ITEM_IDS].numpy():
            ranked.append([index.get(item.decode(), -1) for item in row])
    return protocol.exclude_and_truncate(ranked, exclusions, depth)


def rank_with_model(model_dir: str, task: protocol.Task, depth: int, history_length: int,
                    batch_size: Optional[int] = None, query_time: str = "cutoff"
                    ) -> np.ndarray:
    """[users, depth] catalogue indices ranked by the model (-1 where it ran out)."""
    import tensorflow as tf

    signatures = tf.saved_model.load(model_dir).signatures
    signature = signatures.get(RECOMMEND_EXCLUDING) or signatures[features.RECOMMEND]
    inputs = signature.structured_input_signature[1]

    def recommend(request):
        return signature(**{name: value for name, value in request.items() if name in inputs})

    return rank_task(recommend, task, depth, history_width=history_length,
                     k_covers_exclusions=True, batch_size=batch_size, query_time=query_time)
