"""The model run_fn trains: a compiled two-tower model sized by the Transform output.

The model itself (towers, tasks that own their losses and metrics) lives in
components/model/; this module sizes it from the Transform output's vocabularies, loads the
pretrained encoders when the config names them (components/pretraining/) and compiles it with
the learning-rate schedule.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from hyperrec.components import config as config_lib
from hyperrec.components import transform
from hyperrec.components.pretraining import loading
from hyperrec.components.model import item_content
from hyperrec.components.model.towers import VocabularySizes
from hyperrec.components.model.two_tower import TwoTowerModel, build_two_tower_model


def vocabulary_sizes(tft_output: tft.TFTransformOutput,
                     transform_config: config_lib.TransformConfig) -> VocabularySizes:
    """Embedding table sizes from the transform output's vocabularies."""
    def size(vocab_name: str) -> int:
        return transform.vocabulary_table_size(tft_output, vocab_name, transform_config)

    return VocabularySizes(user=size(transform.USER_VOCAB), item=size(transform.ITEM_VOCAB),
                           category=size(transform.CATEGORY_VOCAB),
                           device=size(transform.DEVICE_VOCAB),
                           text=size(transform.TEXT_VOCAB))


def learning_rate(model_config: config_lib.ModelConfig, total_steps: Optional[int]) -> Any:
    """A constant rate, or linear warmup to `learning_rate` then cosine decay to
    `learning_rate * min_lr_ratio` at `total_steps` (warmup steadies the first updates of
    freshly initialised attention and embeddings; the decay lets late epochs settle)."""
    if model_config.lr_schedule == "constant" or not total_steps:
        return model_config.learning_rate
    if model_config.lr_schedule != "warmup_cosine":
        raise ValueError(f"unknown lr_schedule {model_config.lr_schedule!r}")
    warmup_steps = int(model_config.warmup_fraction * total_steps)
    return tf.keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, warmup_target=model_config.learning_rate,
        warmup_steps=warmup_steps, decay_steps=max(1, total_steps - warmup_steps),
        alpha=model_config.min_lr_ratio)


def build_model(model_config: config_lib.ModelConfig, data_config: config_lib.DataConfig,
                transform_config: config_lib.TransformConfig,
                tft_output: tft.TFTransformOutput,
                total_steps: Optional[int] = None,
                content: Optional[item_content.ItemContent] = None,
                recent_counts: Optional[Tuple[int, np.ndarray]] = None,
                catalogue_size: int = 0) -> TwoTowerModel:
    """A compiled two-tower model sized by the transform output (call it in the strategy's
    scope). total_steps: the training length the learning-rate schedule spans; content:
    input.catalog_content for the history items (None: history by id only); recent_counts:
    input.recent_count_table (None: no recent-popularity term); catalogue_size: the pool
    of input.build_sampled_negatives (with model_config.sampled_negatives)."""
    model = build_two_tower_model(
        model_config, vocabulary_sizes(tft_output, transform_config),
        item_log_q=transform.item_log_sampling_probability(
            tft_output, transform_config, model_config.retrieval_negatives),
        image_size=data_config.image_size, text_max_tokens=transform_config.text_max_tokens,
        num_oov_buckets=transform_config.num_oov_buckets, item_content=content,
        recent_counts=recent_counts, catalogue_size=catalogue_size)
    loaded = loading.load_pretrained_encoders(
        model.item_tower, model_config, data_config.image_size,
        transform_config.text_max_tokens,
        loading.decode_vocabulary(tft_output.vocabulary_by_name(transform.TEXT_VOCAB))
        if model_config.pretrained.text else None, transform_config.num_oov_buckets)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate(model_config, total_steps)))
    if loaded.layers:
        logging.info("pretrained encoders (%s; %d Transform tokens with a pretrained row): %s",
                     model_config.pretrained.mode, loaded.tokens_copied,
                     {kind: manifest.get("metrics") for kind, manifest in loaded.manifests.items()})
        if model_config.pretrained.mode == "fine_tune":
            # The same schedule, scaled: the encoders move lr_multiplier times as far.
            encoder_config = dataclasses.replace(
                model_config, learning_rate=model_config.learning_rate
                * model_config.pretrained.lr_multiplier)
            model.set_encoder_optimizer(
                tf.keras.optimizers.Adam(learning_rate(encoder_config, total_steps)),
                loaded.layers)
    return model
