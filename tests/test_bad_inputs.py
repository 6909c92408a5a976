"""Every row of data/README.md's bad-input table: each bad input has its named outcome.

Outcomes: flag (kept, marked, counted), skip-and-count (dropped, counted in
ingest_report.json), fail-with-message (the run stops and says which file / feature and
why). Schema-level failures (negative or NaN price, category outside the domain) are covered
in test_validation_gate.py; this module runs the ExampleGen executor on one dirty span.
"""
import json
import os

import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import pytest

from hyperrec.schemas import features
from hyperrec.components.example_gen import executor as executor_lib
from test_example_gen import DAY, T0, _iso, _png, _read_split, _run_executor, _write_csv

ITEMS = features.ITEM_COLUMNS
EVENTS = features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty")
    (root / "images").mkdir()
    (root / "images" / "ok.png").write_bytes(_png((0, 0, 255)))
    (root / "images" / "corrupt.png").write_bytes(_png((0, 0, 255))[:40])
    span = root / "span-1"
    span.mkdir()
    items = [
        ("ok", "Blue bag", "a blue bag", "bags", "10", "images/ok.png", _iso(T0)),
        ("corrupt", "Bag", "bag", "bags", "10", "images/corrupt.png", _iso(T0)),
        ("nofile", "Bag", "bag", "bags", "10", "images/gone.png", _iso(T0)),
        ("notext", "", "", "bags", "10", "", _iso(T0)),
        ("badprice", "Bag", "bag", "bags", "ten euros", "", _iso(T0)),
        ("badseen", "Bag", "bag", "bags", "10", "", "last tuesday"),
        ("", "No id", "", "bags", "10", "", _iso(T0)),
    ]
    # Extra column "colour" (ignored and reported); non-UTF-8 bytes in one title.
    _write_csv(str(span / "items.csv"), ITEMS + ("colour",), [r + ("blue",) for r in items])
    with open(span / "items.csv", "ab") as f:
        f.write(b"latin,Caf\xe9 bag,\xe9l\xe9gant,bags,12,," + _iso(T0).encode() + b",red\n")
    events = [
        ("u1", "ok", _iso(T0 + DAY), "click", "mobile"),
        ("u1", "ok", _iso(T0 + DAY), "click", "mobile"),  # exact duplicate
        ("u1", "notext", _iso(T0 + 2 * DAY), "click", "mobile"),
        ("u1", "ghost", _iso(T0 + 2 * DAY), "click", "mobile"),  # unknown item
        ("u1", "badprice", _iso(T0 + 2 * DAY), "click", "mobile"),  # item was dropped
        ("u1", "ok", "2024-13-45T99:00:00Z", "click", "mobile"),  # unparseable timestamp
        ("u1", "ok", _iso(T0 + 3 * DAY), "wishlist", "mobile"),  # unknown event
        ("", "ok", _iso(T0 + 3 * DAY), "click", "mobile"),  # missing user id
        ("u2", "corrupt", _iso(T0 + 3 * DAY), "impression", "mobile"),
        ("u2", "latin", _iso(T0 + 4 * DAY), "click", "mobile"),
    ]
    _write_csv(str(span / "interactions.csv"), EVENTS, events)
    out = str(tmp_path_factory.mktemp("dirty_out"))
    _run_executor(str(root), out, span=1, eval_days=1.0, window_spans=1)
    with open(os.path.join(out, executor_lib.REPORT_FILE)) as f:
        report = json.load(f)
    rows = _read_split(out, "train") + _read_split(out, "eval")
    catalog = {r[features.ITEM_ID][0].decode(): r for r in _read_split(out, "catalog")}
    return report, rows, catalog


def test_corrupt_image_is_flagged_and_the_interaction_kept(dirty):
    report, rows, catalog = dirty
    assert catalog["corrupt"][features.IMAGE_STATUS] == [b"corrupt"]
    assert catalog["corrupt"][features.IMAGE] == [b""]
    assert any(r[features.ITEM_ID] == [b"corrupt"] for r in rows)
    assert report["image_corrupt"] == 1


def test_missing_image_file_is_flagged_missing(dirty):
    report, _, catalog = dirty
    assert catalog["nofile"][features.IMAGE_STATUS] == [b"missing"]
    assert report["image_missing"] == 3  # nofile (file gone); notext, latin (no reference)


def test_empty_text_is_kept_and_counted(dirty):
    report, rows, catalog = dirty
    assert catalog["notext"][features.TITLE] == [b""]
    assert any(r[features.ITEM_ID] == [b"notext"] for r in rows)
    assert report["item_empty_title"] == 1 and report["item_empty_description"] == 1


def test_non_utf8_text_is_kept_with_replacement_and_counted(dirty):
    report, _, catalog = dirty
    assert catalog["latin"][features.TITLE] == ["Caf\ufffd bag".encode("utf-8")]
    assert report["text_not_utf8"] == 1


def test_unknown_item_and_items_dropped_for_bad_values_are_counted(dirty):
    report, rows, catalog = dirty
    assert "badprice" not in catalog and "badseen" not in catalog
    assert report["item_bad_price"] == 1 and report["item_bad_first_seen"] == 1
    assert report["item_missing_id"] == 1
    # "ghost" and the click on the dropped "badprice" have no catalogue row.
    assert report["interaction_unknown_item"] == 2
    assert not any(r[features.ITEM_ID] in ([b"ghost"], [b"badprice"]) for r in rows)


def test_duplicates_bad_timestamps_events_and_ids_are_skipped_and_counted(dirty):
    report, rows, _ = dirty
    assert report["interaction_duplicate"] == 1
    assert report["interaction_bad_timestamp"] == 1
    assert report["interaction_unknown_event"] == 1
    assert report["interaction_missing_id"] == 1
    assert sum(r[features.ITEM_ID] == [b"ok"] for r in rows) == 1


def test_nothing_is_lost_silently(dirty):
    """Every row read is either emitted or counted under a named reason."""
    report, rows, _ = dirty
    skipped = sum(report.get(k, 0) for k in (
        "interaction_duplicate", "interaction_bad_timestamp", "interaction_unknown_event",
        "interaction_missing_id", "interaction_unknown_item"))
    assert report["interaction_read"] == len(rows) + skipped == 10
    assert report["item_read"] == 8
    assert report["catalog_items"] + report["item_bad_price"] + report[
        "item_bad_first_seen"] + report["item_missing_id"] == report["item_read"]


def test_extra_columns_are_ignored_and_reported(dirty):
    report, _, _ = dirty
    assert report["ignored_columns"] == ["colour"]


def test_missing_optional_context_column_is_filled_unknown(tmp_path):
    span = tmp_path / "span-1"
    _write_csv(str(span / "items.csv"), ITEMS, [("a", "A", "", "bags", "1", "", _iso(T0))])
    _write_csv(str(span / "interactions.csv"), features.INTERACTION_COLUMNS,
               [("u", "a", _iso(T0), "click")])
    out = str(tmp_path / "out")
    _run_executor(str(tmp_path), out, span=1, window_spans=1)
    rows = _read_split(out, "train") + _read_split(out, "eval")
    assert [r[features.DEVICE] for r in rows] == [[b"unknown"]]


def test_missing_required_column_fails_with_the_file_and_column_named(tmp_path):
    span = tmp_path / "span-1"
    _write_csv(str(span / "items.csv"), ITEMS, [("a", "A", "", "bags", "1", "", _iso(T0))])
    _write_csv(str(span / "interactions.csv"), ("user_id", "item_id", "event"),
               [("u", "a", "click")])
    with pytest.raises(executor_lib.ContractError, match=r"interactions.csv.*'timestamp'"):
        _run_executor(str(tmp_path), str(tmp_path / "out"), span=1, window_spans=1)
