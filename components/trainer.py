"""Training of the two-tower model: the `run_fn` that TFX's Trainer runs.

The Trainer receives the RAW ExampleGen examples and the Transform graph. The input pipeline
reads raw tf.Examples and applies the TFT Keras layer in `Dataset.map`, so training sees
exactly the transformation that the exported signatures apply at serving time. After
training, the catalogue split (beside train/eval in the same Examples artifact) is embedded
and exported with the model (components/export.py).

Seams for later work: `build_dataset` (distribution strategies will wrap it) and
`build_model` (keras-tuner will call it with sampled configs).
"""
from __future__ import annotations

import importlib.metadata
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components import export
from components import features
from components import transform
from components.model.towers import VocabularySizes
from components.model.two_tower import TwoTowerModel, build_two_tower_model
from pipeline import config as config_lib

_CATALOG_BATCH_SIZE = 256


def configs_from_custom_config(
        custom_config: Optional[Mapping[str, Any]],
) -> Tuple[config_lib.ModelConfig, config_lib.DataConfig, config_lib.TransformConfig]:
    """The Trainer's custom_config: {"model": ..., "data": ..., "transform": ...} as dicts."""
    custom_config = custom_config or {}
    return (config_lib.from_dict(config_lib.ModelConfig, custom_config.get("model") or {}),
            config_lib.from_dict(config_lib.DataConfig, custom_config.get("data") or {}),
            config_lib.from_dict(config_lib.TransformConfig,
                                 custom_config.get("transform") or {}))


def catalog_file_patterns(train_files: List[str]) -> List[str]:
    """The catalogue split's file patterns, derived from the train split's.

    TFX lays an Examples artifact out as <artifact uri>/Split-<name>/ and gives run_fn
    patterns like <uri>/Split-train/*; the catalogue is the sibling Split-catalog of the same
    artifact (the Trainer has no input of its own for it).
    """
    patterns = []
    for pattern in train_files:
        artifact_uri = os.path.dirname(os.path.dirname(pattern))
        patterns.append(os.path.join(artifact_uri, f"Split-{features.CATALOG_SPLIT}", "*"))
    return sorted(set(patterns))


def catalog_schema(raw_schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The raw schema restricted to item features: catalogue examples carry no query side."""
    schema = schema_pb2.Schema()
    schema.CopyFrom(raw_schema)
    del schema.feature[:]
    schema.feature.extend(f for f in raw_schema.feature if f.name in features.ITEM_FEATURES)
    return schema


def build_dataset(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
                  tft_output: tft.TFTransformOutput, batch_size: int, shuffle: bool,
                  seed: int, num_epochs: Optional[int]) -> tf.data.Dataset:
    """Batches of TRANSFORMED features from raw examples (the TFT layer runs in map).

    num_epochs None repeats forever (for a fixed number of train steps).
    """
    raw = data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle,
                                       shuffle_seed=seed, num_epochs=num_epochs,
                                       sloppy_ordering=False),
        tft_output.raw_metadata.schema)
    tft_layer = tft_output.transform_features_layer()

    # Not autograph-converted: see TwoTowerModel.train_step (tf_keras is not allowlisted).
    @tf.autograph.experimental.do_not_convert
    def apply_transform(raw_features: Dict[str, Any]) -> Dict[str, Any]:
        return tft_layer(raw_features)

    return raw.map(apply_transform, num_parallel_calls=tf.data.AUTOTUNE,
                   deterministic=True).prefetch(tf.data.AUTOTUNE)


def build_catalog_batches(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
                          tft_output: tft.TFTransformOutput) -> tf.data.Dataset:
    """RAW catalogue examples (item features only), in file order, read once."""
    return data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=_CATALOG_BATCH_SIZE, shuffle=False,
                                       num_epochs=1, sloppy_ordering=False),
        catalog_schema(tft_output.raw_metadata.schema))


def vocabulary_sizes(tft_output: tft.TFTransformOutput,
                     transform_config: config_lib.TransformConfig) -> VocabularySizes:
    """Embedding table sizes from the transform output's vocabularies."""
    def size(vocab_name: str) -> int:
        return transform.vocabulary_table_size(tft_output, vocab_name, transform_config)

    return VocabularySizes(user=size(transform.USER_VOCAB), item=size(transform.ITEM_VOCAB),
                           category=size(transform.CATEGORY_VOCAB),
                           device=size(transform.DEVICE_VOCAB),
                           text=size(transform.TEXT_VOCAB))


def build_model(model_config: config_lib.ModelConfig, data_config: config_lib.DataConfig,
                transform_config: config_lib.TransformConfig,
                tft_output: tft.TFTransformOutput) -> TwoTowerModel:
    """A compiled two-tower model sized by the transform output."""
    model = build_two_tower_model(
        model_config, vocabulary_sizes(tft_output, transform_config),
        item_log_q=transform.item_log_sampling_probability(tft_output, transform_config),
        image_size=data_config.image_size, text_max_tokens=transform_config.text_max_tokens)
    model.compile(optimizer=tf.keras.optimizers.Adam(model_config.learning_rate))
    return model


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """The entry point TFX's Trainer calls (`components.trainer.run_fn`).

    Trains on the train split, validates on eval, logs to TensorBoard under
    fn_args.model_run_dir, and exports to fn_args.serving_model_dir (see
    components/export.py). custom_config: {"model", "data", "transform"} config dicts.
    Steps: ModelConfig.train_steps (else the Trainer's train_args.num_steps) total steps
    spread over `epochs`; None means `epochs` full passes over the train split.
    """
    model_config, data_config, transform_config = configs_from_custom_config(
        fn_args.custom_config)
    tf.keras.utils.set_random_seed(model_config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)

    train_steps = model_config.train_steps or fn_args.train_steps
    eval_steps = model_config.eval_steps or fn_args.eval_steps
    train_dataset = build_dataset(
        fn_args.train_files, fn_args.data_accessor, tft_output, model_config.batch_size,
        shuffle=True, seed=model_config.seed, num_epochs=None if train_steps else 1)
    eval_dataset = build_dataset(
        fn_args.eval_files, fn_args.data_accessor, tft_output, model_config.batch_size,
        shuffle=False, seed=model_config.seed, num_epochs=1)

    model = build_model(model_config, data_config, transform_config, tft_output)
    steps_per_epoch = (math.ceil(train_steps / model_config.epochs) if train_steps else None)
    history = model.fit(
        train_dataset, epochs=model_config.epochs, steps_per_epoch=steps_per_epoch,
        validation_data=eval_dataset, validation_steps=eval_steps,
        callbacks=[tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir,
                                                  update_freq="epoch")],
        verbose=2)
    logging.info("training history: %s", history.history)

    catalog = build_catalog_batches(catalog_file_patterns(fn_args.train_files),
                                    fn_args.data_accessor, tft_output)
    export.export_serving_model(model, tft_output, catalog, fn_args.serving_model_dir)
    _record_keras(fn_args.model_run_dir)


def _record_keras(model_run_dir: str) -> None:
    """Writes which Keras trained this model (tests compare it with a plain import)."""
    package = tf.keras.Model.__module__.split(".")[0]
    record = {"module": package,
              "version": importlib.metadata.version(
                  "tf-keras" if package == "tf_keras" else "keras")}
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "keras.json"), "w") as f:
        f.write(json.dumps(record))
