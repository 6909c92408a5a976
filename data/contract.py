"""The data contract's one writer: layout, CSV dialect, timestamps, span windows, JSON.

Layout under a data root (data/README.md documents it for users):
    span-{k}/interactions.csv   the interactions inside span k's window, sorted
    span-{k}/items.csv          the catalogue snapshot as of the end of span k
    images/<item_id>.png|.jpg   one file per item that has an image
    ground_truth.json           (synthetic data only) the hidden truth behind the data
    import_report.json          (imported data only) what the importer read, cleaned, dropped
    schema.pbtxt                (`hyperrec import table` only) the schema derived from the data

The synthetic generator (data/synthetic) and every importer (data/importers) write through
this module, so a generated tree and an imported one read the same. Everything written is a
pure function of its inputs (sorted rows, sorted JSON keys), so reruns are byte-identical.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import os
import re
import shutil
from typing import Dict, Iterable, Sequence, Tuple

from hyperrec.schemas import features
from hyperrec.schemas.features import SECONDS_PER_DAY

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
IMAGES_DIR = "images"
GROUND_TRUTH_FILE = "ground_truth.json"
IMPORT_REPORT_FILE = "import_report.json"
SCHEMA_FILE = "schema.pbtxt"  # a derived schema beside the data; `hyperrec run` uses it
INTERACTION_HEADER: Tuple[str, ...] = features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS
_SPAN_DIR = re.compile(r"^span-\d+$")


def iso_utc(timestamp: int) -> str:
    """Epoch seconds -> the contract's timestamp text, e.g. 2024-03-05T14:22:05Z."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def eval_cutoff(newest_timestamp: int, eval_days: float) -> int:
    """The first second of the eval split: ExampleGen puts the events from it on (the last
    `eval_days` before the newest event) into `eval`, the earlier ones into `train`."""
    return int(newest_timestamp) - int(eval_days * SECONDS_PER_DAY)


def span_dir(out_dir: str, span: int) -> str:
    return os.path.join(out_dir, f"span-{span}")


@dataclasses.dataclass(frozen=True)
class Timeline:
    """Consecutive, equal, half-open span windows [start + (k-1)*length, start + k*length)."""

    start: int  # epoch seconds, UTC midnight
    span_days: int
    n_spans: int

    @classmethod
    def covering(cls, first: int, last: int, span_days: int) -> "Timeline":
        """The shortest timeline from the UTC midnight before `first` that contains `last`."""
        start = first - first % SECONDS_PER_DAY
        return cls(start, span_days, (last - start) // (span_days * SECONDS_PER_DAY) + 1)

    @property
    def span_seconds(self) -> int:
        return self.span_days * SECONDS_PER_DAY

    @property
    def end(self) -> int:
        return self.start + self.n_spans * self.span_seconds

    def window(self, span: int) -> Tuple[int, int]:
        begin = self.start + (span - 1) * self.span_seconds
        return begin, begin + self.span_seconds

    def windows(self) -> Sequence[Tuple[int, int]]:
        return [self.window(span) for span in range(1, self.n_spans + 1)]

    def span_of(self, timestamps):
        """The 1-based span of each timestamp (all must lie inside the timeline)."""
        return (timestamps - self.start) // self.span_seconds + 1


def clear_owned(out_dir: str) -> None:
    """Removes what an earlier run wrote (span folders, images, reports), nothing else.

    Other files in the folder (e.g. a README) are left alone; stale span folders from a run
    with more spans are removed so the tree always matches the latest run exactly.
    """
    if not os.path.isdir(out_dir):
        return
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if is_owned(name) and os.path.isdir(path):
            shutil.rmtree(path)
        elif is_owned(name) and os.path.isfile(path):
            os.remove(path)


def is_owned(name: str) -> bool:
    """Whether an entry of a data root is one the generator or an importer writes (span
    folders, images/, ground_truth.json, import_report.json, schema.pbtxt)."""
    return bool(_SPAN_DIR.match(name)) or name in (
        IMAGES_DIR, GROUND_TRUTH_FILE, IMPORT_REPORT_FILE, SCHEMA_FILE)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """The contract's CSV dialect: UTF-8, "\\n" line endings, minimal quoting."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(rows)


def write_json(path: str, value: Dict[str, object]) -> str:
    """Deterministic JSON: sorted keys, one-space indent, UTF-8, a final newline."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        json.dump(value, handle, sort_keys=True, indent=1, ensure_ascii=False)
        handle.write("\n")
    return path
