"""Your own data in three commands: README.md's "Your own data" block, run as written, then the
same log in other shapes.

One pipeline run: the README's `hyperrec import table` (CSV, gzip, foreign column names, star
ratings, millisecond times, a product table, a photos folder) -> `hyperrec run` (no
--experiment, no --set: the configuration is sized from the data) -> `hyperrec serve`, asked
for a recommendation over REST. The same log as Parquet (other names, an event column,
epoch seconds, image paths in the item table) and as JSON lines (ratings, ISO times with an
offset and milliseconds, an images folder) imports to a byte-identical data root (span
folders, images, derived schema) and the same sized configuration, so the one pipeline run
stands for all three: the pipeline reads nothing else. Each import report is checked field by
field.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pandas as pd
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from hyperrec.components import config as config_lib
from hyperrec.data import contract
from hyperrec.data.importers import generic_table
from hyperrec.schemas import derived_schema
from hyperrec.serving import client as serving_client
import standin_models
from support import tree_digest

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "data", "examples", "reviews")
HYPERREC = os.path.join(os.path.dirname(sys.executable), "hyperrec")
DEPARTMENTS = ["Bags & Luggage", "Coats & Jackets", "Dresses", "Footwear", "Headwear",
               "Skirts", "Tops & T-Shirts", "Trousers & Jeans"]


def readme_commands():
    """The command lines of the bash block in README.md's "Your own data" section."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """README's three commands in a folder laid out like a fresh clone (data/ is the repo's)."""
    clone = tmp_path_factory.mktemp("clone")
    os.symlink(os.path.join(REPO, "data"), clone / "data")
    commands = readme_commands()
    assert [words[:2] for words in commands] == [[".venv/bin/hyperrec", "import"],
                                                 [".venv/bin/hyperrec", "run"],
                                                 [".venv/bin/hyperrec", "serve"]]
    argv = [[HYPERREC, *words[1:]] for words in commands]
    # As a user's shell has it: none of the settings conftest gives the test process.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    timings = {}
    outputs = {}
    for name, command in zip(("import", "run"), argv[:2]):
        start = time.monotonic()
        done = subprocess.run(command, cwd=clone, capture_output=True, text=True, env=env,
                              timeout=1800)
        timings[name] = time.monotonic() - start
        assert done.returncode == 0, (name, done.stdout[-4000:] + done.stderr[-4000:])
        outputs[name] = done.stdout + done.stderr
    rest, grpc = standin_models.free_port(), standin_models.free_port()
    log_path = clone / "serve.log"
    start = time.monotonic()
    with open(log_path, "ab") as log:
        server = subprocess.Popen(argv[2] + ["--port", str(grpc), "--rest_api_port", str(rest)],
                                  cwd=clone, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        standin_models.wait_until_serving(rest, "hyperrec", timeout=180, process=server)
        timings["serve"] = time.monotonic() - start
        client = serving_client.RestClient(port=rest)
        status = client.status()
        recommendations = client.recommend("u00042", ["i00001"], "mobile", 10,
                                           timestamp=1_706_400_000)  # 2024-01-28
        client.close()
    finally:
        standin_models.stop_server_process(server)
    print(f"\nREADME commands: import {timings['import']:.1f}s, run {timings['run']:.1f}s, "
          f"serve ready {timings['serve']:.1f}s")
    data = clone / "runs" / "reviews" / "data"
    with open(data / contract.IMPORT_REPORT_FILE) as handle:
        report = json.load(handle)
    return {"clone": clone, "data": data, "workdir": clone / "runs" / "reviews",
            "report": report, "outputs": outputs, "status": status,
            "recommendations": recommendations, "timings": timings}


def test_the_readme_import_writes_the_contract_and_reports_it_field_by_field(readme_run):
    report, data = readme_run["report"], readme_run["data"]
    assert sorted(os.listdir(data)) == ["images", "import_report.json", "schema.pbtxt",
                                        "span-1", "span-2", "span-3", "span-4"]
    assert report["importer"] == "table"
    assert report["source"]["interactions"]["file"] == "ratings.csv.gz"
    assert report["source"]["interactions"]["format"] == "csv"
    assert report["source"]["interactions"]["columns"] == [
        "reviewer", "product", "stars", "rated_at_ms", "platform"]
    assert report["source"]["items"]["columns"] == [
        "sku", "name", "blurb", "department", "price_eur", "launched"]
    assert report["rows"]["read"] == report["rows"]["kept"] == 6439
    assert set(report["rows"]["dropped"].values()) == {0}
    assert report["rows"]["ignored_columns"] == []
    assert report["options"] == {
        "eval_days": 7.0, "images_folder": "photos", "items_file": "products.csv",
        "max_bad_timestamps": 0.01, "negatives_per_positive": 0, "seed": 0, "span_days": 7,
        "timestamp_unit": "ms", "timezone": "UTC"}
    assert report["interactions"]["users"] == 113
    assert report["interactions"]["events_by_type"] == {"click": 846, "impression": 5593}
    assert report["interactions"]["negatives_sampled"] == 0
    assert not report["interactions"]["purchase_only"]
    catalogue = report["catalogue"]
    assert (catalogue["items"], catalogue["not_in_item_table"], catalogue["without_events"]) \
        == (100, 0, 0)
    assert catalogue["with_image_share"] == 0.96 and catalogue["with_text_share"] == 1.0
    assert sorted(catalogue["by_category"]) == DEPARTMENTS
    assert catalogue["first_seen"]["given_by_item_table"] == 100
    assert set(catalogue["price"]["filled"].values()) == {0}
    images = report["images"]
    assert (images["from_folder"], images["copied"], images["missing_files"],
            images["corrupt"], images["too_large"]) == (96, 96, 0, 0, 0)
    assert len(os.listdir(data / "images")) == 96
    assert report["date_range"] == {"first_event": "2024-01-01T05:01:35Z",
                                    "last_event": "2024-01-28T23:01:06Z", "days": 27.75}
    assert report["text_not_utf8"]["interactions"] == report["text_not_utf8"]["items"] == {}
    assert report["profile"] == {
        "engaged_events": 846, "engaged_per_user_median": 6.0, "eval_days": 7.0,
        "events": 6439, "items": 100, "items_with_image": 0.96, "items_with_text": 1.0,
        "log_days": 27.75, "sampled_negatives": False, "span_days": 7, "spans": 4,
        "text_tokens": 224, "users": 113, "first_seen_derived": 0.0}
    assert [span["interactions"] for span in report["spans"]] == [
        sum(1 for _ in open(data / f"span-{k}" / "interactions.csv")) - 1 for k in range(1, 5)]
    # The derived schema, field by field against the curated one.
    schema = text_format.Parse((data / "schema.pbtxt").read_text(), schema_pb2.Schema())
    curated = derived_schema.load()
    domains = {d.name: list(d.value) for d in schema.string_domain}
    curated_domains = {d.name: list(d.value) for d in curated.string_domain}
    assert domains["item_category"] == DEPARTMENTS + ["unknown"]
    assert not set(DEPARTMENTS) & set(curated_domains["item_category"])
    assert domains["device"] == curated_domains["device"]
    assert domains["event"] == curated_domains["event"]
    assert [f.name for f in schema.feature] == [f.name for f in curated.feature]
    feature = {f.name: f for f in schema.feature}
    assert feature["timestamp"].int_domain.min == 1_704_085_295  # the first event
    assert list(feature["user_id"].annotation.tag) == ["vocabulary_size:113"]
    assert list(feature["item_id"].annotation.tag) == ["vocabulary_size:100"]
    assert report["schema"]["item_category_domain"] == DEPARTMENTS + ["unknown"]


def _same_log_as_parquet(folder):
    """The README's log as Parquet: other names, an event column, epoch seconds, image paths
    in a Parquet item table."""
    ratings = pd.read_csv(os.path.join(EXAMPLE, "ratings.csv.gz"))
    products = pd.read_csv(os.path.join(EXAMPLE, "products.csv"), keep_default_na=False)
    events = pd.DataFrame({
        "uid": ratings["reviewer"], "iid": ratings["product"],
        "ts": ratings["rated_at_ms"] // 1000,
        "kind": ratings["stars"].map(lambda stars: "like" if stars >= 4 else "view"),
        "platform": ratings["platform"]})
    photos = {os.path.splitext(name)[0]: os.path.join(EXAMPLE, "photos", name)
              for name in os.listdir(os.path.join(EXAMPLE, "photos"))}
    items = pd.DataFrame({
        "id": products["sku"], "label": products["name"], "text": products["blurb"],
        "section": products["department"], "amount": products["price_eur"].astype(float),
        "pic": products["sku"].map(lambda sku: photos.get(sku, "")),
        "since": pd.to_datetime(products["launched"]).dt.tz_localize("UTC")})
    events.to_parquet(folder / "events.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)
    return str(folder / "events.parquet"), generic_table.TableMapping(
        user="uid", item="iid", timestamp="ts", event="kind",
        event_map={"like": "click", "view": "impression"}, device="platform",
        items=str(folder / "items.parquet"), item_id="id", title="label", description="text",
        category="section", price="amount", image="pic", first_seen="since")


def _same_log_as_json_lines(folder):
    """The README's log as JSON lines: ratings, ISO times at +02:00 with milliseconds, an
    images folder."""
    ratings = pd.read_csv(os.path.join(EXAMPLE, "ratings.csv.gz"))
    products = pd.read_csv(os.path.join(EXAMPLE, "products.csv"), keep_default_na=False)
    local = pd.to_datetime(ratings["rated_at_ms"], unit="ms", utc=True).dt.tz_convert(
        "Etc/GMT-2")
    events = pd.DataFrame({"userId": ratings["reviewer"], "movieId": ratings["product"],
                           "rating": ratings["stars"].astype(float),
                           "when": local.map(lambda t: t.isoformat(timespec="milliseconds")),
                           "device": ratings["platform"]})
    assert events["when"].iloc[0].endswith("+02:00")
    events.to_json(folder / "ratings.jsonl", orient="records", lines=True)
    products.rename(columns={"sku": "movieId", "name": "title", "blurb": "description",
                             "department": "category", "price_eur": "price",
                             "launched": "first_seen"}).to_json(
        folder / "movies.jsonl", orient="records", lines=True)
    return str(folder / "ratings.jsonl"), generic_table.TableMapping(
        user="userId", item="movieId", timestamp="when", rating="rating",
        engaged_if="rating>=4", device="device", items=str(folder / "movies.jsonl"),
        images=os.path.join(EXAMPLE, "photos"))


def _data_root_digest(data):
    """Everything the pipeline reads: span folders, images and the derived schema."""
    return {name: tree_digest(data / name) if (data / name).is_dir()
            else (data / name).read_bytes() for name in sorted(os.listdir(data))
            if name != contract.IMPORT_REPORT_FILE}


@pytest.mark.parametrize("shape", ["parquet", "json_lines"])
def test_the_same_log_as_parquet_or_json_lines_imports_to_the_same_data(readme_run, tmp_path,
                                                                        shape):
    path, mapping = {"parquet": _same_log_as_parquet,
                     "json_lines": _same_log_as_json_lines}[shape](tmp_path)
    out = tmp_path / "data"
    report = generic_table.import_table(path, str(out), mapping)
    expected = readme_run["report"]
    assert _data_root_digest(out) == _data_root_digest(readme_run["data"])
    assert report["source"]["interactions"]["format"] == {"parquet": "parquet",
                                                          "json_lines": "jsonl"}[shape]
    assert report["options"]["timestamp_unit"] == {"parquet": "s", "json_lines": "iso"}[shape]
    for key in ("rows", "interactions", "catalogue", "date_range", "timeline", "spans",
                "schema", "profile"):
        mine, theirs = report[key], expected[key]
        if isinstance(mine, dict):  # where the source's own names are recorded, not equal
            mine, theirs = ({k: v for k, v in part.items()
                             if k not in ("ignored_columns", "event_source", "columns")}
                            for part in (mine, theirs))
        assert mine == theirs, key
    images = report["images"]
    assert images["copied"] == 96 and images["missing_files"] == 0
    assert (images["from_column"], images["from_folder"]) == (
        (96, 0) if shape == "parquet" else (0, 96))
    assert config_lib.sized(report["profile"]) == config_lib.sized(expected["profile"])


def test_run_without_experiment_prints_stores_and_reports_the_sized_configuration(readme_run):
    text = readme_run["outputs"]["run"]
    assert "configuration: sized from the data (runs/reviews/data/import_report.json: 6,439 " \
           "rows, 113 users, 100 items)" in " ".join(text.split())
    assert re.search(r"data\.eval_days = 7\.0 +\(15% of the log's 27\.75 days", text)
    assert "schema: runs/reviews/data/schema.pbtxt (derived from the data" in text
    with open(readme_run["workdir"] / "run_config.json") as handle:
        stored = json.load(handle)
    assert stored["experiment"] == "sized" and stored["overrides"] == []
    config, why = config_lib.sized(readme_run["report"]["profile"])
    assert stored["sizing"] == why
    assert stored["config"] == json.loads(json.dumps(_asdict(config) | {
        "schema_file": str(readme_run["data"] / "schema.pbtxt")}))
    report_html = (readme_run["workdir"] / "report.html").read_text()
    assert "<h2>Configuration</h2>" in report_html and "sized from the data" in report_html
    assert "transform.id_vocab_size" in report_html


def _asdict(config):
    import dataclasses
    return dataclasses.asdict(config)


def test_the_example_without_launch_dates_derives_first_seen_and_sizes_without_freshness(
        tmp_path):
    """The README's import without products.csv's `launched` column: first_seen comes from the
    log before the eval cutoff, and the sized configuration has no freshness term (import
    level only; measured with a full run in components/config/sizing.py: FRESHNESS_DERIVED_SHARE)."""
    mapping = generic_table.TableMapping(
        user="reviewer", item="product", timestamp="rated_at_ms", timestamp_unit="ms",
        rating="stars", engaged_if="rating>=4", device="platform",
        items=os.path.join(EXAMPLE, "products.csv"), item_id="sku", title="name",
        description="blurb", category="department", price="price_eur",
        images=os.path.join(EXAMPLE, "photos"))
    report = generic_table.import_table(os.path.join(EXAMPLE, "ratings.csv.gz"),
                                        str(tmp_path / "data"), mapping)
    first_seen = report["catalogue"]["first_seen"]
    assert (first_seen["given_by_item_table"], first_seen["derived_from_events"]) == (0, 100)
    assert first_seen["derived"]["eval_cutoff"] == "2024-01-21T23:01:06Z"
    assert first_seen["derived"]["items_moved_to_cutoff"] == 27  # first rated in the eval week
    assert report["profile"]["first_seen_derived"] == 1.0
    config, why = config_lib.sized(report["profile"])
    assert config.model.freshness_days == ()
    assert why["model.freshness_days"].startswith(
        "first_seen derived from the log for 100% of items")
    with_dates, _ = config_lib.sized({**report["profile"], "first_seen_derived": 0.0})
    assert with_dates.model.freshness_days == config_lib.HyperrecConfig().model.freshness_days
    catalogue = pd.read_csv(tmp_path / "data" / "span-4" / "items.csv")
    assert catalogue["first_seen"].min() == "2024-01-01T05:01:35Z"  # the log's first event


def test_categories_outside_the_curated_schema_do_not_stop_the_run_and_a_model_is_pushed(
        readme_run):
    text = readme_run["outputs"]["run"]
    for component in ("FileBasedExampleGen", "ExampleValidator", "AnomaliesGate", "Transform",
                      "Trainer", "Evaluator", "RankingEvaluator", "Pusher"):
        assert re.search(rf"✔ {component} finished in +\d+\.\ds", text), component
    assert "RankingEvaluator: BLESSED" in text
    serving = readme_run["workdir"] / "serving_model" / "hyperrec"
    versions = [name for name in os.listdir(serving) if name.isdigit()]
    assert len(versions) == 1
    assert (serving / versions[0] / "saved_model.pb").exists()
    for noise in ("Traceback", "Input resolution error"):
        assert noise not in text, noise


def test_the_served_model_recommends_catalogue_items(readme_run):
    (version,) = readme_run["status"]["model_version_status"]
    assert version["state"] == "AVAILABLE"
    recommendations = readme_run["recommendations"]
    assert len(recommendations) == 10
    catalogue = pd.read_csv(readme_run["data"] / "span-4" / "items.csv")["item_id"]
    assert {item for item, _ in recommendations} <= set(catalogue)
    scores = [score for _, score in recommendations]
    assert scores == sorted(scores, reverse=True)
