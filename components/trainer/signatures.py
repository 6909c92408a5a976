"""What the exported SavedModel holds: `ServingModule`, its catalogue and its signatures.

Every signature takes raw features (tf.Example bytes or raw tensors) and applies the SAME
Transform graph the Trainer used (the TFT Keras layer, tracked on the module so its
vocabulary assets are saved), so serving needs no preprocessing of its own:

- `serving_default`: examples (serialized tf.Example, no label) -> {"score"}: the ranking
  probability. TFMA's Evaluator and TF Serving predict use it.
- `recommend`: user id, recent history, device, timestamp, k -> top-k catalogue item ids and
  their retrieval scores (cosine similarity + the item's score bias + its freshness at the
  request's timestamp, see model/retrieval.py, + its learned recent-popularity snapshot,
  see model/popularity_prior.py), excluding items in the row's history. The catalogue is
  embedded ONCE at export (catalogue_embedding.py) and stored as variables; their size is
  not fixed, so a catalogue refresh can add items to a loaded version without retraining,
  through two saved functions that are not signatures: `new_catalogue_entries` and
  `replace_catalogue`.
- `recommend_excluding`: `recommend` plus `exclude_item_ids` [batch, n] (any n, "" padding):
  those items are excluded too (e.g. everything the user ever bought, not only the last N
  the history holds). A signature of its own because TF Serving inputs cannot be optional.
- `embed_items`: raw item features -> {"embedding"} (the item tower).
- `transformed_features`: examples -> {"user_segment": "new" | "returning"}, the slice TFMA
  reads from a signature of this name (new: nothing engaged before the event).

Why a `tf.Module` root rather than the Keras model: the signatures are all the SavedModel has
to offer (TFMA loads it as a generic TF model and calls `serving_default`), and the module
keeps the serving-only state (catalogue, its id index, the TFT layer) off the trainable
model. Only core TF ops are used (PNG decode, string regex/split, lookup tables), so the
stock tensorflow/serving binary loads it.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from hyperrec.components import transform
from hyperrec.components.model.two_tower import TwoTowerModel
from hyperrec.components.trainer.catalogue_embedding import item_score_terms, prior_logits
from hyperrec.schemas import features

# A slot `recommend` cannot fill (k exceeds the unseen catalogue) gets id "" and this score;
# finite so that REST/JSON clients can encode it (JSON has no -inf).
EXCLUDED_SCORE = -1e9

# Output keys of ServingModule.new_catalogue_entries.
CATALOGUE_EMBEDDING = "embedding"
CATALOGUE_SCORE_BIAS = "score_bias"
CATALOGUE_PRIOR = "prior"

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
