"""The curated schema's environments: SERVING data lacks the label and log-derived fields."""
import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import pandas as pd
import tensorflow_data_validation as tfdv

from hyperrec.schemas import features

SERVING_ABSENT = (features.LABEL, features.EVENT, features.IMAGE_STATUS, features.FIRST_SEEN,
                  features.COLD_START)


def _stats(with_training_fields: bool):
    row = {features.USER_ID: "u1", features.ITEM_ID: "i1", features.TIMESTAMP: 1700000000,
           features.DEVICE: "mobile", features.TITLE: "red top", features.DESCRIPTION: "",
           features.CATEGORY: "tops", features.PRICE: 9.5, features.IMAGE: b""}
    if with_training_fields:
        row.update({features.LABEL: 1, features.EVENT: "click", features.IMAGE_STATUS: "missing",
                    features.FIRST_SEEN: 1690000000, features.COLD_START: 0})
    frame = pd.DataFrame([row] * 20)
    frame[features.HISTORY] = [["i0"]] * 20
    return tfdv.generate_statistics_from_dataframe(frame)


def _anomalous_features(stats, environment):
    schema = tfdv.load_schema_text("schemas/schema.pbtxt")
    return set(tfdv.validate_statistics(stats, schema, environment=environment).anomaly_info)


def test_a_serving_request_without_label_is_valid_in_serving():
    assert _anomalous_features(_stats(with_training_fields=False), "SERVING") == set()


def test_the_same_data_is_an_anomaly_for_training():
    assert _anomalous_features(_stats(with_training_fields=False), "TRAINING") >= set(
        SERVING_ABSENT)


def test_training_data_is_valid_in_training():
    assert _anomalous_features(_stats(with_training_fields=True), "TRAINING") == set()
