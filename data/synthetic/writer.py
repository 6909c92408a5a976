"""Writes the generated world through the data contract's writer: images, spans, ground truth.

Column names and order come from schemas/features.py; layout, CSV dialect and JSON from
data/contract.py, the one writer every data source shares.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from hyperrec.schemas import features
from hyperrec.data import contract
from hyperrec.data.synthetic import images
from hyperrec.data.synthetic.catalogue import Item
from hyperrec.data.synthetic.scales import DatagenScale


def write_images(seed: int, out_dir: str, items: Sequence[Item]) -> int:
    os.makedirs(os.path.join(out_dir, contract.IMAGES_DIR), exist_ok=True)
    count = 0
    for item in items:
        if not item.has_image:
            continue
        data = images.encode(images.render(seed, item), item.image_format)
        with open(os.path.join(out_dir, item.image_path), "wb") as handle:
            handle.write(data)
        count += 1
    return count


def _item_row(item: Item) -> Dict[str, str]:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "description": item.description,
        "category": item.category,
        "price": f"{item.price:.2f}",
        "image": item.image_path,
        "first_seen": contract.iso_utc(item.first_seen),
    }


def write_spans(out_dir: str, scale: DatagenScale, items: Sequence[Item], user_ids: Sequence[str],
                rows: Sequence[Tuple[int, int, int, int, str]]) -> List[int]:
    """Writes every span folder; returns the number of interaction rows per span."""
    windows = scale.span_windows()
    by_span: List[List[Tuple[int, int, int, int, str]]] = [[] for _ in windows]
    # Once: each scale property builds a Timeline and parses the start date.
    timeline = scale.timeline
    start, span_seconds = timeline.start, timeline.span_seconds
    for row in rows:
        by_span[(row[0] - start) // span_seconds].append(row)

    item_rows = [_item_row(item) for item in items]
    counts = []
    for span, ((_, window_end), span_rows) in enumerate(zip(windows, by_span), start=1):
        folder = contract.span_dir(out_dir, span)
        os.makedirs(folder, exist_ok=True)
        contract.write_csv(
            os.path.join(folder, contract.INTERACTIONS_FILE), contract.INTERACTION_HEADER,
            ([{"user_id": user_ids[user], "item_id": items[item].item_id,
               "timestamp": contract.iso_utc(timestamp), "event": features.EVENTS[depth],
               "device": device}[column] for column in contract.INTERACTION_HEADER]
             for timestamp, user, item, depth, device in span_rows))
        # The snapshot at the end of the window: every item that exists by then.
        contract.write_csv(
            os.path.join(folder, contract.ITEMS_FILE), features.ITEM_COLUMNS,
            ([values[column] for column in features.ITEM_COLUMNS]
             for item, values in zip(items, item_rows) if item.first_seen < window_end))
        counts.append(len(span_rows))
    return counts


def write_ground_truth(out_dir: str, truth: Dict[str, object]) -> str:
    return contract.write_json(os.path.join(out_dir, contract.GROUND_TRUTH_FILE), truth)
