"""Export of the trained two-tower model as a SavedModel with three RAW-feature signatures.

Every signature takes raw features (tf.Example bytes or raw tensors) and applies the SAME
Transform graph the Trainer used (the TFT Keras layer, tracked on the exported object so its
vocabulary assets are saved), so serving needs no preprocessing of its own:

- `serving_default`: examples (serialized tf.Example, no label) -> {"score"}: the ranking
  probability. TFMA's Evaluator and TF Serving predict use it.
- `recommend`: user id, recent history, device, timestamp, k -> top-k catalogue item ids and
  their retrieval scores (cosine similarity + the item's score bias + its freshness at the
  request's timestamp, see model/retrieval.py, + its learned recent-popularity snapshot,
  see model/popularity_prior.py), excluding items in the row's history. The catalogue is
  embedded ONCE at export and stored as variables in the SavedModel; their size is not fixed,
  so a catalogue refresh (components/catalogue_refresh.py) can add items to a loaded version
  without retraining, through two saved functions that are not signatures:
  `new_catalogue_entries` and `replace_catalogue`.
- `recommend_excluding`: `recommend` plus `exclude_item_ids` [batch, n] (any n, "" padding):
  those items are excluded too (e.g. everything the user ever bought, not only the last N
  the history holds). A signature of its own because TF Serving inputs cannot be optional.
- `embed_items`: raw item features -> {"embedding"} (the item tower).
- `transformed_features`: examples -> {"user_segment": "new" | "returning"}, the slice TFMA
  reads from a signature of this name (new: nothing engaged before the event).

Warmup. `assets.extra/tf_serving_warmup_requests` holds PredictionLogs (PredictRequests for
`serving_default` and `recommend`, built from a few real eval examples) that TF Serving (and
serving/) replays when it loads the version, so the first real requests do not pay for
lazy initialisation.

Why a `tf.Module` root rather than the Keras model: the signatures are all the SavedModel has
to offer (TFMA loads it as a generic TF model and calls `serving_default`), and the module
keeps the serving-only state (catalogue, its id index, the TFT layer) off the trainable
model. Only core TF ops are used (PNG decode, string regex/split, lookup tables), so the
stock tensorflow/serving binary loads it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from hyperrec.schemas import features
from hyperrec.components import transform
from hyperrec.components.model.two_tower import TwoTowerModel

# A slot `recommend` cannot fill (k exceeds the unseen catalogue) gets id "" and this score;
# finite so that REST/JSON clients can encode it (JSON has no -inf).
EXCLUDED_SCORE = -1e9

# Output keys of ServingModule.new_catalogue_entries.
CATALOGUE_EMBEDDING = "embedding"
CATALOGUE_SCORE_BIAS = "score_bias"
CATALOGUE_PRIOR = "prior"

# Where TF Serving looks for warmup requests, relative to the SavedModel directory.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 4)  # one request per batch size per signature

# Content that may legally be absent from a serving tf.Example (real catalogues have gaps).
_OPTIONAL_CONTENT = (features.TITLE, features.DESCRIPTION, features.IMAGE)


def serving_feature_spec(tft_output: tft.TFTransformOutput) -> Dict[str, Any]:
    """The parsing spec of a serving tf.Example: the raw features the model reads.

    Label and bookkeeping features (event, image status, first seen, cold start) are not
    parsed, so serving requests need not carry them; missing title/description/image parse
    as "" (masked by the model).
    """
    raw_spec = tft_output.raw_feature_spec()
    spec = {}
    for name in transform.QUERY_INPUTS + transform.ITEM_INPUTS:
        feature_spec = raw_spec[name]
        if (name in _OPTIONAL_CONTENT and isinstance(feature_spec, tf.io.FixedLenFeature)
                and feature_spec.default_value is None):
            # A scalar default is broadcast to the feature's shape by parse_example.
            feature_spec = tf.io.FixedLenFeature(feature_spec.shape, feature_spec.dtype,
                                                 default_value=b"")
        spec[name] = feature_spec
    return spec


def _as_raw_feature(tensor: tf.Tensor, feature_spec: Any) -> Any:
    """A [batch] (or [batch, n] for lists) signature input in the raw schema's layout.

    Fixed-length features get the schema's per-example shape ([batch, 1] for scalars);
    variable-length ones become a SparseTensor, dropping padding ("" or 0) entries.
    """
    if isinstance(feature_spec, tf.io.VarLenFeature):
        return tf.sparse.from_dense(tf.cast(tensor, feature_spec.dtype))
    tensor = tf.cast(tensor, feature_spec.dtype)
    return tf.reshape(tensor, [-1] + list(feature_spec.shape))


def embed_catalog(model: TwoTowerModel, tft_layer: tf.keras.Model,
                  catalog_batches: Iterable[Mapping[str, Any]],
                  popularity_weight: float = 0.0, prior_day: Optional[float] = None,
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Embeds every catalogue item from its raw features with the trained item tower.

    Only item features are fed to the TFT layer; it returns the item outputs alone (see
    components/transform.py). Returns (item ids [C] bytes, embeddings [C, dim] float32,
    score biases [C] float32: temperature * the item tower's retrieval bias, so that
    cosine + score bias ranks as the retrieval logits do, plus temperature *
    popularity_weight * log Q(item), the train popularity the logQ correction removed;
    first-seen days [C] float32: days since the epoch, for the freshness term; prior [C]
    float32: temperature * the recent-popularity logit of the counts before `prior_day`
    (None: the snapshot at the end of the train data), 0 without that term).
    """
    popularity = model.recent_popularity
    if popularity is not None and prior_day is None:
        prior_day = popularity.first_day + popularity.num_days - 1

    # One graph for all batches (eager map_fn decoding would run per image in Python).
    @tf.function(autograph=False, reduce_retracing=True)
    def embed(raw: Dict[str, Any]) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        embedding, bias, item_ids = item_score_terms(model, tft_layer(raw), popularity_weight)
        counts = (None if popularity is None
                  else popularity.counts_at(item_ids, [prior_day])[0])
        return embedding, bias, prior_logits(model, counts, tf.shape(bias))

    ids, embeddings, biases, first_seen, priors = [], [], [], [], []
    for batch in catalog_batches:
        embedding, bias, prior = embed({name: batch[name] for name in transform.ITEM_INPUTS})
        embeddings.append(embedding.numpy())
        biases.append(bias.numpy())
        priors.append(prior.numpy())
        ids.append(tf.reshape(batch[features.ITEM_ID], [-1]).numpy())
        first_seen.append(first_seen_days(batch, len(ids[-1])))
    if not ids:
        raise ValueError("the catalogue split is empty: nothing to recommend from")
    return (np.concatenate(ids), np.concatenate(embeddings).astype(np.float32),
            np.concatenate(biases).astype(np.float32), np.concatenate(first_seen),
            np.concatenate(priors).astype(np.float32))


def item_score_terms(model: TwoTowerModel, transformed: Mapping[str, tf.Tensor],
                     popularity_weight: float) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(embedding [n, dim], score bias [n], item id rows [n]) of transformed items.

    The score bias is temperature * the item tower's retrieval bias (an id outside the
    vocabulary gets its OOV bucket's), plus temperature * popularity_weight * log Q(item);
    with the "affinity" served score, temperature * the affinity task's item bias.
    """
    item = model.item_tower.encode(transformed, training=False)
    item_ids = tf.reshape(transformed[features.ITEM_ID_XF], [-1])
    if model.served_score == "affinity":
        # The affinity task's item term: the item's engagement rate when shown (quality).
        return (item["embedding"], model.retrieval.temperature * item["affinity_bias"],
                item_ids)
    log_q = tf.gather(model.retrieval.item_log_q, item_ids)
    bias = model.retrieval.temperature * (item["bias"] + popularity_weight * log_q)
    return item["embedding"], bias, item_ids


def prior_logits(model: TwoTowerModel, counts: Optional[tf.Tensor],
                 shape: tf.Tensor) -> tf.Tensor:
    """temperature * the recent-popularity logit of `counts` (zeros of `shape` without the
    term: then `counts` is None); with the "affinity" served score, temperature *
    exposure_weight * log(1 + counts)."""
    if model.recent_popularity is None:
        return tf.zeros(shape, tf.float32)
    if model.served_score == "affinity":
        # The demand factor: log(1 + recent count), weighted (ModelConfig.exposure_weight).
        return (model.retrieval.temperature * model.exposure_weight
                * tf.math.log1p(tf.cast(counts, tf.float32)))
    return model.retrieval.temperature * model.recent_popularity(counts)


def first_seen_days(batch: Mapping[str, Any], size: int) -> np.ndarray:
    """[size] float32 days since the epoch at which each raw catalogue item was first seen
    (0 where the batch has no first-seen feature: the item counts as long established)."""
    value = batch.get(features.FIRST_SEEN)
    if value is None:
        return np.zeros(size, np.float32)
    if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value)
    seconds = tf.reshape(value, [-1]).numpy().astype(np.float64)
    return (seconds / features.SECONDS_PER_DAY).astype(np.float32)


class ServingModule(tf.Module):
    """What the SavedModel holds: model, TFT layer, catalogue, and the signature functions."""

    def __init__(self, model: TwoTowerModel, tft_output: tft.TFTransformOutput,
                 catalog_item_ids: np.ndarray, catalog_embeddings: np.ndarray,
                 catalog_score_bias: Optional[np.ndarray] = None,
                 catalog_first_seen_days: Optional[np.ndarray] = None,
                 catalog_prior: Optional[np.ndarray] = None,
                 popularity_weight: float = 0.0) -> None:
        super().__init__(name="hyperrec_serving")
        if len(set(catalog_item_ids.tolist())) != len(catalog_item_ids):
            raise ValueError("catalogue item ids must be unique")
        self.model = model
        self.tft_layer = tft_output.transform_features_layer()
        self._raw_spec = tft_output.raw_feature_spec()
        self._serving_spec = serving_feature_spec(tft_output)
        size = len(catalog_item_ids)

        # Catalogue rows have no fixed size ([None] / [None, dim]) and the id index is a
        # MutableHashTable (restored from the checkpoint, as TF Serving restores variables),
        # so a loaded SavedModel can take a larger catalogue: replace_catalogue below.
        def rows(value: Optional[np.ndarray], name: str, dtype: Any = np.float32,
                 ) -> tf.Variable:
            value = np.zeros(size, dtype) if value is None else np.asarray(value)
            return tf.Variable(value, trainable=False, name=name,
                               shape=tf.TensorShape([None] + list(value.shape[1:])))

        self.catalog_item_ids = rows(catalog_item_ids, "catalog_item_ids", object)
        self.catalog_embeddings = rows(catalog_embeddings, "catalog_embeddings")
        self.catalog_score_bias = rows(catalog_score_bias, "catalog_score_bias")
        self.catalog_first_seen_days = rows(catalog_first_seen_days, "catalog_first_seen_days")
        # The recent-popularity term's snapshot (model/popularity_prior.py), on the score
        # scale: per item, not per request, so a catalogue refresh can renew it.
        self.catalog_prior = rows(catalog_prior, "catalog_prior")
        # item id -> catalogue row, to exclude history items by scatter in O(batch * history)
        # rather than comparing every history id with every catalogue id.
        self.catalog_index = tf.lookup.experimental.MutableHashTable(
            tf.string, tf.int64, default_value=-1, name="catalog_index")
        self.catalog_index.insert(tf.constant(catalog_item_ids, tf.string),
                                  tf.range(size, dtype=tf.int64))
        # The side of the PNGs the item tower was trained on, for a refresh to normalise new
        # images as ExampleGen did.
        self.item_image_size = tf.Variable(int(model.item_tower.image_size), trainable=False,
                                           dtype=tf.int32, name="item_image_size")
        self._popularity_weight = float(popularity_weight)

    def _raw(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
        return {name: _as_raw_feature(value, self._raw_spec[name])
                for name, value in inputs.items()}

    def _item_embeddings(self, raw: Mapping[str, Any]) -> tf.Tensor:
        return self.model.item_tower(self.tft_layer(raw), training=False)

    def serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """serving_default: serialized tf.Examples -> ranking probability [batch]."""
        transformed = self.tft_layer(tf.io.parse_example(examples, self._serving_spec))
        query = self.model.query_tower.encode(transformed, training=False)
        item = self.model.item_tower.encode(transformed, training=False)
        logits = self.model.ranking.score_logits(
            query["fusion"], item["fusion"], training=False,
            retrieval_signals=self.model.ranking_signals(query, item))
        return {features.SCORE: tf.sigmoid(logits)}

    def _exclude(self, scores: tf.Tensor, item_ids: tf.Tensor) -> tf.Tensor:
        """scores [batch, C] with the catalogue rows of each row's `item_ids` [batch, n]
        ("" padding and ids outside the catalogue are ignored) set to EXCLUDED_SCORE."""
        # -1: padding / not in catalogue. A MutableHashTable lookup has no static shape.
        rows = tf.reshape(self.catalog_index.lookup(item_ids), tf.shape(item_ids))
        found = rows >= 0
        batch_rows = tf.broadcast_to(
            tf.range(tf.shape(item_ids, out_type=tf.int64)[0])[:, tf.newaxis],
            tf.shape(rows, out_type=tf.int64))
        indices = tf.stack([tf.boolean_mask(batch_rows, found),
                            tf.boolean_mask(rows, found)], axis=1)
        return tf.tensor_scatter_nd_update(
            scores, indices,
            tf.fill([tf.shape(indices)[0]], tf.constant(EXCLUDED_SCORE, scores.dtype)))

    def recommend(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """recommend: top max(k) catalogue items per row, history items and items first seen
        after the request's timestamp excluded, and with `exclude_item_ids`
        (recommend_excluding) those items too."""
        transformed = self.tft_layer(
            self._raw({name: inputs[name] for name in transform.QUERY_INPUTS}))
        query = self.model.query_tower(transformed, training=False)
        scores = (tf.matmul(query, self.catalog_embeddings, transpose_b=True)  # [batch, C]
                  + (self.catalog_score_bias + self.catalog_prior)[tf.newaxis, :])
        if self.model.freshness is not None and self.model.served_score == "retrieval":
            # Each item's age at the request time (model/freshness.py), on the score scale.
            age = (tf.reshape(transformed[features.EVENT_DAY_XF], [-1, 1])
                   - self.catalog_first_seen_days[tf.newaxis, :])
            scores += self.model.retrieval.temperature * self.model.freshness(age)
        # An item first seen after the request's time does not exist yet: never returned.
        # The request day is rounded to float32 as catalog_first_seen_days was
        # (first_seen_days), and rounding is monotonic, so an item first seen at or before
        # the request is never masked (float32 days resolve about 3 minutes).
        request_day = tf.cast(tf.cast(inputs[features.TIMESTAMP], tf.float64)
                              / features.SECONDS_PER_DAY, tf.float32)
        not_yet = (self.catalog_first_seen_days[tf.newaxis, :]
                   > tf.reshape(request_day, [-1, 1]))
        scores = tf.where(not_yet, tf.constant(EXCLUDED_SCORE, scores.dtype), scores)
        scores = self._exclude(scores, inputs[features.HISTORY])
        if features.EXCLUDE_ITEM_IDS in inputs:
            exclude = inputs[features.EXCLUDE_ITEM_IDS]
            # Exclusions name rows of this batch: a request cannot exclude for another row.
            tf.debugging.assert_equal(
                tf.shape(exclude)[0], tf.shape(scores)[0],
                message=f"{features.EXCLUDE_ITEM_IDS} needs one row per query row")
            scores = self._exclude(scores, exclude)

        catalog_size = tf.shape(self.catalog_embeddings)[0]
        k = tf.maximum(tf.minimum(tf.reduce_max(inputs[features.K]), catalog_size), 0)
        top_scores, top_rows = tf.math.top_k(scores, k=k)
        item_ids = tf.gather(self.catalog_item_ids, top_rows)
        unfilled = top_scores <= EXCLUDED_SCORE
        return {features.ITEM_IDS: tf.where(unfilled, tf.constant(""), item_ids),
                features.SCORES: tf.where(unfilled, tf.constant(EXCLUDED_SCORE, top_scores.dtype),
                                 top_scores)}

    def transformed_features(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """transformed_features: serialized tf.Examples -> {USER_SEGMENT}: "new" when the
        user had engaged with nothing before the event (empty history), else "returning".
        TFMA calls a signature of this name and slices on its outputs."""
        history = tf.io.parse_example(examples, {
            features.HISTORY: tf.io.VarLenFeature(tf.string)})[features.HISTORY]
        engaged = tf.reduce_any(tf.not_equal(tf.sparse.to_dense(history, ""), ""), axis=1)
        return {features.USER_SEGMENT: tf.where(engaged, features.RETURNING_USER,
                                                features.NEW_USER)}

    def embed_items(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """embed_items: raw item features -> item tower embedding [batch, dim]."""
        return {features.EMBEDDING: self._item_embeddings(self._raw(inputs))}

    @tf.function(autograph=False, input_signature=[{
        name: tf.TensorSpec([None], tf.float32 if name == features.PRICE else tf.string,
                            name=name) for name in transform.ITEM_INPUTS}])
    def new_catalogue_entries(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Raw features of items new to the catalogue -> what `replace_catalogue` needs of
        them: {CATALOGUE_EMBEDDING, CATALOGUE_SCORE_BIAS, CATALOGUE_PRIOR} as `embed_catalog`
        computes them, with a recent-popularity count of 0 (nobody has engaged with a new
        item yet). A saved function, not a signature: the serving API does not expose it."""
        embedding, bias, _ = item_score_terms(
            self.model, self.tft_layer(self._raw(inputs)), self._popularity_weight)
        zeros = tf.zeros_like(bias)
        return {CATALOGUE_EMBEDDING: embedding, CATALOGUE_SCORE_BIAS: bias,
                CATALOGUE_PRIOR: prior_logits(self.model, zeros, tf.shape(bias))}

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.float32)])
    def replace_catalogue(self, item_ids: tf.Tensor, embeddings: tf.Tensor,
                          score_bias: tf.Tensor, first_seen_days: tf.Tensor,
                          prior: tf.Tensor) -> tf.Tensor:
        """Replaces the whole catalogue (row i of every argument is item i); returns its size.

        Unique ids, one row per id in every array and the embedding width are checked
        before anything changes (InvalidArgumentError). The index's old keys are removed,
        so an id left out of the new catalogue is no longer excluded or returned.
        """
        size = tf.size(item_ids)
        checks = [
            tf.debugging.assert_equal(tf.size(tf.unique(item_ids).y), size,
                                      message="catalogue item ids must be unique"),
            tf.debugging.assert_equal(tf.shape(embeddings),
                                      tf.stack([size, tf.shape(self.catalog_embeddings)[1]]),
                                      message="embeddings must be [items, dim]")]
        checks += [tf.debugging.assert_equal(tf.size(values), size,
                                             message=f"{name} needs one value per item")
                   for name, values in (("score_bias", score_bias),
                                        ("first_seen_days", first_seen_days),
                                        ("prior", prior))]
        with tf.control_dependencies(checks):
            old_ids, _ = self.catalog_index.export()
            removed = self.catalog_index.remove(old_ids)
        with tf.control_dependencies([removed]):
            assigned = [self.catalog_item_ids.assign(item_ids),
                        self.catalog_embeddings.assign(embeddings),
                        self.catalog_score_bias.assign(score_bias),
                        self.catalog_first_seen_days.assign(first_seen_days),
                        self.catalog_prior.assign(prior)]
            inserted = self.catalog_index.insert(item_ids,
                                                 tf.range(tf.cast(size, tf.int64)))
        with tf.control_dependencies(assigned + [inserted]):
            return tf.identity(size)

    def signatures(self) -> Dict[str, Any]:
        """Concrete functions for tf.saved_model.save, inputs named by the TensorSpec names."""
        def spec(name: str, dtype: tf.DType, shape: Tuple = (None,)) -> tf.TensorSpec:
            return tf.TensorSpec(shape, dtype, name=name)

        serve = tf.function(self.serve_examples, autograph=False).get_concrete_function(
            spec(features.EXAMPLES, tf.string))
        query_specs = {
            features.USER_ID: spec(features.USER_ID, tf.string),
            features.HISTORY: spec(features.HISTORY, tf.string, (None, None)),
            features.DEVICE: spec(features.DEVICE, tf.string),
            features.TIMESTAMP: spec(features.TIMESTAMP, tf.int64),
            features.K: spec(features.K, tf.int32),
        }
        recommend = tf.function(self.recommend, autograph=False)
        # TF Serving has no optional inputs: exclusions get a signature of their own, so
        # `recommend` requests stay as they are.
        recommend_excluding = recommend.get_concrete_function({
            **query_specs,
            features.EXCLUDE_ITEM_IDS: spec(features.EXCLUDE_ITEM_IDS, tf.string, (None, None))})
        recommend = recommend.get_concrete_function(query_specs)
        item_dtypes = {features.PRICE: tf.float32}
        embed = tf.function(self.embed_items, autograph=False).get_concrete_function({
            name: spec(name, item_dtypes.get(name, tf.string))
            for name in transform.ITEM_INPUTS})
        segment = tf.function(self.transformed_features, autograph=False).get_concrete_function(
            spec(features.EXAMPLES, tf.string))
        return {features.SERVING_DEFAULT: serve, features.RECOMMEND: recommend,
                features.RECOMMEND_EXCLUDING: recommend_excluding,
                features.EMBED_ITEMS: embed, features.TRANSFORMED_FEATURES: segment}


def _parse_query_features(serialized: Sequence[bytes]) -> Dict[str, List[Any]]:
    """The `recommend` inputs of serialized tf.Examples (their query side), as lists."""
    rows: Dict[str, List[Any]] = {name: [] for name in transform.QUERY_INPUTS}
    for data in serialized:
        feature = tf.train.Example.FromString(data).features.feature
        for name in transform.QUERY_INPUTS:
            values = (list(feature[name].int64_list.value) if name == features.TIMESTAMP
                      else list(feature[name].bytes_list.value))
            rows[name].append(values if name == features.HISTORY
                              else (values[0] if values else
                                    (0 if name == features.TIMESTAMP else b"")))
    width = max([len(h) for h in rows[features.HISTORY]] + [1])
    rows[features.HISTORY] = [h + [b""] * (width - len(h)) for h in rows[features.HISTORY]]
    return rows


def warmup_requests(examples: Sequence[bytes], recommend_k: int,
                    ) -> List[prediction_log_pb2.PredictionLog]:
    """PredictionLogs for TF Serving's model warmup from serialized serving tf.Examples.

    For each batch size in WARMUP_BATCH_SIZES (capped at the examples available): one
    `serving_default` request with the examples, one `recommend` request with their query
    features (user, history right-padded with "", device, timestamp) and k = recommend_k,
    and one `recommend_excluding` request that also excludes the history items.
    """
    logs = []
    for size in sorted({min(s, len(examples)) for s in WARMUP_BATCH_SIZES} - {0}):
        batch = list(examples[:size])
        score = predict_pb2.PredictRequest()
        score.model_spec.signature_name = features.SERVING_DEFAULT
        score.inputs[features.EXAMPLES].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
        query = _parse_query_features(batch)
        recommend = predict_pb2.PredictRequest()
        recommend.model_spec.signature_name = features.RECOMMEND
        dtypes = {features.TIMESTAMP: tf.int64}
        for name, values in query.items():
            recommend.inputs[name].CopyFrom(
                tf.make_tensor_proto(values, dtype=dtypes.get(name, tf.string)))
        recommend.inputs[features.K].CopyFrom(tf.make_tensor_proto([recommend_k] * size, tf.int32))
        excluding = predict_pb2.PredictRequest()
        excluding.CopyFrom(recommend)
        excluding.model_spec.signature_name = features.RECOMMEND_EXCLUDING
        # The history doubles as the exclusions: real ids, the shape serving sends.
        excluding.inputs[features.EXCLUDE_ITEM_IDS].CopyFrom(
            tf.make_tensor_proto(query[features.HISTORY], dtype=tf.string))
        for request in (score, recommend, excluding):
            logs.append(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_requests(serving_model_dir: str, examples: Sequence[bytes],
                          recommend_k: int) -> str:
    """Writes assets.extra/tf_serving_warmup_requests (a TFRecord of PredictionLogs)."""
    path = os.path.join(serving_model_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in warmup_requests(examples, recommend_k):
            writer.write(log.SerializeToString())
    return path


def export_serving_model(model: TwoTowerModel, tft_output: tft.TFTransformOutput,
                         catalog_batches: Iterable[Mapping[str, Any]],
                         serving_model_dir: str, warmup_examples: Sequence[bytes] = (),
                         recommend_k: int = 10,
                         popularity_weight: float = 0.0) -> ServingModule:
    """Embeds the catalogue and writes the SavedModel with its signatures, plus warmup
    requests from `warmup_examples` (serialized serving tf.Examples) when given."""
    tft_layer = tft_output.transform_features_layer()
    module = ServingModule(model, tft_output, *embed_catalog(
        model, tft_layer, catalog_batches, popularity_weight),
        popularity_weight=popularity_weight)
    tf.saved_model.save(module, serving_model_dir, signatures=module.signatures())
    if warmup_examples:
        write_warmup_requests(serving_model_dir, warmup_examples, recommend_k)
    return module
