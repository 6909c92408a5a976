"""`hyperrec import table` (data/importers/generic_table.py): the rules on small hand-made
logs, every named bad-input outcome, the derived schema, the sized configuration and the
`--set` checks. No pipeline runs here (tests/test_import_table_e2e.py runs one).

Each bad-input test checks the named outcome and that nothing else was lost: every row read is
either kept or counted under exactly one reason.
"""
import csv
import datetime
import gzip
import json
import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from PIL import Image
from tensorflow_metadata.proto.v0 import schema_pb2

from hyperrec.components import config as config_lib
from hyperrec.data import contract
from hyperrec.data.importers import generic_table, online_retail, table_reading, tables
from hyperrec.pipeline.cli import data as cli
from hyperrec.pipeline.runners import commands as runner_commands
from hyperrec.schemas import derived_schema

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
HOUR, DAY = 3_600, 86_400
Mapping = generic_table.TableMapping
Refused = generic_table.TableImportError


# ---- helpers ------------------------------------------------------------------------------
def shop_log(users=4, days=21, seed=0):
    """A foreign-named event log: who, what, when (ISO, Z), action (view/like/buy)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = []
    for day in range(days):
        for user in range(users):
            for slot in range(3):
                item = f"p{int(rng.integers(1, 9))}"
                when = T0 + day * DAY + user * HOUR + slot * 60
                action = ("view", "view", "like", "buy")[int(rng.integers(0, 4))]
                rows.append({"who": f"c{user}", "what": item,
                             "when": datetime.datetime.fromtimestamp(
                                 when, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "action": action})
    return pd.DataFrame(rows)


CATALOGUE = pd.DataFrame({
    "sku": [f"p{i}" for i in range(1, 9)],
    "name": [f"Product {i}" for i in range(1, 9)],
    "dept": ["Garden Tools", "Garden Tools", "Kitchen", "Kitchen", "Toys", "Toys", "Books",
             "Books"],
    "cost": ["3.50", "4", "12.00", "9.99", "20", "15.5", "7.25", "8"],
})
SHOP = dict(user="who", item="what", timestamp="when", event="action",
            event_map={"view": "impression", "like": "click", "buy": "purchase"})


def write(frame, path, fmt="csv"):
    path = str(path)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def run_import(tmp_path, events, items=None, fmt="csv", **mapping):
    path = write(events, tmp_path / f"events.{ {'jsonl': 'jsonl'}.get(fmt, fmt)}", fmt)
    if items is not None:
        mapping["items"] = write(items, tmp_path / "items.csv")
        mapping.setdefault("item_id", "sku")
        mapping.setdefault("title", "name")
        mapping.setdefault("category", "dept")
        mapping.setdefault("price", "cost")
    out = tmp_path / "out"
    report = generic_table.import_table(path, str(out), Mapping(**{**SHOP, **mapping}))
    return report, out


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return rows


def all_events(out):
    rows = []
    for name in sorted(os.listdir(out)):
        if name.startswith("span-"):
            rows += read_rows(os.path.join(out, name, "interactions.csv"))
    return rows


def last_items(out, report):
    return {row["item_id"]: row for row in read_rows(
        os.path.join(out, f"span-{report['timeline']['spans']}", "items.csv"))}


def accounted(report):
    """Every row read is kept or counted under exactly one reason."""
    rows = report["rows"]
    assert rows["read"] == rows["kept"] + sum(rows["dropped"].values())


def dropped_only(report, **expected):
    """The named drop reasons have these counts and every other reason is 0."""
    assert {k: v for k, v in report["rows"]["dropped"].items() if v} == expected
    accounted(report)


# ---- the happy path -----------------------------------------------------------------------
def test_foreign_csv_becomes_the_contract_with_a_report_and_a_derived_schema(tmp_path):
    events = shop_log()
    report, out = run_import(tmp_path, events, CATALOGUE)
    assert sorted(os.listdir(out)) == ["import_report.json", "schema.pbtxt", "span-1", "span-2",
                                       "span-3"]
    dropped_only(report)
    assert report["rows"]["read"] == len(events) == len(all_events(out))
    assert report["interactions"]["users"] == 4 and report["catalogue"]["items"] == 8
    assert report["interactions"]["events_by_type"] == {
        "click": int((events["action"] == "like").sum()),
        "impression": int((events["action"] == "view").sum()),
        "purchase": int((events["action"] == "buy").sum())}
    assert report["date_range"] == {"first_event": "2024-01-01T00:00:00Z",
                                    "last_event": "2024-01-21T03:02:00Z", "days": 20.126}
    assert report["catalogue"]["with_image_share"] == 0.0
    assert report["catalogue"]["with_text_share"] == 1.0
    assert report["options"]["span_days"] == 7 and report["options"]["eval_days"] == 7.0
    assert report["mapping"]["user"] == "who" and report["source"]["interactions"]["rows"] == len(
        events)
    # Every event's item is in its span's snapshot; rows sorted; contract timestamps.
    for span in report["spans"]:
        folder = out / f"span-{span['span']}"
        snapshot = {row["item_id"] for row in read_rows(folder / "items.csv")}
        rows = read_rows(folder / "interactions.csv")
        assert {row["item_id"] for row in rows} <= snapshot
        assert list(rows[0]) == list(contract.INTERACTION_HEADER)
        keys = [(row["timestamp"], row["user_id"], row["item_id"]) for row in rows]
        assert keys == sorted(keys)
    items = last_items(out, report)
    assert items["p3"]["category"] == "Kitchen" and items["p2"]["price"] == "4.00"
    # The derived schema: the data's categories; the curated domain has none of them.
    schema = text_format.Parse((out / "schema.pbtxt").read_text(), schema_pb2.Schema())
    domain = {d.name: list(d.value) for d in schema.string_domain}
    assert domain["item_category"] == ["Books", "Garden Tools", "Kitchen", "Toys", "unknown"]
    curated = {d.name: set(d.value) for d in derived_schema.load().string_domain}
    assert not {"Books", "Garden Tools", "Kitchen", "Toys"} & curated["item_category"]
    timestamp = [f for f in schema.feature if f.name == "timestamp"][0]
    assert timestamp.int_domain.min == T0
    assert report["schema"]["vocabulary_sizes"] == {"user_id": 4, "item_id": 8}
    assert report["profile"]["events"] == len(events) and not report["profile"][
        "sampled_negatives"]


def test_csv_parquet_and_json_lines_give_the_same_tree(tmp_path):
    events = shop_log()
    digests = []
    for fmt in ("csv", "parquet", "jsonl"):
        folder = tmp_path / fmt
        folder.mkdir()
        report, out = run_import(folder, events, CATALOGUE, fmt=fmt)
        assert report["source"]["interactions"]["format"] == fmt
        os.remove(out / "import_report.json")
        from support import tree_digest
        digests.append(tree_digest(out))
    assert len(set(digests)) == 1


def test_import_is_deterministic_and_keeps_the_users_own_files(tmp_path):
    events = shop_log()
    report, out = run_import(tmp_path, events, CATALOGUE)
    first = (out / "import_report.json").read_bytes()
    (out / "NOTES.md").write_text("mine")
    (out / "span-9").mkdir()  # a stale span folder of an earlier, longer import
    generic_table.import_table(str(tmp_path / "events.csv"), str(out),
                               Mapping(**SHOP, items=str(tmp_path / "items.csv"), item_id="sku",
                                       title="name", category="dept", price="cost"))
    assert (out / "import_report.json").read_bytes() == first
    assert (out / "NOTES.md").read_text() == "mine" and not (out / "span-9").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.")]  # no temp left


def test_timestamps_epoch_units_and_iso_zones():
    seconds, unit = table_reading.parse_times(pd.Series([T0, T0 + 61]), "auto", "UTC", "t")
    assert unit == "s" and list(seconds) == [T0, T0 + 61]
    millis, unit = table_reading.parse_times(pd.Series([T0 * 1000 + 999]), "auto", "UTC", "t")
    assert unit == "ms" and list(millis) == [T0]  # fractions are cut, not rounded
    micros, unit = table_reading.parse_times(pd.Series([str(T0 * 10**6 + 5)]), "auto", "UTC",
                                             "t")
    assert unit == "us" and list(micros) == [T0]
    texts = pd.Series(["2024-01-01T01:00:00+01:00", "2024-01-01T00:00:00Z",
                       "2024-01-01 00:00:00.75", "2024-01-01", "2024-01-01T02:00:00"])
    utc, unit = table_reading.parse_times(texts, "auto", "UTC", "t")
    assert unit == "iso" and list(utc) == [T0, T0, T0, T0, T0 + 2 * HOUR]
    berlin, _ = table_reading.parse_times(texts, "iso", "Europe/Berlin", "t")
    # Zoned times are UTC whatever --timezone says; naive ones are Berlin time (UTC+1).
    assert list(berlin) == [T0, T0, T0 - HOUR, T0 - HOUR, T0 + HOUR]
    bad, _ = table_reading.parse_times(pd.Series(["yesterday", "31/12/2023", ""]), "iso",
                                       "UTC", "t")
    assert bad.isna().all()
    with pytest.raises(Refused, match="not a time zone name"):
        table_reading.parse_times(texts, "iso", "Mars/Olympus", "t")


def test_ratings_become_engaged_or_shown_with_ms_timestamps_in_json_lines(tmp_path):
    ratings = pd.DataFrame({"userId": [1, 1, 2, 2, 3, 3], "movieId": [10, 11, 10, 12, 11, 12],
                            "rating": [4.5, 2.0, 4.0, 3.5, 5.0, 1.0],
                            "ts": [(T0 + i * DAY) * 1000 + 123 for i in range(6)]})
    path = write(ratings, tmp_path / "ratings.jsonl", "jsonl")
    report = generic_table.import_table(path, str(tmp_path / "out"), Mapping(
        user="userId", item="movieId", timestamp="ts", rating="rating",
        engaged_if="rating>=4"))
    rows = all_events(tmp_path / "out")
    assert [(r["user_id"], r["item_id"], r["event"]) for r in rows] == [
        ("1", "10", "click"), ("1", "11", "impression"), ("2", "10", "click"),
        ("2", "12", "impression"), ("3", "11", "click"), ("3", "12", "impression")]
    assert rows[0]["timestamp"] == "2024-01-01T00:00:00Z"
    assert report["options"]["timestamp_unit"] == "ms"
    assert report["interactions"]["negatives_sampled"] == 0  # it has shown-not-engaged rows
    assert "rating>=4" in report["interactions"]["event_source"]
    with pytest.raises(Refused, match="needs --engaged-if"):
        generic_table.import_table(path, str(tmp_path / "x"), Mapping(
            user="userId", item="movieId", timestamp="ts", rating="rating"))
    with pytest.raises(Refused, match="is not a comparison"):
        generic_table.import_table(path, str(tmp_path / "x"), Mapping(
            user="userId", item="movieId", timestamp="ts", rating="rating",
            engaged_if="rating is high"))


def test_purchase_only_log_gets_negatives_from_the_online_retail_code(tmp_path):
    assert online_retail.sample_negatives is tables.sample_negatives  # one implementation
    events = shop_log()
    purchases = events[events["action"] == "buy"].drop(columns="action")
    report, out = run_import(tmp_path, purchases, CATALOGUE, event=None, event_map={})
    counts = report["interactions"]
    assert counts["purchase_only"] and counts["events"] == len(purchases)
    assert counts["events_by_type"] == {"purchase": len(purchases)}
    rows = all_events(out)
    negatives = [r for r in rows if r["event"] == "impression"]
    assert len(negatives) == counts["negatives_sampled"] > 0
    assert counts["rows_written"] == len(rows) == len(purchases) + len(negatives)
    assert report["options"]["negatives_per_positive"] == 1 and report["profile"][
        "sampled_negatives"]
    bought = {(r["user_id"], r["timestamp"], r["item_id"]) for r in rows
              if r["event"] == "purchase"}
    items = last_items(out, report)
    for row in negatives:  # outside the basket, on sale at the time
        assert (row["user_id"], row["timestamp"], row["item_id"]) not in bought
        assert items[row["item_id"]]["first_seen"] <= row["timestamp"]
    # The same call as Online Retail's, on the same rows: the same negatives.
    expected, _ = tables.sample_negatives(
        _contract_events(rows, "purchase"), _first_seen(items), 1, 0)
    assert sorted(map(tuple, expected[["user_id", "item_id"]].values.tolist())) == sorted(
        (r["user_id"], r["item_id"]) for r in negatives)


def _contract_events(rows, event):
    frame = pd.DataFrame([r for r in rows if r["event"] == event])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).astype("int64") // 10**9
    return frame[list(contract.INTERACTION_HEADER)]


def _first_seen(items):
    return pd.DataFrame({"item_id": list(items), "first_seen": [
        pd.Timestamp(row["first_seen"]).value // 10**9 for row in items.values()]})


def test_first_seen_is_derived_before_the_eval_cutoff_only(tmp_path):
    events = shop_log()
    late = pd.DataFrame([{"who": "c0", "what": "p99", "when": "2024-01-20T00:00:00Z",
                          "action": "like"}])
    report, out = run_import(tmp_path, pd.concat([events, late]), CATALOGUE)
    first_seen = report["catalogue"]["first_seen"]
    assert first_seen["derived"]["eval_cutoff"] == "2024-01-14T03:02:00Z"
    assert first_seen["derived"]["items_moved_to_cutoff"] == 1  # p99: first sold after it
    assert first_seen["derived_from_events"] == 9
    assert last_items(out, report)["p99"]["first_seen"] == "2024-01-14T03:02:00Z"


def test_first_seen_from_the_item_table_is_clipped_and_counted(tmp_path):
    events = shop_log()
    items = CATALOGUE.assign(launched=["1955-06-01", "2023-06-01", "2024-12-31", "2023-01-01",
                                       "2023-01-01", "", "2023-01-01", "2023-01-01"])
    extra = pd.DataFrame({"sku": ["p50"], "name": ["Unsold"], "dept": ["Toys"], "cost": ["1"],
                          "launched": ["2030-01-01T00:00:00Z"]})
    report, out = run_import(tmp_path, events, pd.concat([items, extra]),
                             first_seen="launched")
    counts = report["catalogue"]["first_seen"]
    assert counts["given_before_1970_clipped_to_1970"] == 1
    assert counts["given_after_first_event_moved_to_it"] == 1  # p3, launched after its sales
    assert counts["given_after_newest_event_clipped_to_it"] == 1  # p50, no events
    assert counts["given_by_item_table"] == 8 and counts["derived_from_events"] == 1  # p6: ""
    snapshot = last_items(out, report)
    assert snapshot["p1"]["first_seen"] == "1970-01-01T00:00:00Z"
    assert snapshot["p2"]["first_seen"] == "2023-06-01T00:00:00Z"
    first_p3 = min(r["timestamp"] for r in all_events(out) if r["item_id"] == "p3")
    assert snapshot["p3"]["first_seen"] == first_p3
    assert snapshot["p50"]["first_seen"] == report["date_range"]["last_event"]


# ---- named bad-input outcomes ---------------------------------------------------------------
def test_a_misspelled_column_is_named_with_the_columns_found(tmp_path):
    with pytest.raises(Refused) as refused:
        run_import(tmp_path, shop_log(), user="Who")
    message = str(refused.value)
    assert "--user: column 'Who' is not in events.csv" in message
    assert "columns found: ['who', 'what', 'when', 'action']" in message
    assert "did you mean 'who'" in message
    assert not (tmp_path / "out").exists()  # nothing written
    with pytest.raises(Refused, match=r"--price: column 'costs' is not in items.csv; columns "
                                      r"found: \['sku', 'name', 'dept', 'cost'\]"):
        run_import(tmp_path, shop_log(), CATALOGUE, price="costs")
    assert not (tmp_path / "out").exists()
    with pytest.raises(Refused, match="--title names a column of the item table: give the "
                                      "table with --items FILE"):
        run_import(tmp_path, shop_log(), title="name")


def test_unparseable_timestamps_are_counted_with_examples_or_refused_above_the_share(tmp_path):
    events = shop_log()
    bad = events.copy()
    bad.loc[[3, 7], "when"] = ["yesterday", "31/12/2023"]
    report, out = run_import(tmp_path, bad, max_bad_timestamps=0.01)
    dropped_only(report, unparseable_timestamp=2)
    assert report["rows"]["dropped_examples"]["unparseable_timestamp"] == ["yesterday",
                                                                          "31/12/2023"]
    assert len(all_events(out)) == len(events) - 2
    with pytest.raises(Refused) as refused:
        run_import(tmp_path, bad, max_bad_timestamps=0.001)
    message = str(refused.value)
    assert "2 of 252 values (0.8%) are not timestamps" in message
    assert "'yesterday', '31/12/2023'" in message and "--max-bad-timestamps" in message


def test_duplicate_events_are_dropped_and_counted(tmp_path):
    events = shop_log()
    again = events.iloc[[0, 1, 1]]
    deeper = events.iloc[[2]].assign(action="buy" if events.iloc[2]["action"] != "buy"
                                     else "like")
    report, out = run_import(tmp_path, pd.concat([events, again, deeper]))
    shallower = 1 if events.iloc[2]["action"] != "buy" else 0
    dropped_only(report, duplicate_event=3, **(
        {"same_moment_shallower_event": 1} if shallower else {}))
    assert len(all_events(out)) == len(events) + 1 - shallower


def test_an_item_missing_from_the_item_table_is_kept_with_empty_content(tmp_path):
    events = shop_log()
    extra = pd.DataFrame([{"who": "c1", "what": "ghost", "when": "2024-01-02T00:00:00Z",
                           "action": "like"}])
    report, out = run_import(tmp_path, pd.concat([events, extra]), CATALOGUE)
    dropped_only(report)
    catalogue = report["catalogue"]
    assert catalogue["not_in_item_table"] == 1
    assert catalogue["not_in_item_table_examples"] == ["ghost"]
    assert catalogue["price"]["filled"]["not_in_item_table"] == 1
    ghost = last_items(out, report)["ghost"]
    assert (ghost["title"], ghost["description"], ghost["category"], ghost["image"]) == (
        "", "", "unknown", "")
    assert ghost["price"] == catalogue["price"]["fill_value"] == "9.00"  # the median
    assert any(r["item_id"] == "ghost" for r in all_events(out))


def test_a_rating_that_is_not_a_number_is_refused_with_the_column_named(tmp_path):
    ratings = pd.DataFrame({"u": ["a", "b", "a"], "i": ["x", "y", "y"],
                            "stars": ["4", "five", "2"], "t": [T0, T0 + 1, T0 + 2]})
    with pytest.raises(Refused) as refused:
        generic_table.import_table(write(ratings, tmp_path / "r.csv"), str(tmp_path / "out"),
                                   Mapping(user="u", item="i", timestamp="t", rating="stars",
                                           engaged_if="rating>=4"))
    assert "--rating column 'stars' of r.csv holds 1 value(s) that are not numbers, " \
           "e.g. ['five']" in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_an_image_path_that_does_not_exist_is_counted_and_the_item_has_none(tmp_path):
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "p1.png")
    items = CATALOGUE.assign(picture=["p1.png", "missing/p2.jpg", "", "", "", "",
                                      "https://cdn.example.com/p7.jpg", ""])
    report, out = run_import(tmp_path, shop_log(), items, image="picture")
    images = report["images"]
    assert (images["from_column"], images["missing_files"], images["urls"]) == (1, 1, 1)
    assert images["missing_file_examples"] == ["missing/p2.jpg"]
    snapshot = last_items(out, report)
    assert snapshot["p1"]["image"] == "images/p1.png" and (out / "images" / "p1.png").exists()
    assert snapshot["p2"]["image"] == ""
    assert snapshot["p7"]["image"] == "https://cdn.example.com/p7.jpg"
    dropped_only(report)


def test_an_images_folder_matches_on_item_id_and_counts_the_rest(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(photos / "p4.jpg")
    (photos / "p5.png").write_bytes(b"not a png")
    (photos / "unknown-item.png").write_bytes(b"x")
    report, out = run_import(tmp_path, shop_log(), CATALOGUE, images=str(photos))
    images = report["images"]
    assert (images["from_folder"], images["corrupt"], images["corrupt_items"]) == (2, 1, ["p5"])
    assert images["folder_files_matching_no_item_examples"] == ["unknown-item.png"]
    assert last_items(out, report)["p4"]["image"] == "images/p4.jpg"


def test_a_column_that_is_not_utf8_is_decoded_with_replacement_and_counted(tmp_path):
    events = shop_log()
    path = tmp_path / "items.csv"
    CATALOGUE.to_csv(path, index=False)
    raw = path.read_bytes().replace(b"Product 3", b"Caf\xe9 3")  # Latin-1, not UTF-8
    path.write_bytes(raw)
    events_path = write(events, tmp_path / "events.csv")
    report = generic_table.import_table(events_path, str(tmp_path / "out"), Mapping(
        **SHOP, items=str(path), item_id="sku", title="name", category="dept", price="cost"))
    assert report["text_not_utf8"]["items"] == {"name": 1}
    assert report["text_not_utf8"]["interactions"] == {}
    assert last_items(tmp_path / "out", report)["p3"]["title"] == "Caf\ufffd 3"
    assert report["catalogue"]["items"] == 8
    dropped_only(report)


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty: hyperrec needs a header row and the interactions of at least two users"),
    (b"who,what,when,action\n", "has no rows: hyperrec needs the interactions of at least two "
                                "users"),
    (b"who,what,when,action\nc1,p1,2024-01-01T00:00:00Z,buy\nc1,p2,2024-01-02T00:00:00Z,buy\n",
     "has 2 usable event(s) of 1 user(s): hyperrec needs the interactions of at least two "
     "users, since a recommender learns what to show one user from what the others did"),
    (b"who,what,when,action\nc1,p1,2024-01-01T00:00:00Z,view\nc2,p2,2024-01-02T00:00:00Z,view\n",
     "has no engaged event: hyperrec needs clicks, carts, purchases or ratings above "
     "--engaged-if"),
])
def test_an_empty_or_one_user_file_is_refused_with_what_is_needed(tmp_path, content, expected):
    path = tmp_path / "events.csv"
    path.write_bytes(content)
    with pytest.raises(Refused) as refused:
        generic_table.import_table(str(path), str(tmp_path / "out"), Mapping(**SHOP))
    assert expected in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_dates_before_1970_are_dropped_or_clipped_and_counted(tmp_path):
    events = shop_log()
    old = pd.DataFrame([{"who": "c1", "what": "p1", "when": "1969-07-20T20:17:00Z",
                         "action": "like"},
                        {"who": "c2", "what": "p2", "when": "-5", "action": "like"}])
    report, out = run_import(tmp_path, pd.concat([events, old]))
    dropped_only(report, timestamp_before_1970=1, unparseable_timestamp=1)
    assert report["rows"]["dropped_examples"]["timestamp_before_1970"] == [
        "1969-07-20T20:17:00Z"]
    assert report["date_range"]["first_event"] == "2024-01-01T00:00:00Z"
    assert len(all_events(out)) == len(events)


def test_an_event_value_outside_the_contract_is_refused_with_the_fix(tmp_path):
    events = shop_log()
    events.loc[[0, 5], "action"] = "wishlist"
    with pytest.raises(Refused) as refused:
        run_import(tmp_path, events)
    assert ("--event column 'action' has values that are not contract events" in
            str(refused.value))
    assert "'wishlist' (2 rows)" in str(refused.value)
    assert "--event-map wishlist=drop" in str(refused.value)
    report, out = run_import(tmp_path, events, event_map={**SHOP["event_map"],
                                                          "wishlist": "drop"})
    dropped_only(report, event_mapped_to_drop=2)
    assert report["rows"]["dropped_examples"]["event_mapped_to_drop"] == ["wishlist"]


def test_a_failed_import_leaves_the_output_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "span-1").mkdir()
    (out / "span-1" / "interactions.csv").write_text("earlier import\n")
    with pytest.raises(RuntimeError):
        with tables.atomic_output(str(out)) as staging:
            (tmp_path / "seen").write_text(staging)
            os.makedirs(os.path.join(staging, "span-1"))
            raise RuntimeError("disk full")
    assert (out / "span-1" / "interactions.csv").read_text() == "earlier import\n"
    assert not os.path.exists((tmp_path / "seen").read_text())
    assert sorted(os.listdir(tmp_path)) == ["out", "seen"]


# ---- mapping file and --help -------------------------------------------------------------
def test_a_yaml_mapping_with_flags_on_top(tmp_path):
    events = shop_log()
    write(events, tmp_path / "events.csv")
    write(CATALOGUE, tmp_path / "items.csv")
    (tmp_path / "map.yaml").write_text(
        "user: who\nitem: what\ntimestamp: when\nevent: action\n"
        "event_map: {view: impression, like: click, buy: purchase}\n"
        "items: items.csv\nitem_id: sku\ntitle: name\ncategory: dept\nprice: cost\n")
    result = CliRunner().invoke(cli.import_data, [
        "table", str(tmp_path / "events.csv"), "--mapping", str(tmp_path / "map.yaml"),
        "--event-map", "view=impression,like=add_to_cart,buy=purchase",
        "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "rows read: 252" in result.output and "next: hyperrec run --data" in result.output
    report = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert report["interactions"]["events_by_type"]["add_to_cart"] == int(
        (events["action"] == "like").sum())
    (tmp_path / "bad.yaml").write_text("usr: who\n")
    result = CliRunner().invoke(cli.import_data, [
        "table", str(tmp_path / "events.csv"), "--mapping", str(tmp_path / "bad.yaml"),
        "--out", str(tmp_path / "out2")])
    assert result.exit_code == 1 and "unknown key(s) ['usr']; known keys:" in result.output


def test_every_import_table_flag_is_documented_with_an_example():
    command = cli.import_data.commands["table"]
    options = [p for p in command.params if p.param_type_name == "option"]
    assert len(options) >= 28
    for option in options:  # (click adds --help itself, outside params)
        flag = option.opts[0]
        assert f"E.g. {flag} " in (option.help or ""), flag
    text = CliRunner().invoke(cli.import_data, ["table", "--help"]).output
    assert text.count("E.g.") == len(options) + 1  # each option's, and the command's
    assert all(option.opts[0] in text for option in options)


# ---- the sized configuration and `--set` ----------------------------------------------------
def profile(**values):
    base = dict(events=6439, engaged_events=846, users=113, items=100, log_days=27.75,
                span_days=7, spans=4, eval_days=7.0, items_with_image=0.96,
                items_with_text=1.0, text_tokens=224, engaged_per_user_median=6.0,
                sampled_negatives=False)
    return {**base, **values}


def test_the_sized_configuration_follows_the_data_and_says_why():
    small, why = config_lib.sized(profile())
    assert small.name == "sized" and small.model.embedding_dim == 16  # tiny's sizes
    assert small.data.eval_days == 7.0 and small.data.window_spans == 4
    assert small.eval.must_beat == () and small.eval.smoke_configuration.startswith("sized")
    assert small.model.batch_size == 64 and small.data.history_length == 6
    assert small.transform.id_vocab_size == 1000
    assert set(why) >= {"transform.id_vocab_size", "data.history_length", "model.batch_size",
                        "model.epochs", "data.eval_days", "eval.must_beat"}
    big, why = config_lib.sized(profile(events=900_000, engaged_events=120_000, users=40_000,
                                        items=9_000, spans=16, span_days=14, log_days=220,
                                        eval_days=33.0, items_with_image=0.0,
                                        engaged_per_user_median=60, sampled_negatives=True))
    assert big.model.embedding_dim == config_lib.HyperrecConfig().model.embedding_dim
    assert big.eval.must_beat == config_lib.EvalConfig().must_beat
    assert big.eval.smoke_configuration == "" and big.eval.min_auc == 0.52
    assert big.transform.id_vocab_size == 50_000 and big.transform.num_oov_buckets == 10
    assert big.model.batch_size == 512 and big.data.history_length == 30
    assert big.data.image_size == 16 and "no item has an image" in why["data.image_size"]
    middle, _ = config_lib.sized(profile(engaged_events=8_000))
    assert middle.eval.must_beat == ("most_popular", "recent_popular")
    rebuilt = config_lib.from_dict(config_lib.HyperrecConfig,
                                   json.loads(json.dumps(_asdict(small))))
    assert rebuilt == small


def test_derived_first_seen_turns_the_freshness_term_off_and_says_why():
    """Without launch dates an item's age counts from the log's start, its first sale or the
    eval cutoff: the freshness term learned that artefact (the reviews example without
    `launched`: not blessed, ranking AUC 0.514); without it, blessed (AUC 0.569)."""
    default = config_lib.HyperrecConfig().model
    given, why = config_lib.sized(profile(first_seen_derived=0.0))
    assert given.model.freshness_days == default.freshness_days
    assert "model.freshness_days" not in why
    legacy, _ = config_lib.sized(profile())  # a report written before the field existed
    assert legacy.model.freshness_days == default.freshness_days
    few, _ = config_lib.sized(profile(first_seen_derived=config_lib.FRESHNESS_DERIVED_SHARE))
    assert few.model.freshness_days == default.freshness_days
    derived, why = config_lib.sized(profile(first_seen_derived=0.97))
    assert derived.model.freshness_days == ()
    assert "first_seen derived from the log for 97% of items" in why["model.freshness_days"]
    assert "27.75 days" in why["model.freshness_days"]
    # Measured not to help: young items still train id-less.
    assert derived.model.new_item_days == default.new_item_days
    assert config_lib.with_overrides(derived, ["model.freshness_days=1,7"]).model \
        .freshness_days == (1, 7)


def test_the_profile_counts_the_items_whose_first_seen_came_from_the_log(tmp_path):
    (tmp_path / "given").mkdir()
    (tmp_path / "derived").mkdir()
    given, _ = run_import(tmp_path / "given", shop_log(),
                          CATALOGUE.assign(launched="2023-06-01"), first_seen="launched")
    derived, _ = run_import(tmp_path / "derived", shop_log(), CATALOGUE)
    assert given["profile"]["first_seen_derived"] == 0.0
    assert derived["profile"]["first_seen_derived"] == 1.0
    assert derived["catalogue"]["first_seen"]["derived_from_events"] == \
        derived["profile"]["items"]
    assert config_lib.sized(derived["profile"])[0].model.freshness_days == ()
    assert config_lib.sized(given["profile"])[0].model.freshness_days != ()


def _asdict(config):
    import dataclasses
    return dataclasses.asdict(config)


def test_span_and_eval_windows():
    assert config_lib.span_days_for(27.75) == 7 and config_lib.span_days_for(112) == 7
    assert config_lib.span_days_for(113) == 14 and config_lib.span_days_for(7000) == 441
    assert config_lib.eval_days_for(27.75, 7) == 7.0  # one span at least
    assert config_lib.eval_days_for(200, 14) == 30.0  # 15% of the days


def test_run_uses_the_sized_config_and_the_derived_schema_unless_told_otherwise(tmp_path):
    report, out = run_import(tmp_path, shop_log(), CATALOGUE)
    config, record = runner_commands.run_config(None, (), str(out))
    assert config.name == "sized" and record["sizing"]["data.eval_days"]
    assert config.schema_file == str(out / "schema.pbtxt")
    assert record["config"]["data"]["window_spans"] == report["timeline"]["spans"]
    config, record = runner_commands.run_config(None, ("schema_file=schemas/schema.pbtxt",
                                                       "model.epochs=1"), str(out))
    assert config.schema_file == "schemas/schema.pbtxt" and config.model.epochs == 1
    assert "model.epochs" not in record["sizing"]  # --set wins, and is recorded as such
    config, record = runner_commands.run_config("tiny", (), str(out))
    assert config.name == "tiny" and record["sizing"] == {}
    assert config.schema_file == str(out / "schema.pbtxt")
    path = runner_commands.store_run_config(record, str(tmp_path / "run"))
    assert json.loads(open(path).read())["experiment"] == "tiny"


def test_a_set_value_that_does_not_fit_its_field_is_refused_at_load(tmp_path):
    with pytest.raises(config_lib.OverrideError) as refused:
        config_lib.load("tiny", ["model.recent_popularity_counts=()"])
    assert str(refused.value) == (
        "model.recent_popularity_counts expects a comma-separated list of integers (nothing "
        "after '=' for an empty list), e.g. --set model.recent_popularity_counts=1,2,3,5; "
        "got '()'")
    assert config_lib.load("tiny", ["model.recent_popularity_counts="]).model \
        .recent_popularity_counts == ()
    for override, message in [
            ("model.batch_size=0", "model.batch_size expects an integer of at least 1, "
                                   "e.g. --set model.batch_size=64"),
            ("model.learning_rate=fast", "model.learning_rate expects a number, "
                                         "e.g. --set model.learning_rate=0.003"),
            ("model.train_steps=all", "model.train_steps expects an integer or none"),
            ("model.deterministic=yes", "model.deterministic expects true or false"),
            ("eval.must_beat=most popular", "eval.must_beat expects a comma-separated list "
                                            "of names"),
            ("model.cnn_filters=8,16.5", "model.cnn_filters expects a comma-separated list "
                                         "of integers")]:
        with pytest.raises(config_lib.OverrideError, match=message.replace(".", r"\.")):
            config_lib.load("tiny", [override])
    # On the command line: a usage error before anything runs, naming the same.
    from hyperrec.pipeline import cli as pipeline_cli
    (tmp_path / "span-1").mkdir()
    result = CliRunner().invoke(pipeline_cli.main, [
        "run", "--data", str(tmp_path), "--workdir", str(tmp_path / "run"),
        "--set", "model.recent_popularity_counts=()"])
    assert result.exit_code == 2
    assert "model.recent_popularity_counts expects a comma-separated list of integers" in \
        result.output
    assert not (tmp_path / "run").exists()


def test_gzip_csv_and_tsv_are_read(tmp_path):
    events = shop_log()
    with gzip.open(tmp_path / "events.tsv.gz", "wt") as handle:
        events.to_csv(handle, sep="\t", index=False)
    report = generic_table.import_table(str(tmp_path / "events.tsv.gz"), str(tmp_path / "out"),
                                        Mapping(**SHOP))
    assert report["source"]["interactions"]["format"] == "tsv"
    assert report["rows"]["kept"] == len(events)
    with pytest.raises(Refused, match="cannot tell the format from the extension '.txt'"):
        generic_table.import_table(write(events, tmp_path / "events.txt"),
                                   str(tmp_path / "o"), Mapping(**SHOP))


def test_the_readme_example_is_what_its_builder_writes(tmp_path):
    """data/examples/reviews is the tiny sample data in a shop's shapes, nothing hand-made."""
    from hyperrec.data.examples import reviews
    from support import tree_digest

    reviews.build(str(tmp_path))
    committed = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "data", "examples", "reviews")
    assert tree_digest(tmp_path) == tree_digest(committed)
