"""The recent-popularity prior of the served score: what is selling now, as a data snapshot.

On shop logs the strongest single signal is what many people chose lately (the
recent-popular baseline beats the all-time top sellers and most neural models). The two-tower
model cannot carry it: training corrects candidates for their sampling frequency (logQ), its
item bias is one number per item for the whole training window, and trends and new arrivals
move within days. So `recommend` adds a prior to each catalogue item's score:

    prior(item) = weight * log(1 + distinct users who engaged with it in the last `days`)

counted at export from the end of the training data, and stored in the SavedModel next to the
catalogue (so a catalogue refresh can renew it without retraining). The weight is chosen on
the validation slice (model/validation.py), never on the eval period: for each candidate
weight the model ranks the slice with a prior counted from the `days` BEFORE the slice, and
the best metric wins (ties: the smaller weight). Weight 0 is always a candidate, so the prior
is used only where it helps.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from hyperrec.schemas import features


def recent_user_counts(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
                       labels: np.ndarray, end: int, days: float) -> Dict[str, int]:
    """Item id -> distinct users with an engaged (label 1) event in [end - days, end)."""
    start = end - int(days * features.SECONDS_PER_DAY)
    keep = (labels == 1) & (timestamps >= start) & (timestamps < end)
    counts: Dict[str, int] = {}
    for item in {(u, i) for u, i in zip(users[keep].tolist(), items[keep].tolist())}:
        counts[item[1]] = counts.get(item[1], 0) + 1
    return counts


def prior_scores(catalog_item_ids: Sequence, counts: Dict[str, int],
                 weight: float) -> np.ndarray:
    """[C] float32 `weight * log1p(count)` in catalogue order (ids str or bytes; an item
    without recent engagement, e.g. a new arrival, scores 0)."""
    values = np.array([counts.get(i.decode() if isinstance(i, bytes) else i, 0)
                       for i in catalog_item_ids], np.float64)
    return (weight * np.log1p(values)).astype(np.float32)
