"""`hyperrec import table`: any interaction log (CSV, TSV, Parquet, JSON lines) with its own
column names -> the data contract, a schema derived from the data and an import report.

    events file (+ an optional item table, + an optional images folder)   ->   OUT/
        span-{k}/interactions.csv, span-{k}/items.csv, images/, schema.pbtxt, import_report.json

The files are read by pandas/pyarrow; a `TableMapping` (flags or a YAML file) names the columns.
The rules, each counted in the report (data/README.md, "`table`" documents them for users):

- **Timestamps** (`timestamp_unit`): epoch seconds, milliseconds or microseconds, or ISO-8601
  dates or date-times. `auto` reads numbers by magnitude (>= 1e14 us, >= 1e11 ms, else s) and
  text as ISO-8601. A time with a zone (`Z`, `+01:00`) is converted to UTC; a time without one
  is read in `timezone` (default UTC); a date alone is midnight there; fractions of a second are
  cut. Values that are no timestamp are dropped and counted with examples, and the import is
  refused when they are more than `max_bad_timestamps` of the rows. Events before 1970 are
  dropped and counted.
- **Events**: an `event` column (values mapped by `event_map`, `VALUE=drop` drops and counts),
  or a `rating` column with `engaged_if` ("rating>=4": engaged rows become `engaged_event`,
  default click, the others `impression`: shown, not engaged), or neither: every row is a
  purchase. A log without a single shown-and-not-engaged row gets `negatives_per_positive`
  popularity-sampled impressions per engaged row (tables.sample_negatives, the Online Retail
  preset's code), counted apart from the real events.
- **Duplicates**: the same (user, item, time, event) again is dropped and counted; the same
  (user, item, time) with two events keeps the deepest funnel stage, counted.
- **Items**: the catalogue is the item table's items plus every item of the events; an item of
  the events missing from the table is kept with empty content (title, description, category
  "unknown", the median price), counted. A missing or invalid price gets the median price,
  counted. first_seen from the table is clipped to 1970 and to the item's first event (counted);
  without it, first_seen is the item's first event before the eval cutoff
  (tables.first_seen_before_eval), as the DESIGN's protocol says.
- **Images**: an image column (a path relative to the item table, absolute, or a URL kept as
  is) or an images folder matched on item id (`<item_id>.jpg|jpeg|png`). A path that does not
  exist is counted and the item has no image; a corrupt or too large image is copied and
  counted (ExampleGen flags it).
- **Text** that is not UTF-8 is decoded with replacement characters, counted per column.
- **Refused**, with a sentence that says what is needed: a mapped column that is not in the file
  (the columns found are listed), a rating that is not a number, event values outside the
  contract, too many bad timestamps, and a log with fewer than two users or no engaged event.

The output is written into a temporary folder beside OUT and renamed into place
(tables.atomic_output): OUT appears complete or not at all.

This module holds the mapping and the import's steps; reading and value parsing are in
table_reading.py, the events in table_events.py, the catalogue in table_items.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, Optional

import pandas as pd

from hyperrec.components import config as config_lib
from hyperrec.data import contract
from hyperrec.data.importers import tables
from hyperrec.schemas import derived_schema, features
from hyperrec.schemas.features import SECONDS_PER_DAY
from hyperrec.data.importers.table_events import DROP_REASONS, build_events, check_enough
from hyperrec.data.importers.table_items import (
    ITEM_COLUMN_FIELDS, attach_images, build_items, settle_first_seen)
from hyperrec.data.importers.table_reading import (
    TableImportError, file_source, read_table, table_format)

_WORD = re.compile(r"\w+")


@dataclasses.dataclass
class TableMapping:
    """Which column is what, and the import's options (flags or a YAML file, same names).

    Column names default to the contract's (user_id, item_id, timestamp, event, and title,
    description, category, price, image, first_seen in the item table): a default column
    that is absent is simply not used; a column named explicitly must exist.
    """

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "timestamp"
    timestamp_unit: str = "auto"
    timezone: str = "UTC"
    event: Optional[str] = None
    event_map: Dict[str, str] = dataclasses.field(default_factory=dict)
    rating: Optional[str] = None
    engaged_if: Optional[str] = None
    engaged_event: Optional[str] = None
    device: Optional[str] = None
    format: Optional[str] = None
    items: Optional[str] = None
    items_format: Optional[str] = None
    item_id: Optional[str] = None
    title: Optional[str] = None
    description: Optional[str] = None
    category: Optional[str] = None
    price: Optional[str] = None
    image: Optional[str] = None
    first_seen: Optional[str] = None
    images: Optional[str] = None
    span_days: Optional[int] = None
    eval_days: Optional[float] = None
    negatives_per_positive: Optional[int] = None
    max_bad_timestamps: float = 0.01
    seed: int = 0

    def explicit(self) -> Dict[str, Any]:
        """The fields that differ from the defaults (what the report records as the mapping)."""
        defaults = TableMapping()
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if getattr(self, field.name) != getattr(defaults, field.name)}


def parse_event_map(text: str) -> Dict[str, str]:
    """"view=impression,buy=purchase" -> {"view": "impression", "buy": "purchase"}."""
    mapping = {}
    for pair in (part for part in text.split(",") if part.strip()):
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise TableImportError(f"--event-map entry {pair!r} is not VALUE=EVENT, e.g. "
                               "--event-map view=impression,buy=purchase")
        mapping[source.strip()] = target.strip()
    return mapping


def load_mapping(path: str) -> Dict[str, Any]:
    """A YAML mapping file as TableMapping keywords; `items` and `images` paths in it are
    relative to the file's folder. Unknown keys are an error that lists the known ones."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise TableImportError(f"{path}: a mapping file is YAML key: value pairs "
                           "(e.g. 'user: reviewer'), not {type(values).__name__}")
    known = {field.name for field in dataclasses.fields(TableMapping)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TableImportError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    if isinstance(values.get("event_map"), str):
        values["event_map"] = parse_event_map(values["event_map"])
    folder = os.path.dirname(os.path.abspath(path))
    for key in ("items", "images"):
        if values.get(key) and not os.path.isabs(values[key]):
            values[key] = os.path.join(folder, values[key])
    return values


def import_table(path: str, out_dir: str, mapping: TableMapping) -> Dict[str, Any]:
    """Reads, maps, cleans and writes one log (and its item table and images) under
    `out_dir`; returns the import report. Bad input raises TableImportError (a ValueError)."""
    if not os.path.isfile(path):
        raise TableImportError(f"{path} is not a file")
    fmt = table_format(path, mapping.format, "--format")
    raw, not_utf8 = read_table(path, fmt)
    source = {"interactions": file_source(path, fmt, raw)}
    found = build_events(raw, mapping, os.path.basename(path))
    check_enough(found.events, os.path.basename(path), found.dropped)
    events = found.events

    item_raw, item_not_utf8 = None, {}
    orphans = [field for field in ("item_id",) + ITEM_COLUMN_FIELDS if getattr(mapping, field)]
    if orphans and not mapping.items:
        raise TableImportError(f"--{orphans[0].replace('_', '-')} names a column of the item "
                               "table: give the table with --items FILE")
    if mapping.items:
        if not os.path.isfile(mapping.items):
            raise TableImportError(f"--items {mapping.items} is not a file")
        items_fmt = table_format(mapping.items, mapping.items_format, "--items-format")
        item_raw, item_not_utf8 = read_table(mapping.items, items_fmt)
        source["items"] = file_source(mapping.items, items_fmt, item_raw)
    items, catalogue = build_items(item_raw, mapping, events, os.path.basename(
        mapping.items or path))

    first, last = int(events["timestamp"].min()), int(events["timestamp"].max())
    start = first - first % SECONDS_PER_DAY
    log_days = (last - first) / SECONDS_PER_DAY
    span_days = mapping.span_days or config_lib.span_days_for(log_days)
    eval_days = (mapping.eval_days if mapping.eval_days is not None
                 else config_lib.eval_days_for(log_days, span_days))
    items["first_seen"], catalogue["first_seen"] = settle_first_seen(items, events, eval_days)

    engaged = events[events["event"].isin(features.POSITIVE_EVENTS)]
    purchase_only = not (events["event"] == tables.IMPRESSION).any()
    per_positive = (mapping.negatives_per_positive if mapping.negatives_per_positive is not None
                    else 1 if purchase_only else 0)
    negatives, negative_counts = tables.sample_negatives(engaged, items, per_positive,
                                                         mapping.seed)
    written = pd.concat([events, negatives], ignore_index=True)
    timeline = contract.Timeline.covering(start, last, span_days)

    with tables.atomic_output(out_dir) as staging:
        items["image"], images = attach_images(items, mapping, staging)
        contract_items = items[list(features.ITEM_COLUMNS)]
        spans = tables.write_spans(staging, timeline, written, contract_items)
        prices = contract_items["price"].astype(float)
        schema = derived_schema.write(
            os.path.join(staging, contract.SCHEMA_FILE), contract_items["category"],
            written["device"], users=int(written["user_id"].nunique()),
            items=len(contract_items), first_event=first,
            price_range=(float(prices.min()), float(prices.max())))
        profile = data_profile(written, events, contract_items, log_days, span_days,
                               timeline.n_spans, eval_days, per_positive > 0,
                               catalogue["first_seen"]["derived_from_events"])
        report = {
            "importer": "table",
            "source": source,
            "mapping": {key: value for key, value in mapping.explicit().items()
                        if key not in ("items", "images")},
            "options": {"span_days": span_days, "eval_days": eval_days,
                        "negatives_per_positive": per_positive, "seed": mapping.seed,
                        "max_bad_timestamps": mapping.max_bad_timestamps,
                        "timezone": mapping.timezone, "timestamp_unit": found.timestamp_unit,
                        "items_file": os.path.basename(mapping.items) if mapping.items else None,
                        "images_folder": os.path.basename(os.path.normpath(mapping.images))
                        if mapping.images else None},
            "rows": {"read": found.rows_read, "kept": len(events),
                     "dropped": found.dropped, "dropped_examples": found.dropped_examples,
                     "dropped_rules": DROP_REASONS,
                     "ignored_columns": found.ignored_columns},
            "text_not_utf8": {"interactions": not_utf8, "items": item_not_utf8,
                              "rule": "decoded with U+FFFD replacement characters, kept"},
            "interactions": {
                "events": len(events), "event_source": found.event_source,
                "events_by_type": tables.count_by(events["event"]),
                "users": int(events["user_id"].nunique()),
                "purchase_only": purchase_only, **negative_counts,
                "negatives_rule": "popularity-sampled impressions among the items on sale, "
                                  "outside the user's basket (tables.sample_negatives), for a "
                                  "log without shown-and-not-engaged rows"
                                  if per_positive else None,
                "rows_written": len(written)},
            "catalogue": {**catalogue, "items": len(items),
                          "with_image_share": profile["items_with_image"],
                          "with_text_share": profile["items_with_text"],
                          "by_category": tables.count_by(items["category"])},
            "images": images,
            "date_range": {"first_event": contract.iso_utc(first),
                           "last_event": contract.iso_utc(last), "days": round(log_days, 3)},
            "timeline": {"start": spans[0]["start"], "end": spans[-1]["end"],
                         "span_days": span_days, "spans": timeline.n_spans},
            "spans": spans,
            "schema": schema,
            "profile": profile,
        }
        tables.write_report(staging, report)
    return report


def data_profile(written: pd.DataFrame, events: pd.DataFrame, items: pd.DataFrame,
                 log_days: float, span_days: int, spans: int, eval_days: float,
                 sampled_negatives: bool, first_seen_derived: int) -> Dict[str, Any]:
    """What `hyperrec run` sizes its configuration from (components/config/sizing.py: sized).
    `first_seen_derived`: how many items' first_seen came from the log (settle_first_seen),
    not from the item table."""
    engaged = events[events["event"].isin(features.POSITIVE_EVENTS)]
    text = (items["title"] + " " + items["description"]).str.strip()
    words = set()
    for value in text:
        words.update(word.lower() for word in _WORD.findall(value))
    per_user = engaged.groupby("user_id").size()
    return {
        "events": len(written), "engaged_events": len(engaged),
        "users": int(written["user_id"].nunique()), "items": len(items),
        "log_days": round(log_days, 3), "span_days": span_days, "spans": spans,
        "eval_days": eval_days,
        "items_with_image": round(float((items["image"] != "").mean()), 4),
        "items_with_text": round(float((text != "").mean()), 4),
        "text_tokens": len(words),
        "engaged_per_user_median": float(per_user.median()) if len(per_user) else 0.0,
        "sampled_negatives": sampled_negatives,
        "first_seen_derived": round(first_seen_derived / max(len(items), 1), 4),
    }
