"""Writes imported data in the data contract's layout (data/README.md), like the generator.

An importer turns a real data set into two tables and hands them here:
    interactions   user_id, item_id, timestamp (epoch seconds), event, device
    items          the ITEM_COLUMNS, with first_seen in epoch seconds and price as text
An importer that derives first_seen from the log passes it through `first_seen_before_eval`
(first_seen known before the eval cutoff only). This module cuts the timeline into spans and
writes
    span-{k}/interactions.csv   the events inside window k, sorted by (timestamp, user, item)
    span-{k}/items.csv          the catalogue snapshot: every item first seen before k's end
    import_report.json          what the importer read, cleaned, merged and dropped, and why

The CSV dialect, file names and span folder names are the generator's
(data/contract.py), so an imported tree and a generated one read the same. Output is
a pure function of the tables: rows are sorted and the report has sorted keys, so reruns give
byte-identical files.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import pandas as pd

from hyperrec.schemas import features
from hyperrec.data import contract
from hyperrec.data.contract import INTERACTION_HEADER, Timeline
_SORT_KEY = ["timestamp", "user_id", "item_id"]


def prepare_out_dir(out_dir: str) -> None:
    """Removes what an earlier import or generation wrote there (spans, images, reports)."""
    contract.clear_owned(out_dir)
    os.makedirs(out_dir, exist_ok=True)


def write_spans(out_dir: str, timeline: Timeline, interactions: pd.DataFrame,
                items: pd.DataFrame) -> List[Dict[str, Any]]:
    """Writes every span folder; returns per span its window and row counts (for the report).

    `interactions` has INTERACTION_HEADER columns with `timestamp` in epoch seconds; `items`
    has ITEM_COLUMNS with `first_seen` in epoch seconds and every other column as text.
    """
    inside = interactions["timestamp"].between(timeline.start, timeline.end - 1)
    if not inside.all():
        raise ValueError(f"{int((~inside).sum())} interactions fall outside the timeline")
    events = interactions.sort_values(_SORT_KEY, kind="stable").reset_index(drop=True)
    spans = timeline.span_of(events["timestamp"])
    catalogue = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    iso = _iso_texts(pd.concat([events["timestamp"], catalogue["first_seen"]]))

    summary = []
    for span in range(1, timeline.n_spans + 1):
        begin, end = timeline.window(span)
        folder = contract.span_dir(out_dir, span)
        os.makedirs(folder, exist_ok=True)
        span_events = events[spans == span]
        snapshot = catalogue[catalogue["first_seen"] < end]
        contract.write_csv(os.path.join(folder, contract.INTERACTIONS_FILE), INTERACTION_HEADER,
                           _rows(span_events, INTERACTION_HEADER, "timestamp", iso))
        contract.write_csv(os.path.join(folder, contract.ITEMS_FILE), features.ITEM_COLUMNS,
                           _rows(snapshot, features.ITEM_COLUMNS, "first_seen", iso))
        summary.append({"span": span, "start": contract.iso_utc(begin),
                        "end": contract.iso_utc(end),
                        "interactions": len(span_events), "items": len(snapshot)})
    return summary


FIRST_SEEN_RULE = ("first_seen is derived from the log before the eval cutoff only (the "
                   "newest event - eval_days, where ExampleGen splits): an item first seen "
                   "after it is listed from the cutoff, without sales before it")


def first_seen_before_eval(first_seen: pd.Series, event_timestamps: pd.Series,
                           eval_days: float, derived_from: str
                           ) -> Tuple[pd.Series, Dict[str, Any]]:
    """A first_seen that an importer derived from the log, cut to what was known before the
    eval cutoff, and the import report's account of it.

    A first_seen taken over the whole log dates an item by its first sale in the eval
    period: a launch date nobody knew at the query time, which the model's freshness term,
    the catalogue snapshots and the evaluator would all read. An item first seen after the
    cutoff gets first_seen = the cutoff instead: listed without sales before it, so it is
    available at the query time and, with nobody's train interactions, a cold item.
    `event_timestamps` are the events written (ExampleGen's cutoff counts back from the
    newest of them); `derived_from` says what the log's first_seen was (for the report).
    """
    if event_timestamps.empty:
        raise ValueError("no events: the eval cutoff (and so first_seen) is undefined")
    cutoff = contract.eval_cutoff(int(event_timestamps.max()), eval_days)
    moved = first_seen > cutoff
    return first_seen.where(~moved, cutoff), {
        "derived_from": derived_from, "rule": FIRST_SEEN_RULE, "eval_days": eval_days,
        "eval_cutoff": contract.iso_utc(cutoff), "items_moved_to_cutoff": int(moved.sum())}


def write_report(out_dir: str, report: Dict[str, Any]) -> str:
    """import_report.json: sorted keys, one-space indent, like the generator's JSON."""
    return contract.write_json(os.path.join(out_dir, contract.IMPORT_REPORT_FILE), report)


def count_by(values: pd.Series) -> Dict[str, int]:
    """{value: count} with sorted keys and plain ints (JSON-ready)."""
    counts = values.value_counts()
    return {str(key): int(counts[key]) for key in sorted(counts.index, key=str)}


def _iso_texts(timestamps: pd.Series) -> Dict[int, str]:
    # Few distinct times (invoices, sessions): format each once, not once per row.
    return {int(ts): contract.iso_utc(int(ts)) for ts in timestamps.unique()}


def _rows(frame: pd.DataFrame, columns, time_column: str, iso: Dict[int, str]):
    values = [frame[column].map(iso) if column == time_column else frame[column].astype(str)
              for column in columns]
    return zip(*values)
