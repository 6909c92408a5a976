"""The catalogue as the exported model ranks it: each item's embedding and score terms.

The catalogue split is embedded ONCE, at export (and for the validation slice's ranking,
callbacks.ranking_validation), with the trained item tower; `recommend` then adds each
item's score bias, freshness and recent-popularity prior to the query's cosine similarity
(signatures.ServingModule). `item_score_terms` and `prior_logits` are shared with the
module's `new_catalogue_entries`, so a refreshed item scores as an exported one.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.components import transform
from hyperrec.components.model.two_tower import TwoTowerModel
from hyperrec.schemas import features


def embed_catalog(model: TwoTowerModel, tft_layer: tf.keras.Model,
                  catalog_batches: Iterable[Mapping[str, Any]],
                  popularity_weight: float = 0.0, prior_day: Optional[float] = None,
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embeds every catalogue item from its raw features with the trained item tower.

    Only item features are fed to the TFT layer; it returns the item outputs alone (see
    components/transform.py). Returns (item ids [C] bytes, embeddings [C, dim] float32,
    score biases [C] float32: temperature * the item tower's retrieval bias, so that
    cosine + score bias ranks as the retrieval logits do, plus temperature *
    popularity_weight * log Q(item), the train popularity the logQ correction removed;
    first-seen days [C] float32: days since the epoch, for the freshness term; prior [C]
    float32: temperature * the recent-popularity logit of the counts before `prior_day`
    (None: the snapshot at the end of the train data), 0 without that term).
    """
    popularity = model.recent_popularity
    if popularity is not None and prior_day is None:
        prior_day = popularity.first_day + popularity.num_days - 1

    # One graph for all batches (eager map_fn decoding would run per image in Python).
    @tf.function(autograph=False, reduce_retracing=True)
    def embed(raw: Dict[str, Any]) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        embedding, bias, item_ids = item_score_terms(model, tft_layer(raw), popularity_weight)
        counts = (None if popularity is None
                  else popularity.counts_at(item_ids, [prior_day])[0])
        return embedding, bias, prior_logits(model, counts, tf.shape(bias))

    ids, embeddings, biases, first_seen, priors = [], [], [], [], []
    for batch in catalog_batches:
        embedding, bias, prior = embed({name: batch[name] for name in transform.ITEM_INPUTS})
        embeddings.append(embedding.numpy())
        biases.append(bias.numpy())
        priors.append(prior.numpy())
        ids.append(tf.reshape(batch[features.ITEM_ID], [-1]).numpy())
        first_seen.append(first_seen_days(batch, len(ids[-1])))
    if not ids:
        raise ValueError("the catalogue split is empty: nothing to recommend from")
    return (np.concatenate(ids), np.concatenate(embeddings).astype(np.float32),
            np.concatenate(biases).astype(np.float32), np.concatenate(first_seen),
            np.concatenate(priors).astype(np.float32))


def item_score_terms(model: TwoTowerModel, transformed: Mapping[str, tf.Tensor],
                     popularity_weight: float) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(embedding [n, dim], score bias [n], item id rows [n]) of transformed items.

    The score bias is temperature * the item tower's retrieval bias (an id outside the
    vocabulary gets its OOV bucket's), plus temperature * popularity_weight * log Q(item);
    with the "affinity" served score, temperature * the affinity task's item bias.
    """
    item = model.item_tower.encode(transformed, training=False)
    item_ids = tf.reshape(transformed[features.ITEM_ID_XF], [-1])
    if model.served_score == "affinity":
        # The affinity task's item term: the item's engagement rate when shown (quality).
        return (item["embedding"], model.retrieval.temperature * item["affinity_bias"],
                item_ids)
    log_q = tf.gather(model.retrieval.item_log_q, item_ids)
    bias = model.retrieval.temperature * (item["bias"] + popularity_weight * log_q)
    return item["embedding"], bias, item_ids


def prior_logits(model: TwoTowerModel, counts: Optional[tf.Tensor],
                 shape: tf.Tensor) -> tf.Tensor:
    """temperature * the recent-popularity logit of `counts` (zeros of `shape` without the
    term: then `counts` is None); with the "affinity" served score, temperature *
    exposure_weight * log(1 + counts)."""
    if model.recent_popularity is None:
        return tf.zeros(shape, tf.float32)
    if model.served_score == "affinity":
        # The demand factor: log(1 + recent count), weighted (ModelConfig.exposure_weight).
        return (model.retrieval.temperature * model.exposure_weight
                * tf.math.log1p(tf.cast(counts, tf.float32)))
    return model.retrieval.temperature * model.recent_popularity(counts)


def first_seen_days(batch: Mapping[str, Any], size: int) -> np.ndarray:
    """[size] float32 days since the epoch at which each raw catalogue item was first seen
    (0 where the batch has no first-seen feature: the item counts as long established)."""
    value = batch.get(features.FIRST_SEEN)
    if value is None:
        return np.zeros(size, np.float32)
    if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value)
    seconds = tf.reshape(value, [-1]).numpy().astype(np.float64)
    return (seconds / features.SECONDS_PER_DAY).astype(np.float32)
