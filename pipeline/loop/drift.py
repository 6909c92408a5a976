"""TFDV statistics of logged requests; skew against training and drift between windows.

Thresholds and comparators come from the curated schema only (`skew_comparator`,
`drift_comparator`: L-infinity for categorical features, Jensen-Shannon divergence for numeric
ones); statistics are validated in the schema's SERVING environment, so features a request
never carries (label, event, ...) are not reported missing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional

import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from hyperrec.schemas import features

SERVING = "SERVING"
TRAINING = "TRAINING"
SKEW = "skew"
DRIFT = "drift"
# Item images are bytes of no distribution worth comparing; their presence is in the schema.
_NOT_PROFILED = (features.IMAGE,)
_ARROW_TYPES = {schema_pb2.BYTES: pa.binary(), schema_pb2.INT: pa.int64(),
                schema_pb2.FLOAT: pa.float32()}


def load_schema(path: str) -> schema_pb2.Schema:
    return tfdv.load_schema_text(path)


def serving_features(schema: schema_pb2.Schema) -> List[schema_pb2.Feature]:
    """The schema's features a serving request may carry, minus the unprofiled ones."""
    return [feature for feature in schema.feature
            if SERVING not in feature.not_in_environment and feature.name not in _NOT_PROFILED]


def statistics(rows: Iterable[Mapping[str, List[Any]]], schema: schema_pb2.Schema
               ) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of feature rows (name -> list of values; absent = missing)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no logged requests carry schema features: nothing to profile")
    columns = {}
    for feature in serving_features(schema):
        values = [row.get(feature.name) for row in rows]
        if all(v is None for v in values):
            continue  # requests of this kind never carry it (e.g. recommend: no item)
        columns[feature.name] = pa.array(values, type=pa.list_(_ARROW_TYPES[feature.type]))
    if not columns:
        raise ValueError("no logged requests carry schema features: nothing to profile")
    batch = pa.RecordBatch.from_arrays(list(columns.values()), list(columns))
    options = tfdv.StatsOptions(schema=schema, num_top_values=20,
                                num_rank_histogram_buckets=100)
    return stats_impl.generate_statistics_in_memory(batch, options)


@dataclasses.dataclass
class Measurement:
    """One comparator's verdict on one feature."""

    feature: str
    kind: str  # SKEW or DRIFT
    comparator: str  # "L_INFTY" or "JENSEN_SHANNON_DIVERGENCE"
    value: float
    threshold: float
    top_shifted: List[Dict[str, Any]]  # categorical: values whose share moved most

    @property
    def above(self) -> bool:
        return self.value > self.threshold


def _shares(stats: statistics_pb2.DatasetFeatureStatisticsList, name: str) -> Dict[str, float]:
    for feature in stats.datasets[0].features:
        if feature.path.step[-1:] == [name] or feature.name == name:
            buckets = feature.string_stats.rank_histogram.buckets
            total = sum(b.sample_count for b in buckets)
            return {b.label: b.sample_count / total for b in buckets} if total else {}
    return {}


def top_shifted(current, reference, name: str, n: int = 3) -> List[Dict[str, Any]]:
    """The values of a categorical feature whose share moved most (reference -> current)."""
    now, before = _shares(current, name), _shares(reference, name)
    moves = [{"value": value, "before": round(before.get(value, 0.0), 4),
              "now": round(now.get(value, 0.0), 4),
              "change": round(now.get(value, 0.0) - before.get(value, 0.0), 4)}
             for value in set(now) | set(before)]
    moves.sort(key=lambda m: (-abs(m["change"]), m["value"]))
    return moves[:n]


def _measurements(anomalies: anomalies_pb2.Anomalies, kind: str, current, reference
                  ) -> List[Measurement]:
    result = []
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        entries = info.skew_measurements if kind == SKEW else info.drift_measurements
        for entry in entries:
            comparator = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(entry.type)
            result.append(Measurement(
                name, kind, comparator, float(entry.value), float(entry.threshold),
                top_shifted(current, reference, name) if comparator == "L_INFTY" else []))
    return sorted(result, key=lambda m: m.feature)


def _profiled(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The schema without the features statistics() leaves out (not "missing" for that)."""
    copy = schema_pb2.Schema()
    copy.CopyFrom(schema)
    kept = [f for f in copy.feature if f.name not in _NOT_PROFILED]
    del copy.feature[:]
    copy.feature.extend(kept)
    return copy


def _restricted(schema: schema_pb2.Schema, kind: str) -> schema_pb2.Schema:
    """The schema with only `kind`'s comparators: each check reports its own comparison."""
    copy = _profiled(schema)
    for feature in copy.feature:
        feature.ClearField("drift_comparator" if kind == SKEW else "skew_comparator")
    return copy


def compare_drift(current, previous, schema: schema_pb2.Schema) -> List[Measurement]:
    """Drift of `current` serving statistics against the previous window's."""
    anomalies = tfdv.validate_statistics(current, _restricted(schema, DRIFT),
                                         environment=SERVING, previous_statistics=previous)
    return _measurements(anomalies, DRIFT, current, previous)


def compare_skew(training, serving, schema: schema_pb2.Schema) -> List[Measurement]:
    """Training-serving skew of `serving` statistics against the training split's."""
    anomalies = tfdv.validate_statistics(training, _restricted(schema, SKEW),
                                         environment=TRAINING, serving_statistics=serving)
    return _measurements(anomalies, SKEW, serving, training)


def schema_anomalies(current, schema: schema_pb2.Schema) -> Dict[str, str]:
    """Schema violations of the serving statistics themselves (domain, presence, ...)."""
    anomalies = tfdv.validate_statistics(current, _profiled(schema), environment=SERVING)
    return {name: info.description or info.short_description
            for name, info in sorted(anomalies.anomaly_info.items())}
