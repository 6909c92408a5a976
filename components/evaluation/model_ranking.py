"""Ranks the task's users with an exported SavedModel's `recommend` signature.

The query is what serving would send at the cutoff: user id, the last `history_length`
engaged train items, the device of the user's last train event, timestamp = cutoff. The
user's WHOLE train history must be excluded: when the model has `recommend_excluding` (or
`recommend` has an `exclude_item_ids` input) it receives it; either way k is raised by the
number of excluded items and the result is filtered here, so the protocol holds with or
without that input.
"""
from __future__ import annotations

from typing import List

import numpy as np

from hyperrec.schemas import features
from hyperrec.components.evaluation import protocol

# The excluding variant of `recommend` (its own signature, or an input of `recommend`), used
# only when the model has it: older models stay comparable.
RECOMMEND_EXCLUDING = getattr(features, "RECOMMEND_EXCLUDING", "recommend_excluding")
EXCLUDE_ITEM_IDS = getattr(features, "EXCLUDE_ITEM_IDS", "exclude_item_ids")


def _padded(rows: List[List[str]], width: int) -> List[List[str]]:
    width = max(width, 1)
    return [(list(row) + [""] * width)[:width] for row in rows]


def rank_with_model(model_dir: str, task: protocol.Task, depth: int, history_length: int,
                    batch_size: int = 256) -> np.ndarray:
    """[users, depth] catalogue indices ranked by the model (-1 where it ran out)."""
    import tensorflow as tf

    signatures = tf.saved_model.load(model_dir).signatures
    signature = signatures.get(RECOMMEND_EXCLUDING) or signatures[features.RECOMMEND]
    inputs = signature.structured_input_signature[1]
    index = task.catalogue.index()
    ids = task.catalogue.item_ids
    ranked: List[List[int]] = []
    for start in range(0, len(task.users), batch_size):
        end = min(start + batch_size, len(task.users))
        excluded = [[ids[i] for i in task.excluded[u]] for u in range(start, end)]
        k = depth + max(len(e) for e in excluded)
        request = {
            features.USER_ID: tf.constant(task.users[start:end]),
            features.HISTORY: tf.constant(_padded(task.history[start:end], history_length)),
            features.DEVICE: tf.constant(task.devices[start:end]),
            features.TIMESTAMP: tf.constant([task.cutoff] * (end - start), tf.int64),
            features.K: tf.constant([k] * (end - start), tf.int32)}
        if EXCLUDE_ITEM_IDS in inputs:
            request[EXCLUDE_ITEM_IDS] = tf.constant(
                _padded(excluded, max(len(e) for e in excluded)))
        outputs = signature(**{name: value for name, value in request.items() if name in inputs})
        for row in outputs[features.ITEM_IDS].numpy():
            ranked.append([index.get(item.decode(), -1) for item in row])
    return protocol.exclude_and_truncate(ranked, task.excluded, depth)
