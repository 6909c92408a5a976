"""The events of a table import: the user, item, time and event columns to contract rows,
every dropped row counted by reason (bad timestamps, events outside the contract,
duplicates), and the refusal of a log too small to train on."""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from hyperrec.data import contract
from hyperrec.data.importers import tables
from hyperrec.schemas import features
from hyperrec.data.importers.table_reading import (
    MAX_EXAMPLES, NUMBER, TableImportError, engaged_condition, examples_of, id_texts, parse_times,
    require_columns, texts)


DROP = "drop"  # an event_map target: rows with this value are dropped and counted


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


def build_events(raw: pd.DataFrame, mapping: "TableMapping", file_name: str) -> Events:
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
        shown = examples_of(texts(raw[mapping.timestamp])[bad])
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
        examples["timestamp_before_1970"] = examples_of(texts(raw[mapping.timestamp])[early])
        reason[early] = "timestamp_before_1970"
    frame["timestamp"] = seconds.fillna(0).astype("int64")

    frame["event"], event_source = _events(raw, mapping, event_column, file_name)
    to_drop = (frame["event"] == DROP) & (reason == "")
    reason[to_drop] = "event_mapped_to_drop"
    if to_drop.any():
        examples["event_mapped_to_drop"] = examples_of(texts(raw[event_column])[to_drop])
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


def _events(raw: pd.DataFrame, mapping: "TableMapping", event_column: Optional[str],
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
                lambda value: bool(NUMBER.fullmatch(value))), None), errors="coerce")
            wrong = ratings.isna()
        if wrong.any():
            raise TableImportError(
                f"--rating column {column!r} of {file_name} holds {int(wrong.sum()):,} "
                f"value(s) that are not numbers, e.g. {examples_of(texts(values)[wrong])}; a "
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
