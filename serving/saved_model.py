"""Reading pushed models back: versions under a serving base path and in-process calls.

A serving base path holds one integer-named directory per pushed version (TF Serving's
layout); a version is complete once its saved_model.pb exists.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from hyperrec.schemas import features

RECOMMEND_SIGNATURE = features.RECOMMEND


def versions(base_path: str) -> List[int]:
    """Complete versions under `base_path`, oldest first."""
    if not os.path.isdir(base_path):
        return []
    found = []
    for name in os.listdir(base_path):
        if name.isdigit() and os.path.exists(os.path.join(base_path, name, "saved_model.pb")):
            found.append(int(name))
    return sorted(found)


def latest_version(base_path: str) -> Tuple[int, str]:
    found = versions(base_path)
    if not found:
        raise FileNotFoundError(f"no servable version under {base_path}")
    return found[-1], os.path.join(base_path, str(found[-1]))


def recommend(model_dir: str, user_id: str, history: Sequence[str], device: str,
              timestamp: int, k: int = 10) -> List[Tuple[str, float]]:
    """Calls the `recommend` signature of the SavedModel at `model_dir` for one user."""
    import tensorflow as tf
    loaded = tf.saved_model.load(model_dir)
    fn = loaded.signatures[RECOMMEND_SIGNATURE]
    outputs: Dict[str, tf.Tensor] = fn(**{
        features.USER_ID: tf.constant([user_id]),
        features.HISTORY: tf.constant([list(history) or [""]]),
        features.DEVICE: tf.constant([device]),
        features.TIMESTAMP: tf.constant([timestamp], dtype=tf.int64),
        features.K: tf.constant([k], dtype=tf.int32)})
    ids = [v.decode("utf-8") for v in outputs[features.ITEM_IDS].numpy()[0]]
    scores = np.asarray(outputs[features.SCORES].numpy()[0], dtype=float)
    return list(zip(ids, scores.tolist()))
