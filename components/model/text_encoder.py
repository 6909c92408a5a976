"""Text side of the item tower: a small Transformer encoder over title + description tokens.

Transform gives fixed-length token ids with 0 = padding. Token and learned position
embeddings feed post-norm Transformer blocks (multi-head self-attention and a feed-forward
network, each with a residual connection and layer normalisation); a masked mean over the
real tokens pools the sequence. A row with no tokens (empty title and description) pools
to zeros and gets mask 0, so the tower masks it instead of reading zeros as text.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import tensorflow as tf


class TransformerBlock(tf.keras.layers.Layer):
    """Self-attention + feed-forward, each wrapped in residual + LayerNormalization."""

    def __init__(self, model_dim: int, num_heads: int, ff_dim: int, dropout: float,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=max(1, model_dim // num_heads), dropout=dropout)
        self.attention_norm = tf.keras.layers.LayerNormalization()
        self.ff_hidden = tf.keras.layers.Dense(ff_dim, activation="gelu")
        self.ff_output = tf.keras.layers.Dense(model_dim)
        self.ff_dropout = tf.keras.layers.Dropout(dropout)
        self.ff_norm = tf.keras.layers.LayerNormalization()

    def call(self, inputs: tf.Tensor, token_mask: tf.Tensor,
             training: Optional[bool] = None) -> tf.Tensor:
        # [batch, query, key]: every position may attend to the real (non-padding) tokens.
        attention_mask = tf.logical_and(token_mask[:, tf.newaxis, :],
                                        tf.ones_like(token_mask)[:, :, tf.newaxis])
        attended = self.attention(inputs, inputs, attention_mask=attention_mask,
                                  training=training)
        hidden = self.attention_norm(inputs + attended)
        ff = self.ff_dropout(self.ff_output(self.ff_hidden(hidden)), training=training)
        return self.ff_norm(hidden + ff)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "model_dim": self.model_dim,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim, "dropout": self.dropout}


class TextEncoder(tf.keras.layers.Layer):
    """Token ids [batch, max_tokens] (0 = padding) -> (vector [batch, model_dim], mask
    [batch] with 1 where the text has at least one token)."""

    def __init__(self, vocab_size: int, max_tokens: int, model_dim: int, num_heads: int,
                 num_layers: int, ff_dim: int, dropout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.token_embedding = tf.keras.layers.Embedding(vocab_size, model_dim)
        self.position_embedding = tf.keras.layers.Embedding(max_tokens, model_dim)
        self.blocks = [TransformerBlock(model_dim, num_heads, ff_dim, dropout)
                       for _ in range(num_layers)]

    def call(self, token_ids: tf.Tensor,
             training: Optional[bool] = None) -> Tuple[tf.Tensor, tf.Tensor]:
        token_mask = tf.not_equal(token_ids, 0)
        positions = tf.range(tf.shape(token_ids)[1])
        hidden = self.token_embedding(token_ids) + self.position_embedding(positions)
        for block in self.blocks:
            hidden = block(hidden, token_mask, training=training)
        weights = tf.cast(token_mask, hidden.dtype)
        token_count = tf.reduce_sum(weights, axis=1, keepdims=True)
        pooled = tf.math.divide_no_nan(
            tf.reduce_sum(hidden * weights[:, :, tf.newaxis], axis=1), token_count)
        return pooled, tf.cast(token_count[:, 0] > 0, hidden.dtype)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "max_tokens": self.max_tokens, "model_dim": self.model_dim,
                "num_heads": self.num_heads, "num_layers": self.num_layers,
                "ff_dim": self.ff_dim, "dropout": self.dropout}
