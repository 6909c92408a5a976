"""Writes imported data in the data contract's layout (data/README.md), like the generator.

An importer turns a real data set into two tables and hands them here:
    interactions   user_id, item_id, timestamp (epoch seconds), event, device
    items          the ITEM_COLUMNS, with first_seen in epoch seconds and price as text
An importer that derives first_seen from the log passes it through `first_seen_before_eval`
(first_seen known before the eval cutoff only); an importer of a purchase-only log adds
`sample_negatives` (popularity-sampled "shown" rows). This module cuts the timeline into spans
and writes
    span-{k}/interactions.csv   the events inside window k, sorted by (timestamp, user, item)
    span-{k}/items.csv          the catalogue snapshot: every item first seen before k's end
    import_report.json          what the importer read, cleaned, merged and dropped, and why

The CSV dialect, file names and span folder names are the generator's
(data/contract.py), so an imported tree and a generated one read the same. Output is
a pure function of the tables: rows are sorted and the report has sorted keys, so reruns give
byte-identical files. Every importer writes through `atomic_output`: into a temporary folder
beside OUT, renamed into place once complete, so OUT appears complete or not at all.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import pandas as pd

from hyperrec.schemas import features
from hyperrec.data import contract
from hyperrec.data.contract import INTERACTION_HEADER, Timeline
_SORT_KEY = ["timestamp", "user_id", "item_id"]


@contextlib.contextmanager
def atomic_output(out_dir: str) -> Iterator[str]:
    """A fresh temporary folder beside `out_dir` to write an import into; on success it
    replaces what an earlier import wrote in `out_dir` (contract.clear_owned's entries) and
    keeps the folder's other files, on failure it is removed and `out_dir` is untouched.

    A reader never sees a half-written import: the complete tree appears with one rename
    (for a moment between the two renames of a replacement, `out_dir` does not exist).
    """
    target = os.path.abspath(out_dir)
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.importing-", dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 -> a normal folder's mode
    if not os.path.isdir(target):
        os.rename(staging, target)
        return
    replaced = tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=parent)
    os.rmdir(replaced)
    os.rename(target, replaced)
    os.rename(staging, target)
    for entry in sorted(os.listdir(replaced)):  # the user's own files stay in OUT
        if not contract.is_owned(entry) and not os.path.exists(os.path.join(target, entry)):
            os.rename(os.path.join(replaced, entry), os.path.join(target, entry))
    shutil.rmtree(replaced)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


IMPRESSION = "impression"  # how a sampled negative is written (features.EVENTS)


def sample_negatives(events: pd.DataFrame, items: pd.DataFrame, per_positive: int, seed: int
                     ) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Sampled negatives for a purchase-only log, written as `impression` rows.

    A purchase-only log (Online Retail, a generic table without shown-and-passed rows)
    records what was bought, never what was shown and passed over, so a ranking head (and
    the Evaluator's AUC gate) would see only positives. Each positive row (a user's basket
    at one time) gets `per_positive` items per positive row drawn by popularity among the
    items already on sale at that time (`first_seen` <= the time) and not in that basket:
    the usual popularity-sampled negatives of implicit-feedback recommenders. A negative
    takes its positive's device. They are a training device, not observations: the import
    report counts them apart from the real events. `events` has INTERACTION_HEADER columns,
    `items` item_id and first_seen (epoch seconds).
    """
    if per_positive <= 0 or events.empty:
        return events.iloc[0:0], {"negatives_sampled": 0, "negatives_rejected": 0}
    popularity = events["item_id"].value_counts().sort_index()
    candidates = popularity.index.to_numpy()
    first_seen = items.set_index("item_id")["first_seen"].reindex(candidates).to_numpy()
    probabilities = popularity.to_numpy() / popularity.sum()
    rng = np.random.Generator(np.random.PCG64(seed + 1))
    ordered = events.sort_values(["timestamp", "user_id", "item_id"], kind="mergesort")
    drawn = rng.choice(len(candidates), size=(len(ordered), per_positive), p=probabilities)
    rows = pd.DataFrame({
        "user_id": np.repeat(ordered["user_id"].to_numpy(), per_positive),
        "item_id": candidates[drawn.reshape(-1)],
        "timestamp": np.repeat(ordered["timestamp"].to_numpy(), per_positive),
        "device": np.repeat(ordered["device"].to_numpy(), per_positive),
        "first_seen": first_seen[drawn.reshape(-1)],
    })
    basket = set(zip(ordered["user_id"], ordered["timestamp"], ordered["item_id"]))
    keep = (rows["first_seen"] <= rows["timestamp"]) & ~pd.Series(
        [key in basket for key in zip(rows["user_id"], rows["timestamp"], rows["item_id"])])
    negatives = rows[keep].drop_duplicates(["user_id", "item_id", "timestamp"])
    negatives = pd.DataFrame({
        "user_id": negatives["user_id"], "item_id": negatives["item_id"],
        "timestamp": negatives["timestamp"], "event": IMPRESSION,
        "device": negatives["device"],
    }).reset_index(drop=True)
    counts = {"negatives_sampled": len(negatives), "negatives_rejected": len(rows) - len(negatives)}
    return negatives[list(INTERACTION_HEADER)], counts


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
