"""Tests of the importers: real data sets -> the data contract (data/README.md).

The cleaning and catalogue rules are pure functions over a DataFrame, so each rule is checked
by hand on a tiny invented invoice table (no file needed). The real files (../shared/data)
then check the contract end to end: headers, spans, snapshots, determinism, and the counts of
a full Online Retail import (about 5 s: the fast .rda reader makes the full file affordable).
"""
import csv
import datetime
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from hyperrec.schemas import features
from hyperrec.data import image_normaliser as example_gen_images
from hyperrec.data import contract
from hyperrec.data.importers import categories, image_folder, online_retail, rda, tables
from hyperrec.pipeline.cli import data as cli
from support import tree_digest

INTERACTION_HEADER = list(features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS)
T0 = 1_291_191_960  # 2010-12-01T08:26:00Z, the first invoice of Online Retail
MINUTE = 60


# ---- helpers ------------------------------------------------------------------------------
def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        return next(reader), list(reader)


def epoch(text):
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def check_contract_tree(root, report):
    """The layout and the span rules every import must satisfy; returns all event rows."""
    spans = report["spans"]
    assert sorted(os.listdir(root)) == sorted(
        [f"span-{s['span']}" for s in spans] + [contract.IMPORT_REPORT_FILE]
        + (["images"] if os.path.isdir(os.path.join(root, "images")) else []))
    previous_items, all_events = {}, []
    for window in spans:
        folder = os.path.join(root, f"span-{window['span']}")
        header, events = read_rows(os.path.join(folder, "interactions.csv"))
        assert header == INTERACTION_HEADER
        item_header, item_rows = read_rows(os.path.join(folder, "items.csv"))
        assert item_header == list(features.ITEM_COLUMNS)
        items = {row[0]: row for row in item_rows}
        assert len(items) == len(item_rows) == window["items"]
        begin, end = epoch(window["start"]), epoch(window["end"])
        keys = []
        for user_id, item_id, timestamp, event, device in events:
            assert item_id in items, f"span {window['span']}: {item_id} not in its items.csv"
            assert begin <= epoch(timestamp) < end
            assert timestamp.endswith("Z") and event in features.EVENTS and device
            keys.append((epoch(timestamp), user_id, item_id))
        assert keys == sorted(keys) and len(events) == window["interactions"]
        for row in item_rows:
            assert row[1], "title never empty"
            assert float(row[4]) > 0 and row[4] == f"{float(row[4]):.2f}"
            assert epoch(row[6]) < end
        # A snapshot only grows, and an item keeps its row in every later snapshot.
        assert all(items.get(item_id) == row for item_id, row in previous_items.items())
        previous_items = items
        all_events += events
    return all_events


# ---- Online Retail: the rules, by hand ----------------------------------------------------
def invoice_lines(*rows):
    return pd.DataFrame(rows, columns=list(online_retail.SOURCE_COLUMNS))


def uk(invoice, code, description, quantity, minutes, price, customer):
    return (invoice, code, description, quantity, float(T0 + minutes * MINUTE), price,
            customer, "United Kingdom")


HEART, BABUSHKA, STAR = "WHITE HANGING HEART T-LIGHT HOLDER", "SET 7 BABUSHKA NESTING BOXES", \
    "GLASS STAR FROSTED T-LIGHT HOLDER"
TABLE = invoice_lines(
    uk("536365", "85123A", HEART, 6, 0, 2.55, 17850.0),                # kept
    uk("536365", "85123A", HEART, 6, 0, 2.55, 17850.0),                # exact duplicate
    uk("536365", "85123A", HEART, 2, 1, 2.55, 17850.0),                # same invoice, code
    uk("536365", "POST", "POSTAGE", 1, 0, 18.0, 17850.0),              # not a product
    uk("C536379", "85123A", HEART, -6, 30, 2.55, 17850.0),             # cancellation
    uk("536380", "85123A", "damaged", -3, 40, 0.0, float("nan")),      # stock adjustment
    uk("536381", "22752", BABUSHKA, 1, 50, 0.0, 13047.0),              # free: price 0
    uk("536382", "22633", None, 1, 55, 1.65, 13047.0),                 # no description
    uk("536383", "22752", BABUSHKA, 2, 60, 7.65, 13047.0),             # kept
    uk("536384", "22752", "SET 7  BABUSHKA NESTING BOXES ", 1, 70, 8.50, float("nan")),
    uk("536385", "22752", "BABUSHKA NESTING BOXES", 1, 80, 7.95, 12583.0),  # a variant
    uk("536386", "85123a", HEART, 4, 90, 2.95, 12583.0),               # lower-case code
    uk("536387", "21730", STAR, 1, 100, 4.25, 12583.0),                # a tie of variants:
    uk("536388", "21730", "FROSTED STAR T-LIGHT HOLDER", 1, 110, 4.25, 12583.0),  # lexical
)


def test_each_cleaning_rule_drops_and_counts_its_lines():
    clean = online_retail.clean_lines(TABLE)
    assert clean.lines_read == 14 and clean.customers_read == 3
    assert clean.dropped == {"cancelled_invoice": 1, "non_positive_quantity": 1,
                             "non_product_code": 1, "non_positive_price": 1,
                             "missing_description": 1, "duplicate_line": 1}
    assert clean.non_product_codes == {"POST": 1}
    assert len(clean.lines) == 14 - 6
    assert not clean.lines["invoice"].str.startswith("C").any()
    assert clean.normalised == {"stock_code_upper_cased": 1, "description_whitespace": 1,
                                "line_time_set_to_invoice_time": 1}
    # The second line of invoice 536365 (a minute later) takes the invoice's time.
    assert set(clean.lines.loc[clean.lines["invoice"] == "536365", "timestamp"]) == {T0}


def test_catalogue_picks_the_most_frequent_description_median_price_first_sale():
    items, counts = online_retail.build_catalogue(online_retail.clean_lines(TABLE).lines)
    items = items.set_index("item_id")
    assert list(items.index) == ["21730", "22752", "85123A"]  # 85123a merged into 85123A
    # 2 whitespace-normalised lines beat 1: the canonical text; ties go to the lexically first.
    assert items.loc["22752", "title"] == BABUSHKA == items.loc["22752", "description"]
    assert items.loc["21730", "title"] == "FROSTED STAR T-LIGHT HOLDER"
    assert counts["with_description_variants"] == 2
    assert counts["description_variants_not_chosen"] == 2
    # Median of the kept prices (the line without a customer counts: a real sale).
    assert items.loc["22752", "price"] == "7.95"  # median(7.65, 8.50, 7.95)
    assert items.loc["85123A", "price"] == "2.55"  # median(2.55, 2.55, 2.95)
    assert items.loc["85123A", "first_seen"] == T0
    assert items.loc["22752", "first_seen"] == T0 + 60 * MINUTE  # the free line was dropped
    assert items.loc["85123A", "category"] == "lighting"  # T-LIGHT (HOLDER is skipped)
    assert items.loc["22752", "category"] == "storage"
    assert set(items["image"]) == {""}
    assert list(items.reset_index().columns) == list(features.ITEM_COLUMNS)


def test_events_one_purchase_per_customer_item_invoice_and_none_without_customer():
    events, counts = online_retail.build_events(online_retail.clean_lines(TABLE).lines)
    assert counts == {"lines_without_customer": 1, "lines_merged_same_invoice": 1,
                      "lines_merged_same_customer_minute": 0}
    got = sorted(zip(events["user_id"], events["item_id"], events["timestamp"] - T0))
    assert got == [("12583", "21730", 100 * MINUTE), ("12583", "21730", 110 * MINUTE),
                   ("12583", "22752", 80 * MINUTE), ("12583", "85123A", 90 * MINUTE),
                   ("13047", "22752", 60 * MINUTE), ("17850", "85123A", 0)]
    assert set(events["event"]) == {"purchase"} and set(events["device"]) == {features.UNKNOWN}
    assert "purchase" in features.EVENTS


def test_category_keywords_scan_from_the_right():
    assert categories.category_of("JUMBO BAG RED RETROSPOT") == "bags"
    assert categories.category_of("WHITE HANGING HEART T-LIGHT HOLDER") == "lighting"
    assert categories.category_of("SET OF 3 CAKE TINS PANTRY DESIGN") == "storage"  # TINS
    assert categories.category_of("PARTY BUNTING") == "decorations"  # rightmost wins
    assert categories.category_of("INFLATABLE POLITICAL GLOBE") == categories.OTHER
    assert categories.category_of("") == categories.OTHER
    assert set(categories.KEYWORDS.values()) | {categories.OTHER} == set(categories.CATEGORIES)


def test_customer_sample_is_seeded_and_uniform_over_customers():
    events = pd.DataFrame({"user_id": [f"c{i % 40}" for i in range(400)], "item_id": "x"})
    first = online_retail.sample_customers(events, 10, seed=0)
    assert first["user_id"].nunique() == 10
    assert first.equals(online_retail.sample_customers(events, 10, seed=0))
    assert set(first["user_id"]) != set(online_retail.sample_customers(events, 10, 1)["user_id"])
    assert online_retail.sample_customers(events, 100, seed=0) is events


def test_tiny_table_import_writes_the_contract(tmp_path):
    report = online_retail.import_table(TABLE, {"file": "tiny"}, str(tmp_path), span_days=1,
                                        negatives_per_purchase=0)
    events = check_contract_tree(str(tmp_path), report)
    assert len(events) == report["interactions"]["events"] == 6
    assert report["timeline"] == {"start": "2010-12-01T00:00:00Z",
                                  "end": "2010-12-02T00:00:00Z", "span_days": 1, "spans": 1,
                                  "first_sale": "2010-12-01T08:26:00Z",
                                  "last_sale": "2010-12-01T10:16:00Z"}
    assert json.loads((tmp_path / contract.IMPORT_REPORT_FILE).read_text()) == report


DAY = features.SECONDS_PER_DAY


def test_first_seen_from_the_log_is_cut_at_the_eval_cutoff():
    # Newest event on day 10, 4 eval days: ExampleGen's cutoff is day 6 (contract.eval_cutoff).
    events = pd.Series([T0, T0 + 3 * DAY, T0 + 10 * DAY])
    first_seen = pd.Series([T0, T0 + 6 * DAY, T0 + 8 * DAY], index=["old", "at", "late"])
    fixed, report = tables.first_seen_before_eval(first_seen, events, 4.0, derived_from="sales")
    assert contract.eval_cutoff(T0 + 10 * DAY, 4.0) == T0 + 6 * DAY
    assert fixed.to_dict() == {"old": T0, "at": T0 + 6 * DAY, "late": T0 + 6 * DAY}
    assert report == {"derived_from": "sales", "rule": tables.FIRST_SEEN_RULE,
                      "eval_days": 4.0, "eval_cutoff": contract.iso_utc(T0 + 6 * DAY),
                      "items_moved_to_cutoff": 1}


def test_online_retail_first_seen_is_known_before_the_eval_cutoff_only(tmp_path):
    # 85123A sells on day 0 and in the eval period; 22752 first sells in the eval period
    # (day 9 of 10, 3 eval days: cutoff day 7), so it is listed from the cutoff, unsold.
    log = invoice_lines(uk("1", "85123A", HEART, 1, 0, 2.55, 1.0),
                        uk("2", "21730", STAR, 1, 3 * 24 * 60, 4.25, 2.0),
                        uk("3", "85123A", HEART, 1, 9 * 24 * 60, 2.55, 2.0),
                        uk("4", "22752", BABUSHKA, 1, 9 * 24 * 60, 7.65, 1.0),
                        uk("5", "21730", STAR, 1, 10 * 24 * 60, 4.25, 1.0))
    report = online_retail.import_table(log, {"file": "eval"}, str(tmp_path), span_days=28,
                                        negatives_per_purchase=0, eval_days=3.0)
    cutoff = T0 + 7 * DAY
    _, rows = read_rows(str(tmp_path / "span-1" / "items.csv"))
    first_seen = {row[0]: epoch(row[6]) for row in rows}
    assert first_seen == {"85123A": T0, "21730": T0 + 3 * DAY, "22752": cutoff}
    assert report["options"]["eval_days"] == 3.0
    assert report["catalogue"]["first_seen"]["eval_cutoff"] == contract.iso_utc(cutoff)
    assert report["catalogue"]["first_seen"]["items_moved_to_cutoff"] == 1
    # The default is the eval period the online_retail experiment splits with.
    assert online_retail.DEFAULT_EVAL_DAYS == 28.0


def test_sampled_negatives_are_outside_the_basket_on_sale_and_seeded():
    events = pd.DataFrame({
        "user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "z"],
        "timestamp": [100, 100, 200, 300], "event": "purchase", "device": "unknown"})
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "first_seen": [0, 0, 250]})
    negatives, counts = online_retail.sample_negatives(events, items, 5, seed=3)
    assert (negatives["event"] == "impression").all()
    assert counts["negatives_sampled"] == len(negatives) > 0
    assert counts["negatives_sampled"] + counts["negatives_rejected"] == 4 * 5
    basket = set(zip(events["user_id"], events["timestamp"], events["item_id"]))
    on_sale = dict(zip(items["item_id"], items["first_seen"]))
    for user, item, ts in zip(negatives["user_id"], negatives["item_id"], negatives["timestamp"]):
        assert (user, ts, item) not in basket  # never a bought item of that basket
        assert on_sale[item] <= ts  # never an item before it was on sale
    assert negatives.equals(online_retail.sample_negatives(events, items, 5, seed=3)[0])
    assert online_retail.sample_negatives(events, items, 0, seed=3)[0].empty


# ---- the fast R data reader -----------------------------------------------------------------
def test_fast_rda_reader_matches_rdata_and_falls_back():
    rdata = pytest.importorskip("rdata")
    for name in ("test_dataframe.rda", "test_dataframe_v3.rda", "test_dataframe_rownames.rda",
                 "test_dataframe.rds"):
        path = os.path.join(rdata.TESTDATA_PATH, name)
        if not os.path.exists(path):
            pytest.skip(f"rdata's test file {name} is not installed")
        fast = rda.read_data_frames_fast(path)
        slow = rda._read_with_rdata(path)
        assert list(fast) == list(slow) and len(fast) == 1
        for key in fast:
            pd.testing.assert_frame_equal(fast[key], slow[key], check_dtype=False)
    # An ALTREP vector is outside the fast subset: read by rdata instead, without a frame.
    altrep = os.path.join(rdata.TESTDATA_PATH, "test_altrep_wrap_string.rda")
    with pytest.raises(rda.UnsupportedRData):
        rda.read_data_frames_fast(altrep)
    assert rda.read_data_frames(altrep) == ({}, "rdata")


# ---- Online Retail: the real file ------------------------------------------------------------
@pytest.fixture(scope="module")
def retail(shared_data):
    """The real table (read once) and its source description."""
    return online_retail.read_source(str(shared_data / "online_retail" / "onlineretail.rda"))


@pytest.fixture(scope="module")
def full_import(retail, tmp_path_factory):
    out = tmp_path_factory.mktemp("retail_full")
    return str(out), online_retail.import_table(*retail, str(out), negatives_per_purchase=0)


def test_full_online_retail_import_counts(full_import):
    root, report = full_import
    assert report["source"]["reader"] == "fast"
    assert report["source"]["lines"] == 541_909 and report["source"]["customers"] == 4_372
    assert report["cleaning"]["dropped_lines"] == {
        "cancelled_invoice": 9_288, "non_positive_quantity": 1_336, "non_product_code": 2_399,
        "non_positive_price": 1_161, "missing_description": 0, "duplicate_line": 5_221}
    assert report["cleaning"]["kept_lines"] == 522_504
    assert report["catalogue"]["items"] == 3_791
    assert report["interactions"]["events"] == 386_245
    assert report["interactions"]["customers_written"] == 4_334
    assert report["timeline"]["spans"] == 14  # 2010-12-01 + 14 x 28 days covers 2011-12-09
    assert sum(s["interactions"] for s in report["spans"]) == 386_245
    assert report["spans"][-1]["items"] == 3_791
    # 32 stock codes first sell in the last 28 days (the online_retail experiment's eval
    # period): listed from its cutoff instead, so no launch date comes from the eval period.
    assert report["catalogue"]["first_seen"]["items_moved_to_cutoff"] == 32
    assert report["catalogue"]["first_seen"]["eval_cutoff"] == "2011-11-11T12:50:00Z"
    others = report["catalogue"]["by_category"][categories.OTHER]
    assert others / report["catalogue"]["items"] < 0.2  # the keyword table covers most


def test_online_retail_sample_cli_is_deterministic_and_keeps_the_contract(
        shared_data, retail, full_import, tmp_path):
    path = str(shared_data / "online_retail" / "onlineretail.rda")
    runner = CliRunner()
    first, second = tmp_path / "first", tmp_path / "second"
    result = runner.invoke(cli.import_data, ["online-retail", path, "--out", str(first),
                                             "--max-customers", "50", "--seed", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((first / contract.IMPORT_REPORT_FILE).read_text())
    online_retail.import_table(*retail, str(second), max_customers=50, seed=0)
    assert tree_digest(first) == tree_digest(second)  # CLI == API, byte for byte

    rows = check_contract_tree(str(first), report)
    events = [row for row in rows if row[3] == "purchase"]
    negatives = [row for row in rows if row[3] == "impression"]
    assert len(negatives) == report["interactions"]["negatives_sampled"] > 0
    assert len({row[0] for row in events}) == report["interactions"]["customers_written"] == 50
    assert report["timeline"] == full_import[1]["timeline"]  # a sample keeps the spans
    # Every event comes from a kept (so never a cancelled) line of its customer and invoice.
    kept = online_retail.clean_lines(retail[0]).lines
    assert not kept["invoice"].str.startswith("C").any()
    sources = set(zip(kept["customer_id"], kept["item_id"], kept["timestamp"]))
    assert {(u, i, epoch(t)) for u, i, t, _, _ in events} <= sources
    # An item's row in a sample is its row in the full import, but for first_seen: known
    # before the sample's own eval cutoff (its newest event is the full file's or earlier).
    _, sample_items = read_rows(str(first / "span-14" / "items.csv"))
    _, full_items = read_rows(os.path.join(full_import[0], "span-14", "items.csv"))
    cutoff = epoch(report["catalogue"]["first_seen"]["eval_cutoff"])
    assert cutoff <= epoch(full_import[1]["catalogue"]["first_seen"]["eval_cutoff"])
    full_rows = {row[0]: row[:6] + [contract.iso_utc(min(epoch(row[6]), cutoff))]
                 for row in full_items}
    assert {row[0] for row in events}
    assert all(row == full_rows[row[0]] for row in sample_items)


# ---- image folder ------------------------------------------------------------------------------
def jpeg_bytes(colour=(200, 30, 30), size=(40, 60)):
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


def test_image_folder_real_photos(shared_data, tmp_path):
    source = shared_data / "clothing_photos"
    report = image_folder.import_image_folder(str(source), str(tmp_path / "a"))
    root = str(tmp_path / "a")
    assert report["catalogue"]["items"] == report["images"]["copied"] == 372
    assert len(report["catalogue"]["by_category"]) == 10
    assert report["images"]["corrupt"] == 0
    assert report["source"]["skipped_files"]["outside_class_folders"] == 2  # LICENSE, README
    events = check_contract_tree(root, report)
    assert len(events) == report["interactions"]["rows"] > 0
    assert report["interactions"]["synthetic"] is True
    _, items = read_rows(os.path.join(root, "span-4", "items.csv"))
    assert {row[3] for row in items} == set(report["catalogue"]["by_category"])
    for item_id, title, description, category, price, image, first_seen in items:
        assert image == f"images/{item_id}.jpg" and description == ""
        assert title == image_folder.title_of(category)
        assert item_id.startswith(f"{category}-")
        with open(os.path.join(root, image), "rb") as handle:
            copied = handle.read()
        original = source / category / (item_id[len(category) + 1:] + ".jpg")
        assert copied == original.read_bytes()
        assert example_gen_images.normalise_image_bytes(copied, 8)[1] == "ok"
    assert "T-Shirt" in {row[1] for row in items}
    # Deterministic: a second run gives the same bytes.
    image_folder.import_image_folder(str(source), str(tmp_path / "b"))
    assert tree_digest(root) == tree_digest(str(tmp_path / "b"))


def test_image_folder_counts_a_corrupt_photo_and_lists_it(shared_data, tmp_path):
    photos = tmp_path / "photos"
    for name in ("dress", "hat"):
        shutil.copytree(shared_data / "clothing_photos" / name, photos / name)
    real = sorted((photos / "hat").iterdir())[0].read_bytes()
    (photos / "hat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (photos / "hat" / "truncated.jpg").write_bytes(real[: len(real) // 2])
    (photos / "hat" / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.import_data, ["image-folder", str(photos), "--out",
                                                  str(out), "--with-sample-users", "20"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / contract.IMPORT_REPORT_FILE).read_text())
    assert report["images"]["corrupt"] == 2
    assert report["images"]["corrupt_files"] == ["hat/broken.jpg", "hat/truncated.jpg"]
    assert report["catalogue"]["items"] == 15 + 12 + 2
    assert report["source"]["skipped_files"]["not_jpeg_or_png"] == {".txt": 1}
    _, items = read_rows(str(out / "span-1" / "items.csv"))
    images = {row[0]: row[5] for row in items}
    assert images["hat-broken"] == "images/hat-broken.jpg"  # listed; ExampleGen flags it
    assert (out / "images" / "hat-broken.jpg").exists()
    check_contract_tree(str(out), report)


def test_image_folder_counts_a_too_large_photo_and_lists_it(monkeypatch, tmp_path):
    # Over the decode budget a PNG is never decoded: ExampleGen's status "missing", outcome
    # "too_large"; the JPEG decodes reduced (1/8 scale) and stays ok.
    monkeypatch.setattr(example_gen_images, "MAX_DECODE_PIXELS", 1_000)
    photos = tmp_path / "photos"
    (photos / "hat").mkdir(parents=True)
    (photos / "hat" / "small.jpg").write_bytes(jpeg_bytes(size=(40, 60)))  # 2,400 px
    big = io.BytesIO()
    Image.new("RGB", (40, 60), (10, 20, 30)).save(big, format="PNG")
    (photos / "hat" / "big.png").write_bytes(big.getvalue())
    (photos / "hat" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.import_data, ["image-folder", str(photos), "--out",
                                                  str(out), "--with-sample-users", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / contract.IMPORT_REPORT_FILE).read_text())
    assert report["images"] == {"copied": 3, "ok": 1, "corrupt": 1,
                                "corrupt_files": ["hat/broken.jpg"], "too_large": 1,
                                "too_large_files": ["hat/big.png"]}
    assert (out / "images" / "hat-big.png").read_bytes() == big.getvalue()
    check_contract_tree(str(out), report)


def test_image_folder_without_users_and_out_apart(tmp_path):
    photos = tmp_path / "photos"
    (photos / "long_sleeve").mkdir(parents=True)
    (photos / "long_sleeve" / "a.jpeg").write_bytes(jpeg_bytes())
    (photos / "long_sleeve" / "a.png").write_bytes(jpeg_bytes())  # a JPEG named .png: ok
    report = image_folder.import_image_folder(str(photos), str(tmp_path / "out"),
                                              sample_users=0, weeks=2)
    check_contract_tree(str(tmp_path / "out"), report)
    _, items = read_rows(str(tmp_path / "out" / "span-2" / "items.csv"))
    assert [(row[0], row[1], row[5]) for row in items] == [
        ("long_sleeve-a", "Long Sleeve", "images/long_sleeve-a.jpg"),
        ("long_sleeve-a-2", "Long Sleeve", "images/long_sleeve-a-2.png")]
    assert report["interactions"]["rows"] == 0 and report["interactions"]["synthetic"] is False
    for out in (photos, photos / "long_sleeve" / "out", tmp_path):
        with pytest.raises(ValueError, match="overlaps"):
            image_folder.import_image_folder(str(photos), str(out))
    assert (photos / "long_sleeve" / "a.jpeg").exists()


def test_synthetic_users_prefer_their_categories(tmp_path):
    photos = tmp_path / "photos"
    for index, name in enumerate(("bags", "hats", "shoes", "tops", "skirts")):
        (photos / name).mkdir(parents=True)
        for k in range(8):
            (photos / name / f"{k}.jpg").write_bytes(jpeg_bytes((40 * index, 20 * k, 90)))
    report = image_folder.import_image_folder(str(photos), str(tmp_path / "out"),
                                              sample_users=100, seed=3)
    rows = check_contract_tree(str(tmp_path / "out"), report)
    frame = pd.DataFrame(rows, columns=INTERACTION_HEADER)
    frame["category"] = frame["item_id"].str.split("-").str[0]
    frame["engaged"] = frame["event"].isin(features.POSITIVE_EVENTS)
    # Engagement concentrates on a few categories per user: the top category of each user
    # holds far more than the 1/5 of engaged events that indifference would give.
    engaged = frame[frame["engaged"]]
    top_share = engaged.groupby("user_id")["category"].agg(
        lambda c: c.value_counts().iloc[0] / len(c))
    assert np.mean(top_share[engaged.groupby("user_id").size() >= 5]) > 0.4
    assert set(frame["device"]) <= {"mobile", "desktop", "tablet"}
