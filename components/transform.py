"""Feature engineering of hyperrec: the `preprocessing_fn` that TFX's Transform component runs.

Transform analyses the train split once (vocabularies, price mean/variance) and saves ONE
graph that the Trainer applies inside its input pipeline and the exported model applies at
serving time, so training and serving see the same transformation of the same RAW features.

Outputs (names from `schemas.features`, dtypes/shapes per example):

- ids (int64 scalars): user, item, category, device, shifted by one so that 0 means
  "padding / absent" everywhere; 1..V are vocabulary entries, V+1..V+num_oov_buckets are
  out-of-vocabulary buckets. `vocabulary_table_size` gives the embedding table size.
- history (int64 [history_length]): the user's most recent item ids mapped with the ITEM
  vocabulary (so the model can share one item-id embedding table), 0-padded on the right.
- text tokens (int64 [text_max_tokens]): title + description, lowercased, punctuation
  stripped, whitespace-tokenised, 0-padded / truncated.
- price (float32): z-score of log1p(price).
- hour / day of week (int64): from the UTC epoch-seconds timestamp; event day (float32):
  days since the epoch, the request time the model ages candidate items by.
- image (string): the PNG bytes unchanged; the model decodes them (so serving takes the
  same raw bytes).
- label (int64): passed through when the raw data has it (never at serving).
- item age at the event (float32 days, training data only): how new the item was when the
  row happened; the model trains the id-less (cold-start) path of the item tower on items
  that were new at the time. It reads a query feature (timestamp) AND an item feature
  (first seen), so the TFT layer leaves it out whenever either side is not fed (catalogue,
  serving); it is the one output outside the two groups below.

Item-only inputs. The catalogue split and the `embed_items` signature carry item features
only. Every output here depends on either query features or item features, never both, and
TFT's Keras layer (`TFTransformOutput.transform_features_layer`) supplies placeholders for
unfed raw features and returns only the outputs that do not depend on them. So the SAME
transform graph embeds catalogue items from raw item features alone; `ITEM_OUTPUTS` and
`QUERY_OUTPUTS` name the two disjoint groups and tests pin that each group is computable
from its own raw features.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from hyperrec.schemas import features
from hyperrec.schemas.features import SECONDS_PER_DAY
from hyperrec.components import config as config_lib

ITEM_OUTPUTS = (features.ITEM_ID_XF, features.TITLE_TOKENS_XF, features.CATEGORY_XF,
                features.PRICE_XF, features.IMAGE_XF)
QUERY_OUTPUTS = (features.USER_ID_XF, features.HISTORY_XF, features.DEVICE_XF, features.HOUR_XF,
                 features.DAY_OF_WEEK_XF, features.EVENT_DAY_XF)

# Raw features each side reads; serving parses exactly these (no label, no bookkeeping).
ITEM_INPUTS = (features.ITEM_ID, features.TITLE, features.DESCRIPTION, features.CATEGORY,
               features.PRICE, features.IMAGE)
QUERY_INPUTS = (features.USER_ID, features.HISTORY, features.DEVICE, features.TIMESTAMP)

# ---- Vocabulary file names (assets of the transform graph) ---------------------------------
USER_VOCAB = "user_id_vocab"
ITEM_VOCAB = "item_id_vocab"  # item ids of rows AND of histories
CATEGORY_VOCAB = "category_vocab"
DEVICE_VOCAB = "device_vocab"
TEXT_VOCAB = "text_token_vocab"
# "count item_id" lines over the POSITIVE train rows / over ALL train rows: the in-batch
# candidate distribution of the retrieval task (negatives "positives" / "batch"), read by
# `item_log_sampling_probability` for the logQ correction.
POSITIVE_ITEM_COUNTS = "positive_item_counts"
ITEM_ROW_COUNTS = "item_row_counts"

PADDING_ID = 0

SECONDS_PER_HOUR = 3600
# 1970-01-01 was a Thursday; with Monday = 0 the epoch day has index 3.
EPOCH_DAY_OF_WEEK = 3
# ASCII punctuation/symbols plus Unicode punctuation become token separators.
PUNCTUATION_PATTERN = r"[[:punct:]\p{P}]"


def configs_from_custom_config(
        custom_config: Optional[Mapping[str, Any]],
) -> tuple[config_lib.TransformConfig, config_lib.DataConfig]:
    """Rebuilds the Transform and Data configs from a TFX `custom_config` dict.

    The pipeline passes `asdict(TransformConfig)` with the DataConfig under "data"; a missing
    or empty custom_config means the defaults.
    """
    custom_config = dict(custom_config or {})
    data_values = custom_config.pop("data", None) or {}
    return (config_lib.from_dict(config_lib.TransformConfig, custom_config),
            config_lib.from_dict(config_lib.DataConfig, data_values))


def _scalar_column(tensor: Any, default_value: Any) -> tf.Tensor:
    """A per-example scalar feature as a dense [batch] tensor.

    The schema declares scalars with shape [1] (dense [batch, 1]); a schema without a shape
    gives a SparseTensor, which is densified with `default_value` for absent values.
    """
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.sparse.to_dense(tensor, default_value=default_value)
    if tensor.shape.rank == 2:
        return tensor[:, 0]
    return tensor


def _frequency_threshold(min_frequency: int) -> Optional[int]:
    """TFT wants None, not 1 (which it warns about), for "keep every seen value"."""
    return min_frequency if min_frequency > 1 else None


def _shifted(ids: Any) -> Any:
    """Moves vocabulary ids up by one so that 0 is free for padding / absent."""
    if isinstance(ids, tf.SparseTensor):
        return tf.SparseTensor(ids.indices, ids.values + 1, ids.dense_shape)
    return ids + 1


def normalize_text(text: tf.Tensor) -> tf.Tensor:
    """Lowercases (Unicode-aware) and turns punctuation into spaces."""
    text = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.regex_replace(text, PUNCTUATION_PATTERN, " ")


def tokenize(title: tf.Tensor, description: tf.Tensor) -> tf.RaggedTensor:
    """Whitespace tokens of the normalised "title description" text, [batch, None]."""
    text = tf.strings.join([title, description], separator=" ")
    return tf.strings.split(normalize_text(text))


def hour_of_day(timestamp: tf.Tensor) -> tf.Tensor:
    """0..23 from epoch seconds (UTC); floormod keeps pre-1970 values in range."""
    return tf.math.floordiv(tf.math.floormod(timestamp, SECONDS_PER_DAY), SECONDS_PER_HOUR)


def day_of_week(timestamp: tf.Tensor) -> tf.Tensor:
    """0 (Monday) .. 6 (Sunday) from epoch seconds (UTC)."""
    epoch_day = tf.math.floordiv(timestamp, SECONDS_PER_DAY)
    return tf.math.floormod(epoch_day + EPOCH_DAY_OF_WEEK, 7)


def pad_or_truncate(ragged_ids: tf.RaggedTensor, length: int, keep_last: bool) -> tf.Tensor:
    """Pads with PADDING_ID / truncates each row to `length`.

    keep_last: keep the last `length` entries (histories are most-recent-last), else the
    first ones (text keeps its beginning).
    """
    if keep_last:
        ragged_ids = ragged_ids[:, -length:]
    return ragged_ids.to_tensor(default_value=PADDING_ID, shape=[None, length])


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The entry point TFX's Transform component calls (`components.transform.preprocessing_fn`).

    Maps a batch of RAW tf.Example features (keys from `schemas.features`) to the model's
    transformed features (see the module docstring). Analyzers run over the train split only
    (the pipeline's splits_config), so vocabularies and price statistics never see eval data.

    Args:
      inputs: raw features; scalars dense [batch, 1] (or [batch]), HISTORY a SparseTensor
        [batch, None] of item ids, most recent last.
      custom_config: `asdict(TransformConfig)` plus "data": `asdict(DataConfig)`.

    Returns:
      The transformed features keyed by the *_xf names.
    """
    transform_config, data_config = configs_from_custom_config(custom_config)
    id_vocab_args = dict(top_k=transform_config.id_vocab_size,
                         frequency_threshold=_frequency_threshold(
                             transform_config.id_min_frequency))
    num_oov = transform_config.num_oov_buckets
    outputs: Dict[str, Any] = {}

    # ---- item side: depends on item features only ------------------------------------------
    item_id = _scalar_column(inputs[features.ITEM_ID], b"")
    history = inputs[features.HISTORY]
    # One item vocabulary over row items and history items, so both index the same table.
    item_vocab = tft.vocabulary(tf.concat([item_id, history.values], axis=0),
                                vocab_filename=ITEM_VOCAB, **id_vocab_args)
    outputs[features.ITEM_ID_XF] = _shifted(
        tft.apply_vocabulary(item_id, item_vocab, num_oov_buckets=num_oov))

    tokens = tokenize(_scalar_column(inputs[features.TITLE], b""),
                      _scalar_column(inputs[features.DESCRIPTION], b""))
    token_ids = tft.compute_and_apply_vocabulary(
        tokens.flat_values, top_k=transform_config.text_vocab_size,
        frequency_threshold=_frequency_threshold(transform_config.text_min_frequency),
        num_oov_buckets=num_oov, vocab_filename=TEXT_VOCAB)
    outputs[features.TITLE_TOKENS_XF] = pad_or_truncate(
        tokens.with_flat_values(_shifted(token_ids)), transform_config.text_max_tokens,
        keep_last=False)

    outputs[features.CATEGORY_XF] = _shifted(tft.compute_and_apply_vocabulary(
        _scalar_column(inputs[features.CATEGORY], b""), num_oov_buckets=num_oov,
        vocab_filename=CATEGORY_VOCAB, **id_vocab_args))

    price = tf.cast(_scalar_column(inputs[features.PRICE], 0.0), tf.float32)
    # Prices are heavy-tailed: log1p before the z-score; negative prices are data errors.
    outputs[features.PRICE_XF] = tft.scale_to_z_score(tf.math.log1p(tf.maximum(price, 0.0)))

    # Bytes pass through; decoding happens inside the model so serving takes raw PNG bytes.
    outputs[features.IMAGE_XF] = tf.identity(_scalar_column(inputs[features.IMAGE], b""))

    # ---- query side: depends on query features only ----------------------------------------
    outputs[features.USER_ID_XF] = _shifted(tft.compute_and_apply_vocabulary(
        _scalar_column(inputs[features.USER_ID], b""), num_oov_buckets=num_oov,
        vocab_filename=USER_VOCAB, **id_vocab_args))

    history_ids = _shifted(tft.apply_vocabulary(history, item_vocab, num_oov_buckets=num_oov))
    outputs[features.HISTORY_XF] = pad_or_truncate(tf.RaggedTensor.from_sparse(history_ids),
                                        data_config.history_length, keep_last=True)

    outputs[features.DEVICE_XF] = _shifted(tft.compute_and_apply_vocabulary(
        _scalar_column(inputs[features.DEVICE], b""), num_oov_buckets=num_oov,
        vocab_filename=DEVICE_VOCAB, **id_vocab_args))

    timestamp = tf.cast(_scalar_column(inputs[features.TIMESTAMP], 0), tf.int64)
    outputs[features.HOUR_XF] = hour_of_day(timestamp)
    outputs[features.DAY_OF_WEEK_XF] = day_of_week(timestamp)
    outputs[features.EVENT_DAY_XF] = tf.cast(timestamp, tf.float32) / SECONDS_PER_DAY

    # ---- label: training data only ---------------------------------------------------------
    if features.LABEL in inputs:
        label = tf.cast(_scalar_column(inputs[features.LABEL], 0), tf.int64)
        outputs[features.LABEL_XF] = label
        # Written as assets only (no output reads them): the candidates' item distributions.
        tft.vocabulary(tf.boolean_mask(item_id, tf.equal(label, 1)),
                       vocab_filename=POSITIVE_ITEM_COUNTS, store_frequency=True)
        tft.vocabulary(item_id, vocab_filename=ITEM_ROW_COUNTS, store_frequency=True)
    if features.LABEL in inputs and features.FIRST_SEEN in inputs:
        first_seen = tf.cast(_scalar_column(inputs[features.FIRST_SEEN], 0), tf.int64)
        outputs[features.ITEM_AGE_XF] = (tf.cast(timestamp - first_seen, tf.float32)
                                         / SECONDS_PER_DAY)
    return outputs


# ---- Readers of the transform output used by the Trainer ----------------------------------
def vocabulary_table_size(tft_output: tft.TFTransformOutput, vocab_name: str,
                          transform_config: config_lib.TransformConfig) -> int:
    """Rows an embedding table needs for ids of `vocab_name`: padding + vocab + OOV."""
    return 1 + tft_output.vocabulary_size_by_name(vocab_name) + transform_config.num_oov_buckets


def item_log_sampling_probability(tft_output: tft.TFTransformOutput,
                                  transform_config: config_lib.TransformConfig,
                                  negatives: str = "positives") -> np.ndarray:
    """log P(item is an in-batch candidate), indexed by transformed item id.

    In-batch softmax uses the batch's items as negatives, so popular items are sampled as
    negatives more often; subtracting log P from their logits removes that bias (logQ
    correction). P comes from the train split's item counts over the rows that supply
    candidates: positives (negatives="positives") or all rows (negatives="batch"). Padding,
    OOV buckets and items never counted get the smallest observed probability: they rarely
    (OOV) or never appear as candidates, so any finite floor is correct enough.
    """
    counts_vocab = ITEM_ROW_COUNTS if negatives == "batch" else POSITIVE_ITEM_COUNTS
    item_vocab: List[bytes] = tft_output.vocabulary_by_name(ITEM_VOCAB)
    counts: Dict[bytes, float] = {}
    for line in tft_output.vocabulary_by_name(counts_vocab):
        count, _, item = line.partition(b" ")
        counts[item] = float(count)
    table_size = vocabulary_table_size(tft_output, ITEM_VOCAB, transform_config)
    total = sum(counts.values())
    if total <= 0:
        return np.zeros(table_size, np.float32)  # no positives: no correction
    floor = min(counts.values())
    item_counts = np.full(table_size, floor, np.float64)
    for index, item in enumerate(item_vocab):
        item_counts[index + 1] = counts.get(item, floor)  # +1: the shifted id
    return np.log(item_counts / total).astype(np.float32)
