"""Imports a folder of product photos sorted into class folders as the contract's catalogue.

    PATH/dress/0a1b.jpg, PATH/hat/77c2.png, ...   ->   one item per photo

A photo folder (like the usual image-classification layout) knows only each photo's class, so
an item gets: category = its folder's name (lower case), title = the class name as words
("t-shirt" -> "T-Shirt"), an empty description (a legal gap), a placeholder price per class
(PLACEHOLDER_PRICES: the folder has none; the report says so), first_seen = the start of the
timeline, and its photo, copied byte for byte to OUT/images/<item_id>.jpg|.png. The item id is
"<class>-<file name without extension>", so it is stable when photos are added.

Every JPEG/PNG file becomes an item, even one that does not decode or is over ExampleGen's
decode budget: the contract flags such an image downstream (ExampleGen's item_image_status
"corrupt" or "missing") instead of failing, so the import lists it, copies it, and counts it in
the report. Other files are skipped and counted.

A photo folder has no interactions; `sample_users` > 0 adds a documented synthetic log over the
real items (synthetic_log.py) in weekly spans so that the catalogue can run through the
pipeline; 0 writes header-only interactions.csv files.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
from typing import Any, Dict, List, Set, Tuple

import pandas as pd

from hyperrec.schemas import features
from hyperrec.data import image_normaliser
from hyperrec.data import contract
from hyperrec.data.importers import synthetic_log, tables

IMAGE_EXTENSIONS = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png"}  # source -> written
_CHECK_SIZE = 8  # pixels: the verdict does not depend on the size, small is fast
# The folder has no prices: a fixed, made-up price per common clothing class (in the
# currency of your choice), DEFAULT_PRICE for any other class. Documented as a placeholder.
PLACEHOLDER_PRICES = {
    "dress": 49.00, "hat": 19.00, "longsleeve": 29.00, "outwear": 89.00, "pants": 45.00,
    "shirt": 35.00, "shoes": 69.00, "shorts": 25.00, "skirt": 39.00, "t-shirt": 19.00,
}
DEFAULT_PRICE = 29.00
UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def scan_folder(path: str) -> Tuple[List[Dict[str, str]], Dict[str, Any]]:
    """The photos under PATH's class folders (sorted) and the counts of what was skipped.

    Each photo is {item_id, category, source (absolute path), relative (to PATH), extension}.
    """
    photos: List[Dict[str, str]] = []
    skipped = {"outside_class_folders": 0, "hidden": 0, "nested_folders": 0,
               "not_jpeg_or_png": {}}
    used_ids: Set[str] = set()
    for class_name in sorted(os.listdir(path)):
        class_dir = os.path.join(path, class_name)
        if class_name.startswith("."):
            skipped["hidden"] += 1
            continue
        if not os.path.isdir(class_dir):
            skipped["outside_class_folders"] += 1  # e.g. a README or LICENSE next to them
            continue
        category = class_name.strip().lower()
        for file_name in sorted(os.listdir(class_dir)):
            source = os.path.join(class_dir, file_name)
            stem, extension = os.path.splitext(file_name)
            if file_name.startswith("."):
                skipped["hidden"] += 1
            elif os.path.isdir(source):
                skipped["nested_folders"] += 1
            elif extension.lower() not in IMAGE_EXTENSIONS:
                key = extension.lower() or "(none)"
                skipped["not_jpeg_or_png"][key] = skipped["not_jpeg_or_png"].get(key, 0) + 1
            else:
                item_id = unique_id(UNSAFE_ID_CHARS.sub("_", f"{category}-{stem}"), used_ids)
                photos.append({"item_id": item_id, "category": category, "source": source,
                               "relative": f"{class_name}/{file_name}",
                               "extension": IMAGE_EXTENSIONS[extension.lower()]})
    skipped["not_jpeg_or_png"] = dict(sorted(skipped["not_jpeg_or_png"].items()))
    return photos, skipped


IMAGE_OUTCOMES = (image_normaliser.STATUS_OK, image_normaliser.STATUS_CORRUPT,
                  image_normaliser.OUTCOME_TOO_LARGE)


def image_outcome(path: str) -> str:
    """ExampleGen's verdict on a photo: "ok", "corrupt" when it does not decode, or
    "too_large" when it is over the decode budget (ExampleGen's status "missing").

    The check is ExampleGen's own (decode, crop, resize), so the report counts exactly the
    photos that ExampleGen will flag.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    return image_normaliser.normalise(raw, _CHECK_SIZE)[2]


def title_of(class_name: str) -> str:
    """The class name as a title: "t-shirt" -> "T-Shirt", "long_sleeve" -> "Long Sleeve"."""
    return " ".join(class_name.replace("_", " ").split()).title()


def import_image_folder(path: str, out_dir: str, seed: int = 0, sample_users: int = 200,
                        weeks: int = 4, start_date: str = "2024-01-01") -> Dict[str, Any]:
    """Writes PATH's photos as a catalogue (plus an optional synthetic log) under `out_dir`."""
    if weeks < 1 or sample_users < 0:
        raise ValueError("weeks must be >= 1 and sample_users >= 0")
    _check_apart(path, out_dir)
    photos, skipped = scan_folder(path)
    if not photos:
        raise ValueError(f"{path}: no JPEG/PNG photos in class folders (PATH/<class>/*.jpg)")
    start = _midnight_utc(start_date)
    timeline = contract.Timeline(start, 7, weeks)

    with tables.atomic_output(out_dir) as staging:
        os.makedirs(os.path.join(staging, contract.IMAGES_DIR), exist_ok=True)
        outcomes: Dict[str, List[str]] = {outcome: [] for outcome in IMAGE_OUTCOMES}
        for photo in photos:
            outcomes[image_outcome(photo["source"])].append(photo["relative"])
            photo["image"] = f"{contract.IMAGES_DIR}/{photo['item_id']}{photo['extension']}"
            shutil.copyfile(photo["source"], os.path.join(staging, photo["image"]))

        items = pd.DataFrame({
            "item_id": [photo["item_id"] for photo in photos],
            "title": [title_of(photo["category"]) for photo in photos],
            "description": "",
            "category": [photo["category"] for photo in photos],
            "price": [f"{PLACEHOLDER_PRICES.get(photo['category'], DEFAULT_PRICE):.2f}"
                      for photo in photos],
            "image": [photo["image"] for photo in photos],
            "first_seen": start,
        })[list(features.ITEM_COLUMNS)]
        model = synthetic_log.SampleUserModel()
        events = synthetic_log.draw_log(items["item_id"], items["category"], sample_users, seed,
                                        start, weeks, model)
        spans = tables.write_spans(staging, timeline, events, items)

        categories = sorted(items["category"].unique())
        report = {
            "importer": "image-folder",
            "source": {"folder": os.path.basename(os.path.normpath(path)),
                       "photos": len(photos), "skipped_files": skipped},
            "options": {"seed": seed, "sample_users": sample_users, "weeks": weeks,
                        "start_date": start_date},
            "images": {"copied": len(photos), "ok": len(outcomes["ok"]),
                       "corrupt": len(outcomes["corrupt"]),
                       "corrupt_files": outcomes["corrupt"],
                       "too_large": len(outcomes["too_large"]),
                       "too_large_files": outcomes["too_large"]},
            "catalogue": {
                "items": len(items),
                "by_category": tables.count_by(items["category"]),
                "title": "the class name as words; description empty (a legal gap)",
                "price": "PLACEHOLDER: a fixed made-up price per class, not from the data",
                "placeholder_prices": {category: items.loc[items["category"] == category,
                                                           "price"].iloc[0]
                                       for category in categories},
                "first_seen": spans[0]["start"],
            },
            "interactions": {
                "synthetic": sample_users > 0,
                "users": sample_users,
                "rows": len(events),
                "events_by_type": tables.count_by(events["event"]) if len(events) else {},
                "model": model.as_dict() if sample_users else None,
                "note": "drawn by data/importers/synthetic_log.py, not observed behaviour",
            },
            "timeline": {"start": spans[0]["start"], "end": spans[-1]["end"], "span_days": 7,
                         "spans": weeks},
            "spans": spans,
        }
        tables.write_report(staging, report)
    return report


def _check_apart(path: str, out_dir: str) -> None:
    # The import replaces OUT's images/ and span folders: OUT must not be, hold or sit in PATH.
    source, target = os.path.realpath(path), os.path.realpath(out_dir)
    if source == target or source.startswith(target + os.sep) or target.startswith(
            source + os.sep):
        raise ValueError(f"--out {out_dir} overlaps the photo folder {path}: choose a folder "
                         "outside it (the import rewrites OUT's images/ and span folders)")


def unique_id(candidate: str, used: Set[str]) -> str:
    """`candidate`, or with -2, -3, ... when it is in `used` (two photos whose names differ
    only in unsafe characters or extension); adds the result to `used`."""
    item_id, suffix = candidate, 1
    while item_id in used:
        suffix += 1
        item_id = f"{candidate}-{suffix}"
    used.add(item_id)
    return item_id


def _midnight_utc(date_text: str) -> int:
    day = datetime.date.fromisoformat(date_text)
    return int(datetime.datetime(day.year, day.month, day.day,
                                 tzinfo=datetime.timezone.utc).timestamp())
