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
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import operator
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from hyperrec.components import config as config_lib
from hyperrec.data import contract
from hyperrec.data.importers import image_folder, tables
from hyperrec.schemas import derived_schema, features
from hyperrec.schemas.features import SECONDS_PER_DAY

FORMATS = ("csv", "tsv", "parquet", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
               ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_COMPRESSION = (".gz", ".bz2", ".zip", ".xz", ".zst")
TIME_UNITS = ("auto", "s", "ms", "us", "iso")
_UNIT_DIVISOR = {"s": 1, "ms": 1_000, "us": 1_000_000}
DROP = "drop"  # an event_map target: rows with this value are dropped and counted
IMAGE_EXTENSIONS = image_folder.IMAGE_EXTENSIONS
MAX_EXAMPLES = 5  # examples of each problem in the report and the messages
_LATEST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z: later is no timestamp
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
                  r"(Z|[+-]\d{2}(:?\d{2})?)?", re.IGNORECASE)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_CONDITION = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<)\s*"
                        r"([+-]?(\d+(\.\d*)?|\.\d+))\s*")
_OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
              ">": operator.gt, "<": operator.lt}
_WORD = re.compile(r"\w+")
MIN_PRICE = 0.01  # the contract's price is positive with 2 decimals
DEFAULT_PRICE = 1.00  # only when no item has a price at all; the report says so


class TableImportError(ValueError):
    """Bad input the import refuses: the message names what is wrong and what is needed."""


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


ITEM_COLUMN_FIELDS = ("title", "description", "category", "price", "image", "first_seen")


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


# ---- reading ----------------------------------------------------------------------------------
def table_format(path: str, given: Optional[str], flag: str) -> str:
    """The file's format: `given`, else from its extension (a .gz etc. suffix is skipped)."""
    if given:
        if given not in FORMATS:
            raise TableImportError(f"{flag} {given!r} is not one of {FORMATS}")
        return given
    name = path.lower()
    for suffix in _COMPRESSION:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    extension = os.path.splitext(name)[1]
    if extension not in _EXTENSIONS:
        raise TableImportError(f"{path}: cannot tell the format from the extension "
                           f"{extension or '(none)'!r}; name it with {flag} "
                           f"(one of {FORMATS})")
    return _EXTENSIONS[extension]


def read_table(path: str, fmt: str) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """The file as a DataFrame, and per column how many text cells were not valid UTF-8
    (decoded with U+FFFD replacement characters). CSV/TSV cells are all text."""
    if os.path.getsize(path) == 0:
        raise TableImportError(f"{path} is empty: hyperrec needs a header row and the "
                           "interactions of at least two users")
    if fmt == "parquet":
        frame = pd.read_parquet(path)
        not_utf8 = {}
        for column in frame.columns:
            if frame[column].dtype == object and frame[column].map(
                    lambda value: isinstance(value, bytes)).any():
                frame[column], not_utf8[column] = _decode_bytes(frame[column])
        return frame, {column: count for column, count in not_utf8.items() if count}

    def read(errors: str) -> pd.DataFrame:
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, convert_dates=False,
                                encoding="utf-8", encoding_errors=errors)
        return pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                           keep_default_na=False, encoding="utf-8", encoding_errors=errors)

    try:
        try:
            return read("strict"), {}
        except UnicodeDecodeError:
            frame = read("replace")
    except pd.errors.EmptyDataError as err:
        raise TableImportError(f"{path} has no header row: hyperrec needs a header row and the "
                           "interactions of at least two users") from err
    except ValueError as err:
        raise TableImportError(f"{path} is not readable as {fmt}: {err}") from err
    not_utf8 = {str(column): int(frame[column].map(
        lambda value: isinstance(value, str) and "\ufffd" in value).sum())
        for column in frame.columns}
    return frame, {column: count for column, count in not_utf8.items() if count}


def _decode_bytes(values: pd.Series) -> Tuple[pd.Series, int]:
    bad = 0

    def decode(value):
        nonlocal bad
        if not isinstance(value, bytes):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            return value.decode("utf-8", errors="replace")
    decoded = values.map(decode)
    return decoded, bad


def file_source(path: str, fmt: str, frame: pd.DataFrame) -> Dict[str, Any]:
    with open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return {"file": os.path.basename(path), "format": fmt, "sha256": digest,
            "rows": len(frame), "columns": [str(column) for column in frame.columns]}


def require_columns(frame: pd.DataFrame, wanted: Dict[str, str], file_name: str) -> None:
    """Every named column must be in the file: the error names it, lists the columns found and
    suggests the closest one."""
    found = [str(column) for column in frame.columns]
    for flag, column in wanted.items():
        if column not in found:
            close = difflib.get_close_matches(column, found, n=1, cutoff=0.5) or [
                name for name in found if name.lower() == column.lower()]
            hint = f"; did you mean {close[0]!r} ({flag} {close[0]})?" if close else ""
            raise TableImportError(f"{flag}: column {column!r} is not in {file_name}; columns "
                               f"found: {found}{hint}")


# ---- values -------------------------------------------------------------------------------
def id_texts(values: pd.Series) -> pd.Series:
    """Ids as text: integral numbers without ".0", text stripped, missing -> ""."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        integral = numbers.notna() & (numbers == np.floor(numbers.fillna(0)))
        text = numbers.map(lambda number: "" if pd.isna(number) else repr(float(number)))
        text[integral] = numbers[integral].map(lambda number: str(int(number)))
        return text
    return texts(values)


def texts(values: pd.Series) -> pd.Series:
    """Values as stripped text; missing (None, NaN) -> ""."""
    return values.map(lambda value: "" if value is None or (
        isinstance(value, float) and math.isnan(value)) else str(value).strip())


def parse_times(values: pd.Series, unit: str, timezone: str, column: str
                ) -> Tuple[pd.Series, str]:
    """Epoch seconds (float, NaN where a value is no timestamp) and the unit used.

    Numbers are epoch seconds, milliseconds or microseconds (`auto`: by the magnitude of the
    median, >= 1e14 us, >= 1e11 ms, else s); text is ISO-8601: with a zone converted to UTC,
    without one read in `timezone`, a date alone is midnight; fractions of a second are cut.
    """
    if unit not in TIME_UNITS:
        raise TableImportError(f"--timestamp-unit {unit!r} is not one of {TIME_UNITS}")
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values if values.dt.tz is not None else _localize(values, timezone)
        return _seconds(stamps.dt.tz_convert("UTC")), "datetime"
    if unit == "auto":
        unit = _guess_unit(values)
    if unit == "iso":
        return _iso_seconds(texts(values), timezone), unit
    numbers = pd.to_numeric(values if pd.api.types.is_numeric_dtype(values)
                            else texts(values).where(texts(values) != "", None),
                            errors="coerce").astype(float)
    seconds = np.floor(numbers / _UNIT_DIVISOR[unit])
    return seconds.where(seconds.abs() <= _LATEST_SECOND), unit


def _guess_unit(values: pd.Series) -> str:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce").dropna()
    else:
        text = texts(values)
        text = text[text != ""]
        numeric = text.map(lambda value: bool(_NUMBER.fullmatch(value)))
        if numeric.mean() < 0.5 if len(text) else True:
            return "iso"
        numbers = pd.to_numeric(text[numeric], errors="coerce").dropna()
    magnitude = float(numbers.abs().median()) if len(numbers) else 0.0
    return "us" if magnitude >= 1e14 else "ms" if magnitude >= 1e11 else "s"


def _localize(stamps: pd.Series, timezone: str) -> pd.Series:
    try:
        return stamps.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    except Exception as err:  # pytz/zoneinfo: an unknown zone name
        raise TableImportError(f"--timezone {timezone!r} is not a time zone name (e.g. UTC, "
                           "Europe/Berlin, America/New_York)") from err


def _seconds(stamps: pd.Series) -> pd.Series:
    """Zone-aware datetimes -> epoch seconds (float, NaN for NaT), fractions cut."""
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    nanos = naive.to_numpy(dtype="datetime64[ns]").astype("int64").astype(float)
    return pd.Series(np.floor(nanos / 1e9), index=stamps.index).where(stamps.notna())


def _iso_seconds(text: pd.Series, timezone: str) -> pd.Series:
    distinct = pd.Series(text.unique())
    matches = distinct.map(_ISO.fullmatch)
    iso = matches.map(bool)
    zoned = matches.map(lambda match: bool(match and match.group(4)))
    seconds = pd.Series(np.nan, index=distinct.index)
    if zoned.any():
        parsed = pd.to_datetime(distinct[zoned].str.replace(" ", "T", n=1), errors="coerce",
                                utc=True)
        seconds[zoned] = _seconds(parsed)
    naive = iso & ~zoned
    if naive.any():
        parsed = pd.to_datetime(distinct[naive].str.replace(" ", "T", n=1), errors="coerce")
        seconds[naive] = _seconds(_localize(parsed, timezone))
    lookup = dict(zip(distinct, seconds))
    return text.map(lookup).astype(float)


def engaged_condition(text: str, rating_column: str):
    """"rating>=4" (or the rating column's own name) -> a function of the ratings."""
    match = _CONDITION.fullmatch(text or "")
    if not match:
        raise TableImportError(f"--engaged-if {text!r} is not a comparison of the rating with a "
                           "number, e.g. --engaged-if 'rating>=4'")
    name, comparison, threshold = match.group(1), match.group(2), float(match.group(3))
    if name not in ("rating", rating_column):
        raise TableImportError(f"--engaged-if compares {name!r}: write 'rating' or the rating "
                           f"column {rating_column!r}, e.g. --engaged-if 'rating>=4'")
    return lambda ratings: _OPERATORS[comparison](ratings, threshold)


def _examples(values: pd.Series) -> List[str]:
    return [str(value) for value in pd.unique(values)[:MAX_EXAMPLES]]


# ---- events ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Events:
    """The kept interactions (INTERACTION_HEADER, timestamp in epoch seconds) and the account
    of what happened to every row read."""

    events: pd.DataFrame
    rows_read: int
    dropped: Dict[str, int]
    dropped_examples: Dict[str, List[str]]
    timestamp_unit: str
    event_source: str
    ignored_columns: List[str]


DROP_REASONS = {
    "missing_user_id": "the user column is empty",
    "missing_item_id": "the item column is empty",
    "unparseable_timestamp": "the timestamp is neither an epoch number nor ISO-8601",
    "timestamp_before_1970": "the timestamp is before 1970-01-01 (epoch 0)",
    "event_mapped_to_drop": "the event value is mapped to 'drop' (--event-map VALUE=drop)",
    "duplicate_event": "the same (user, item, time, event) as an earlier row",
    "same_moment_shallower_event": "the same (user, item, time) as a row with a deeper "
                                   "funnel stage (the deepest is kept)",
}


def build_events(raw: pd.DataFrame, mapping: TableMapping, file_name: str) -> Events:
    """Maps, parses and cleans the events file; refuses what cannot be imported."""
    if raw.empty:
        raise TableImportError(f"{file_name} has no rows: hyperrec needs the interactions of at "
                           "least two users (who saw, clicked, rated or bought which item when)")
    event_column = mapping.event or ("event" if "event" in raw.columns and not mapping.rating
                                     else None)
    wanted = {"--user": mapping.user, "--item": mapping.item, "--timestamp": mapping.timestamp}
    wanted.update({flag: column for flag, column in (
        ("--event", event_column), ("--rating", mapping.rating), ("--device", mapping.device))
        if column})
    require_columns(raw, wanted, file_name)
    if mapping.engaged_if and not mapping.rating:
        raise TableImportError("--engaged-if needs --rating COLUMN (the column it compares)")
    if mapping.rating and event_column:
        raise TableImportError("give --event or --rating, not both: the event type comes from one "
                           "column")
    if mapping.rating and not mapping.engaged_if:
        raise TableImportError(f"--rating {mapping.rating} needs --engaged-if, which ratings count "
                           "as engaged, e.g. --engaged-if 'rating>=4'")

    frame = pd.DataFrame({"user_id": id_texts(raw[mapping.user]),
                          "item_id": id_texts(raw[mapping.item])})
    reason = pd.Series("", index=raw.index)
    examples: Dict[str, List[str]] = {}
    reason[frame["user_id"] == ""] = "missing_user_id"
    reason[(frame["item_id"] == "") & (reason == "")] = "missing_item_id"

    seconds, unit = parse_times(raw[mapping.timestamp], mapping.timestamp_unit,
                                mapping.timezone, mapping.timestamp)
    bad = seconds.isna() & (reason == "")
    if bad.any():
        share = bad.sum() / len(raw)
        shown = _examples(texts(raw[mapping.timestamp])[bad])
        if share > mapping.max_bad_timestamps:
            raise TableImportError(
                f"--timestamp column {mapping.timestamp!r}: {int(bad.sum()):,} of {len(raw):,} "
                f"values ({share:.1%}) are not timestamps (read as {unit}), above "
                f"--max-bad-timestamps {mapping.max_bad_timestamps:g}; e.g. {shown}. Timestamps "
                "must be epoch seconds, ms or us, or ISO-8601 (2024-03-05T14:22:05Z); name the "
                "unit with --timestamp-unit, or raise --max-bad-timestamps to drop them")
        reason[bad] = "unparseable_timestamp"
        examples["unparseable_timestamp"] = shown
    early = (seconds < 0) & (reason == "")
    if early.any():
        examples["timestamp_before_1970"] = _examples(texts(raw[mapping.timestamp])[early])
        reason[early] = "timestamp_before_1970"
    frame["timestamp"] = seconds.fillna(0).astype("int64")

    frame["event"], event_source = _events(raw, mapping, event_column, file_name)
    to_drop = (frame["event"] == DROP) & (reason == "")
    reason[to_drop] = "event_mapped_to_drop"
    if to_drop.any():
        examples["event_mapped_to_drop"] = _examples(texts(raw[event_column])[to_drop])
    frame["device"] = (texts(raw[mapping.device]).replace("", features.UNKNOWN)
                       if mapping.device else features.UNKNOWN)

    kept = frame[reason == ""]
    duplicate = kept.duplicated(["user_id", "item_id", "timestamp", "event"])
    reason[duplicate[duplicate].index] = "duplicate_event"
    kept = frame[reason == ""]
    depth = kept["event"].map({event: index for index, event in enumerate(features.EVENTS)})
    deepest = depth.groupby([kept["user_id"], kept["item_id"], kept["timestamp"]]).transform(
        "max")
    shallower = depth < deepest
    reason[shallower[shallower].index] = "same_moment_shallower_event"

    used = {mapping.user, mapping.item, mapping.timestamp, event_column, mapping.rating,
            mapping.device}
    return Events(
        events=frame[reason == ""][list(contract.INTERACTION_HEADER)].reset_index(drop=True),
        rows_read=len(raw),
        dropped={rule: int((reason == rule).sum()) for rule in DROP_REASONS},
        dropped_examples=examples, timestamp_unit=unit, event_source=event_source,
        ignored_columns=[str(column) for column in raw.columns if column not in used])


def _events(raw: pd.DataFrame, mapping: TableMapping, event_column: Optional[str],
            file_name: str) -> Tuple[pd.Series, str]:
    """The contract event of every row (or DROP), and a sentence saying where it came from."""
    if mapping.rating:
        column = mapping.rating
        values = raw[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            ratings = values.astype(float)
            wrong = ratings.isna()
        else:
            text = texts(values)
            ratings = pd.to_numeric(text.where(text.map(
                lambda value: bool(_NUMBER.fullmatch(value))), None), errors="coerce")
            wrong = ratings.isna()
        if wrong.any():
            raise TableImportError(
                f"--rating column {column!r} of {file_name} holds {int(wrong.sum()):,} "
                f"value(s) that are not numbers, e.g. {_examples(texts(values)[wrong])}; a "
                "rating must be a number in every row (e.g. 4 or 4.5)")
        engaged_event = mapping.engaged_event or "click"
        _check_event(engaged_event, "--engaged-event")
        engaged = engaged_condition(mapping.engaged_if, column)(ratings)
        events = pd.Series(np.where(engaged, engaged_event, tables.IMPRESSION), index=raw.index)
        return events, (f"rating column {column!r}: {mapping.engaged_if} -> {engaged_event}, "
                        f"other ratings -> {tables.IMPRESSION} (shown, not engaged)")
    if event_column:
        text = texts(raw[event_column])
        for target in mapping.event_map.values():
            if target != DROP:
                _check_event(target, "--event-map")
        events = text.map(lambda value: mapping.event_map.get(value, value))
        unknown = ~events.isin(features.EVENTS + (DROP,))
        if unknown.any():
            counts = text[unknown].value_counts()
            listed = ", ".join(f"{value!r} ({count:,} rows)" for value, count in
                               counts.head(MAX_EXAMPLES).items())
            first = counts.index[0] or '""'
            raise TableImportError(
                f"--event column {event_column!r} has values that are not contract events "
                f"{features.EVENTS}: {listed}; map each with --event-map, e.g. --event-map "
                f"{first}=click, or drop them with --event-map {first}=drop")
        return events, (f"event column {event_column!r}"
                        + (f", mapped {mapping.event_map}" if mapping.event_map else ""))
    engaged_event = mapping.engaged_event or "purchase"
    _check_event(engaged_event, "--engaged-event")
    return (pd.Series(engaged_event, index=raw.index),
            f"no event or rating column: every row is a {engaged_event}")


def _check_event(event: str, flag: str) -> None:
    if event not in features.EVENTS:
        raise TableImportError(f"{flag} {event!r} is not a contract event; choose from "
                           f"{features.EVENTS}")


def check_enough(events: pd.DataFrame, file_name: str, dropped: Dict[str, int]) -> None:
    """Refuses a log a recommender cannot learn from, saying what is needed."""
    users = events["user_id"].nunique()
    lost = {reason: count for reason, count in dropped.items() if count}
    after = f" after cleaning (dropped: {lost})" if lost else ""
    if users < 2:
        raise TableImportError(
            f"{file_name} has {len(events):,} usable event(s) of {users} user(s){after}: "
            "hyperrec needs the interactions of at least two users, since a recommender "
            "learns what to show one user from what the others did")
    if not events["event"].isin(features.POSITIVE_EVENTS).any():
        raise TableImportError(
            f"{file_name} has no engaged event{after}: hyperrec needs clicks, carts, "
            "purchases or ratings above --engaged-if to learn what users want")


# ---- items ------------------------------------------------------------------------------------
def build_items(raw: Optional[pd.DataFrame], mapping: TableMapping, events: pd.DataFrame,
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
            lambda value: bool(_NUMBER.fullmatch(value))), None), errors="coerce")
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


def attach_images(items: pd.DataFrame, mapping: TableMapping, staging: str
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


# ---- the import ---------------------------------------------------------------------------------
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
    """What `hyperrec run` sizes its configuration from (components/config.py: sized).
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
