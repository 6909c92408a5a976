"""The Trainer's data: fn_args' files as datasets, the catalogue, and what the model is built from.

The Trainer receives the RAW ExampleGen examples and the Transform graph. The input pipeline
reads raw tf.Examples and applies the TFT Keras layer in `Dataset.map`, so training sees
exactly the transformation that the exported signatures apply at serving time. The catalogue
split (beside train/eval in the same Examples artifact) feeds the history items' content,
the sampled negatives and the export.

`TrainingData.read` is the one place run_fn's fn_args are read for data: it builds every
dataset both training phases and the export use, so the fit loop, the callbacks and the
export take the TrainingData, never fn_args' files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from hyperrec.components import config as config_lib
from hyperrec.components import transform
from hyperrec.components.evaluation import ranking_validation as validation_lib
from hyperrec.components.model import item_content, popularity_prior
from hyperrec.components.model.image_encoder import colour_signature, decode_png_batch
from hyperrec.components.model.two_tower import FIRST_SEEN_DAYS, SAMPLED_NEGATIVE_PREFIX
from hyperrec.schemas import features

_CATALOG_BATCH_SIZE = 256
_COUNT_BATCH_SIZE = 1024
WARMUP_EXAMPLES = 8  # eval examples recorded as serving warmup requests


@dataclasses.dataclass
class TrainingData:
    """What run_fn trains and exports from, read once from fn_args (nowhere else).

    catalog: raw catalogue batches (each iteration reads the split again); content: the
    history items' content (`catalog_content`); warmup_examples: serialized eval examples
    for the export's warmup requests; train: the selection's rows (before the validation
    slice, all without one); validation: the slice (from `split` on); full_train: every train
    row, for the refit; train_steps: ModelConfig's, else the Trainer's train args;
    train_count: rows of `train` (None when steps are given); eval_steps: validation steps
    (ModelConfig's, else the Trainer's, else derived on multi-worker; None: the whole slice);
    events: the train split's events; validation_catalogue: the protocol's catalogue for the
    ranking metric; recent_counts: `recent_count_table`; negatives, catalogue_size:
    `build_sampled_negatives` (None, 0 without mixed negatives).
    """

    tft_output: tft.TFTransformOutput
    catalog: Optional[tf.data.Dataset] = None
    content: Optional[item_content.ItemContent] = None
    warmup_examples: List[bytes] = dataclasses.field(default_factory=list)
    train: Optional[tf.data.Dataset] = None
    validation: Optional[tf.data.Dataset] = None
    full_train: Optional[tf.data.Dataset] = None
    train_steps: Optional[int] = None
    train_count: Optional[int] = None
    eval_steps: Optional[int] = None
    events: Optional[validation_lib.protocol.Events] = None
    split: Optional[int] = None
    validation_catalogue: Optional[validation_lib.protocol.Catalogue] = None
    recent_counts: Optional[Tuple[int, np.ndarray]] = None
    negatives: Optional[tf.data.Dataset] = None
    catalogue_size: int = 0

    @classmethod
    def read(cls, fn_args: tfx.components.FnArgs, model_config: config_lib.ModelConfig,
             data_config: config_lib.DataConfig, transform_config: config_lib.TransformConfig,
             strategy: tf.distribute.Strategy) -> "TrainingData":
        """fn_args' Transform graph and splits: the train split's events when the validation
        slice or the recent-popularity term needs them, the catalogue and what is built from
        it, the datasets of both training phases and the warmup examples."""
        train_files, accessor = fn_args.train_files, fn_args.data_accessor
        data = cls(tft_output=tft.TFTransformOutput(fn_args.transform_graph_path
                                                    or fn_args.transform_output),
                   train_steps=model_config.train_steps or fn_args.train_steps,
                   eval_steps=model_config.eval_steps or fn_args.eval_steps or None)
        if model_config.validation_days > 0 or model_config.recent_popularity_counts:
            data.events = validation_lib.read_events(train_files)
        if model_config.validation_days > 0 and model_config.validation_metric:
            data.validation_catalogue = validation_lib.protocol.read_catalogue(
                validation_lib.examples_uri(train_files))
        if model_config.recent_popularity_counts:
            data.recent_counts = recent_count_table(model_config, data.tft_output,
                                                    transform_config, data.events)
        if model_config.validation_days > 0:
            data.split = validation_lib.split_time(data.events.timestamps,
                                                   model_config.validation_days)
            validation_count = int((data.events.timestamps >= data.split).sum())
            logging.info("validation slice: train rows from %d on (%d of %d)", data.split,
                         validation_count, len(data.events))
            data.train_count = len(data.events) - validation_count
            # Multi-worker training needs the eval length in steps: each worker sees a
            # shard, and a worker running out of batches first would leave the others waiting.
            if (data.eval_steps is None
                    and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
                data.eval_steps = max(1, math.ceil(validation_count / model_config.batch_size))
        elif not data.train_steps:
            data.train_count = count_examples(train_files, accessor, data.tft_output)

        def dataset(shuffle: bool, num_epochs: Optional[int], **since_or_before: int):
            return build_dataset(train_files, accessor, data.tft_output, model_config.batch_size,
                                 shuffle=shuffle, seed=model_config.seed, num_epochs=num_epochs,
                                 **since_or_before)

        data.train = dataset(True, None, before=data.split)
        if data.split is not None:
            data.validation = dataset(False, None if data.eval_steps else 1, since=data.split)
            if model_config.refit_full_train:
                data.full_train = dataset(True, None)
        catalog_patterns = catalog_file_patterns(train_files)
        data.catalog = build_catalog_batches(catalog_patterns, accessor, data.tft_output)
        data.content = catalog_content(data.catalog, data.tft_output, transform_config,
                                       data_config)
        if model_config.sampled_negatives:
            data.negatives, data.catalogue_size = build_sampled_negatives(
                catalog_patterns, accessor, data.tft_output, model_config.sampled_negatives,
                model_config.seed)
            logging.info("mixed negatives: %d per batch, uniform over %d catalogue items",
                         model_config.sampled_negatives, data.catalogue_size)
        data.warmup_examples = read_serialized_examples(fn_args.eval_files, WARMUP_EXAMPLES)
        return data

    def training_batches(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """`dataset` with the sampled negatives beside each batch (as is without them)."""
        return with_sampled_negatives(dataset, self.negatives)


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


def _schema_of(raw_schema: schema_pb2.Schema, names: Tuple[str, ...]) -> schema_pb2.Schema:
    """The raw schema restricted to the features `names`."""
    schema = schema_pb2.Schema()
    schema.CopyFrom(raw_schema)
    del schema.feature[:]
    schema.feature.extend(f for f in raw_schema.feature if f.name in names)
    return schema


def catalog_schema(raw_schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The raw schema restricted to what catalogue examples carry: item features and the
    cold-start flag, no query side."""
    return _schema_of(raw_schema, features.ITEM_FEATURES + (features.COLD_START,))


def _distribute_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shards by element for multi-worker training: a split may be one file, so sharding by
    FILE (the default for file datasets) would leave a worker without data."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def build_dataset(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
                  tft_output: tft.TFTransformOutput, batch_size: int, shuffle: bool,
                  seed: int, num_epochs: Optional[int], before: Optional[int] = None,
                  since: Optional[int] = None) -> tf.data.Dataset:
    """Batches of TRANSFORMED features from raw examples (the TFT layer runs in map).

    num_epochs None repeats forever (for a fixed number of steps per epoch). before /
    since: keep only rows with timestamp < before / >= since (the validation slice).
    """
    raw = data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle,
                                       shuffle_seed=seed, num_epochs=num_epochs,
                                       sloppy_ordering=False),
        tft_output.raw_metadata.schema)
    if before is not None or since is not None:
        low = tf.constant(since if since is not None else -2**63, tf.int64)
        high = tf.constant(before if before is not None else 2**63 - 1, tf.int64)

        @tf.autograph.experimental.do_not_convert
        def in_range(row: Dict[str, Any]) -> tf.Tensor:
            timestamp = tf.reshape(row[features.TIMESTAMP], [])
            return tf.logical_and(timestamp >= low, timestamp < high)

        raw = raw.unbatch().filter(in_range).batch(batch_size)
    tft_layer = tft_output.transform_features_layer()

    # Not autograph-converted: see TwoTowerModel.train_step (tf_keras is not allowlisted).
    @tf.autograph.experimental.do_not_convert
    def apply_transform(raw_features: Dict[str, Any]) -> Dict[str, Any]:
        return tft_layer(raw_features)

    dataset = raw.map(apply_transform, num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True).prefetch(tf.data.AUTOTUNE)
    return _distribute_options(dataset)


def build_catalog_batches(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
                          tft_output: tft.TFTransformOutput) -> tf.data.Dataset:
    """RAW catalogue examples (catalog_schema), in file order, read once."""
    return data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=_CATALOG_BATCH_SIZE, shuffle=False,
                                       num_epochs=1, sloppy_ordering=False),
        catalog_schema(tft_output.raw_metadata.schema))


def build_sampled_negatives(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
                            tft_output: tft.TFTransformOutput, count: int,
                            seed: int) -> Tuple[tf.data.Dataset, int]:
    """(endless batches of `count` catalogue items drawn uniformly, the number of items
    they are drawn from) for mixed negatives (model/retrieval.py).

    The pool is the catalogue as training knew it: items first seen after the train cutoff
    (COLD_START, the eval period's new items) are left out. Each pass over the pool is a
    fresh permutation (the pool fits the shuffle buffer), so draws are uniform. Batches hold
    the item tower's transformed features under SAMPLED_NEGATIVE_PREFIX, plus the items'
    first-seen days.
    """
    pool = build_catalog_batches(file_patterns, data_accessor, tft_output).unbatch()

    @tf.autograph.experimental.do_not_convert
    def known_at_training(item: Dict[str, Any]) -> tf.Tensor:
        return tf.equal(tf.reshape(item[features.COLD_START], []), 0)

    pool = pool.filter(known_at_training)
    size = int(pool.reduce(0, lambda n, _: n + 1))
    if size == 0:
        raise ValueError("sampled negatives: the catalogue has no item known at training")
    tft_layer = tft_output.transform_features_layer()

    @tf.autograph.experimental.do_not_convert
    def transformed(items: Dict[str, Any]) -> Dict[str, Any]:
        outputs = tft_layer({name: items[name] for name in transform.ITEM_INPUTS})
        days = (tf.cast(tf.reshape(items[features.FIRST_SEEN], [-1]), tf.float32)
                / float(features.SECONDS_PER_DAY))
        return {SAMPLED_NEGATIVE_PREFIX + name: value
                for name, value in {**outputs, FIRST_SEEN_DAYS: days}.items()}

    batches = (pool.cache().shuffle(size, seed=seed, reshuffle_each_iteration=True).repeat()
               .batch(count, drop_remainder=True)
               .map(transformed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    return batches, size


def with_sampled_negatives(dataset: tf.data.Dataset,
                           negatives: Optional[tf.data.Dataset]) -> tf.data.Dataset:
    """Each training batch with a batch of sampled negatives beside its rows (None: as is)."""
    if negatives is None:
        return dataset
    merged = tf.data.Dataset.zip((dataset, negatives)).map(
        lambda rows, sampled: {**rows, **sampled})
    return _distribute_options(merged.prefetch(tf.data.AUTOTUNE))


def count_examples(file_patterns: List[str], data_accessor: tfx.components.DataAccessor,
                   tft_output: tft.TFTransformOutput) -> int:
    """Examples in the files, parsing one small feature only."""
    dataset = data_accessor.tf_dataset_factory(
        file_patterns,
        tfxio.TensorFlowDatasetOptions(batch_size=_COUNT_BATCH_SIZE, shuffle=False,
                                       num_epochs=1, sloppy_ordering=True),
        _schema_of(tft_output.raw_metadata.schema, (features.TIMESTAMP,)))
    return int(sum(int(tf.shape(batch[features.TIMESTAMP])[0]) for batch in dataset))


def read_serialized_examples(file_patterns: List[str], limit: int) -> List[bytes]:
    """The first `limit` serialized tf.Examples of TFRecord files (GZIP when *.gz), reduced
    to the raw features a serving request carries (no label, no bookkeeping)."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    serving_names = set(transform.QUERY_INPUTS + transform.ITEM_INPUTS)
    examples = []
    for path in files:
        compression = "GZIP" if path.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(path, compression_type=compression):
            example = tf.train.Example.FromString(record.numpy())
            for name in list(example.features.feature):
                if name not in serving_names:
                    del example.features.feature[name]
            examples.append(example.SerializeToString())
            if len(examples) >= limit:
                return examples
    return examples


def catalog_content(catalog_batches: tf.data.Dataset, tft_output: tft.TFTransformOutput,
                    transform_config: config_lib.TransformConfig,
                    data_config: config_lib.DataConfig) -> item_content.ItemContent:
    """(categories, tokens, colours) of every catalogue item by transformed item id, for the
    query tower's history items (components/model/item_content.py)."""
    tft_layer = tft_output.transform_features_layer()

    @tf.function(autograph=False, reduce_retracing=True)
    def content(raw: Dict[str, Any]) -> Dict[str, tf.Tensor]:
        transformed = tft_layer(raw)
        pixels, mask = decode_png_batch(transformed[features.IMAGE_XF], data_config.image_size)
        return {features.ITEM_ID_XF: transformed[features.ITEM_ID_XF],
                features.CATEGORY_XF: transformed[features.CATEGORY_XF],
                features.TITLE_TOKENS_XF: transformed[features.TITLE_TOKENS_XF],
                item_content.COLOUR: colour_signature(pixels, mask)}

    batches = ({k: v.numpy() for k, v in content(
        {name: batch[name] for name in transform.ITEM_INPUTS}).items()}
        for batch in catalog_batches)
    return item_content.content_arrays(
        batches, transform.vocabulary_table_size(tft_output, transform.ITEM_VOCAB,
                                                 transform_config),
        transform_config.text_max_tokens, transform_config.num_oov_buckets)


def recent_count_table(model_config: config_lib.ModelConfig, tft_output: tft.TFTransformOutput,
                       transform_config: config_lib.TransformConfig,
                       events: validation_lib.protocol.Events) -> Tuple[int, np.ndarray]:
    """(first day, [item id table rows, days]) recent engagement counts of the train split
    by transformed item id (model/popularity_prior.py); the last column is the snapshot
    after the last train day."""
    vocabulary = tft_output.vocabulary_by_name(transform.ITEM_VOCAB)
    # Transformed ids are vocabulary positions + 1 (0 = padding), see transform.py.
    item_index = {item.decode(): position + 1 for position, item in enumerate(vocabulary)}
    days = events.timestamps // features.SECONDS_PER_DAY
    first_day, last_day = int(days.min()), int(days.max())
    table = popularity_prior.daily_window_counts(
        events.users, events.items, events.timestamps,
        # "shown" counts every impression: how much the shop exposes the item lately, the
        # P(shown) factor beside the affinity task's P(engaged | shown) (model/affinity.py).
        (events.labels if model_config.recent_popularity_events == "engaged"
         else np.ones_like(events.labels)), item_index,
        transform.vocabulary_table_size(tft_output, transform.ITEM_VOCAB, transform_config),
        first_day, last_day - first_day + 2, model_config.recent_popularity_days)
    return first_day, table


def fn_args_for(examples_root: str, transform_dir: str, model_root: str,
                custom_config: Dict[str, Any]) -> tfx.components.FnArgs:
    """FnArgs as TFX's Trainer builds them for an Examples artifact (train, eval, catalog
    splits) at examples_root: for run_fn outside a pipeline (tests, benchmarks)."""
    from tfx.components.util import examples_utils, tfxio_utils
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    examples = standard_artifacts.Examples()
    examples.uri = examples_root
    examples.split_names = json.dumps([features.TRAIN_SPLIT, features.EVAL_SPLIT,
                                       features.CATALOG_SPLIT])
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    accessor = tfx.components.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
        record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact([examples], []),
        data_view_decode_fn=None)
    return tfx.components.FnArgs(
        working_dir=os.path.join(model_root, "working"),
        train_files=[os.path.join(examples_root, f"Split-{features.TRAIN_SPLIT}", "*")],
        eval_files=[os.path.join(examples_root, f"Split-{features.EVAL_SPLIT}", "*")],
        transform_graph_path=transform_dir, transform_output=transform_dir,
        data_accessor=accessor, serving_model_dir=os.path.join(model_root, "serving_model"),
        model_run_dir=os.path.join(model_root, "model_run"), custom_config=custom_config)
