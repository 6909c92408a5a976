"""Ranking task: P(engaged | user, item, context) trained on impressions vs engagements.

An MLP scores [query, item, query * item, retrieval signals] (the towers' fusion outputs; the
query carries the context; the retrieval signals are the pair's retrieval cosine and the
item's retrieval bias, so ranking builds on what retrieval learned about affinity and
popularity) to a logit; the loss is binary cross-entropy on LABEL over every row of the batch.
The exported `serving_default` signature returns sigmoid(logit) as "score". Under a
multi-replica strategy each replica returns its share of the GLOBAL batch mean (its rows'
sum / the global row count), like the retrieval task, so summed gradients are the
single-device gradient.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf

from hyperrec.components.model.retrieval import global_sum, replica_context


def pointwise_loss(logits: tf.Tensor, labels: tf.Tensor, loss_tracker: tf.keras.metrics.Mean,
                   auc: tf.keras.metrics.AUC) -> tf.Tensor:
    """This replica's share of the global-batch mean binary cross-entropy of [batch] logits
    against 0/1 labels (see the module docstring); records the global loss and the AUC."""
    targets = tf.cast(tf.reshape(labels, [-1]), tf.float32)
    row_losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    global_rows = global_sum(tf.cast(tf.size(row_losses), tf.float32))
    loss = tf.reduce_sum(row_losses) / tf.maximum(global_rows, 1.0)
    _, replicas = replica_context()
    loss_tracker.update_state(loss * replicas)  # metrics record the global value
    auc.update_state(targets, tf.sigmoid(logits))
    return loss


class RankingTask(tf.keras.layers.Layer):
    """Owns the ranking head, its loss and its metrics (loss, AUC)."""

    def __init__(self, hidden_units: Sequence[int], dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.dropout = dropout
        self.hidden = [tf.keras.layers.Dense(u, activation="relu") for u in self.hidden_units]
        self.hidden_dropout = tf.keras.layers.Dropout(dropout)
        self.logit = tf.keras.layers.Dense(1)
        self.loss_tracker = tf.keras.metrics.Mean(name="ranking_loss")
        self.auc = tf.keras.metrics.AUC(name="auc")

    def score_logits(self, query_embeddings: tf.Tensor, item_embeddings: tf.Tensor,
                     training: Optional[bool] = None,
                     retrieval_signals: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Ranking logits [batch] of each (query, item) row; retrieval_signals [batch, n]
        are extra pair features (see the module docstring)."""
        parts = [query_embeddings, item_embeddings, query_embeddings * item_embeddings]
        if retrieval_signals is not None:
            parts.append(retrieval_signals)
        hidden = tf.concat(parts, axis=1)
        for layer in self.hidden:
            hidden = self.hidden_dropout(layer(hidden), training=training)
        return tf.squeeze(self.logit(hidden), axis=1)

    def call(self, query_embeddings: tf.Tensor, item_embeddings: tf.Tensor,
             labels: tf.Tensor, training: Optional[bool] = None,
             retrieval_signals: Optional[tf.Tensor] = None) -> tf.Tensor:
        """This replica's share of the global mean binary cross-entropy; updates metrics."""
        logits = self.score_logits(query_embeddings, item_embeddings, training=training,
                                   retrieval_signals=retrieval_signals)
        return pointwise_loss(logits, labels, self.loss_tracker, self.auc)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "dropout": self.dropout}
