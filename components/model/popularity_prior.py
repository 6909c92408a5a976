"""Recent popularity: a learned score for how many people chose an item in the last days.

On shop logs the strongest single signal is what many people chose lately (the recent-popular
baseline beats the all-time top sellers and most neural models): trends and new arrivals move
within days. Neither tower can carry it: training corrects candidates for their overall
sampling frequency (logQ), and the item bias is one number per item for the whole training
window. So the retrieval logit of (query at day d, item) gets an additive term
`recent_popularity(count)`, where count = engagements with the item (distinct users per day)
in the `window_days` days before day d, bucketed, one learned logit per bucket (zero at
initialisation). The softmax learns how much "popular lately" is worth on top of who asks.

Time. Counts come from the train split, day by day (`daily_window_counts`), so a training
row sees only days strictly before its own: no row sees its own engagement or the future. At
serving the counts are a snapshot at the END of the train data, stored in the SavedModel as
the catalogue's prior (export.ServingModule.catalog_prior), so a catalogue refresh can renew
them without retraining; the validation ranking uses the snapshot at the slice's start.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features


def daily_window_counts(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
                        labels: np.ndarray, item_index: Dict[str, int], table_rows: int,
                        first_day: int, num_days: int, window_days: int) -> np.ndarray:
    """[table_rows, num_days] float32: entry [row, k] counts the engaged (label 1) events of
    the item in row `item_index[id]` on days first_day + k - window_days .. first_day + k - 1,
    one per user and day. Items outside `item_index` and events outside the days are left
    out."""
    day = (timestamps // features.SECONDS_PER_DAY).astype(np.int64) - first_day
    keep = (labels == 1) & (day >= 0) & (day < num_days)
    daily = np.zeros((table_rows, num_days + 1), np.float64)
    for user, item, k in {(u, i, int(k)) for u, i, k in zip(
            users[keep].tolist(), items[keep].tolist(), day[keep].tolist())}:
        row = item_index.get(item)
        if row is not None:
            daily[row, k + 1] += 1  # cumulative sums below: column k + 1 holds day k
    cumulative = np.cumsum(daily, axis=1)  # [:, k] = events on days < k
    upto = np.arange(num_days)
    since = np.maximum(upto - window_days, 0)
    return (cumulative[:, upto] - cumulative[:, since]).astype(np.float32)


class RecentPopularity(tf.keras.layers.Layer):
    """Recent engagement counts of items -> an additive retrieval logit per count bucket.

    Args:
      count_boundaries: increasing bucket edges of the count (e.g. 1, 2, 4: none, one, two
        or three, four and more).
      table_rows: rows of the count table (the item id vocabulary table size).
      first_day: the table's first day (days since the epoch).
      num_days: the table's columns; the last is the snapshot served after training.
    """

    def __init__(self, count_boundaries: Sequence[float], table_rows: int, first_day: int,
                 num_days: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count_boundaries = [float(b) for b in count_boundaries]
        if not self.count_boundaries or self.count_boundaries != sorted(
                set(self.count_boundaries)):
            raise ValueError("recent popularity boundaries must be non-empty and strictly "
                             f"increasing, got {count_boundaries}")
        self.table_rows, self.first_day, self.num_days = table_rows, first_day, num_days
        # Data, not a learned weight; a weight so that checkpoints and the SavedModel carry it.
        self.counts = self.add_weight(name="counts", shape=[table_rows, num_days],
                                      initializer="zeros", trainable=False)
        self.bucket_logits = self.add_weight(
            name="bucket_logits", shape=[len(self.count_boundaries) + 1], initializer="zeros")

    def counts_at(self, item_ids: tf.Tensor, days: tf.Tensor) -> tf.Tensor:
        """[len(days), len(item_ids)]: each item's count before each day (days since the
        epoch; days outside the table use its first / last column)."""
        day = tf.floor(tf.cast(tf.reshape(days, [-1]), tf.float64))
        column = tf.clip_by_value(tf.cast(day, tf.int64) - self.first_day, 0, self.num_days - 1)
        per_item = tf.gather(self.counts, tf.reshape(item_ids, [-1]))  # [items, days]
        return tf.transpose(tf.gather(per_item, column, axis=1))

    def call(self, counts: tf.Tensor) -> tf.Tensor:
        """The logit of each count (any shape)."""
        buckets = tf.raw_ops.Bucketize(input=tf.cast(counts, tf.float32),
                                       boundaries=self.count_boundaries)
        return tf.gather(self.bucket_logits, buckets)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "count_boundaries": self.count_boundaries,
                "table_rows": self.table_rows, "first_day": self.first_day,
                "num_days": self.num_days}
