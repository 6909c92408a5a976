"""A bad span ends the run before Trainer: ExampleValidator's anomalies stop it, with reasons."""
import csv
import os
import shutil

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import pytest
from ml_metadata.metadata_store import metadata_store
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.orchestration import metadata

from hyperrec.schemas import features
from hyperrec.data import synthetic as datagen
from hyperrec.components.validation_gate import describe_anomalies
from hyperrec.components import config as config_lib
from hyperrec.pipeline.runners import local as local_runner


def test_describe_anomalies_names_split_feature_and_reason():
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["item_price"]
    reason = info.reason.add()
    reason.short_description = "Out-of-range values"
    reason.description = "Unexpectedly small value: -3."
    assert describe_anomalies("train", anomalies) == [
        "[train] feature 'item_price': Out-of-range values: Unexpectedly small value: -3."]
    assert describe_anomalies("eval", anomalies_pb2.Anomalies()) == []


def _corrupt_latest_span(data_root: str) -> None:
    """Negative and NaN prices and a category outside the schema's domain in the latest span."""
    spans = sorted(int(n.split("-")[1]) for n in os.listdir(data_root) if n.startswith("span-"))
    path = os.path.join(data_root, f"span-{spans[-1]}", "items.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows[:10]:
        row["price"] = "-5.00"
    for row in rows[10:20]:
        row["category"] = "spaceships"
    for row in rows[20:30]:
        row["price"] = "nan"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(features.ITEM_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.e2e
def test_a_span_with_anomalies_stops_before_training(tmp_path):
    data_root = str(tmp_path / "data")
    datagen.generate("tiny", 3, data_root)
    _corrupt_latest_span(data_root)
    with pytest.raises(Exception) as raised:
        local_runner.run(config_lib.load("tiny"), data_root, str(tmp_path / "run"))
    message = str(raised.value)
    assert "item_price" in message and "item_category" in message, message
    assert "spaceships" in message, message  # the offending value is named
    assert "NaN values" in message and "Unexpectedly low values" in message, message

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(
        str(tmp_path / "run" / "metadata.sqlite")))
    executed = {c.name.split(".", 1)[-1] for c in store.get_contexts_by_type("node")
                if store.get_executions_by_context(c.id)}
    assert {"ExampleValidator", "AnomaliesGate"} <= executed
    assert not executed & {"Transform", "Trainer", "Evaluator", "Pusher"}
    assert not os.path.exists(tmp_path / "run" / "serving_model")
