"""A schema derived from imported data: the curated schema with the data's own domains.

`hyperrec import table` writes it beside the data (DATA/schema.pbtxt) and `hyperrec run --data
DATA` uses it instead of the curated schemas/schema.pbtxt (`--set schema_file=` still wins), so
ExampleValidator and the span drift check compare later spans with what this data looked like,
not with the sample data's fashion categories. From the curated schema it keeps every feature,
type, presence rule, environment and drift/skew comparator; from the data it takes:

- the `item_category` domain: the data's categories and `unknown` (a category outside the
  curated domain would otherwise be an anomaly that stops the run);
- the `device` domain: the curated devices plus the data's own;
- `timestamp`'s lower bound: the first event (ExampleGen reads the newest spans, never earlier
  ones);
- the id vocabulary sizes (users, items) and the observed price range, as annotations: recorded
  for people and for sizing, not enforced (new users, items and prices are not anomalies).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Dict, Iterable, Tuple

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from hyperrec.schemas import features

CURATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.pbtxt")


def load(path: str = CURATED) -> schema_pb2.Schema:
    with open(path, encoding="utf-8") as handle:
        return text_format.Parse(handle.read(), schema_pb2.Schema())


def _domain(schema: schema_pb2.Schema, name: str) -> schema_pb2.StringDomain:
    (domain,) = [domain for domain in schema.string_domain if domain.name == name]
    return domain


def _feature(schema: schema_pb2.Schema, name: str) -> schema_pb2.Feature:
    (feature,) = [feature for feature in schema.feature if feature.name == name]
    return feature


def derive(categories: Iterable[str], devices: Iterable[str], users: int, items: int,
           first_event: int, price_range: Tuple[float, float],
           curated: schema_pb2.Schema) -> schema_pb2.Schema:
    """The curated schema with the data's category and device domains, the first event as
    timestamp's lower bound and the id vocabulary sizes and price range as annotations."""
    schema = schema_pb2.Schema()
    schema.CopyFrom(curated)
    category = _domain(schema, features.CATEGORY)
    del category.value[:]
    category.value.extend(sorted(set(categories) | {features.UNKNOWN}))
    device = _domain(schema, features.DEVICE)
    known = list(device.value)
    device.value.extend(sorted(set(devices) - set(known)))
    _feature(schema, features.TIMESTAMP).int_domain.min = int(first_event)
    for name, count in ((features.USER_ID, users), (features.ITEM_ID, items)):
        annotation = _feature(schema, name).annotation
        annotation.tag.append(f"vocabulary_size:{count}")
        annotation.comment.append(f"{count} distinct ids in the imported data (not enforced)")
    low, high = price_range
    _feature(schema, features.PRICE).annotation.comment.append(
        f"observed range {low:.2f}..{high:.2f} in the imported data (not enforced)")
    return schema


def write(path: str, categories: Iterable[str], devices: Iterable[str], users: int, items: int,
          first_event: int, price_range: Tuple[float, float]) -> Dict[str, Any]:
    """Writes the derived schema (text proto with a header saying what it is); returns what
    the import report records about it."""
    categories, devices = sorted(set(categories)), sorted(set(devices))
    schema = derive(categories, devices, users, items, first_event, price_range, load())
    first = datetime.datetime.fromtimestamp(int(first_event), tz=datetime.timezone.utc)
    header = (
        "# Derived by `hyperrec import table` from the imported data: schemas/schema.pbtxt (the\n"
        "# curated features, environments and drift/skew comparators) with this data's\n"
        "# category and device domains and first event; id vocabulary sizes and the price\n"
        "# range are annotations. `hyperrec run --data` uses this file when it is here\n"
        "# (`--set schema_file=PATH` overrides); schemas/derived_schema.py says how.\n")
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(header + text_format.MessageToString(schema, as_utf8=True))
    return {"file": os.path.basename(path), "derived_from": "schemas/schema.pbtxt",
            "item_category_domain": sorted(set(categories) | {features.UNKNOWN}),
            "device_domain": list(_domain(schema, features.DEVICE).value),
            "timestamp_min": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "vocabulary_sizes": {features.USER_ID: users, features.ITEM_ID: items},
            "price_range": [round(price_range[0], 2), round(price_range[1], 2)]}
