"""Affinity task: the retrieval cosine learns who engages with what, from what they were shown.

The retrieval softmax (model/retrieval.py) sees only engaged rows: each positive's item
against the other positives of the batch. Its logit carries the global terms too (item bias,
freshness, recent popularity), and those explain most of who-engages-with-what in a shop
whose exposure follows popularity, so the cosine is left with little to learn: measured on
synthetic `default`, 2.8 % of the served score's variance depended on the user.

Impressions carry the missing signal. A row is an item the shop SHOWED the user, engaged
(label 1) or not (label 0), and the shop's choice of what to show does not depend on the
user's taste. So the engagement rate among shown items, as a function of (user, item), is
taste and item quality with exposure taken out: the "click" factor of
P(engaged) = P(shown) x P(engaged | shown) (ESMM, Ma et al. 2018), whose other factor the
global terms model. This task fits that factor with a pointwise logistic loss on every row:

    logit(user, item) = cosine(query, item) / temperature + item_affinity_bias(item) + b

where the cosine is the SAME retrieval cosine `recommend` serves, so taste reaches the
served score through the towers and not through a separate head. item_affinity_bias (the
item tower's, read from its ids and content: each item's quality) and b (the base rate)
absorb what does not depend on the user, so the cosine only has to carry what does.

Distribution: the ranking task's pointwise loss (model/ranking.py), each replica's share of
the global-batch mean.
"""
from __future__ import annotations

from typing import Any, Dict

import tensorflow as tf

from hyperrec.components.model.ranking import pointwise_loss


class AffinityTask(tf.keras.layers.Layer):
    """Owns the pointwise engaged-vs-shown loss on the retrieval cosine and its AUC."""

    def __init__(self, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature = temperature
        self.base_rate = self.add_weight(name="base_rate", shape=[], initializer="zeros")
        self.loss_tracker = tf.keras.metrics.Mean(name="affinity_loss")
        self.auc = tf.keras.metrics.AUC(name="affinity_auc")

    def logits(self, query_embeddings: tf.Tensor, item_embeddings: tf.Tensor,
               item_bias: tf.Tensor) -> tf.Tensor:
        """[batch] engaged-vs-shown logits of each row's (query, item) pair."""
        cosine = tf.reduce_sum(query_embeddings * item_embeddings, axis=1)
        return cosine / self.temperature + item_bias + self.base_rate

    def call(self, query_embeddings: tf.Tensor, item_embeddings: tf.Tensor,
             item_bias: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """This replica's share of the global mean binary cross-entropy; updates metrics.

        query_embeddings, item_embeddings: [batch, dim] L2-normalised retrieval embeddings;
        item_bias: [batch] the item tower's affinity bias; labels: [batch] 1 engaged / 0
        shown only."""
        return pointwise_loss(self.logits(query_embeddings, item_embeddings, item_bias), labels,
                              self.loss_tracker, self.auc)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}
