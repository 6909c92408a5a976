"""Retrieval task: in-batch softmax over the batch's positives with logQ correction.

For the B' positive (LABEL == 1) rows of a batch, every row's item is the positive of its own
query and a negative for the other queries. Logits are cosine / temperature. Popular items
appear as in-batch negatives more often than uniform sampling would make them, which biases
the softmax against them; subtracting log P(item is a positive) from each candidate's logit
(the sampling-bias "logQ" correction, Yi et al. 2019) removes that bias. P is the item's
share of the train split's positives, computed by Transform (see
transform.item_log_sampling_probability). A candidate that is the SAME item as a row's
positive (a repeated item in the batch) is not a negative for that row and is masked out.
A batch without positives contributes a loss of 0 and is not counted in the metrics.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

_MASKED_LOGIT = -1e9


class RetrievalTask(tf.keras.layers.Layer):
    """Owns the retrieval loss and its metrics (loss, in-batch top-1 accuracy)."""

    def __init__(self, temperature: float, item_log_q: Optional[Sequence[float]] = None,
                 item_vocab_size: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if item_log_q is None and item_vocab_size is None:
            raise ValueError("give item_log_q or item_vocab_size")
        self.temperature = temperature
        self._initial_log_q = (np.zeros(item_vocab_size, np.float32) if item_log_q is None
                               else np.asarray(item_log_q, np.float32))
        self.item_vocab_size = int(self._initial_log_q.shape[0])
        # A non-trainable weight (not a Python constant) so checkpoints carry it.
        self.item_log_q = self.add_weight(
            name="item_log_q", shape=[self.item_vocab_size], trainable=False,
            initializer=tf.keras.initializers.Constant(self._initial_log_q))
        self.loss_tracker = tf.keras.metrics.Mean(name="retrieval_loss")
        self.accuracy_tracker = tf.keras.metrics.Mean(name="retrieval_top1")

    def call(self, query_embeddings: tf.Tensor, item_embeddings: tf.Tensor,
             item_ids: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Returns the mean in-batch softmax loss over the positive rows (0 if none).

        query_embeddings, item_embeddings: [batch, dim] L2-normalised; item_ids [batch]
        transformed item ids; labels [batch] 1 engaged / 0 impression.
        """
        positive = tf.equal(tf.reshape(labels, [-1]), 1)
        queries = tf.boolean_mask(query_embeddings, positive)
        items = tf.boolean_mask(item_embeddings, positive)
        ids = tf.boolean_mask(tf.reshape(item_ids, [-1]), positive)
        num_positives = tf.shape(ids)[0]

        def softmax_loss() -> Tuple[tf.Tensor, tf.Tensor]:
            logits = tf.matmul(queries, items, transpose_b=True) / self.temperature
            logits -= tf.gather(self.item_log_q, ids)[tf.newaxis, :]
            same_item = tf.equal(ids[:, tf.newaxis], ids[tf.newaxis, :])
            not_diagonal = tf.logical_not(tf.cast(tf.eye(num_positives), tf.bool))
            logits = tf.where(tf.logical_and(same_item, not_diagonal), _MASKED_LOGIT, logits)
            targets = tf.range(num_positives)
            row_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), targets)
            return tf.reduce_mean(row_losses), tf.reduce_mean(tf.cast(correct, tf.float32))

        # Softmax cross-entropy rejects a [0, 0] logits matrix: no positives, no loss.
        loss, accuracy = tf.cond(num_positives > 0, softmax_loss,
                                 lambda: (tf.constant(0.0), tf.constant(0.0)))
        count = tf.cast(num_positives, tf.float32)
        self.loss_tracker.update_state(loss, sample_weight=tf.minimum(count, 1.0))
        self.accuracy_tracker.update_state(accuracy, sample_weight=count)
        return loss

    def get_config(self) -> Dict[str, Any]:
        # The log-probabilities are weights (restored from checkpoints), not config.
        return {**super().get_config(), "temperature": self.temperature,
                "item_vocab_size": self.item_vocab_size}
