"""The two towers: items (content + ids) and queries (user, recent history, context).

Both map transformed features (see components/transform.py) to L2-normalised vectors of
`embedding_dim`, so a dot product is a cosine similarity. Items are embedded from content
(image, text, category, price) plus an optional item-id embedding, which lets the tower
embed cold-start items from their content. Each missing modality is MASKED: its encoder
output is replaced by a learned "missing" vector and the mask bit is an input of the fusion
layer, so the tower never reads an all-zero encoding as real content.

The item id is such a modality too. A cold-start item has no trained id (it maps to an
out-of-vocabulary bucket, whose embedding row no training example ever updates), so OOV
ids are masked like a missing image. Training on warm items alone would never exercise that
path, so training masks the id of the rows whose item was new at the time (`new_item_days`)
and of a random share of rows (`id_dropout`; DropoutNet, Volkovs et al. 2017): the tower
learns to embed an item from content alone, which is exactly what it must do for a new
item. `use_content=False` leaves the id alone (the id-only baseline).

Both towers also share a content space (model/item_content.py): the item embedding is a
weighted fusion-MLP output plus the item's content vector (category, words, colour), the
query embedding a weighted fusion-MLP output plus the mean content vector of the user's
recent items. The query tower pools the user's recent items (attention, mean or
recency-weighted: `history_pooling`), each represented by its id (the item tower's table,
shared: history and candidate ids index one vocabulary) and its content vector.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from hyperrec.components.config import HISTORY_POOLINGS
from hyperrec.schemas import features
from hyperrec.components.model.image_encoder import ImageEncoder, colour_signature, decode_png_batch
from hyperrec.components.model.item_content import ContentVector, ItemContentTable
from hyperrec.components.model.text_encoder import TextEncoder

HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7


@dataclasses.dataclass(frozen=True)
class VocabularySizes:
    """Embedding table sizes (padding + vocabulary + OOV buckets) read from Transform."""

    user: int
    item: int
    category: int
    device: int
    text: int


def _fusion_mlp(hidden_units: int, output_dim: int, dropout: float,
                name: str) -> tf.keras.Sequential:
    return tf.keras.Sequential([
        tf.keras.layers.Dense(hidden_units, activation="relu"),
        tf.keras.layers.Dropout(dropout),
        tf.keras.layers.Dense(output_dim),
    ], name=name)


class _Tower(tf.keras.layers.Layer):
    """A tower's `encode` returns its embedding with the parts the model also reads (the
    fusion output, the item bias); called as a layer, it is the embedding alone."""

    def call(self, inputs: Mapping[str, tf.Tensor],
             training: Optional[bool] = None) -> tf.Tensor:
        return self.encode(inputs, training)["embedding"]


class ItemTower(_Tower):
    """Transformed item features -> L2-normalised item embedding [batch, embedding_dim]."""

    def __init__(self, embedding_dim: int, id_embedding_dim: int, item_vocab_size: int,
                 category_vocab_size: int, text_vocab_size: int, text_max_tokens: int,
                 image_size: int, cnn_filters: Sequence[int], text_embedding_dim: int,
                 text_heads: int, text_layers: int, text_ff_dim: int, dropout: float,
                 use_item_id: bool = True, use_content: bool = True, id_dropout: float = 0.0,
                 num_oov_buckets: int = 1, fusion_units: Optional[int] = None,
                 content_residual: bool = False, new_item_days: float = 0.0,
                 fusion_weight: float = 1.0, bias_reads_id: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.embedding_dim = embedding_dim
        self.id_embedding_dim = id_embedding_dim
        # False: the retrieval bias reads the content alone, so an item's popularity can only
        # enter the score through the time terms (recent popularity, freshness): an id
        # memorises the train period's popularity, which is not what is in demand now.
        self.bias_reads_id = bias_reads_id or not use_content
        self.item_vocab_size = item_vocab_size
        self.category_vocab_size = category_vocab_size
        self.text_vocab_size = text_vocab_size
        self.text_max_tokens = text_max_tokens
        self.image_size = image_size
        self.cnn_filters = tuple(int(f) for f in cnn_filters)
        self.text_embedding_dim = text_embedding_dim
        self.text_heads = text_heads
        self.text_layers = text_layers
        self.text_ff_dim = text_ff_dim
        self.dropout = dropout
        self.use_item_id = use_item_id
        self.use_content = use_content
        self.id_dropout = id_dropout
        self.new_item_days = new_item_days
        self.fusion_weight = fusion_weight
        self.num_oov_buckets = num_oov_buckets
        self.fusion_units = fusion_units or 2 * embedding_dim
        if not (use_item_id or use_content):
            raise ValueError("the item tower needs the item id, the content, or both")

        self.item_id_embedding = tf.keras.layers.Embedding(
            item_vocab_size, id_embedding_dim, name="item_id_embedding")
        self.category_embedding = tf.keras.layers.Embedding(
            category_vocab_size, id_embedding_dim, name="category_embedding")
        self.image_encoder = ImageEncoder(self.cnn_filters, embedding_dim, name="image")
        self.text_encoder = TextEncoder(text_vocab_size, text_max_tokens, text_embedding_dim,
                                        text_heads, text_layers, text_ff_dim, dropout,
                                        name="text")
        self.fusion = _fusion_mlp(self.fusion_units, embedding_dim, dropout, "item_fusion")
        # The item's retrieval bias: how often it is chosen whoever asks (popularity, and for
        # id-less rows: how new items fare), which a unit-length embedding anchored at its
        # content cannot express. Zero at initialisation.
        self.bias_layer = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="bias")
        # The item's engagement rate when shown (its quality), for the affinity task
        # (model/affinity.py): like the retrieval bias, read from everything the tower knows
        # of the item, ids included, so each item can have its own.
        self.affinity_bias_layer = tf.keras.layers.Dense(1, kernel_initializer="zeros",
                                                         name="affinity_bias")
        # Learned stand-ins for an absent modality (see the module docstring). Created here,
        # not in build(): encode() is called directly, not through __call__.
        self.missing_image = self.add_weight(
            name="missing_image", shape=[self.embedding_dim], initializer="zeros")
        self.missing_text = self.add_weight(
            name="missing_text", shape=[self.text_embedding_dim], initializer="zeros")
        self.missing_id = self.add_weight(
            name="missing_id", shape=[self.id_embedding_dim], initializer="zeros")
        self.content_residual = content_residual and use_content
        # The shared content space (model/item_content.py), also used by the query tower.
        self.content_vector = ContentVector(
            embedding_dim, self.category_embedding, self.text_encoder.token_embedding,
            name="content_vector") if self.content_residual else None

    def id_mask(self, item_ids: tf.Tensor, training: Optional[bool],
                item_age_days: Optional[tf.Tensor] = None) -> tf.Tensor:
        """1.0 where the row's item id embedding is used, 0.0 where it is masked.

        Masked: padding (0) and out-of-vocabulary ids (the last `num_oov_buckets` rows of
        the table, never trained), and in training (when the tower has content to fall back
        on) a random `id_dropout` share of rows and the rows whose item was younger than
        `new_item_days` at the event (`item_age_days`, from Transform): new items are what
        cold-start items are at serving time, so they teach the id-less path both how
        content maps to taste and how new items fare (the shop's new-arrival exposure).
        """
        known = tf.logical_and(item_ids > 0,
                               item_ids < self.item_vocab_size - self.num_oov_buckets)
        if training and self.use_content:
            if self.id_dropout > 0:
                known = tf.logical_and(
                    known, tf.random.uniform(tf.shape(item_ids)) >= self.id_dropout)
            if self.new_item_days > 0 and item_age_days is not None:
                known = tf.logical_and(
                    known, tf.reshape(item_age_days, [-1]) >= self.new_item_days)
        return tf.cast(known, tf.float32)

    def content_parts(self, inputs: Mapping[str, tf.Tensor], training: Optional[bool],
                      ) -> Tuple[list, tf.Tensor]:
        """Image, text, category, price and the modality mask bits of each row, and the
        colour signature of its image."""
        pixels, image_mask = decode_png_batch(inputs[features.IMAGE_XF], self.image_size)
        image = self.image_encoder((pixels, image_mask))
        image += (1.0 - image_mask)[:, tf.newaxis] * self.missing_image
        text, text_mask = self.text_encoder(inputs[features.TITLE_TOKENS_XF],
                                            training=training)
        text += (1.0 - text_mask)[:, tf.newaxis] * self.missing_text
        parts = [image, text,
                 self.category_embedding(tf.reshape(inputs[features.CATEGORY_XF], [-1])),
                 tf.reshape(tf.cast(inputs[features.PRICE_XF], tf.float32), [-1, 1]),
                 tf.stack([image_mask, text_mask], axis=1)]
        return parts, colour_signature(pixels, image_mask)

    def encode(self, inputs: Mapping[str, tf.Tensor],
               training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
        """{"embedding": the retrieval embedding [batch, embedding_dim] (L2-normalised),
        "fusion": the fusion MLP's unit output (the ranking head's item input, free of the
        content anchoring), "bias": the retrieval bias [batch], "affinity_bias": the
        affinity task's item term [batch]}."""
        parts, colours = (self.content_parts(inputs, training) if self.use_content
                          else ([], None))
        content_input = list(parts)  # before the id parts join
        if self.use_item_id:
            item_ids = tf.reshape(inputs[features.ITEM_ID_XF], [-1])
            id_mask = self.id_mask(item_ids, training,
                                   inputs.get(features.ITEM_AGE_XF))[:, tf.newaxis]
            parts += [self.item_id_embedding(item_ids) * id_mask
                      + (1.0 - id_mask) * self.missing_id, id_mask]
        fused_input = tf.concat(parts, axis=1)
        fusion = tf.math.l2_normalize(self.fusion(fused_input, training=training), axis=1)
        embedding = fusion
        if self.content_vector is not None:
            # Unit fusion output (weighted) + unit content vector (see item_content.py).
            content = self.content_vector(tf.reshape(inputs[features.CATEGORY_XF], [-1]),
                                          inputs[features.TITLE_TOKENS_XF], colours)
            embedding = tf.math.l2_normalize(self.fusion_weight * fusion + content, axis=1)
        return {"embedding": embedding, "fusion": fusion,
                "affinity_bias": tf.squeeze(self.affinity_bias_layer(fused_input), 1),
                "bias": tf.squeeze(self.bias_layer(
                    fused_input if self.bias_reads_id else tf.concat(content_input, axis=1)),
                    1)}

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "id_embedding_dim": self.id_embedding_dim,
                "item_vocab_size": self.item_vocab_size,
                "category_vocab_size": self.category_vocab_size,
                "text_vocab_size": self.text_vocab_size,
                "text_max_tokens": self.text_max_tokens, "image_size": self.image_size,
                "cnn_filters": list(self.cnn_filters),
                "text_embedding_dim": self.text_embedding_dim,
                "text_heads": self.text_heads, "text_layers": self.text_layers,
                "text_ff_dim": self.text_ff_dim, "dropout": self.dropout,
                "use_item_id": self.use_item_id, "use_content": self.use_content,
                "id_dropout": self.id_dropout, "num_oov_buckets": self.num_oov_buckets,
                "fusion_units": self.fusion_units, "content_residual": self.content_residual,
                "new_item_days": self.new_item_days, "fusion_weight": self.fusion_weight,
                "bias_reads_id": self.bias_reads_id}


class HistoryAttention(tf.keras.layers.Layer):
    """Attention pooling of history item embeddings, queried by the user's context.

    Padding positions are masked out; a user with no history pools to zeros and the
    returned flag (0/1 per row) tells the tower so (no NaN from an all-masked softmax).
    """

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.query_projection = tf.keras.layers.Dense(units, name="query")
        self.key_projection = tf.keras.layers.Dense(units, name="key")

    def call(self, context: tf.Tensor, history: tf.Tensor,
             history_mask: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        query = self.query_projection(context)[:, tf.newaxis, :]
        keys = self.key_projection(history)
        logits = tf.reduce_sum(query * keys, axis=-1) / tf.sqrt(float(self.units))
        mask = tf.cast(history_mask, logits.dtype)
        logits += (1.0 - mask) * -1e9
        weights = tf.nn.softmax(logits, axis=1) * mask  # all-masked rows -> all zeros
        pooled = tf.reduce_sum(weights[:, :, tf.newaxis] * history, axis=1)
        return pooled, tf.reduce_max(mask, axis=1)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "units": self.units}


def history_weights(history_ids: tf.Tensor, known: tf.Tensor,
                    recency_decay: Optional[tf.Tensor] = None) -> tf.Tensor:
    """[batch, history] pooling weights summing to 1 over the known items (0 for a row
    without any): uniform, or with `recency_decay` d proportional to exp(-d * rank), rank 0
    for the most recent item. History is right-padded with the most recent item last, so
    an item's rank is (real items - 1 - its position); OOV items keep their place in the
    order but weigh nothing."""
    mask = tf.cast(known, tf.float32)
    weights = mask
    if recency_decay is not None:
        length = tf.reduce_sum(tf.cast(history_ids > 0, tf.int32), axis=1, keepdims=True)
        rank = tf.cast(length - 1 - tf.range(tf.shape(history_ids)[1])[tf.newaxis, :],
                       tf.float32)
        weights = mask * tf.exp(-recency_decay * tf.maximum(rank, 0.0))
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=1, keepdims=True))


class QueryTower(_Tower):
    """Transformed query features -> L2-normalised query embedding [batch, embedding_dim].

    `item_id_embedding` is the item tower's id table, shared so that history items and
    candidate items live in one id space. With `item_content` (see model/item_content.py)
    each history item is also represented by its category and its words, embedded with the
    item tower's `category_embedding` and text `token_embedding` (shared too). Ids without a
    trained row are masked as in the item tower: an out-of-vocabulary user (new since
    training) gets the learned "missing user" vector, which `id_dropout` trains on a random
    share of rows, and out-of-vocabulary history items (new items clicked since training)
    are left out of the attention like padding.

    `history_pooling` says how the recent items become one vector: "attention" (queried by
    the user's context; the content anchor is their mean), "mean", or "recency" (weights
    decaying with each step back in time at a learned rate, for both the fusion input and
    the content anchor: the last items say most about the current intent).

    `use_time_of_day` adds the request's hour and day of week to the user's context (the
    fusion input and the attention's query); False leaves them out (the ablation of time
    features; the inputs are still accepted and ignored).
    """

    def __init__(self, embedding_dim: int, id_embedding_dim: int, user_vocab_size: int,
                 device_vocab_size: int, item_id_embedding: tf.keras.layers.Embedding,
                 dropout: float, id_dropout: float = 0.0, num_oov_buckets: int = 1,
                 fusion_units: Optional[int] = None,
                 item_content: Optional[ItemContentTable] = None,
                 content_vector: Optional[ContentVector] = None, fusion_weight: float = 1.0,
                 history_pooling: str = "attention", use_time_of_day: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if history_pooling not in HISTORY_POOLINGS:
            raise ValueError(f"history_pooling must be one of {HISTORY_POOLINGS}, "
                             f"got {history_pooling!r}")
        self.history_pooling = history_pooling
        self.use_time_of_day = use_time_of_day
        self.embedding_dim = embedding_dim
        self.id_embedding_dim = id_embedding_dim
        self.user_vocab_size = user_vocab_size
        self.device_vocab_size = device_vocab_size
        self.dropout = dropout
        self.id_dropout = id_dropout
        self.num_oov_buckets = num_oov_buckets
        self.fusion_units = fusion_units or 2 * embedding_dim
        self.item_id_embedding = item_id_embedding
        if (item_content is None) != (content_vector is None):
            raise ValueError("item_content and content_vector come together")
        self.item_content = item_content
        self.content_vector = content_vector
        self.fusion_weight = fusion_weight
        self.user_embedding = tf.keras.layers.Embedding(
            user_vocab_size, id_embedding_dim, name="user_embedding")
        self.device_embedding = tf.keras.layers.Embedding(
            device_vocab_size, id_embedding_dim, name="device_embedding")
        self.hour_embedding = (tf.keras.layers.Embedding(
            HOURS_PER_DAY, id_embedding_dim, name="hour_embedding")
            if use_time_of_day else None)
        self.day_embedding = (tf.keras.layers.Embedding(
            DAYS_PER_WEEK, id_embedding_dim, name="day_of_week_embedding")
            if use_time_of_day else None)
        self.history_attention = (HistoryAttention(id_embedding_dim, name="history_attention")
                                  if history_pooling == "attention" else None)
        # softplus(raw) is the decay per step back; raw 0.0 -> 0.69: the item before the
        # last weighs half as much as the last at initialisation.
        self.recency_decay_raw = (self.add_weight(name="recency_decay", shape=[],
                                                  initializer="zeros")
                                  if history_pooling == "recency" else None)
        self.fusion = _fusion_mlp(self.fusion_units, embedding_dim, dropout, "query_fusion")
        # Created here, not in build(): encode() is called directly, not through __call__.
        self.missing_user = self.add_weight(
            name="missing_user", shape=[self.id_embedding_dim], initializer="zeros")

    def history_items(self, history_ids: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        """History item vectors [batch, history, dim] for the attention (id, plus content
        vector), and their content vectors alone (None without item content)."""
        ids = self.item_id_embedding(history_ids)
        if self.item_content is None:
            return ids, None
        content = self.content_vector(*self.item_content(history_ids))
        return tf.concat([ids, content], axis=-1), content

    def _known(self, ids: tf.Tensor, table_size: int) -> tf.Tensor:
        """True for ids with a vocabulary row: not padding (0), not an OOV bucket."""
        return tf.logical_and(ids > 0, ids < table_size - self.num_oov_buckets)

    def encode(self, inputs: Mapping[str, tf.Tensor],
               training: Optional[bool] = None) -> Dict[str, tf.Tensor]:
        """{"embedding": the retrieval embedding (L2-normalised), "fusion": the fusion MLP's
        unit output (the ranking head's query input)}."""
        def ids(name: str) -> tf.Tensor:
            return tf.reshape(inputs[name], [-1])

        user_ids = ids(features.USER_ID_XF)
        user_known = self._known(user_ids, self.user_vocab_size)
        if training and self.id_dropout > 0:
            user_known = tf.logical_and(
                user_known, tf.random.uniform(tf.shape(user_ids)) >= self.id_dropout)
        user_mask = tf.cast(user_known, tf.float32)[:, tf.newaxis]
        user = self.user_embedding(user_ids) * user_mask + (1.0 - user_mask) * self.missing_user
        context = [user, user_mask, self.device_embedding(ids(features.DEVICE_XF))]
        if self.use_time_of_day:
            context += [self.hour_embedding(ids(features.HOUR_XF)),
                        self.day_embedding(ids(features.DAY_OF_WEEK_XF))]
        context = tf.concat(context, axis=1)
        history_ids = inputs[features.HISTORY_XF]
        known = self._known(history_ids, self.item_id_embedding.input_dim)
        items, content = self.history_items(history_ids)
        if self.history_attention is not None:
            history, has_history = self.history_attention(context, items, known)
            weights = history_weights(history_ids, known)  # the content anchor: the mean
        else:
            weights = history_weights(
                history_ids, known, None if self.recency_decay_raw is None
                else tf.nn.softplus(self.recency_decay_raw))
            history = tf.reduce_sum(weights[:, :, tf.newaxis] * items, axis=1)
            has_history = tf.reduce_max(tf.cast(known, tf.float32), axis=1)
        fusion = tf.math.l2_normalize(self.fusion(
            tf.concat([context, history, has_history[:, tf.newaxis]], axis=1),
            training=training), axis=1)
        embedding = fusion
        if content is not None:
            # Anchor the query at the content of the recent items (model/item_content.py).
            embedding = tf.math.l2_normalize(self.fusion_weight * fusion + tf.math.l2_normalize(
                tf.reduce_sum(content * weights[:, :, tf.newaxis], axis=1), axis=1), axis=1)
        return {"embedding": embedding, "fusion": fusion}

    def get_config(self) -> Dict[str, Any]:
        # from_config rebuilds an UNSHARED copy of the id table; build_two_tower_model is the
        # way to get the shared one.
        return {**super().get_config(), "embedding_dim": self.embedding_dim,
                "id_embedding_dim": self.id_embedding_dim,
                "user_vocab_size": self.user_vocab_size,
                "device_vocab_size": self.device_vocab_size, "dropout": self.dropout,
                "id_dropout": self.id_dropout, "num_oov_buckets": self.num_oov_buckets,
                "fusion_units": self.fusion_units, "fusion_weight": self.fusion_weight,
                "history_pooling": self.history_pooling,
                "use_time_of_day": self.use_time_of_day,
                **{name: tf.keras.layers.serialize(layer) if layer is not None else None
                   for name, layer in self._shared_layers().items()}}

    def _shared_layers(self) -> Dict[str, Optional[tf.keras.layers.Layer]]:
        return {"item_id_embedding": self.item_id_embedding, "item_content": self.item_content,
                "content_vector": self.content_vector}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "QueryTower":
        config = dict(config)
        for name in ("item_id_embedding", "item_content", "content_vector"):
            if config.get(name) is not None:
                config[name] = tf.keras.layers.deserialize(config[name])
        return cls(**config)
