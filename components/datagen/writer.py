"""Writes the generated world as the data contract: span folders, images, ground truth.

Layout under the output root:
    span-{k}/interactions.csv   the impressions inside span k's window, sorted
    span-{k}/items.csv          the catalogue as of the end of span k
    images/<item_id>.png|.jpg   one file per item that has an image
    ground_truth.json           the hidden truth behind the data

Column names and order come from components.features, the project's one place for them.
Everything written is a pure function of its inputs (sorted rows, sorted JSON keys,
metadata-free images), so reruns give byte-identical trees.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from typing import Dict, List, Sequence, Tuple

from hyperrec.components import features
from hyperrec.components.datagen import images
from hyperrec.components.datagen.catalogue import Item
from hyperrec.components.datagen.scales import DatagenScale, iso_utc

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
IMAGES_DIR = "images"
GROUND_TRUTH_FILE = "ground_truth.json"
INTERACTION_HEADER: Tuple[str, ...] = features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS
_SPAN_DIR = re.compile(r"^span-\d+$")


def span_dir(out_dir: str, span: int) -> str:
    return os.path.join(out_dir, f"span-{span}")


def clear_owned(out_dir: str) -> None:
    """Removes what an earlier run wrote (span folders, images, ground truth), nothing else.

    Other files in the folder (e.g. data/README.md) are left alone; stale span folders from a
    run with more spans are removed so the tree always matches the latest run exactly.
    """
    if not os.path.isdir(out_dir):
        return
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if (_SPAN_DIR.match(name) or name == IMAGES_DIR) and os.path.isdir(path):
            shutil.rmtree(path)
        elif name == GROUND_TRUTH_FILE:
            os.remove(path)


def _csv_writer(handle):
    # "\n" line endings and minimal quoting: fields with commas or quotes are quoted.
    return csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)


def write_images(seed: int, out_dir: str, items: Sequence[Item]) -> int:
    os.makedirs(os.path.join(out_dir, IMAGES_DIR), exist_ok=True)
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
        "first_seen": iso_utc(item.first_seen),
    }


def write_spans(out_dir: str, scale: DatagenScale, items: Sequence[Item], user_ids: Sequence[str],
                rows: Sequence[Tuple[int, int, int, int, str]]) -> List[int]:
    """Writes every span folder; returns the number of interaction rows per span."""
    windows = scale.span_windows()
    by_span: List[List[Tuple[int, int, int, int, str]]] = [[] for _ in windows]
    for row in rows:
        by_span[(row[0] - scale.start_ts) // scale.span_seconds].append(row)

    item_rows = [_item_row(item) for item in items]
    counts = []
    for span, ((_, window_end), span_rows) in enumerate(zip(windows, by_span), start=1):
        folder = span_dir(out_dir, span)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, INTERACTIONS_FILE), "w", newline="",
                  encoding="utf-8") as handle:
            writer = _csv_writer(handle)
            writer.writerow(INTERACTION_HEADER)
            for timestamp, user, item, depth, device in span_rows:
                values = {"user_id": user_ids[user], "item_id": items[item].item_id,
                          "timestamp": iso_utc(timestamp), "event": features.EVENTS[depth],
                          "device": device}
                writer.writerow([values[column] for column in INTERACTION_HEADER])
        with open(os.path.join(folder, ITEMS_FILE), "w", newline="", encoding="utf-8") as handle:
            writer = _csv_writer(handle)
            writer.writerow(features.ITEM_COLUMNS)
            # The snapshot at the end of the window: every item that exists by then.
            for item, values in zip(items, item_rows):
                if item.first_seen < window_end:
                    writer.writerow([values[column] for column in features.ITEM_COLUMNS])
        counts.append(len(span_rows))
    return counts


def write_json(path: str, value: Dict[str, object]) -> str:
    """Deterministic JSON: sorted keys, one-space indent, UTF-8, a final newline."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        json.dump(value, handle, sort_keys=True, indent=1, ensure_ascii=False)
        handle.write("\n")
    return path


def write_ground_truth(out_dir: str, truth: Dict[str, object]) -> str:
    return write_json(os.path.join(out_dir, GROUND_TRUTH_FILE), truth)
