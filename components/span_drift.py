"""Drift of a new span against the previous run's, inside the pipeline, before training.

TFX's DistributionValidator compares this run's statistics with the baseline statistics (the
previous run's, resolved before this run's StatisticsGen) using the curated schema's
`drift_comparator`s; its anomalies are the report: a real shift (a trend, a batch of new
items) is above the schema's thresholds and must still be trained on. `SpanDriftGate` reads
every measured distance and stops the run only when one exceeds `DataConfig.max_span_drift`,
the level at which a span is broken rather than shifted (e.g. every row one category).
"""

import json
import os
from typing import Dict, List

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2
from tfx import v1 as tfx
from tfx.proto import distribution_validator_pb2

# The split pair compared: the newest span is the eval split (eval_days = the span's days).
SPLIT = "eval"
SPLIT_PAIR_DIR = f"SplitPair-{SPLIT}_{SPLIT}"
ANOMALIES_FILE = "SchemaDiff.pb"
REPORT_FILE = "span_drift.json"


class BrokenSpanError(RuntimeError):
    """A feature's distribution moved further than any real shift would; the run stops."""


def validator_config(schema: schema_pb2.Schema
                     ) -> distribution_validator_pb2.DistributionValidatorConfig:
    """DistributionValidator's config: one comparator per schema `drift_comparator`."""
    config = distribution_validator_pb2.DistributionValidatorConfig()
    for feature in schema.feature:
        if feature.HasField("drift_comparator"):
            entry = config.default_slice_config.feature.add()
            entry.path.step.append(feature.name)
            entry.distribution_comparator.CopyFrom(feature.drift_comparator)
    return config


def measurements(anomalies: anomalies_pb2.Anomalies) -> List[Dict[str, object]]:
    """Every drift distance the validator measured, above its threshold or not."""
    rows = []
    for info in anomalies.drift_skew_info:
        for entry in info.drift_measurements:
            rows.append({"feature": ".".join(info.path.step),
                         "comparator": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(
                             entry.type),
                         "value": float(entry.value), "threshold": float(entry.threshold),
                         "above": float(entry.value) > float(entry.threshold)})
    return sorted(rows, key=lambda r: r["feature"])


def broken(rows: List[Dict[str, object]], max_span_drift: float) -> List[str]:
    return [f"{r['feature']}: {r['comparator']} {r['value']:.3f} > {max_span_drift}"
            for r in rows if r["value"] > max_span_drift]


@tfx.dsl.components.component
def SpanDriftGate(
        report: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
        max_span_drift: tfx.dsl.components.Parameter[float],
        anomalies: tfx.dsl.components.InputArtifact[
            tfx.types.standard_artifacts.ExampleAnomalies] = None,
) -> None:
    """Writes the span's drift report; fails when a distance exceeds `max_span_drift`.

    On the first run there are no previous statistics: DistributionValidator is skipped and
    `anomalies` is None, so nothing is compared."""
    path = os.path.join(anomalies.uri, SPLIT_PAIR_DIR, ANOMALIES_FILE) if anomalies else ""
    rows: List[Dict[str, object]] = []
    if path and tf.io.gfile.exists(path):
        parsed = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            parsed.ParseFromString(f.read())
        rows = measurements(parsed)
    problems = broken(rows, max_span_drift)
    summary = {"compared": bool(rows), "measurements": rows,
               "drifted_features": sorted({r["feature"] for r in rows if r["above"]}),
               "broken": problems}
    tf.io.gfile.makedirs(report.uri)
    with tf.io.gfile.GFile(os.path.join(report.uri, REPORT_FILE), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    report.set_string_custom_property("drifted_features",
                                      ",".join(summary["drifted_features"]))
    if problems:
        raise BrokenSpanError("the new span moved further than a shift would; the run stops "
                              "before training:\n  " + "\n  ".join(problems))


class PreviousStatisticsStrategy(tfx.dsl.experimental.LatestArtifactStrategy):
    """The newest statistics, or none on a first run.

    TFX's LatestArtifactStrategy answers "nothing yet" with None, which the resolver node
    logs as an input-resolution error with a traceback on every first run; an empty answer
    means the same (no previous span to compare) without alarming anyone.
    """

    def resolve_artifacts(self, store, input_dict):
        return self._resolve(input_dict)


def load_schema(path: str) -> schema_pb2.Schema:
    from google.protobuf import text_format
    with tf.io.gfile.GFile(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())
