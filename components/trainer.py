"""Training of the two-tower model: the `run_fn` that TFX's Trainer runs.

The Trainer receives the RAW ExampleGen examples and the Transform graph. The input pipeline
reads raw tf.Examples and applies the TFT Keras layer in `Dataset.map`, so training sees
exactly the transformation that the exported signatures apply at serving time. After
training, the catalogue split (beside train/eval in the same Examples artifact) is embedded
and exported with the model (components/export.py).

Training habits:
- distribution: the `tf.distribute` strategy of ModelConfig.strategy (components/
  distribution.py); the model is built in its scope, the batch size is global;
- an epoch is a fixed number of steps over a repeated train split (one pass when
  train_steps is unset), so every replica and worker runs the same number of steps and a
  learning-rate schedule knows the total;
- BackupAndRestore under the model run directory: a killed training, rerun with the same
  output locations (an orchestrator's retry), resumes from the last finished epoch;
- model selection on a validation slice carved from the END of the train split (the last
  ModelConfig.validation_days; components/model/validation.py), never on the eval split the
  gates judge: early stopping and best-weight restoring watch `early_stopping_monitor`
  (by default the ranking metric val_recall@10, computed with the evaluation protocol);
  then, with `refit_full_train`, a fresh model trains on the WHOLE train split (the most
  recent days matter most to a recommender) for the selected number of epochs;
- mixed negatives (ModelConfig.sampled_negatives): each training batch is zipped with a
  batch of catalogue items drawn uniformly (`build_sampled_negatives`);
- TensorBoard logs, warmup + cosine learning rate;
- hyperparameters from the Tuner (fn_args.hyperparameters) override ModelConfig fields.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.metadata
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from hyperrec.components import distribution
from hyperrec.components import export
from hyperrec.schemas import features
from hyperrec.components import training_progress
from hyperrec.components import transform
from hyperrec.components.model import item_content
from hyperrec.components.model import popularity_prior, validation
from hyperrec.components.model import pretraining
from hyperrec.components.model.image_encoder import colour_signature, decode_png_batch
from hyperrec.components.model.towers import VocabularySizes
from hyperrec.components.model.two_tower import (FIRST_SEEN_DAYS, SAMPLED_NEGATIVE_PREFIX,
                                                  TwoTowerModel, build_two_tower_model)
from hyperrec.components import config as config_lib

_CATALOG_BATCH_SIZE = 256
_COUNT_BATCH_SIZE = 1024
WARMUP_EXAMPLES = 8  # eval examples recorded as serving warmup requests


def configs_from_custom_config(
        custom_config: Optional[Mapping[str, Any]],
) -> Tuple[config_lib.ModelConfig, config_lib.DataConfig, config_lib.TransformConfig]:
    """The Trainer's custom_config: {"model": ..., "data": ..., "transform": ...} as dicts."""
    custom_config = custom_config or {}
    return (config_lib.from_dict(config_lib.ModelConfig, custom_config.get("model") or {}),
            config_lib.from_dict(config_lib.DataConfig, custom_config.get("data") or {}),
            config_lib.from_dict(config_lib.TransformConfig,
                                 custom_config.get("transform") or {}))


def apply_hyperparameters(model_config: config_lib.ModelConfig,
                          hyperparameters: Optional[Mapping[str, Any]],
                          ) -> config_lib.ModelConfig:
    """ModelConfig with the Tuner's best values (a keras_tuner HyperParameters config).

    Hyperparameters are named after ModelConfig fields (components/tuner.py); a value is
    cast to the field's type, so JSON ints and floats land as the config expects.
    """
    values = dict((hyperparameters or {}).get("values", {}))
    fields = {f.name: f for f in dataclasses.fields(model_config)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"hyperparameters that are not ModelConfig fields: {unknown}")
    updates = {name: type(getattr(model_config, name))(value)
               for name, value in values.items()}
    return dataclasses.replace(model_config, **updates)


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


def vocabulary_sizes(tft_output: tft.TFTransformOutput,
                     transform_config: config_lib.TransformConfig) -> VocabularySizes:
    """Embedding table sizes from the transform output's vocabularies."""
    def size(vocab_name: str) -> int:
        return transform.vocabulary_table_size(tft_output, vocab_name, transform_config)

    return VocabularySizes(user=size(transform.USER_VOCAB), item=size(transform.ITEM_VOCAB),
                           category=size(transform.CATEGORY_VOCAB),
                           device=size(transform.DEVICE_VOCAB),
                           text=size(transform.TEXT_VOCAB))


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
    `catalog_content` for the history items (None: history by id only); recent_counts:
    `recent_count_table` (None: no recent-popularity term); catalogue_size: the pool of
    `build_sampled_negatives` (with model_config.sampled_negatives)."""
    model = build_two_tower_model(
        model_config, vocabulary_sizes(tft_output, transform_config),
        item_log_q=transform.item_log_sampling_probability(
            tft_output, transform_config, model_config.retrieval_negatives),
        image_size=data_config.image_size, text_max_tokens=transform_config.text_max_tokens,
        num_oov_buckets=transform_config.num_oov_buckets, item_content=content,
        recent_counts=recent_counts, catalogue_size=catalogue_size)
    loaded = pretraining.load_pretrained_encoders(
        model.item_tower, model_config, data_config.image_size,
        transform_config.text_max_tokens,
        pretraining.decode_vocabulary(tft_output.vocabulary_by_name(transform.TEXT_VOCAB))
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


@dataclasses.dataclass
class TrainingPlan:
    """How long training runs: epochs of `steps_per_epoch` steps; eval steps or None (the
    whole eval split)."""

    epochs: int
    steps_per_epoch: int
    eval_steps: Optional[int]

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def plan_training(model_config: config_lib.ModelConfig, fn_args: tfx.components.FnArgs,
                  tft_output: tft.TFTransformOutput,
                  strategy: tf.distribute.Strategy,
                  train_count: Optional[int] = None,
                  eval_count: Optional[int] = None) -> TrainingPlan:
    """Steps from ModelConfig (else the Trainer's train/eval args), else one pass per epoch
    over `train_count` rows (default: the train split's); eval steps over `eval_count` rows
    (the validation slice's; None: no validation, so no eval steps to derive).

    Multi-worker training needs the eval length in steps too: each worker sees a shard,
    and a worker running out of batches before the others would leave them waiting.
    """
    train_steps = model_config.train_steps or fn_args.train_steps
    if train_steps:
        steps_per_epoch = math.ceil(train_steps / model_config.epochs)
    else:
        count = (train_count if train_count is not None else
                 count_examples(fn_args.train_files, fn_args.data_accessor, tft_output))
        steps_per_epoch = max(1, math.ceil(count / model_config.batch_size))
    eval_steps = model_config.eval_steps or fn_args.eval_steps or None
    if (eval_steps is None and eval_count is not None
            and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)):
        eval_steps = max(1, math.ceil(eval_count / model_config.batch_size))
    return TrainingPlan(model_config.epochs, steps_per_epoch, eval_steps)


class BackupAndRestore(tf.keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, also under OneDeviceStrategy.

    Keras lists the strategies it has tested the callback with and refuses the others;
    OneDeviceStrategy is missing from that list although its variables are plain ones that
    the checkpoint handles as without a strategy (tests/test_training_habits.py kills and
    resumes a run under it).
    """

    def __init__(self, backup_dir: str, **kwargs: Any) -> None:
        super().__init__(backup_dir, **kwargs)
        self._supported_strategies = self._supported_strategies + (
            tf.distribute.OneDeviceStrategy,)


def monitor_mode(monitor: str) -> str:
    """"min" for losses, "max" for every other metric (AUC, recall@k, NDCG@k, MRR: Keras'
    "auto" would minimise a name it does not recognise, such as val_recall@10)."""
    return "min" if monitor.endswith("loss") else "max"


def backup_root(model_config: config_lib.ModelConfig, model_run_dir: str) -> str:
    return model_config.backup_dir or os.path.join(model_run_dir, "backup")


def training_callbacks(model_config: config_lib.ModelConfig, model_run_dir: str,
                       validation_callbacks: Sequence[tf.keras.callbacks.Callback] = (),
                       phase: str = "selection", early_stopping: bool = True,
                       ) -> List[tf.keras.callbacks.Callback]:
    """BackupAndRestore, the validation callbacks (they add to the epoch's logs, so they
    come before the callbacks that read them), early stopping (when asked and patience > 0)
    and TensorBoard."""
    # One backup per training phase (selection, refit): a rerun resumes the phase it was in.
    callbacks: List[tf.keras.callbacks.Callback] = [
        BackupAndRestore(os.path.join(backup_root(model_config, model_run_dir), phase))]
    callbacks.extend(validation_callbacks)
    if early_stopping and model_config.early_stopping_patience > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor=model_config.early_stopping_monitor,
            mode=monitor_mode(model_config.early_stopping_monitor),
            patience=model_config.early_stopping_patience, restore_best_weights=True,
            verbose=1))
    # Non-chief workers write TensorBoard events to a temporary directory (Keras does it).
    callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=model_run_dir,
                                                    update_freq="epoch", profile_batch=0))
    callbacks.append(training_progress.EpochProgress())  # a line every 30 s inside an epoch
    return callbacks


def seed_everything(model_config: config_lib.ModelConfig) -> None:
    """Python, NumPy and TF seeds; op determinism when the config asks for it."""
    tf.keras.utils.set_random_seed(model_config.seed)
    if model_config.deterministic:
        tf.config.experimental.enable_op_determinism()


def ranking_validation(model_config: config_lib.ModelConfig,
                       data_config: config_lib.DataConfig, fn_args: tfx.components.FnArgs,
                       tft_output: tft.TFTransformOutput, events, split: int,
                       ) -> validation.RankingValidation:
    """The callback that logs val_<validation_metric> on the validation slice, ranking the
    catalogue with the model's current weights through the serving module's recommend."""
    catalog_patterns = catalog_file_patterns(fn_args.train_files)
    tft_layer = tft_output.transform_features_layer()
    task = validation.validation_task(
        events, validation.protocol.read_catalogue(validation.examples_uri(fn_args.train_files)),
        split, data_config.history_length)

    def embedded(model: TwoTowerModel):
        # Recent popularity as it was when the slice began, not at the end of train.
        return export.embed_catalog(model, tft_layer, build_catalog_batches(
            catalog_patterns, fn_args.data_accessor, tft_output),
            model_config.serving_popularity_weight, prior_day=split / features.SECONDS_PER_DAY)

    def build_module(model: TwoTowerModel) -> export.ServingModule:
        catalogue = embedded(model)
        # Built on a fresh thread, outside the training strategy's (thread-local) scope: a
        # multi-worker strategy would make the catalogue variables collective, and
        # collectives have no string type (the item ids).
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(export.ServingModule, model, tft_output, *catalogue).result()

    def refresh(module: export.ServingModule, model: TwoTowerModel) -> None:
        _, embeddings, bias, _, prior = embedded(model)
        module.catalog_embeddings.assign(embeddings)
        module.catalog_score_bias.assign(bias)
        module.catalog_prior.assign(prior)

    logging.info("validation slice: %d users ranked on %s", len(task.users),
                 model_config.validation_metric)
    return validation.RankingValidation(task, model_config.validation_metric, build_module,
                                        refresh)


def recent_count_table(model_config: config_lib.ModelConfig, tft_output: tft.TFTransformOutput,
                       transform_config: config_lib.TransformConfig,
                       events: validation.protocol.Events) -> Tuple[int, np.ndarray]:
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


def choose_exposure_weight(model_config: config_lib.ModelConfig, model: TwoTowerModel,
                           validator: Optional[validation.RankingValidation]) -> float:
    """The weight of the served score's exposure term ("affinity" served score): the best of
    model_config.exposure_weights on the validation slice's ranking metric, fitted on top of
    the trained towers (which cannot lean on it); the configured exposure_weight without a
    validation slice or with the "retrieval" served score."""
    if model_config.served_score != "affinity" or validator is None:
        return model_config.exposure_weight
    best, scores = validator.best_setting(model_config.exposure_weights,
                                          model.exposure_weight.assign)
    logging.info("exposure weight %g chosen on the validation slice (%s by weight: %s)", best,
                 model_config.validation_metric,
                 ", ".join(f"{weight:g}: {value:.4f}" for weight, value in scores.items()))
    return best


def best_epoch(history: tf.keras.callbacks.History, monitor: str) -> int:
    """The epoch (0-based) whose `monitor` value was best (the first of ties).

    An epoch number, not a position in the history: a run resumed by BackupAndRestore records
    only the epochs from the restored one on (history.epoch starts there).
    """
    values = history.history.get(monitor)
    if not values:
        return history.epoch[-1] if history.epoch else -1
    index = int(np.argmin(values) if monitor_mode(monitor) == "min" else np.argmax(values))
    return int(history.epoch[index])


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """The entry point TFX's Trainer calls (`components.trainer.run_fn`).

    Selects the model on the validation slice at the end of the train split (see the module
    docstring), optionally refits on the whole train split, logs to TensorBoard under
    fn_args.model_run_dir, and exports to fn_args.serving_model_dir (see
    components/export.py; on multi-worker runs only the chief's export lands there). The
    eval split only provides warmup requests. custom_config: {"model", "data", "transform"}
    config dicts; fn_args.hyperparameters (from the Tuner) override ModelConfig fields.
    """
    model_config, data_config, transform_config = configs_from_custom_config(
        fn_args.custom_config)
    model_config = apply_hyperparameters(model_config, fn_args.hyperparameters)
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = distribution.create_strategy(model_config.strategy, model_config.tpu)
    logging.info("training with %s", distribution.describe(strategy))
    seed_everything(model_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)

    split, events, callbacks, n_val, validator = None, None, [], None, None
    if model_config.validation_days > 0 or model_config.recent_popularity_counts:
        events = validation.read_events(fn_args.train_files)
    recent_counts = (recent_count_table(model_config, tft_output, transform_config, events)
                     if model_config.recent_popularity_counts else None)
    if model_config.validation_days > 0:
        split = validation.split_time(events.timestamps, model_config.validation_days)
        n_val = int((events.timestamps >= split).sum())
        logging.info("validation slice: train rows from %d on (%d of %d)", split, n_val,
                     len(events))
        if model_config.validation_metric:
            validator = ranking_validation(model_config, data_config, fn_args, tft_output,
                                           events, split)
            callbacks.append(validator)
    plan = plan_training(model_config, fn_args, tft_output, strategy,
                         train_count=None if split is None else len(events) - n_val,
                         eval_count=n_val)
    train_dataset = build_dataset(
        fn_args.train_files, fn_args.data_accessor, tft_output, model_config.batch_size,
        shuffle=True, seed=model_config.seed, num_epochs=None, before=split)
    validation_dataset = None if split is None else build_dataset(
        fn_args.train_files, fn_args.data_accessor, tft_output, model_config.batch_size,
        shuffle=False, seed=model_config.seed, num_epochs=None if plan.eval_steps else 1,
        since=split)

    catalog_patterns = catalog_file_patterns(fn_args.train_files)
    content = catalog_content(
        build_catalog_batches(catalog_patterns, fn_args.data_accessor, tft_output),
        tft_output, transform_config, data_config)
    negatives, catalogue_size = None, 0
    if model_config.sampled_negatives:
        negatives, catalogue_size = build_sampled_negatives(
            catalog_patterns, fn_args.data_accessor, tft_output,
            model_config.sampled_negatives, model_config.seed)
        logging.info("mixed negatives: %d per batch, uniform over %d catalogue items",
                     model_config.sampled_negatives, catalogue_size)
    with strategy.scope():
        model = build_model(model_config, data_config, transform_config, tft_output,
                            plan.total_steps, content, recent_counts, catalogue_size)
    history = model.fit(
        with_sampled_negatives(train_dataset, negatives), epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        validation_data=validation_dataset,
        validation_steps=plan.eval_steps if validation_dataset is not None else None,
        callbacks=training_callbacks(model_config, fn_args.model_run_dir, callbacks,
                                     early_stopping=split is not None), verbose=2)
    logging.info("training history: %s", history.history)
    exposure_weight = choose_exposure_weight(model_config, model, validator)

    refit = None
    if split is not None and model_config.refit_full_train:
        # The selected length, now on every train row; the schedule spans the configured
        # epochs as in the selection run (more steps per epoch, the same shape per epoch), so
        # epoch e sees the learning rates it saw there.
        epochs = best_epoch(history, model_config.early_stopping_monitor) + 1
        full = plan_training(model_config, fn_args, tft_output, strategy,
                             train_count=len(events))
        logging.info("refitting on the whole train split for %d epochs", epochs)
        seed_everything(model_config)
        with strategy.scope():
            model = build_model(model_config, data_config, transform_config, tft_output,
                                full.total_steps, content, recent_counts, catalogue_size)
        refit = model.fit(
            with_sampled_negatives(build_dataset(
                fn_args.train_files, fn_args.data_accessor, tft_output,
                model_config.batch_size, shuffle=True, seed=model_config.seed,
                num_epochs=None), negatives),
            epochs=epochs, steps_per_epoch=full.steps_per_epoch,
            callbacks=training_callbacks(model_config, fn_args.model_run_dir, phase="refit",
                                         early_stopping=False), verbose=2)

    model.exposure_weight.assign(exposure_weight)  # the refit model starts from the config's
    # Every worker exports (saving runs collectives); only the chief's copy is kept.
    serving_dir = distribution.write_dir(fn_args.serving_model_dir, strategy)
    catalog = build_catalog_batches(catalog_patterns, fn_args.data_accessor, tft_output)
    export.export_serving_model(
        model, tft_output, catalog, serving_dir,
        warmup_examples=read_serialized_examples(fn_args.eval_files, WARMUP_EXAMPLES),
        recommend_k=model_config.recommend_k,
        popularity_weight=model_config.serving_popularity_weight)
    distribution.cleanup_write_dir(fn_args.serving_model_dir, strategy)
    if distribution.is_chief(strategy):
        _record_keras(fn_args.model_run_dir)
        _record_history(fn_args.model_run_dir, history, strategy, refit)
        # Each phase's callback empties its own folder at the end; a finished run keeps none.
        finished_backups = backup_root(model_config, fn_args.model_run_dir)
        if tf.io.gfile.exists(finished_backups):
            tf.io.gfile.rmtree(finished_backups)


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


def _record_history(model_run_dir: str, history: tf.keras.callbacks.History,
                    strategy: tf.distribute.Strategy,
                    refit: Optional[tf.keras.callbacks.History] = None) -> None:
    """history.json in the ModelRun: per-epoch metrics of the selection run (train and
    validation slice), the epochs this process ran (a resumed run starts after the restored
    epoch), the strategy, and the refit's epochs and metrics when there was one."""
    record = {"strategy": distribution.describe(strategy),
              "replicas": strategy.num_replicas_in_sync,
              "epochs": [int(e) for e in history.epoch],
              "metrics": {k: [float(v) for v in values]
                          for k, values in history.history.items()}}
    if refit is not None:
        record["refit"] = {"epochs": [int(e) for e in refit.epoch],
                           "metrics": {k: [float(v) for v in values]
                                       for k, values in refit.history.items()}}
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "history.json"), "w") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True))


def _record_keras(model_run_dir: str) -> None:
    """Writes which Keras trained this model (tests compare it with a plain import)."""
    package = tf.keras.Model.__module__.split(".")[0]
    record = {"module": package,
              "version": importlib.metadata.version(
                  "tf-keras" if package == "tf_keras" else "keras")}
    tf.io.gfile.makedirs(model_run_dir)
    with tf.io.gfile.GFile(os.path.join(model_run_dir, "keras.json"), "w") as f:
        f.write(json.dumps(record))
