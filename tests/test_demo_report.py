"""The demo's user report (pipeline/demo_report.py): tastes read from a hand-built ground
truth, the taste-match counts, the items table, and what it prints."""
import re

from rich.console import Console

from hyperrec.pipeline import demo_report

TRUTH = {
    "users": {"u1": {"fav_categories": ["dresses", "trousers"], "fav_colours": ["red"],
                     "fav_style": "smart", "price_sensitivity": 0.3}},
    "items": {
        "i00001": {"category": "dresses", "colour": "red", "style": "smart"},
        "i00002": {"category": "dresses", "colour": "blue", "style": "casual"},
        "i00003": {"category": "hats", "colour": "red", "style": "casual"},
        "i00004": {"category": "bags", "colour": "green", "style": "smart"},
        "i00005": {"category": "trousers", "colour": "black", "style": "sporty"},
    },
}


def test_user_taste_reads_the_favourites_and_none_for_an_unknown_user():
    taste = demo_report.user_taste(TRUTH, "u1")
    assert taste == demo_report.Taste(("dresses", "trousers"), ("red",), "smart")
    assert demo_report.user_taste(TRUTH, "nobody") is None
    assert demo_report.user_taste({}, "u1") is None  # imported data: no truth


def test_taste_match_counts_each_favourite_and_ignores_unknown_items():
    taste = demo_report.user_taste(TRUTH, "u1")
    listed = ["i00001", "i00002", "i00003", "i00004", "i00005", "i99999"]
    match = demo_report.taste_match(taste, TRUTH["items"], listed)
    assert match == demo_report.TasteMatch(listed=6, in_category=3, in_colour=2, in_style=2)
    assert demo_report.matched_traits(taste, TRUTH["items"]["i00001"]) == [
        "category", "colour", "style"]
    assert demo_report.matched_traits(taste, {}) == []


def test_items_come_from_the_latest_span_with_the_truths_attributes(tmp_path):
    for span, title in ((2, "old title"), (10, "Red dress")):  # 10 sorts after 2 as a number
        folder = tmp_path / f"span-{span}"
        folder.mkdir()
        (folder / "items.csv").write_text(
            "item_id,title,description,category,price,image,first_seen\n"
            f"i00001,{title},,dresses,10.0,,2024-01-01T00:00:00Z\n", encoding="utf-8")
    items = demo_report.read_items(str(tmp_path), TRUTH)
    assert items["i00001"] == {"title": "Red dress", "category": "dresses", "colour": "red",
                               "style": "smart"}
    assert items["i00005"]["category"] == "trousers"  # in the truth only
    assert demo_report.read_ground_truth(str(tmp_path)) == {}


def _printed(taste):
    console = Console(record=True, width=80)  # a pipe's width: what `make demo` logs show
    recommended = [(f"i0000{i}", 1.0 - i / 10) for i in range(1, 6)]
    items = {**TRUTH["items"], "i00002": {**TRUTH["items"]["i00002"],
                                         "title": "A long title that has to wrap " * 3}}
    demo_report.print_user_report(console, "u1", "mobile", ["i00001", "i00003"], recommended,
                                  "the pushed SavedModel (version 3)", items, taste)
    return console.export_text()


def test_the_report_prints_tastes_history_list_and_the_match_line():
    text = _printed(demo_report.user_taste(TRUTH, "u1"))
    assert "favourite categories: dresses, trousers; colours: red; style: smart" in text
    assert "3 of the top-5 are in a favourite category, 2 in a favourite colour" in text
    assert "their last 2 items" in text
    assert "from the pushed SavedModel (version 3)" in text
    # One "│ rank │ item" row per recommendation (tests/test_pipeline_e2e.py counts them);
    # the history table has no rank column, so it adds none.
    assert len(re.findall(r"^│ (?:\d+) +│ i\d{5} ", text, flags=re.M)) == 5


def test_without_ground_truth_only_history_and_list_are_printed():
    text = _printed(None)
    assert "favourite" not in text and "colour" not in text
    assert "top-5" in text and "their last 2 items" in text


def test_the_newest_candidate_is_the_newest_trainer_run_with_a_savedmodel(tmp_path):
    from hyperrec.pipeline import demo

    models = tmp_path / "Trainer" / "model"
    assert demo.newest_candidate(str(tmp_path)) == ""
    for run, complete in ((3, True), (12, True), (15, False)):  # 15: still writing
        serving = models / str(run) / "Format-Serving"
        serving.mkdir(parents=True)
        if complete:
            (serving / "saved_model.pb").write_bytes(b"")
    assert demo.newest_candidate(str(tmp_path)) == str(models / "12" / "Format-Serving")
