"""A gate that ends the run when ExampleValidator found anomalies: no training, no push.

TFX 1.16's ExampleValidator records anomalies but does not stop anything by itself; the gate
reads its output and fails with one line per anomaly (split, feature, why), and Transform
runs only after the gate (pipeline.py), so a bad span never reaches the Trainer.
"""

import os
from typing import List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils


class AnomaliesFoundError(RuntimeError):
    """The span violates the curated schema; the message lists every anomaly."""


def describe_anomalies(split: str, anomalies: anomalies_pb2.Anomalies) -> List[str]:
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
        lines.append(f"[{split}] feature '{feature}': "
                     f"{reasons or info.short_description or info.description}")
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
        lines.append(f"[{split}] dataset: {reasons}")
    return lines


def read_anomalies(artifact: tfx.types.standard_artifacts.ExampleAnomalies
                   ) -> List[str]:
    """Every anomaly of every split of an ExampleAnomalies artifact, one line each."""
    import tensorflow as tf
    lines = []
    for split in artifact_utils.decode_split_names(artifact.split_names):
        path = os.path.join(artifact.uri, f"Split-{split}", "SchemaDiff.pb")
        anomalies = anomalies_pb2.Anomalies()
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies.ParseFromString(f.read())
        lines.extend(describe_anomalies(split, anomalies))
    return lines


@tfx.dsl.components.component
def AnomaliesGate(
        anomalies: tfx.dsl.components.InputArtifact[
            tfx.types.standard_artifacts.ExampleAnomalies],
) -> None:
    """Fails the run when the validated span has any anomaly against the curated schema."""
    problems = read_anomalies(anomalies)
    if problems:
        raise AnomaliesFoundError(
            "ExampleValidator found anomalies; the run stops before training:\n  "
            + "\n  ".join(problems))
