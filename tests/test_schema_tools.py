"""The schema update workflow: differences between a curated and an inferred schema."""
import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from hyperrec.pipeline import schema_tools

CURATED = """
feature { name: "device" type: BYTES domain: "device" }
feature { name: "price" type: FLOAT }
feature { name: "gone" type: INT }
string_domain { name: "device" value: "mobile" value: "desktop" value: "tablet" }
"""
INFERRED = """
feature { name: "device" type: BYTES string_domain { value: "mobile" value: "desktop" value: "tv" } }
feature { name: "price" type: INT }
feature { name: "brand_new" type: BYTES }
"""


def test_diff_lists_new_missing_retyped_features_and_domain_changes():
    curated = text_format.Parse(CURATED, schema_pb2.Schema())
    inferred = text_format.Parse(INFERRED, schema_pb2.Schema())
    assert schema_tools.diff_schemas(curated, inferred) == [
        "+ new feature 'brand_new' (BYTES)",
        "- feature 'gone' is absent from the new data",
        "+ 'device' values outside the curated domain: ['tv']",
        "  'device' curated values not seen in the new data: ['tablet']",
        "~ 'price' type FLOAT -> INT",
    ]


def test_identical_schemas_have_no_differences():
    curated = tfdv.load_schema_text("schemas/schema.pbtxt")
    assert schema_tools.diff_schemas(curated, curated) == []
