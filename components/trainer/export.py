"""Export of the trained two-tower model: the SavedModel, its catalogue and warmup requests.

`export_trained_model` embeds the catalogue split with the trained item tower
(catalogue_embedding.py), saves a `signatures.ServingModule` with its raw-feature signatures
(serving_default, recommend, recommend_excluding, embed_items, transformed_features; see
signatures.py) and writes the warmup requests. On multi-worker runs every worker saves
(saving runs collectives) and only the chief's copy is kept (distribution.write_dir).

Warmup. `assets.extra/tf_serving_warmup_requests` holds PredictionLogs (PredictRequests for
`serving_default` and `recommend`, built from a few real eval examples) that TF Serving (and
serving/) replays when it loads the version, so the first real requests do not pay for
lazy initialisation.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from hyperrec.components import config as config_lib
from hyperrec.components import transform
from hyperrec.components.model.two_tower import TwoTowerModel
from hyperrec.components.trainer import distribution
from hyperrec.components.trainer.catalogue_embedding import embed_catalog
from hyperrec.components.trainer.input import TrainingData
# The SavedModel's names, here for its readers (catalogue refresh, benches, tests).
from hyperrec.components.trainer.signatures import (CATALOGUE_EMBEDDING, CATALOGUE_PRIOR,
                                                    CATALOGUE_SCORE_BIAS, EXCLUDED_SCORE,
                                                    ServingModule)
from hyperrec.schemas import features

# Where TF Serving looks for warmup requests, relative to the SavedModel directory.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCH_SIZES = (1, 4)  # one request per batch size per signature

__all__ = ["CATALOGUE_EMBEDDING", "CATALOGUE_PRIOR", "CATALOGUE_SCORE_BIAS", "EXCLUDED_SCORE",
           "ServingModule", "WARMUP_BATCH_SIZES", "WARMUP_FILE", "export_serving_model",
           "export_trained_model", "warmup_requests", "write_warmup_requests"]


def export_trained_model(model: TwoTowerModel, data: TrainingData,
                         model_config: config_lib.ModelConfig, serving_model_dir: str,
                         strategy: tf.distribute.Strategy) -> None:
    """The Trainer's export to serving_model_dir: data.catalog embedded, data's warmup
    examples as warmup requests."""
    # Every worker exports (saving runs collectives); only the chief's copy is kept.
    serving_dir = distribution.write_dir(serving_model_dir, strategy)
    export_serving_model(
        model, data.tft_output, data.catalog, serving_dir,
        warmup_examples=data.warmup_examples,
        recommend_k=model_config.recommend_k,
        popularity_weight=model_config.serving_popularity_weight)
    distribution.cleanup_write_dir(serving_model_dir, strategy)


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
