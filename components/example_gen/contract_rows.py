"""Reading the contract's CSV files and checking each row: the header, UTF-8, timestamps,
and every interaction or item parsed into a record or a named reason to skip it."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any, Dict, Iterator, List, NamedTuple, Sequence, Tuple, Union

import tensorflow as tf

from hyperrec.schemas import features
from hyperrec.data import image_normaliser as images


NOT_UTF8 = "__not_utf8__"  # marks a row whose bytes were not valid UTF-8


class ContractError(ValueError):
    """A file breaks the data contract in a way no row-level rule can repair."""


class EvalSplitTooSmallError(ValueError):
    """The eval split is below `min_eval_examples`; the message says why it is small."""


def check_header(path: str, required: Sequence[str], optional: Sequence[str] = ()
                 ) -> List[str]:
    """Fails on missing required columns; returns the extra columns (ignored, reported)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        first_line = f.readline().decode("utf-8", errors="replace")
    header = next(csv.reader([first_line]), [])
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise ContractError(f"{path}: missing required column(s) {missing}; "
                            f"found {header} (data/README.md lists the contract)")
    return [c for c in header if c not in required and c not in optional]


def read_csv_rows(path: str) -> Iterator[Dict[str, str]]:
    """Rows of one CSV file as dicts (whole-file read: quoted fields may span lines).

    Bytes that are not UTF-8 are replaced by U+FFFD and the row is marked NOT_UTF8, so the
    row survives and is counted instead of failing the file or vanishing.
    """
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        text, lossy = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        text, lossy = raw.decode("utf-8", errors="replace"), True
    for row in csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline="")):
        row = {(k or "").strip(): v for k, v in row.items()}
        if lossy and any("\ufffd" in (v or "") for v in row.values()
                         if isinstance(v, str)):
            row[NOT_UTF8] = "1"
        yield row


# The contract's one timestamp form: UTC, whole seconds, a Z suffix.
_CONTRACT_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


class NotContractTimestamp(ValueError):
    """A timestamp that parses as ISO-8601 but is not the contract's form (a date only, no
    zone, an offset, fractions): its meaning is a guess (whose midnight?), so it is refused."""


def parse_contract_timestamp(text: str) -> int:
    """`YYYY-MM-DDTHH:MM:SSZ` -> epoch seconds; NotContractTimestamp for other ISO-8601 forms,
    ValueError for text that is no timestamp at all."""
    text = text.strip()
    seconds = parse_timestamp(text)
    if not _CONTRACT_TIMESTAMP.fullmatch(text):
        raise NotContractTimestamp(text)
    return seconds


def parse_timestamp(text: str) -> int:
    """ISO-8601 (a trailing Z or an offset; naive means UTC) -> epoch seconds."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp())


class Parsed(NamedTuple):
    """One parsed CSV row: the record (None when skipped), why it was skipped, and flags.

    Every row is counted as read; `skipped` names the rule that dropped it; `flags` are
    counted for rows that are kept but imperfect (corrupt image, replaced bytes, ...).
    """
    record: Any
    skipped: str = ""
    flags: Tuple[str, ...] = ()
    quarantined: Any = None  # a skipped record kept aside (QUARANTINE_DIR)


def _seconds_or_skip(text: str, not_contract: str, unreadable: str) -> Union[int, Parsed]:
    """A contract timestamp's epoch seconds, or the skipped row with the reason that fits."""
    try:
        return parse_contract_timestamp(text)
    except NotContractTimestamp:
        return Parsed(None, not_contract)
    except (ValueError, TypeError, OverflowError):
        return Parsed(None, unreadable)


def parse_interaction(row: Dict[str, str]) -> Parsed:
    """An interactions.csv row -> Parsed(record) or Parsed(None, reason)."""
    user_id = (row.get("user_id") or "").strip()
    item_id = (row.get("item_id") or "").strip()
    event = (row.get("event") or "").strip()
    if not user_id or not item_id:
        return Parsed(None, "interaction_missing_id")
    if event not in features.EVENTS:
        return Parsed(None, "interaction_unknown_event")
    timestamp = _seconds_or_skip(row.get("timestamp") or "", "interaction_timestamp_not_contract",
                                 "interaction_bad_timestamp")
    if isinstance(timestamp, Parsed):
        return timestamp
    context = {c: (row.get(c) or "").strip() or features.UNKNOWN
               for c in features.CONTEXT_COLUMNS}
    record = {"user_id": user_id, "item_id": item_id, "timestamp": timestamp, "event": event,
              **context}
    return Parsed(record, flags=("text_not_utf8",) if row.get(NOT_UTF8) else ())


def parse_item(row: Dict[str, str], data_root: str, image_size: int) -> Parsed:
    """An items.csv row -> Parsed((item_id, record)) with the normalised image."""
    item_id = (row.get("item_id") or "").strip()
    if not item_id:
        return Parsed(None, "item_missing_id")
    first_seen = _seconds_or_skip(row.get("first_seen") or "", "item_first_seen_not_contract",
                                  "item_bad_first_seen")
    if isinstance(first_seen, Parsed):
        return first_seen
    price_text = (row.get("price") or "").strip()
    if not price_text:
        return Parsed(None, "item_missing_price")
    try:
        # NaN and negative prices pass through on purpose: the schema's float_domain turns
        # them into anomalies that stop the span with the feature named (validation_gate).
        price = float(price_text)
    except ValueError:
        return Parsed(None, "item_bad_price")
    image_bytes, status, image_outcome = images.load_image(
        data_root, (row.get("image") or "").strip(), image_size)
    item = {
        features.ITEM_ID: item_id,
        features.TITLE: (row.get("title") or "").strip(),
        features.DESCRIPTION: (row.get("description") or "").strip(),
        features.CATEGORY: (row.get("category") or "").strip() or features.UNKNOWN,
        features.PRICE: price,
        features.IMAGE: image_bytes,
        features.IMAGE_STATUS: status,
        features.FIRST_SEEN: first_seen,
    }
    flags = [f"image_{image_outcome}"]
    flags += ["item_empty_title"] if not item[features.TITLE] else []
    flags += ["item_empty_description"] if not item[features.DESCRIPTION] else []
    flags += ["text_not_utf8"] if row.get(NOT_UTF8) else []
    return Parsed((item_id, item), flags=tuple(flags))


def quarantine_future(parsed: Parsed, horizon: int) -> Parsed:
    """Sets aside an interaction later than `horizon` (clock skew, test rows, typos like 2099)."""
    if parsed.record is not None and parsed.record["timestamp"] > horizon:
        return Parsed(None, "interaction_future_timestamp", parsed.flags,
                      quarantined=parsed.record)
    return parsed


def outcome_counts(parsed: Parsed, read_counter: str) -> List[str]:
    """The report counters one parsed row adds to."""
    return [read_counter] + ([parsed.skipped] if parsed.skipped else []) + list(parsed.flags)
