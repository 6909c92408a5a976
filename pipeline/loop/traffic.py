"""The requests a shop's front end sends for one span, rebuilt from the data contract.

For every interaction of span `span` (an impression shown to a user): one serving tf.Example
with what the front end knows at request time, the SERVING environment of the schema (the
user, the point-in-time history, the device, the time, the candidate item's content), and
nothing ExampleGen derives from the outcome (event, label, image status, first seen, cold
start). Replaying them through the server fills the request log as real traffic would; the
loop and its tests use it, and so can a person with their own data.
"""
from __future__ import annotations

import collections
import os
from typing import Dict, List, Optional

from hyperrec.schemas import features
from hyperrec.components.example_gen import contract_rows
from hyperrec.components.example_gen.examples import to_example
from hyperrec.data import history as history_lib

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
# What a serving request carries of an item: its content, not what ExampleGen derived.
_SERVED_ITEM_FEATURES = (features.ITEM_ID, features.TITLE, features.DESCRIPTION,
                         features.CATEGORY, features.PRICE, features.IMAGE)


def _span_dir(data_root: str, span: int) -> str:
    return os.path.join(data_root, f"span-{span}")


def _interactions(data_root: str, spans: List[int]) -> List[dict]:
    records = []
    for span in spans:
        path = os.path.join(_span_dir(data_root, span), INTERACTIONS_FILE)
        for row in contract_rows.read_csv_rows(path):
            parsed = contract_rows.parse_interaction(row)
            if parsed.record is not None:
                records.append(parsed.record)
    return records


def span_requests(data_root: str, span: int, history_length: int, image_size: int,
                  with_images: bool = True, limit: Optional[int] = None) -> List[bytes]:
    """Serialized serving tf.Examples of span `span`'s interactions, in time order.

    History comes from every earlier span as well (what the shop knows of the user).
    `with_images=False` leaves item_image out (a lighter replay for statistics-only tests).
    """
    if not os.path.isdir(_span_dir(data_root, span)):
        raise FileNotFoundError(f"no span-{span} under {data_root}")
    items: Dict[str, dict] = {}
    for row in contract_rows.read_csv_rows(os.path.join(_span_dir(data_root, span), ITEMS_FILE)):
        parsed = contract_rows.parse_item(row, data_root, image_size) if with_images else \
            contract_rows.parse_item({**row, "image": ""}, data_root, image_size)
        if parsed.record is not None:
            item_id, item = parsed.record
            items[item_id] = item
    by_user = collections.defaultdict(list)
    for record in _interactions(data_root, list(range(1, span + 1))):
        by_user[record["user_id"]].append(
            (record["timestamp"], record["item_id"], record["event"], record))
    start = min((r["timestamp"] for r in _interactions(data_root, [span])), default=0)
    requests = []
    for user in sorted(by_user):
        for (timestamp, item_id, _, record), past in history_lib.with_history(
                by_user[user], history_length):
            if timestamp < start or item_id not in items:
                continue
            item = {name: items[item_id][name] for name in _SERVED_ITEM_FEATURES
                    if with_images or name != features.IMAGE}
            requests.append((timestamp, user, item_id, to_example({
                features.USER_ID: user, features.TIMESTAMP: timestamp,
                features.DEVICE: record["device"], features.HISTORY: list(past), **item})))
    requests.sort(key=lambda r: r[:3])
    examples = [r[3] for r in requests]
    return examples[:limit] if limit else examples
