"""The catalogue of a table import: the item table's items plus every item of the events,
prices (median where missing or invalid), first_seen settled against the events and the eval
cutoff, and images from a column or a folder, each fix counted."""
from __future__ import annotations

import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from hyperrec.data import contract
from hyperrec.data.importers import image_folder, tables
from hyperrec.schemas import features
from hyperrec.data.importers.table_reading import (
    MAX_EXAMPLES, NUMBER, TableImportError, id_texts, parse_times, require_columns, texts)



IMAGE_EXTENSIONS = image_folder.IMAGE_EXTENSIONS
MIN_PRICE = 0.01  # the contract's price is positive with 2 decimals
DEFAULT_PRICE = 1.00  # only when no item has a price at all; the report says so
ITEM_COLUMN_FIELDS = ("title", "description", "category", "price", "image", "first_seen")


def build_items(raw: Optional[pd.DataFrame], mapping: "TableMapping", events: pd.DataFrame,
                file_name: str) -> Tuple[pd.DataFrame, Dict[str, Any]]:
    """The catalogue (item_id, title, description, category, price as text, image reference
    as given, first_seen as given in epoch seconds or NaN) and its counts."""
    event_items = pd.Index(sorted(events["item_id"].unique()))
    counts: Dict[str, Any] = {}
    if raw is None:
        table = pd.DataFrame({"item_id": pd.Series(dtype=str)})
        columns: Dict[str, Optional[str]] = {field: None for field in ITEM_COLUMN_FIELDS}
        counts.update(rows_read=0, rows_without_id=0, duplicate_rows=0)
    else:
        id_column = mapping.item_id or (mapping.item if mapping.item in raw.columns
                                        else "item_id")
        wanted = {"--item-id": id_column}
        columns = {}
        for field in ITEM_COLUMN_FIELDS:
            named = getattr(mapping, field)
            if named:
                wanted[f"--{field.replace('_', '-')}"] = named
            columns[field] = named or (field if field in raw.columns else None)
        require_columns(raw, wanted, file_name)
        ids = id_texts(raw[id_column])
        table = pd.DataFrame({"item_id": ids})
        for field, column in columns.items():
            if column:
                table[field] = raw[column] if field == "first_seen" else texts(raw[column])
        without_id = table["item_id"] == ""
        duplicate = table["item_id"].duplicated() & ~without_id
        counts.update(rows_read=len(raw), rows_without_id=int(without_id.sum()),
                      duplicate_rows=int(duplicate.sum()),
                      duplicate_rows_rule="the first row of an item id is kept")
        table = table[~without_id & ~duplicate]
    table = table.set_index("item_id")
    missing = event_items.difference(table.index)
    catalogue = table.reindex(table.index.union(event_items))
    for field in ("title", "description", "category", "image"):
        catalogue[field] = (catalogue[field].fillna("") if field in catalogue
                            else pd.Series("", index=catalogue.index))
    catalogue["category"] = catalogue["category"].replace("", features.UNKNOWN)
    counts.update(
        columns={field: column for field, column in columns.items()},
        items_from_item_table=int(len(table)),
        not_in_item_table=int(len(missing)) if raw is not None else 0,
        not_in_item_table_examples=[str(item) for item in missing[:MAX_EXAMPLES]]
        if raw is not None else [],
        not_in_item_table_rule="kept with empty content: no title, description or image, "
                               "category unknown, the median price",
        without_events=int(len(catalogue.index.difference(event_items))))
    price_text, counts["price"] = _prices(catalogue.get("price"), ~catalogue.index.isin(
        table.index))
    catalogue["price"] = price_text
    if columns["first_seen"]:
        catalogue["first_seen_given"] = parse_times(catalogue.pop("first_seen"), "auto",
                                                    mapping.timezone, columns["first_seen"])[0]
    else:
        catalogue["first_seen_given"] = np.nan
    return catalogue.rename_axis("item_id").reset_index(), counts


def _prices(values: Optional[pd.Series], not_in_table: np.ndarray
            ) -> Tuple[pd.Series, Dict[str, Any]]:
    """Prices as the contract's text (2 decimals, positive); a missing, non-numeric or
    non-positive price gets the median of the valid ones, counted by reason."""
    if values is None:
        numbers = pd.Series(np.nan, index=range(len(not_in_table)))
        text = pd.Series("", index=numbers.index)
    else:
        text = texts(values.fillna("")).reset_index(drop=True)
        numbers = pd.to_numeric(text.where(text.map(
            lambda value: bool(NUMBER.fullmatch(value))), None), errors="coerce")
    valid = numbers.notna() & (numbers > 0) & np.isfinite(numbers)
    median = float(numbers[valid].median()) if valid.any() else DEFAULT_PRICE
    not_in_table = pd.Series(not_in_table, index=numbers.index)
    reasons = {
        "not_in_item_table": int((~valid & not_in_table).sum()),
        "missing": int((~valid & ~not_in_table & (text == "")).sum()),
        "not_a_number": int((~valid & ~not_in_table & (text != "") & numbers.isna()).sum()),
        "not_positive": int((~valid & ~not_in_table & numbers.notna()).sum()),
    }
    filled = numbers.where(valid, median)
    formatted = filled.map(lambda value: f"{max(value, MIN_PRICE):.2f}")
    return formatted.to_numpy(), {
        "filled": reasons, "fill_value": f"{max(median, MIN_PRICE):.2f}",
        "fill_rule": ("the median of the valid prices" if valid.any() else
                      f"no item has a valid price: every item gets {DEFAULT_PRICE:.2f}")}


def settle_first_seen(items: pd.DataFrame, events: pd.DataFrame, eval_days: float
                      ) -> Tuple[pd.Series, Dict[str, Any]]:
    """Every item's first_seen (epoch seconds) and the report's account of it.

    Given by the item table: clipped to 1970 and moved back to the item's first event when
    later; an item without events and a first_seen after the newest event gets the newest
    event's time. Not given (or unparseable): the item's first event, cut at the eval cutoff
    (tables.first_seen_before_eval); an item without events is listed from the cutoff.
    """
    first_event = events.groupby("item_id")["timestamp"].min()
    first_event = items["item_id"].map(first_event)
    newest = int(events["timestamp"].max())
    given = items["first_seen_given"]
    has_given = given.notna()
    derived, derived_report = tables.first_seen_before_eval(
        first_event, events["timestamp"], eval_days,
        derived_from="the item's first event in the log (no first_seen in the item table)"
        if not has_given.any() else "the item's first event in the log, for the items "
                                    "without a first_seen in the item table")
    cutoff = contract.eval_cutoff(newest, eval_days)
    no_events = first_event.isna()
    before_1970 = has_given & (given < 0)
    after_first_event = has_given & ~no_events & (given > first_event)
    after_newest = has_given & no_events & (given > newest)
    settled = given.clip(lower=0)
    settled = settled.where(~after_first_event, first_event)
    settled = settled.where(~after_newest, newest)
    settled = settled.where(has_given, derived.where(~no_events, cutoff))
    report = {
        "given_by_item_table": int(has_given.sum()),
        "derived_from_events": int((~has_given).sum()),
        "given_before_1970_clipped_to_1970": int(before_1970.sum()),
        "given_after_first_event_moved_to_it": int(after_first_event.sum()),
        "given_after_newest_event_clipped_to_it": int(after_newest.sum()),
        "without_events_listed_from_cutoff": int((~has_given & no_events).sum()),
        "derived": derived_report if (~has_given).any() else None,
    }
    if (~has_given).any():
        report["derived"]["items_moved_to_cutoff"] = int(
            (~has_given & ~no_events & (first_event > cutoff)).sum())
    return settled.astype("int64"), report


def attach_images(items: pd.DataFrame, mapping: "TableMapping", staging: str
                  ) -> Tuple[pd.Series, Dict[str, Any]]:
    """Copies each item's image into STAGING/images/ and returns the contract's image column.

    The image column's reference (a URL kept as is; a path relative to the item table's folder,
    or absolute) wins; else a file `<item_id>.jpg|jpeg|png` of the images folder.
    """
    base = os.path.dirname(os.path.abspath(mapping.items)) if mapping.items else os.getcwd()
    folder_files: Dict[str, str] = {}
    unmatched: List[str] = []
    if mapping.images:
        if not os.path.isdir(mapping.images):
            raise TableImportError(f"--images {mapping.images} is not a folder")
        item_ids = set(items["item_id"])
        for name in sorted(os.listdir(mapping.images)):
            stem, extension = os.path.splitext(name)
            if extension.lower() in IMAGE_EXTENSIONS and stem in item_ids \
                    and stem not in folder_files:
                folder_files[stem] = os.path.join(mapping.images, name)
            elif not name.startswith("."):
                unmatched.append(name)
    used: set = set()
    column, outcomes = [], {outcome: [] for outcome in image_folder.IMAGE_OUTCOMES}
    counts = {"from_column": 0, "from_folder": 0, "urls": 0, "missing_files": 0}
    missing_examples: List[str] = []
    for item_id, reference in zip(items["item_id"], items["image"]):
        source = ""
        if reference and "://" in reference:
            counts["urls"] += 1
            column.append(reference)
            continue
        if reference:
            path = reference if os.path.isabs(reference) else os.path.join(base, reference)
            if os.path.isfile(path):
                source, counts["from_column"] = path, counts["from_column"] + 1
            else:
                counts["missing_files"] += 1
                if len(missing_examples) < MAX_EXAMPLES:
                    missing_examples.append(reference)
        if not source and item_id in folder_files:
            source, counts["from_folder"] = folder_files[item_id], counts["from_folder"] + 1
        if not source:
            column.append("")
            continue
        extension = os.path.splitext(source)[1].lower()
        name = image_folder.unique_id(image_folder.UNSAFE_ID_CHARS.sub("_", item_id), used)
        relative = f"{contract.IMAGES_DIR}/{name}{IMAGE_EXTENSIONS.get(extension, extension)}"
        os.makedirs(os.path.join(staging, contract.IMAGES_DIR), exist_ok=True)
        shutil.copyfile(source, os.path.join(staging, relative))
        outcomes[image_folder.image_outcome(source)].append(item_id)
        column.append(relative)
    report = {**counts, "missing_file_examples": missing_examples,
              "missing_rule": "an image path that does not exist: the item has no image",
              "copied": counts["from_column"] + counts["from_folder"],
              "folder_files_matching_no_item": len(unmatched),
              "folder_files_matching_no_item_examples": unmatched[:MAX_EXAMPLES],
              "corrupt": len(outcomes["corrupt"]), "corrupt_items": outcomes["corrupt"],
              "too_large": len(outcomes["too_large"]),
              "too_large_items": outcomes["too_large"]}
    return pd.Series(column, index=items.index), report
