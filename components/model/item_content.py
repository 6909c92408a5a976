"""The cheap content of every vocabulary item, for the query tower's history.

A user's recent items say most about their taste through what those items ARE (category,
colour and style words), not through their ids: an id embedding only learns that from
co-occurrence, which a small or fresh catalogue does not have. The query tower therefore
represents each history item by its id AND its category and title/description tokens,
embedded with the item tower's own category and token tables, so "recently clicked red
dresses" lands near red dresses the model has never seen clicked (cold-start items).

The table is built once per training from the catalogue split (transformed with the same
TFT graph) and stored as non-trainable weights, indexed by transformed item id, so
checkpoints and the exported SavedModel carry it and serving needs no lookup of its own.
Rows of items absent from the catalogue, padding and OOV buckets hold zeros (no tokens,
category 0), which the towers treat as "no content".
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from components import transform


def content_arrays(transformed_batches: Iterable[Mapping[str, Any]], table_size: int,
                   max_tokens: int, num_oov_buckets: int) -> Tuple[np.ndarray, np.ndarray]:
    """(categories [table_size], tokens [table_size, max_tokens]) int32 from batches of
    TRANSFORMED catalogue features (ITEM_ID_XF, CATEGORY_XF, TITLE_TOKENS_XF)."""
    categories = np.zeros([table_size], np.int32)
    tokens = np.zeros([table_size, max_tokens], np.int32)
    for batch in transformed_batches:
        ids = np.reshape(np.asarray(batch[transform.ITEM_ID_XF]), [-1])
        known = (ids > 0) & (ids < table_size - num_oov_buckets)  # OOV rows stay empty
        categories[ids[known]] = np.reshape(np.asarray(batch[transform.CATEGORY_XF]),
                                            [-1])[known]
        tokens[ids[known]] = np.asarray(batch[transform.TITLE_TOKENS_XF])[known]
    return categories, tokens


@tf.keras.utils.register_keras_serializable(package="hyperrec")
class ItemContentTable(tf.keras.layers.Layer):
    """Transformed item ids [...] -> (category ids [...], token ids [..., max_tokens])."""

    def __init__(self, table_size: int, max_tokens: int,
                 categories: Optional[np.ndarray] = None, tokens: Optional[np.ndarray] = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table_size = table_size
        self.max_tokens = max_tokens
        categories = (np.zeros([table_size], np.int32) if categories is None
                      else np.asarray(categories, np.int32))
        tokens = (np.zeros([table_size, max_tokens], np.int32) if tokens is None
                  else np.asarray(tokens, np.int32))
        # Weights (not constants), so checkpoints and the SavedModel carry them.
        self.categories = self.add_weight(
            name="categories", shape=[table_size], dtype=tf.int32, trainable=False,
            initializer=tf.keras.initializers.Constant(categories))
        self.tokens = self.add_weight(
            name="tokens", shape=[table_size, max_tokens], dtype=tf.int32, trainable=False,
            initializer=tf.keras.initializers.Constant(tokens))

    def call(self, item_ids: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        return tf.gather(self.categories, item_ids), tf.gather(self.tokens, item_ids)

    def get_config(self) -> Dict[str, Any]:
        # The table values are weights (restored from checkpoints), not config.
        return {**super().get_config(), "table_size": self.table_size,
                "max_tokens": self.max_tokens}
