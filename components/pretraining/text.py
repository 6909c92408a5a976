"""Text pretraining: the project's own `TextEncoder` trained by masked-token prediction (MLM)
on product texts tokenised with Transform's own `tokenize` (`pretrain_text`)."""
from __future__ import annotations

import collections
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components import transform
from hyperrec.components.model.text_encoder import TextEncoder
from hyperrec.components.pretraining.saved_format import (TEXT, VOCABULARY,
                                                          PretrainedEncoderError,
                                                          new_text_encoder, save_encoder,
                                                          text_architecture)
from hyperrec.components.pretraining.training import EpochLines, PretrainingModel, quiet

MASK_RATE = 0.15


def tokenize_texts(texts: Sequence[str]) -> List[List[str]]:
    """Tokens of each text, by Transform's own tokenisation (`transform.tokenize`)."""
    if not texts:
        return []
    tokens = transform.tokenize(tf.constant(list(texts)), tf.constant([""] * len(texts)))
    return [[t.decode("utf-8") for t in row] for row in tokens.to_list()]


def build_vocabulary(token_lists: Sequence[Sequence[str]], size: int,
                     min_frequency: int = 1) -> List[str]:
    """The `size` most frequent tokens (ties: lexical order) seen >= min_frequency times."""
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [token for token, count in ranked if count >= min_frequency][:size]


def encode_tokens(token_lists: Sequence[Sequence[str]], vocabulary: Sequence[str],
            max_tokens: int) -> np.ndarray:
    """[n, max_tokens] ids: token = vocabulary position + 1, unknown = len + 1, 0 = pad."""
    index = {token: i + 1 for i, token in enumerate(vocabulary)}
    oov = len(vocabulary) + 1
    ids = np.zeros([len(token_lists), max_tokens], np.int64)
    for row, tokens in enumerate(token_lists):
        values = [index.get(t, oov) for t in tokens[:max_tokens]]
        ids[row, :len(values)] = values
    return ids


def mask_tokens(ids: np.ndarray, mask_id: int, rng: np.random.Generator,
                rate: float = MASK_RATE) -> Tuple[np.ndarray, np.ndarray]:
    """(inputs with [MASK] at the chosen positions, 0/1 weights of those positions): each
    in-vocabulary token (1 .. mask_id - 2) with probability `rate`, and at least one per row
    that has one. Out-of-vocabulary tokens are never targets: predicting "unknown" teaches
    nothing."""
    real = (ids > 0) & (ids < mask_id - 1)
    chosen = (rng.random(ids.shape) < rate) & real
    for row in np.flatnonzero(real.any(axis=1) & ~chosen.any(axis=1)):
        chosen[row, rng.choice(np.flatnonzero(real[row]))] = True
    return np.where(chosen, mask_id, ids), chosen.astype(np.float32)


class _MaskedLanguageModel(PretrainingModel):
    """TextEncoder's per-token states (its embeddings and blocks; the encoder pools them,
    MLM needs them per position) -> logits over the vocabulary."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = tf.keras.layers.Dense(encoder.vocab_size)

    def call(self, token_ids: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        encoder = self.encoder
        token_mask = tf.not_equal(token_ids, 0)
        states = (encoder.token_embedding(token_ids)
                  + encoder.position_embedding(tf.range(tf.shape(token_ids)[1])))
        for block in encoder.blocks:
            states = block(states, token_mask, training=training)
        return self.head(states)


def pretrain_text(texts: Sequence[str], out_dir: str, model_config: config_lib.ModelConfig,
                  max_tokens: int, vocab_size: int, epochs: int = 10, batch_size: int = 64,
                  learning_rate: float = 3e-3, holdout_fraction: float = 0.1,
                  min_frequency: int = 1, seed: int = 42, source: Optional[Dict] = None,
                  report: Callable[[str], None] = quiet) -> Dict[str, Any]:
    """Masked-token pretraining of TextEncoder(text_* sizes of model_config) on `texts`
    (distinct texts; a seeded holdout of them), saves encoder + vocabulary to out_dir;
    returns the manifest (held-out masked accuracy and the most-frequent-token baseline)."""
    texts = sorted(set(t for t in texts if t and t.strip()))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    n_holdout = max(1, int(round(holdout_fraction * len(texts))))
    holdout_texts = [texts[i] for i in order[:n_holdout]]
    train_texts = [texts[i] for i in order[n_holdout:]]
    if len(train_texts) < 2:
        raise PretrainedEncoderError(f"text pretraining needs more texts, got {len(texts)}")
    train_tokens = tokenize_texts(train_texts)
    vocabulary = build_vocabulary(train_tokens, vocab_size, min_frequency)
    oov_id, mask_id = len(vocabulary) + 1, len(vocabulary) + 2
    report(f"texts: {len(train_texts)} train, {len(holdout_texts)} held out; "
           f"vocabulary {len(vocabulary)} tokens")
    train_ids = encode_tokens(train_tokens, vocabulary, max_tokens)
    holdout_ids = encode_tokens(tokenize_texts(holdout_texts), vocabulary, max_tokens)
    # A fresh masking each epoch (seeded); the holdout's masking is fixed.
    holdout_inputs, holdout_weights = mask_tokens(holdout_ids, mask_id, rng)

    tf.keras.utils.set_random_seed(seed)
    architecture = text_architecture(model_config, max_tokens)
    encoder = new_text_encoder(architecture, len(vocabulary) + 3, model_config.dropout)
    mlm = _MaskedLanguageModel(encoder)
    mlm.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                weighted_metrics=["accuracy"])
    lines = EpochLines(report, "text")
    for epoch in range(epochs):
        inputs, weights = mask_tokens(train_ids, mask_id, rng)
        history = mlm.fit(inputs, train_ids, sample_weight=weights, batch_size=batch_size,
                          epochs=1, shuffle=True, verbose=0)
        lines.params = {"epochs": epochs}
        lines.on_epoch_end(epoch, {k: v[-1] for k, v in history.history.items()})
    logits = mlm.predict(holdout_inputs, batch_size=256, verbose=0)
    masked = holdout_weights > 0
    accuracy = float(np.mean(np.argmax(logits, axis=-1)[masked] == holdout_ids[masked]))
    # Baseline: always predict the train split's most frequent (in-vocabulary) token.
    train_counts = np.bincount(train_ids[(train_ids > 0) & (train_ids < oov_id)],
                               minlength=oov_id)
    most_frequent = int(np.argmax(train_counts))
    baseline = float(np.mean(holdout_ids[masked] == most_frequent))
    metrics = {"holdout_masked_accuracy": accuracy, "most_frequent_token_accuracy": baseline,
               "most_frequent_token": vocabulary[most_frequent - 1],
               "holdout_masked_tokens": int(masked.sum()), "train_texts": len(train_texts),
               "holdout_texts": len(holdout_texts), "epochs": epochs}
    report(f"text: held-out masked-token accuracy {accuracy:.3f} (most frequent token "
           f"{baseline:.3f})")
    manifest = {"kind": TEXT, "architecture": architecture, "vocabulary": VOCABULARY,
                "special_ids": {"padding": 0, "oov": oov_id, "mask": mask_id},
                "vocab_size": len(vocabulary) + 3, "metrics": metrics,
                "source": {**(source or {}), "mask_rate": MASK_RATE, "seed": seed,
                           "holdout_fraction": holdout_fraction,
                           "tokenizer": "components.transform.tokenize"}}
    save_encoder(encoder, out_dir, manifest, vocabulary)
    return manifest
