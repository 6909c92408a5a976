"""The two-tower Keras model: towers + retrieval and ranking tasks, one weighted loss.

Contract: `compute_loss(batch, training)` = retrieval_weight * retrieval loss +
ranking_weight * ranking loss, over a batch of TRANSFORMED features (the Trainer's dataset
applies the TFT layer). `train_step` / `test_step` call it, so `fit` / `evaluate` need no
compiled loss; metrics live on the task layers and Keras collects them. A training batch
may carry uniformly sampled catalogue items beside its rows (SAMPLED_NEGATIVE_PREFIX
features, added by the Trainer's dataset): the item tower embeds them too and retrieval
uses them as extra negatives. `call` returns the
tower embeddings and the ranking score (what export wraps into signatures).

Distribution: under a multi-replica strategy `compute_loss` is this replica's SHARE of the
global-batch loss (the tasks normalise by global counts and gather candidates across
replicas), and the optimizer sums gradients over replicas, so a step follows the gradient
of the single-device loss on the same global batch.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.components.model.affinity import AffinityTask
from hyperrec.components.model.freshness import FreshnessBias
from hyperrec.components.model.popularity_prior import RecentPopularity
from hyperrec.components.model.item_content import ItemContent, ItemContentTable
from hyperrec.components.model.ranking import RankingTask
from hyperrec.components.model.retrieval import RetrievalTask, replica_context
from hyperrec.components.model.towers import ItemTower, QueryTower, VocabularySizes
from hyperrec.components import config as config_lib


def retrieval_signals(query: Mapping[str, tf.Tensor],
                      item: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """[batch, 2]: the pair's retrieval cosine and the item's retrieval bias, inputs of the
    ranking head (from the towers' `encode` outputs). Read-only for ranking: the gradient
    stops here, so the ranking loss uses what retrieval learned without reshaping it."""
    cosine = tf.reduce_sum(query["embedding"] * item["embedding"], axis=1)
    return tf.stop_gradient(tf.stack([cosine, item["bias"]], axis=1))


# Batch features of the uniformly sampled catalogue items (mixed negatives) are the item
# tower's transformed features under this prefix, plus FIRST_SEEN_DAYS (days since the epoch).
SAMPLED_NEGATIVE_PREFIX = "sampled_negative/"
FIRST_SEEN_DAYS = "first_seen_days"


class TwoTowerModel(tf.keras.Model):
    """Query and item towers trained jointly for retrieval and ranking."""

    def __init__(self, item_tower: ItemTower, query_tower: QueryTower,
                 retrieval: RetrievalTask, ranking: RankingTask, retrieval_weight: float,
                 ranking_weight: float, ranking_uses_retrieval: bool = True,
                 freshness: Optional[FreshnessBias] = None,
                 recent_popularity: Optional[RecentPopularity] = None,
                 affinity: Optional[AffinityTask] = None, affinity_weight: float = 0.0,
                 served_score: str = "retrieval", exposure_weight: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if served_score == "affinity" and (affinity is None or recent_popularity is None):
            raise ValueError('served_score "affinity" needs the affinity task '
                             "(model.affinity_weight > 0) and the recent-popularity counts "
                             "(model.recent_popularity_counts)")
        self.item_tower = item_tower
        self.query_tower = query_tower
        self.retrieval = retrieval
        self.ranking = ranking
        self.retrieval_weight = retrieval_weight
        self.ranking_weight = ranking_weight
        self.ranking_uses_retrieval = ranking_uses_retrieval
        self.freshness = freshness  # None: items score the same at any age
        self.recent_popularity = recent_popularity  # None: nor by how popular lately
        # The engaged-vs-shown loss on the retrieval cosine (model/affinity.py).
        self.affinity = affinity
        self.affinity_weight = affinity_weight if affinity is not None else 0.0
        # What `recommend` ranks by (ModelConfig.served_score; trainer/signatures.py). The
        # exposure weight is a variable, so the SavedModel carries the value the Trainer
        # chose on the validation slice.
        self.served_score = served_score
        self.exposure_weight = tf.Variable(float(exposure_weight), trainable=False,
                                           name="exposure_weight")
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        # Fine-tuned pretrained encoders (components/pretraining/): their variables step with
        # their own optimizer at a lower rate. A second optimizer, not scaled gradients:
        # Adam's step is (nearly) invariant to the gradient's scale. Tracked as an attribute,
        # so checkpoints (BackupAndRestore) hold its slots too.
        self.encoder_optimizer: Optional[tf.keras.optimizers.Optimizer] = None
        self._encoder_layers: Tuple[tf.keras.layers.Layer, ...] = ()

    def set_encoder_optimizer(self, optimizer: tf.keras.optimizers.Optimizer,
                              layers: Sequence[tf.keras.layers.Layer]) -> None:
        """Trains the trainable variables of `layers` with `optimizer` instead of the
        model's (call after compile)."""
        self.encoder_optimizer = optimizer
        self._encoder_layers = tuple(layers)

    def _split_variables(self) -> Tuple[list, list]:
        """(the model optimizer's variables, the encoder optimizer's variables)."""
        variables = self.trainable_variables
        if self.encoder_optimizer is None:
            return variables, []
        encoder = {v.ref() for layer in self._encoder_layers for v in layer.trainable_variables}
        return ([v for v in variables if v.ref() not in encoder],
                [v for v in variables if v.ref() in encoder])

    def call(self, inputs: Mapping[str, tf.Tensor],
             training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
        query = self.query_tower.encode(inputs, training=training)
        item = self.item_tower.encode(inputs, training=training)
        score = tf.sigmoid(self.ranking.score_logits(
            query["fusion"], item["fusion"], training=training,
            retrieval_signals=self.ranking_signals(query, item)))
        return {"query_embedding": query["embedding"], "item_embedding": item["embedding"],
                "score": score}

    def ranking_signals(self, query: Mapping[str, tf.Tensor],
                        item: Mapping[str, tf.Tensor]) -> Optional[tf.Tensor]:
        """The retrieval signals the ranking head reads (None when configured off)."""
        return retrieval_signals(query, item) if self.ranking_uses_retrieval else None

    def compute_loss(self, batch: Mapping[str, tf.Tensor],  # pylint: disable=arguments-differ
                     training: Optional[bool] = None) -> tf.Tensor:
        """The weighted multi-task loss of a batch of transformed features (with label)."""
        query = self.query_tower.encode(batch, training=training)
        item = self.item_tower.encode(batch, training=training)
        labels = batch[features.LABEL_XF]
        loss = tf.constant(0.0)
        if self.retrieval_weight:
            time_terms = {}
            if self.freshness is not None or self.recent_popularity is not None:
                event_day = tf.reshape(batch[features.EVENT_DAY_XF], [-1])
                time_terms = {"query_days": event_day,
                              "recent_popularity": self.recent_popularity}
            if self.freshness is not None:
                time_terms.update(freshness=self.freshness, item_first_seen_days=(
                    event_day - tf.reshape(batch[features.ITEM_AGE_XF], [-1])))
            loss += self.retrieval_weight * self.retrieval(
                query["embedding"], item["embedding"], batch[features.ITEM_ID_XF], labels,
                item["bias"], sampled=self.sampled_negatives(batch, training), **time_terms)
        if self.affinity_weight:
            loss += self.affinity_weight * self.affinity(
                query["embedding"], item["embedding"], item["affinity_bias"], labels)
        if self.ranking_weight:
            # Ranking reads the fusion outputs: the retrieval embeddings are anchored at
            # shared content, which serves retrieval, not click propensity.
            loss += self.ranking_weight * self.ranking(
                query["fusion"], item["fusion"], labels, training=training,
                retrieval_signals=self.ranking_signals(query, item))
        return loss

    def sampled_negatives(self, batch: Mapping[str, tf.Tensor],
                          training: Optional[bool]) -> Optional[Dict[str, tf.Tensor]]:
        """The item tower's view of the batch's uniformly sampled catalogue items (the
        SAMPLED_NEGATIVE_PREFIX features the Trainer's dataset adds), None without them."""
        sampled = {name[len(SAMPLED_NEGATIVE_PREFIX):]: value for name, value in batch.items()
                   if name.startswith(SAMPLED_NEGATIVE_PREFIX)}
        if not sampled:
            return None
        first_seen = tf.reshape(sampled[FIRST_SEEN_DAYS], [-1])
        if training and features.EVENT_DAY_XF in batch:
            # Each sample is seen at the time of a random row of the batch, so the item tower
            # masks its id when it was new then, as it masks the rows of new items: otherwise
            # the id-less path (what cold items get at serving) would meet positives (new
            # items) but hardly any uniform negatives, and cold items would rank first.
            days = tf.reshape(batch[features.EVENT_DAY_XF], [-1])
            at = tf.random.uniform(tf.shape(first_seen), 0, tf.size(days), dtype=tf.int32)
            sampled[features.ITEM_AGE_XF] = tf.gather(days, at) - first_seen
        item = self.item_tower.encode(sampled, training=training)
        return {"embedding": item["embedding"], "bias": item["bias"],
                "ids": tf.reshape(sampled[features.ITEM_ID_XF], [-1]),
                "first_seen_days": first_seen}

    # Autograph is off for the steps: the model has no tensor-dependent Python control flow,
    # and autograph would otherwise transpile all of tf_keras (a package it does not
    # allowlist, unlike `keras`), which costs tens of seconds of tracing per step function.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        _, replicas = replica_context()
        with tf.GradientTape() as tape:
            loss = self.compute_loss(data, training=True)
            # Regularisation losses are per model, not per row: each replica adds its share.
            total = loss + tf.add_n(self.losses) / replicas if self.losses else loss
        rest, encoders = self._split_variables()
        gradients = tape.gradient(total, rest + encoders)
        self.optimizer.apply_gradients(zip(gradients[:len(rest)], rest))
        if encoders:
            self.encoder_optimizer.apply_gradients(zip(gradients[len(rest):], encoders))
        self.loss_tracker.update_state(loss * replicas)  # the global value (see tasks)
        return {m.name: m.result() for m in self.metrics}

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        _, replicas = replica_context()
        self.loss_tracker.update_state(self.compute_loss(data, training=False) * replicas)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self) -> Dict[str, Any]:
        return {"item_tower": tf.keras.layers.serialize(self.item_tower),
                "query_tower": tf.keras.layers.serialize(self.query_tower),
                "retrieval": tf.keras.layers.serialize(self.retrieval),
                "ranking": tf.keras.layers.serialize(self.ranking),
                "retrieval_weight": self.retrieval_weight,
                "ranking_weight": self.ranking_weight,
                "ranking_uses_retrieval": self.ranking_uses_retrieval,
                "freshness": (None if self.freshness is None
                              else tf.keras.layers.serialize(self.freshness)),
                "recent_popularity": (None if self.recent_popularity is None
                                      else tf.keras.layers.serialize(self.recent_popularity)),
                "affinity": (None if self.affinity is None
                             else tf.keras.layers.serialize(self.affinity)),
                "affinity_weight": self.affinity_weight,
                "served_score": self.served_score,
                "exposure_weight": float(self.exposure_weight.numpy()),
                "name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any],
                    custom_objects: Optional[Dict[str, Any]] = None) -> "TwoTowerModel":
        config = dict(config)
        for key in ("item_tower", "query_tower", "retrieval", "ranking", "freshness",
                    "recent_popularity", "affinity"):
            if config.get(key) is not None:
                config[key] = tf.keras.layers.deserialize(config[key],
                                                          custom_objects=custom_objects)
        return cls(**config)


def build_two_tower_model(model_config: config_lib.ModelConfig,
                          vocabulary_sizes: VocabularySizes,
                          item_log_q: Optional[Sequence[float]],
                          image_size: int, text_max_tokens: int,
                          num_oov_buckets: int = 1,
                          item_content: Optional[ItemContent] = None,
                          recent_counts: Optional[Tuple[int, np.ndarray]] = None,
                          catalogue_size: int = 0) -> TwoTowerModel:
    """The model for a config: the seam the Trainer and the Tuner build through.

    Args:
      model_config: sizes, task weights and dropout.
      vocabulary_sizes: embedding table sizes from the transform output.
      item_log_q: log sampling probability per transformed item id (None: no correction).
      image_size: side of the square PNGs (DataConfig.image_size).
      text_max_tokens: token sequence length (TransformConfig.text_max_tokens).
      num_oov_buckets: OOV buckets at the end of each id table (TransformConfig), whose
        rows no training example reaches: the towers mask them.
      item_content: (categories, tokens, colours) per transformed item id (see
        model/item_content.py)
        for the query tower's history items; None: history items by id only.
      recent_counts: (first day, [item table rows, days] counts) of
        model/popularity_prior.daily_window_counts, for the recent-popularity term (used when
        model_config.recent_popularity_counts is set).
      catalogue_size: the items the sampled negatives are drawn from (needed when
        model_config.sampled_negatives > 0).
    """
    if model_config.sampled_negatives and catalogue_size <= 0:
        raise ValueError("model.sampled_negatives needs the catalogue_size they come from")
    fusion_units = model_config.fusion_units or None
    item_tower = ItemTower(
        embedding_dim=model_config.embedding_dim,
        id_embedding_dim=model_config.id_embedding_dim,
        item_vocab_size=vocabulary_sizes.item, category_vocab_size=vocabulary_sizes.category,
        text_vocab_size=vocabulary_sizes.text, text_max_tokens=text_max_tokens,
        image_size=image_size, cnn_filters=model_config.cnn_filters,
        text_embedding_dim=model_config.text_embedding_dim,
        text_heads=model_config.text_heads, text_layers=model_config.text_layers,
        text_ff_dim=model_config.text_ff_dim, dropout=model_config.dropout,
        use_item_id=model_config.use_item_id, use_content=model_config.use_content,
        id_dropout=model_config.id_dropout, num_oov_buckets=num_oov_buckets,
        fusion_units=fusion_units, content_residual=item_content is not None,
        new_item_days=model_config.new_item_days, fusion_weight=model_config.fusion_weight,
        bias_reads_id=model_config.item_bias_reads_id, name="item_tower")
    content_table = None
    if item_tower.content_vector is not None:
        content_table = ItemContentTable(vocabulary_sizes.item, text_max_tokens, *item_content,
                                         name="item_content")
    query_tower = QueryTower(
        embedding_dim=model_config.embedding_dim,
        id_embedding_dim=model_config.id_embedding_dim,
        user_vocab_size=vocabulary_sizes.user, device_vocab_size=vocabulary_sizes.device,
        item_id_embedding=item_tower.item_id_embedding, dropout=model_config.dropout,
        id_dropout=model_config.id_dropout, num_oov_buckets=num_oov_buckets,
        fusion_units=fusion_units, item_content=content_table,
        content_vector=item_tower.content_vector if content_table else None,
        fusion_weight=model_config.fusion_weight,
        history_pooling=model_config.history_pooling,
        use_time_of_day=model_config.use_time_of_day, name="query_tower")
    retrieval = RetrievalTask(model_config.temperature, item_log_q=item_log_q,
                              item_vocab_size=vocabulary_sizes.item,
                              negatives=model_config.retrieval_negatives,
                              log_q_weight=model_config.log_q_weight,
                              catalogue_size=catalogue_size, name="retrieval")
    ranking = RankingTask(model_config.ranking_hidden_units or [2 * model_config.embedding_dim],
                          model_config.dropout, name="ranking")
    recent_popularity = None
    if model_config.recent_popularity_counts and recent_counts is not None:
        first_day, counts = recent_counts
        recent_popularity = RecentPopularity(model_config.recent_popularity_counts,
                                             table_rows=counts.shape[0], first_day=first_day,
                                             num_days=counts.shape[1], name="recent_popularity")
        recent_popularity.counts.assign(counts)
    return TwoTowerModel(item_tower, query_tower, retrieval, ranking,
                         retrieval_weight=model_config.retrieval_weight,
                         ranking_weight=model_config.ranking_weight,
                         ranking_uses_retrieval=model_config.ranking_uses_retrieval,
                         freshness=(FreshnessBias(model_config.freshness_days, name="freshness")
                                    if model_config.freshness_days else None),
                         recent_popularity=recent_popularity,
                         affinity=(AffinityTask(model_config.temperature, name="affinity")
                                   if model_config.affinity_weight else None),
                         affinity_weight=model_config.affinity_weight,
                         served_score=model_config.served_score,
                         exposure_weight=model_config.exposure_weight, name="two_tower")
