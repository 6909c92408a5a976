"""Retrieval task: in-batch softmax with logQ correction, negatives from the GLOBAL batch.

Every positive (LABEL == 1) row is a query whose own item is the target among a set of
candidate items; the other candidates are its negatives. Candidates are the items of the
batch: the positives' items (`negatives="positives"`, the classic in-batch softmax) or every
row's item (`negatives="batch"`: impressions join as negatives), plus optionally items drawn
uniformly from the catalogue (`sampled_*` arguments; mixed negative sampling, Yi et al. 2020):
in-batch candidates are the popular items the model must tell apart, uniform ones the long
tail and the never-engaged items, which in-batch softmax never shows as negatives.
Logits are cosine / temperature + the candidate's bias (the item tower's popularity term)
+ optionally its freshness at the query's time (model/freshness.py) and its recent
popularity before the query's day (model/popularity_prior.py); `recommend` ranks by
temperature * logit, i.e. cosine + temperature * (bias + freshness + recent popularity).

Sampling-bias (logQ) correction. Popular items are candidates more often than uniform
sampling would make them, which biases the softmax against them; subtracting log Q(item)
from each candidate's logit (Yi et al. 2019) removes that bias. Q is the item's share of the
train rows that supply candidates (positives, or all rows), computed by Transform (see
transform.item_log_sampling_probability). With M uniform samples from a catalogue of N items
beside B in-batch candidates, an item's expected count among the candidates is
B * Q(item) + M / N, and that is what is subtracted (in log) from every candidate's logit.
A candidate that is the SAME item as a row's target (a repeated item in the batch, or drawn
from the catalogue) is not a negative for that row and is masked out.

Negatives across replicas. Under a multi-replica `tf.distribute` strategy each replica holds
a slice of the global batch. The candidates are all-gathered
(`ReplicaContext.all_gather`, differentiable: the gradient of a gathered item flows back to
the replica that embedded it), so each replica scores its queries against the items of ALL
replicas, exactly the candidates one device would see with the whole batch. Each replica
returns its SHARE of the global mean loss (sum of its rows' losses / the global positive
count); the optimizer sums gradients over replicas, so training follows the gradient of the
single-device loss, and metrics record the global value. Uniform samples are not gathered:
each replica draws its own (the dataset splits them with the batch).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

_MASKED_LOGIT = -1e9
NEGATIVE_MODES = ("positives", "batch")


def replica_context() -> Tuple[Optional[tf.distribute.ReplicaContext], int]:
    """The current replica context and its replica count (None, 1 outside a strategy run)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: no per-replica computation here
        return None, 1
    return context, int(context.num_replicas_in_sync)


def global_sum(value: tf.Tensor) -> tf.Tensor:
    """`value` summed over the replicas in sync (itself with one replica)."""
    context, replicas = replica_context()
    if replicas == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def gather_candidates(item_embeddings: tf.Tensor, item_ids: tf.Tensor,
                      labels: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """All replicas' (embeddings, ids, labels) and where this replica's rows start in them.

    item_embeddings may carry extra float columns (bias, first seen): they are gathered
    alike."""
    context, replicas = replica_context()
    if replicas == 1:
        return item_embeddings, item_ids, labels, tf.constant(0, tf.int32)
    embeddings = context.all_gather(item_embeddings, axis=0)
    ids, gathered_labels = context.all_gather([item_ids, labels], axis=0)
    # Replicas may hold different row counts (the last, partial batch): offset by counts.
    sizes = context.all_gather(tf.shape(item_ids)[:1], axis=0)
    offset = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    return embeddings, ids, gathered_labels, offset


class RetrievalTask(tf.keras.layers.Layer):
    """Owns the retrieval loss and its metrics (loss, in-batch top-1 accuracy)."""

    def __init__(self, temperature: float, item_log_q: Optional[Sequence[float]] = None,
                 item_vocab_size: Optional[int] = None, negatives: str = "positives",
                 log_q_weight: float = 1.0, catalogue_size: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if item_log_q is None and item_vocab_size is None:
            raise ValueError("give item_log_q or item_vocab_size")
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        self.temperature = temperature
        self.negatives = negatives
        self.log_q_weight = log_q_weight  # 1 = the full correction, 0 = none
        self.catalogue_size = catalogue_size  # items the uniform samples come from (0: none)
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
             item_ids: tf.Tensor, labels: tf.Tensor,
             item_bias: Optional[tf.Tensor] = None,
             freshness: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
             query_days: Optional[tf.Tensor] = None,
             item_first_seen_days: Optional[tf.Tensor] = None,
             recent_popularity: Optional[Any] = None,
             sampled: Optional[Dict[str, tf.Tensor]] = None) -> tf.Tensor:
        """This replica's share of the global mean softmax loss over positive rows.

        query_embeddings, item_embeddings: [batch, dim] L2-normalised; item_ids [batch]
        transformed item ids; labels [batch] 1 engaged / 0 impression; item_bias [batch]
        (None: 0). freshness (model/freshness.py), with query_days [batch] (the rows' event
        days) and item_first_seen_days [batch]: each candidate's logit for a query gains
        freshness(its age at the query's time), and a candidate not yet in the shop at that
        time is masked. recent_popularity (model/popularity_prior.py), with query_days:
        each candidate's logit gains the logit of its recent engagement count before the
        query's day. sampled: uniformly drawn catalogue items, extra negatives of every
        query: {"embedding" [M, dim], "ids" [M], "bias" [M], "first_seen_days" [M]}
        (needs catalogue_size). With one replica the share is the whole mean; a (global)
        batch without positives gives 0.
        """
        item_ids = tf.reshape(item_ids, [-1])
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        is_positive = tf.equal(labels, 1)
        if item_bias is None:
            item_bias = tf.zeros_like(item_embeddings[:, 0])
        if item_first_seen_days is None:
            item_first_seen_days = tf.zeros_like(item_bias)
        # One gather for embeddings, biases and first-seen days: they ride as extra columns.
        candidates, candidate_ids, candidate_labels, offset = gather_candidates(
            tf.concat([item_embeddings, tf.reshape(item_bias, [-1, 1]),
                       tf.reshape(tf.cast(item_first_seen_days, item_embeddings.dtype),
                                  [-1, 1])], axis=1),
            item_ids, labels)
        candidates, candidate_bias, candidate_first_seen = (
            candidates[:, :-2], candidates[:, -2], candidates[:, -1])

        in_batch = (tf.equal(candidate_labels, 1) if self.negatives == "positives"
                    else tf.ones_like(candidate_labels, tf.bool))
        log_expected_count = self._log_q_of(tf.reduce_sum(tf.cast(in_batch, tf.float32)),
                                            sampled)
        targets = offset + tf.range(tf.shape(item_ids)[0])  # each row's own column
        is_target = tf.equal(targets[:, tf.newaxis],
                             tf.range(tf.shape(candidate_ids)[0])[tf.newaxis, :])
        time_terms = dict(freshness=freshness, query_days=query_days,
                          recent_popularity=recent_popularity)
        logits, masked = self._candidate_logits(
            query_embeddings, item_ids, candidates, candidate_ids, candidate_bias,
            candidate_first_seen, log_expected_count, is_target, **time_terms)
        # Impressions' items are not candidates in "positives" mode.
        masked = tf.logical_or(masked, tf.logical_not(in_batch)[tf.newaxis, :])
        if sampled is not None:
            sampled_logits, sampled_masked = self._candidate_logits(
                query_embeddings, item_ids, sampled["embedding"],
                tf.reshape(sampled["ids"], [-1]), sampled["bias"],
                tf.cast(sampled["first_seen_days"], query_embeddings.dtype),
                log_expected_count, None, **time_terms)
            logits = tf.concat([logits, sampled_logits], axis=1)
            masked = tf.concat([masked, sampled_masked], axis=1)
        logits = tf.where(masked, _MASKED_LOGIT, logits)

        # Rows that are not positives compute a loss too (cheaper than a gather) and drop it.
        row_losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
        weights = tf.cast(is_positive, logits.dtype)
        global_positives = global_sum(tf.reduce_sum(weights))
        loss = tf.reduce_sum(row_losses * weights) / tf.maximum(global_positives, 1.0)

        _, replicas = replica_context()
        # Metrics aggregate per-replica updates by sum / count: record the global value.
        self.loss_tracker.update_state(loss * replicas,
                                       sample_weight=tf.minimum(global_positives, 1.0))
        correct = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), targets)
        self.accuracy_tracker.update_state(tf.cast(correct, tf.float32), sample_weight=weights)
        return loss

    def _log_q_of(self, in_batch_count: tf.Tensor, sampled: Optional[Dict[str, tf.Tensor]],
                  ) -> Callable[[tf.Tensor], tf.Tensor]:
        """ids -> the logQ correction of those candidates: log Q(item), or with uniform
        samples log(B * Q(item) + M / N), the item's expected count among the candidates."""
        if sampled is None:
            return lambda ids: tf.gather(self.item_log_q, ids)
        if self.catalogue_size <= 0:
            raise ValueError("sampled negatives need the catalogue_size they are drawn from")
        uniform = (tf.cast(tf.size(sampled["ids"]), tf.float32)
                   / float(self.catalogue_size))
        return lambda ids: tf.math.log(
            in_batch_count * tf.exp(tf.gather(self.item_log_q, ids)) + uniform)

    def _candidate_logits(self, query_embeddings: tf.Tensor, item_ids: tf.Tensor,
                          candidates: tf.Tensor, candidate_ids: tf.Tensor,
                          candidate_bias: tf.Tensor, candidate_first_seen: tf.Tensor,
                          log_expected_count: Callable[[tf.Tensor], tf.Tensor],
                          is_target: Optional[tf.Tensor], freshness: Optional[Callable],
                          query_days: Optional[tf.Tensor], recent_popularity: Optional[Any],
                          ) -> Tuple[tf.Tensor, tf.Tensor]:
        """(logits [batch, candidates], masked [batch, candidates]) of one candidate block:
        cosine / temperature + bias - logQ (+ freshness, + recent popularity); masked where
        the candidate is the query's own item but not its target column (is_target; None:
        no column is a target) or not yet in the shop at the query's time."""
        logits = tf.matmul(query_embeddings, candidates, transpose_b=True) / self.temperature
        logits += (candidate_bias - self.log_q_weight * log_expected_count(candidate_ids)
                   )[tf.newaxis, :]
        not_target = (tf.ones_like(logits, tf.bool) if is_target is None
                      else tf.logical_not(is_target))
        masked = tf.logical_and(tf.equal(item_ids[:, tf.newaxis], candidate_ids[tf.newaxis, :]),
                                not_target)
        if freshness is not None:
            age = (tf.reshape(tf.cast(query_days, logits.dtype), [-1, 1])
                   - candidate_first_seen[tf.newaxis, :])
            logits += freshness(age)
            # Not in the shop yet at the query's time: no negative of that query.
            masked = tf.logical_or(masked, tf.logical_and(age < 0.0, not_target))
        if recent_popularity is not None:
            logits += recent_popularity(recent_popularity.counts_at(candidate_ids, query_days))
        return logits, masked

    def get_config(self) -> Dict[str, Any]:
        # The log-probabilities are weights (restored from checkpoints), not config.
        return {**super().get_config(), "temperature": self.temperature,
                "item_vocab_size": self.item_vocab_size, "negatives": self.negatives,
                "log_q_weight": self.log_q_weight, "catalogue_size": self.catalogue_size}
