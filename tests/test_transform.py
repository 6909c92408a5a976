"""Tests of components/transform.py: preprocessing_fn run for real with TFT on Beam.

The module also holds the synthetic raw data these tests and tests/test_model.py share: a
few hundred interaction tf.Examples and a small catalogue with solid-colour PNG images,
written as GZIP TFRecords in ExampleGen's layout (<uri>/Split-<name>/), the raw schema, and
a helper that runs Transform's analysis over the train split into a TFTransformOutput dir.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from typing import Dict, List, Sequence

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
from tfx_bsl.public import tfxio

from hyperrec.schemas import features
from hyperrec.components import transform
from hyperrec.components import config as config_lib

# ---- synthetic data -------------------------------------------------------------------------
NUM_ITEMS = 30
NUM_WARM_ITEMS = 24  # items 24.. are cold: in the catalogue, never in train interactions
NUM_USERS = 16
NUM_TRAIN_ROWS = 320
NUM_EVAL_ROWS = 64
CATEGORIES = ("shoes", "bags", "hats", "coats")
DEVICES = ("mobile", "desktop", "tablet")
WORDS = ("red", "blue", "green", "leather", "cotton", "classic", "sport", "warm", "light")
START_TIMESTAMP = 1_700_000_000  # 2023-11-14 22:13:20 UTC, a Tuesday
ROW_SPACING_SECONDS = 1_800

TEST_DATA_CONFIG = config_lib.DataConfig(image_size=16, history_length=4)
TEST_TRANSFORM_CONFIG = config_lib.TransformConfig(text_max_tokens=8, text_vocab_size=100)


def item_id(index: int) -> str:
    return f"item_{index:03d}"


def _png(colour: Sequence[int], size: int) -> bytes:
    pixels = np.broadcast_to(np.asarray(colour, np.uint8), (size, size, 3))
    return tf.io.encode_png(tf.constant(pixels)).numpy()


def catalog_items(image_size: int) -> List[Dict[str, object]]:
    """The catalogue: some items without image, description or title, to test masking."""
    rng = np.random.default_rng(7)
    items = []
    for index in range(NUM_ITEMS):
        category = CATEGORIES[index % len(CATEGORIES)]
        words = [WORDS[(index + k) % len(WORDS)] for k in range(3)]
        missing_image = index % 7 == 3
        items.append({
            features.ITEM_ID: item_id(index),
            features.TITLE: "" if index % 11 == 5 else f"{words[0].title()} {category}!",
            features.DESCRIPTION: "" if index % 5 == 2 else f"{words[1]}, {words[2]}-style.",
            features.CATEGORY: category,
            features.PRICE: float(5 + 10 * index),
            features.IMAGE: b"" if missing_image else _png(rng.integers(0, 256, 3), image_size),
            features.IMAGE_STATUS: "missing" if missing_image else "ok",
            features.FIRST_SEEN: START_TIMESTAMP - 86400 if index < NUM_WARM_ITEMS
            else START_TIMESTAMP + NUM_TRAIN_ROWS * ROW_SPACING_SECONDS,
            features.COLD_START: int(index >= NUM_WARM_ITEMS),
        })
    return items


def interaction_rows(items: List[Dict[str, object]], history_length: int,
                     ) -> tuple[List[Dict[str, object]], List[Dict[str, object]]]:
    """Train and eval interactions: users engage with their favourite category.

    History is the user's last `history_length` engaged items strictly before the event,
    most recent last, as ExampleGen builds it.
    """
    rng = np.random.default_rng(11)
    histories: Dict[int, List[str]] = {u: [] for u in range(NUM_USERS)}
    rows = []
    for index in range(NUM_TRAIN_ROWS + NUM_EVAL_ROWS):
        user = int(rng.integers(NUM_USERS))
        in_eval = index >= NUM_TRAIN_ROWS
        item_index = int(rng.integers(NUM_ITEMS if in_eval else NUM_WARM_ITEMS))
        item = items[item_index]
        likes = item[features.CATEGORY] == CATEGORIES[user % len(CATEGORIES)]
        label = int(likes) if rng.random() < 0.9 else int(not likes)
        row = dict(item)
        del row[features.COLD_START]
        row.update({
            features.USER_ID: f"user_{user:02d}",
            features.TIMESTAMP: START_TIMESTAMP + index * ROW_SPACING_SECONDS,
            features.EVENT: "click" if label else "impression",
            features.LABEL: label,
            features.DEVICE: DEVICES[user % len(DEVICES)],
            features.HISTORY: list(histories[user][-history_length:]),
            features.COLD_START: item[features.COLD_START],
        })
        rows.append(row)
        if label:
            histories[user].append(item[features.ITEM_ID])
    return rows[:NUM_TRAIN_ROWS], rows[NUM_TRAIN_ROWS:]


def to_example(row: Dict[str, object]) -> tf.train.Example:
    """A raw tf.Example; the value's Python type picks the feature kind."""
    example = tf.train.Example()
    for name, value in row.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if isinstance(value, float):
            feature.float_list.value.extend(values)
        elif isinstance(value, int):
            feature.int64_list.value.extend(values)
        else:
            feature.bytes_list.value.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in values)
    return example


def raw_schema() -> schema_pb2.Schema:
    """The raw schema as the curated schema declares it: scalars of shape [1], HISTORY
    variable-length, LABEL/EVENT/COLD_START absent in the SERVING environment."""
    schema = schema_pb2.Schema()
    schema.default_environment.extend(["TRAINING", "SERVING"])
    kinds = {
        features.USER_ID: schema_pb2.BYTES, features.ITEM_ID: schema_pb2.BYTES,
        features.TIMESTAMP: schema_pb2.INT, features.EVENT: schema_pb2.BYTES,
        features.LABEL: schema_pb2.INT, features.DEVICE: schema_pb2.BYTES,
        features.TITLE: schema_pb2.BYTES, features.DESCRIPTION: schema_pb2.BYTES,
        features.CATEGORY: schema_pb2.BYTES, features.PRICE: schema_pb2.FLOAT,
        features.IMAGE: schema_pb2.BYTES, features.IMAGE_STATUS: schema_pb2.BYTES,
        features.FIRST_SEEN: schema_pb2.INT, features.COLD_START: schema_pb2.INT,
    }
    for name, kind in kinds.items():
        feature = schema.feature.add(name=name, type=kind)
        feature.shape.dim.add(size=1)
        feature.presence.min_fraction = 1.0
        if name in (features.LABEL, features.EVENT, features.COLD_START):
            feature.not_in_environment.append("SERVING")
    history = schema.feature.add(name=features.HISTORY, type=schema_pb2.BYTES)
    history.value_count.min = 0
    history.value_count.max = TEST_DATA_CONFIG.history_length
    return schema


def write_split(root: str, split: str, rows: List[Dict[str, object]]) -> str:
    """Writes rows like ExampleGen does: <root>/Split-<split>/data_tfrecord-*.gz (GZIP)."""
    split_dir = os.path.join(root, f"Split-{split}")
    os.makedirs(split_dir, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz"),
                              options) as writer:
        for row in rows:
            writer.write(to_example(row).SerializeToString())
    return split_dir


def write_examples(root: str, data_config: config_lib.DataConfig = TEST_DATA_CONFIG,
                   ) -> Dict[str, object]:
    """Writes the train/eval/catalog splits; returns the rows too (for expectations)."""
    items = catalog_items(data_config.image_size)
    train, evaluation = interaction_rows(items, data_config.history_length)
    write_split(root, features.TRAIN_SPLIT, train)
    write_split(root, features.EVAL_SPLIT, evaluation)
    write_split(root, features.CATALOG_SPLIT, items)
    return {"items": items, "train": train, "eval": evaluation}


def transform_custom_config(
        transform_config: config_lib.TransformConfig = TEST_TRANSFORM_CONFIG,
        data_config: config_lib.DataConfig = TEST_DATA_CONFIG) -> Dict[str, object]:
    """What the pipeline hands Transform: asdict(TransformConfig) plus "data"."""
    return dict(dataclasses.asdict(transform_config), data=dataclasses.asdict(data_config))


def run_transform_analysis(examples_root: str, output_dir: str, schema: schema_pb2.Schema,
                           custom_config: Dict[str, object]) -> tft.TFTransformOutput:
    """Analyses the train split with preprocessing_fn on the DirectRunner, as TFX's
    Transform does (analyze=['train'], materialize=False), into a TFTransformOutput dir."""
    train_pattern = os.path.join(examples_root, f"Split-{features.TRAIN_SPLIT}", "*")
    source = tfxio.TFExampleRecord(file_pattern=train_pattern, schema=schema)
    fn = functools.partial(transform.preprocessing_fn, custom_config=custom_config)
    import apache_beam as beam
    with beam.Pipeline() as pipeline:
        with tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=output_dir)):
            raw_data = pipeline | "ReadTrain" >> source.BeamSource()
            transform_fn = ((raw_data, source.TensorAdapterConfig())
                            | "Analyze" >> tft_beam.AnalyzeDataset(fn))
            _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(output_dir)
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(schema),
        os.path.join(output_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(output_dir)


def parse_raw(rows: List[Dict[str, object]], schema: schema_pb2.Schema,
              names: Sequence[str]) -> Dict[str, object]:
    """Parses rows into the raw tensors the TFT layer takes, restricted to `names`."""
    from tensorflow_transform.tf_metadata import schema_utils
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    spec = {name: spec[name] for name in names}
    serialized = [to_example({k: v for k, v in r.items() if k in names}).SerializeToString()
                  for r in rows]
    return tf.io.parse_example(tf.constant(serialized), spec)


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformed_env(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("examples"))
    rows = write_examples(root)
    schema = raw_schema()
    output_dir = str(tmp_path_factory.mktemp("transform_output"))
    tft_output = run_transform_analysis(root, output_dir, schema, transform_custom_config())
    return {"rows": rows, "schema": schema, "tft_output": tft_output}


# ---- pure functions: hand-computed expectations ---------------------------------------------
def test_text_normalisation_and_tokenisation():
    tokens = transform.tokenize(tf.constant(["Red-Shoe, SALE!", "", "Été  Chic"]),
                                tf.constant(["it's 50% off.", "", ""]))
    assert tokens.to_list() == [
        [b"red", b"shoe", b"sale", b"it", b"s", b"50", b"off"], [],
        ["été".encode(), b"chic"]]


def test_time_features():
    # 2023-11-14 22:13:20 UTC is a Tuesday (1); 1970-01-01 00:00 a Thursday (3);
    # 1969-12-31 23:00 a Wednesday (2), hour 23.
    timestamps = tf.constant([1_700_000_000, 0, -3600, 1_700_000_000 + 3 * 86400], tf.int64)
    assert transform.hour_of_day(timestamps).numpy().tolist() == [22, 0, 23, 22]
    assert transform.day_of_week(timestamps).numpy().tolist() == [1, 3, 2, 4]


def test_pad_or_truncate_keeps_recent_history_and_leading_text():
    ids = tf.ragged.constant([[1, 2, 3, 4, 5, 6], [7], []], dtype=tf.int64)
    assert transform.pad_or_truncate(ids, 4, keep_last=True).numpy().tolist() == [
        [3, 4, 5, 6], [7, 0, 0, 0], [0, 0, 0, 0]]
    assert transform.pad_or_truncate(ids, 4, keep_last=False).numpy().tolist() == [
        [1, 2, 3, 4], [7, 0, 0, 0], [0, 0, 0, 0]]


# ---- the analysed transform graph ----------------------------------------------------------
def test_transformed_training_features(transformed_env):
    tft_output = transformed_env["tft_output"]
    rows = transformed_env["rows"]["train"][:40]
    raw = parse_raw(rows, transformed_env["schema"],
                    [f.name for f in transformed_env["schema"].feature])
    out = tft_output.transform_features_layer()(raw)

    assert set(out) == set(transform.ITEM_OUTPUTS + transform.QUERY_OUTPUTS
                           + (features.LABEL_XF, features.ITEM_AGE_XF))
    cfg = TEST_TRANSFORM_CONFIG
    assert out[features.TITLE_TOKENS_XF].shape == (40, cfg.text_max_tokens)
    assert out[features.HISTORY_XF].shape == (40, TEST_DATA_CONFIG.history_length)
    np.testing.assert_array_equal(out[features.LABEL_XF].numpy(),
                                  [r[features.LABEL] for r in rows])
    np.testing.assert_array_equal(out[features.IMAGE_XF].numpy(),
                                  [r[features.IMAGE] for r in rows])
    np.testing.assert_array_equal(out[features.HOUR_XF].numpy(),
                                  [(r[features.TIMESTAMP] % 86400) // 3600 for r in rows])
    np.testing.assert_allclose(out[features.EVENT_DAY_XF].numpy().ravel(),
                               [r[features.TIMESTAMP] / 86400 for r in rows], atol=1e-2)

    # Ids are vocabulary positions + 1 (0 = padding); train items are all in vocabulary.
    item_vocab = tft_output.vocabulary_by_name(transform.ITEM_VOCAB)
    expected_item_ids = [item_vocab.index(r[features.ITEM_ID].encode()) + 1 for r in rows]
    np.testing.assert_array_equal(out[features.ITEM_ID_XF].numpy(), expected_item_ids)
    # History uses the ITEM vocabulary, keeps order (most recent last), pads on the right.
    for row, history in zip(rows, out[features.HISTORY_XF].numpy()):
        expected = [item_vocab.index(h.encode()) + 1 for h in row[features.HISTORY]]
        expected += [0] * (TEST_DATA_CONFIG.history_length - len(expected))
        assert history.tolist() == expected

    # Text: the vocabulary ids of the normalised tokens, truncated / 0-padded.
    text_vocab = tft_output.vocabulary_by_name(transform.TEXT_VOCAB)
    for row, token_ids in zip(rows, out[features.TITLE_TOKENS_XF].numpy()):
        text = f"{row[features.TITLE]} {row[features.DESCRIPTION]}".lower()
        for mark in "!,.-":
            text = text.replace(mark, " ")
        expected = [text_vocab.index(t.encode()) + 1 for t in text.split()]
        expected = (expected + [0] * cfg.text_max_tokens)[:cfg.text_max_tokens]
        assert token_ids.tolist() == expected

    price = out[features.PRICE_XF].numpy()
    assert np.all(np.isfinite(price)) and price.std() > 0.1

    # Item age at the event, in days (training only: it reads both sides).
    np.testing.assert_allclose(
        out[features.ITEM_AGE_XF].numpy(),
        [(r[features.TIMESTAMP] - r[features.FIRST_SEEN]) / 86400 for r in rows], rtol=1e-6)


def test_price_z_score_uses_train_statistics(transformed_env):
    train = transformed_env["rows"]["train"]
    log_prices = np.log1p([r[features.PRICE] for r in train])
    raw = parse_raw(train[:5], transformed_env["schema"], transform.ITEM_INPUTS)
    out = transformed_env["tft_output"].transform_features_layer()(raw)
    expected = (log_prices[:5] - log_prices.mean()) / log_prices.std()
    np.testing.assert_allclose(out[features.PRICE_XF].numpy(), expected, rtol=1e-4,
                               atol=1e-4)


def test_item_outputs_from_item_features_alone(transformed_env):
    """The catalogue path: only raw item features fed, every item output comes back."""
    items = transformed_env["rows"]["items"]
    raw = parse_raw(items, transformed_env["schema"], transform.ITEM_INPUTS)
    out = transformed_env["tft_output"].transform_features_layer()(raw)
    assert set(transform.ITEM_OUTPUTS) <= set(out)
    assert not set(transform.QUERY_OUTPUTS) & set(out)
    item_ids = out[features.ITEM_ID_XF].numpy()
    vocab_size = transformed_env["tft_output"].vocabulary_size_by_name(transform.ITEM_VOCAB)
    # Cold items never seen in train fall in the OOV bucket (vocab_size + 1).
    assert item_ids[NUM_WARM_ITEMS:].tolist() == [vocab_size + 1] * (NUM_ITEMS - NUM_WARM_ITEMS)
    assert np.all(item_ids[:NUM_WARM_ITEMS] <= vocab_size)


def test_query_outputs_from_query_features_alone(transformed_env):
    rows = transformed_env["rows"]["eval"][:5]
    raw = parse_raw(rows, transformed_env["schema"], transform.QUERY_INPUTS)
    out = transformed_env["tft_output"].transform_features_layer()(raw)
    assert set(transform.QUERY_OUTPUTS) <= set(out)
    assert not set(transform.ITEM_OUTPUTS) & set(out)


def test_item_log_sampling_probability(transformed_env):
    tft_output = transformed_env["tft_output"]
    log_q = transform.item_log_sampling_probability(tft_output, TEST_TRANSFORM_CONFIG)
    assert log_q.shape == (transform.vocabulary_table_size(
        tft_output, transform.ITEM_VOCAB, TEST_TRANSFORM_CONFIG),)
    positives = [r[features.ITEM_ID] for r in transformed_env["rows"]["train"]
                 if r[features.LABEL] == 1]
    item_vocab = tft_output.vocabulary_by_name(transform.ITEM_VOCAB)
    most_common = max(set(positives), key=positives.count)
    index = item_vocab.index(most_common.encode()) + 1
    np.testing.assert_allclose(np.exp(log_q[index]),
                               positives.count(most_common) / len(positives), rtol=1e-5)
    assert np.all(np.isfinite(log_q)) and np.all(log_q <= 0)


def test_item_log_sampling_probability_of_all_rows_for_batch_negatives(transformed_env):
    """With impressions as negatives ("batch"), candidates are every train row's item."""
    tft_output = transformed_env["tft_output"]
    log_q = transform.item_log_sampling_probability(tft_output, TEST_TRANSFORM_CONFIG,
                                                    negatives="batch")
    rows = [r[features.ITEM_ID] for r in transformed_env["rows"]["train"]]
    item_vocab = tft_output.vocabulary_by_name(transform.ITEM_VOCAB)
    for item in sorted(set(rows))[:5]:
        index = item_vocab.index(item.encode()) + 1
        np.testing.assert_allclose(np.exp(log_q[index]), rows.count(item) / len(rows),
                                   rtol=1e-5)


def test_frequency_threshold_and_oov_buckets(transformed_env, tmp_path):
    """Ids seen fewer than id_min_frequency times in train share the OOV buckets; with
    several buckets, unseen ids hash into them (never into padding or the vocabulary)."""
    from collections import Counter
    train = transformed_env["rows"]["train"]
    user_counts = Counter(r[features.USER_ID] for r in train)
    threshold = sorted(user_counts.values())[len(user_counts) // 2]  # about half are rare
    config = dataclasses.replace(TEST_TRANSFORM_CONFIG, id_min_frequency=threshold,
                                 num_oov_buckets=3)
    root = str(tmp_path / "examples")
    write_examples(root)
    output_dir = str(tmp_path / "transform_output")
    os.makedirs(output_dir)
    tft_output = run_transform_analysis(root, output_dir, transformed_env["schema"],
                                        transform_custom_config(config))
    vocab = [v.decode() for v in tft_output.vocabulary_by_name(transform.USER_VOCAB)]
    assert set(vocab) == {u for u, c in user_counts.items() if c >= threshold}
    assert len(vocab) < len(user_counts)
    raw = parse_raw(train, transformed_env["schema"], transform.QUERY_INPUTS)
    user_ids = tft_output.transform_features_layer()(raw)[features.USER_ID_XF].numpy()
    oov = [u for u, r in zip(user_ids, train) if user_counts[r[features.USER_ID]] < threshold]
    assert oov and all(len(vocab) < u <= len(vocab) + 3 for u in oov)
    kept = [u for u, r in zip(user_ids, train) if user_counts[r[features.USER_ID]] >= threshold]
    assert all(1 <= u <= len(vocab) for u in kept)
    assert transform.vocabulary_table_size(tft_output, transform.USER_VOCAB,
                                           config) == 1 + len(vocab) + 3
