"""The cheap content of every vocabulary item, for the query tower's history.

A user's recent items say most about their taste through what those items ARE (category,
colour and style words), not through their ids: an id embedding only learns that from
co-occurrence, which a small or fresh catalogue does not have. The query tower therefore
represents each history item by its id AND its content: category and title/description
tokens (embedded with the item tower's own category and token tables) and the colour
signature of its image (image_encoder.colour_signature), so "recently clicked red dresses"
lands near red dresses the model has never seen clicked (cold-start items).

The table is built once per training from the catalogue split (transformed with the same
TFT graph) and stored as non-trainable weights, indexed by transformed item id, so
checkpoints and the exported SavedModel carry it and serving needs no lookup of its own.
Rows of items absent from the catalogue, padding and OOV buckets hold zeros (no tokens,
category 0, no colour), which the towers treat as "no content".
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.components.model.image_encoder import COLOUR_SIGNATURE_DIM


COLOUR = "colour_signature"  # the extra key of content batches
COLOUR_DIM = COLOUR_SIGNATURE_DIM
ItemContent = Tuple[np.ndarray, np.ndarray, np.ndarray]  # categories, tokens, colours


def content_arrays(content_batches: Iterable[Mapping[str, Any]], table_size: int,
                   max_tokens: int, num_oov_buckets: int) -> ItemContent:
    """(categories [V] int32, tokens [V, max_tokens] int32, colours [V, 27] float32) from
    batches of TRANSFORMED catalogue features (ITEM_ID_XF, CATEGORY_XF, TITLE_TOKENS_XF)
    plus COLOUR, the colour signature of each item's image."""
    categories = np.zeros([table_size], np.int32)
    tokens = np.zeros([table_size, max_tokens], np.int32)
    colours = np.zeros([table_size, COLOUR_DIM], np.float32)
    for batch in content_batches:
        ids = np.reshape(np.asarray(batch[features.ITEM_ID_XF]), [-1])
        known = (ids > 0) & (ids < table_size - num_oov_buckets)  # OOV rows stay empty
        categories[ids[known]] = np.reshape(np.asarray(batch[features.CATEGORY_XF]),
                                            [-1])[known]
        tokens[ids[known]] = np.asarray(batch[features.TITLE_TOKENS_XF])[known]
        colours[ids[known]] = np.asarray(batch[COLOUR])[known]
    return categories, tokens, colours


@tf.keras.utils.register_keras_serializable(package="hyperrec")
class ItemContentTable(tf.keras.layers.Layer):
    """Transformed item ids [...] -> (category ids [...], token ids [..., max_tokens],
    colour signatures [..., 27])."""

    def __init__(self, table_size: int, max_tokens: int,
                 categories: Optional[np.ndarray] = None, tokens: Optional[np.ndarray] = None,
                 colours: Optional[np.ndarray] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table_size = table_size
        self.max_tokens = max_tokens
        categories = (np.zeros([table_size], np.int32) if categories is None
                      else np.asarray(categories, np.int32))
        tokens = (np.zeros([table_size, max_tokens], np.int32) if tokens is None
                  else np.asarray(tokens, np.int32))
        colours = (np.zeros([table_size, COLOUR_DIM], np.float32) if colours is None
                   else np.asarray(colours, np.float32))
        # Weights (not constants), so checkpoints and the SavedModel carry them.
        self.categories = self.add_weight(
            name="categories", shape=[table_size], dtype=tf.int32, trainable=False,
            initializer=tf.keras.initializers.Constant(categories))
        self.tokens = self.add_weight(
            name="tokens", shape=[table_size, max_tokens], dtype=tf.int32, trainable=False,
            initializer=tf.keras.initializers.Constant(tokens))
        self.colours = self.add_weight(
            name="colours", shape=[table_size, COLOUR_DIM], trainable=False,
            initializer=tf.keras.initializers.Constant(colours))

    def call(self, item_ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return (tf.gather(self.categories, item_ids), tf.gather(self.tokens, item_ids),
                tf.gather(self.colours, item_ids))

    def get_config(self) -> Dict[str, Any]:
        # The table values are weights (restored from checkpoints), not config.
        return {**super().get_config(), "table_size": self.table_size,
                "max_tokens": self.max_tokens}


@tf.keras.utils.register_keras_serializable(package="hyperrec")
class ContentVector(tf.keras.layers.Layer):
    """(category ids [...], token ids [..., T], colour signatures [..., 27]) -> unit vector
    [..., output_dim].

    The content space both towers share: the item tower adds an item's content vector to
    its embedding, the query tower adds the mean content vector of the user's recent items
    (both before the final L2 normalisation). Their dot product is then a learned bilinear
    similarity of categories and words that is already informative before training (the
    same category or word embeds the same on both sides), so "more like the items you just
    engaged with" holds for items without any interactions. The category and token tables
    are the item tower's own (shared, not copies).
    """

    def __init__(self, output_dim: int, category_embedding: tf.keras.layers.Embedding,
                 token_embedding: tf.keras.layers.Embedding, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.category_embedding = category_embedding
        self.token_embedding = token_embedding
        self.projection = tf.keras.layers.Dense(output_dim, use_bias=False, name="projection")

    def call(self, categories: tf.Tensor, tokens: tf.Tensor, colours: tf.Tensor) -> tf.Tensor:
        token_mask = tf.cast(tokens > 0, tf.float32)[..., tf.newaxis]
        words = tf.math.divide_no_nan(  # mean over the real (non-padding) tokens
            tf.reduce_sum(self.token_embedding(tokens) * token_mask, axis=-2),
            tf.reduce_sum(token_mask, axis=-2))
        vector = tf.concat([self.category_embedding(categories), words, colours], axis=-1)
        return tf.math.l2_normalize(self.projection(vector), axis=-1)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "output_dim": self.output_dim,
                "category_embedding": tf.keras.layers.serialize(self.category_embedding),
                "token_embedding": tf.keras.layers.serialize(self.token_embedding)}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "ContentVector":
        config = dict(config)
        for name in ("category_embedding", "token_embedding"):
            config[name] = tf.keras.layers.deserialize(config[name])
        return cls(**config)
