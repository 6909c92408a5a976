"""Freshness: a learned score for how long an item has been in the shop at request time.

Shops show new arrivals more (a "new in" shelf, launch campaigns), and tastes follow what is
current, so an item's chance of being chosen depends on its AGE at the moment of the request,
not only on who asks. Neither tower can express that: the item embedding is computed once per
catalogue export, and the query tower does not see items. So the retrieval logit of (query at
time t, item first seen at f) gets an additive term `freshness(t - f)`: a learned scalar per
age bucket (piecewise constant in days; zero at initialisation, so an untrained model ranks as
without it).

In training, in-batch candidates come from other rows' events, so a candidate's age is taken
at the QUERY's time: age = query day - (candidate event day - candidate age at its event).
A candidate first seen after the query's time was not in the shop then: it is no negative for
that query (the retrieval task masks it). At serving, an item first seen after the request's
time does not exist yet: `recommend` excludes it (trainer/signatures.py), and the term itself
gives a negative age no logit (0, not the brand-new bucket's), so it never rewards the future.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import tensorflow as tf


class FreshnessBias(tf.keras.layers.Layer):
    """Item age in days -> an additive retrieval logit, one learned value per age bucket.

    Args:
      boundaries_days: increasing bucket edges in days; ages below the first edge share the
        first bucket (brand new), ages from the last edge on the last (established).
    """

    def __init__(self, boundaries_days: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.boundaries_days = [float(b) for b in boundaries_days]
        if not self.boundaries_days or self.boundaries_days != sorted(set(self.boundaries_days)):
            raise ValueError("freshness boundaries must be non-empty and strictly increasing, "
                             f"got {boundaries_days}")
        self.bucket_logits = self.add_weight(
            name="bucket_logits", shape=[len(self.boundaries_days) + 1], initializer="zeros")

    def call(self, age_days: tf.Tensor) -> tf.Tensor:
        """The logit of each age (any shape); a negative age (not in the shop yet) gets 0."""
        age = tf.cast(age_days, tf.float32)
        buckets = tf.raw_ops.Bucketize(input=tf.maximum(age, 0.0),
                                       boundaries=self.boundaries_days)
        logits = tf.gather(self.bucket_logits, buckets)
        return tf.where(age < 0.0, tf.zeros_like(logits), logits)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "boundaries_days": self.boundaries_days}
