"""The run report (components/evaluation/report.py) on real MLMD stores whose artifacts hold
hand-computed results: what it shows, what it marks "not run", and that it opens in a real
headless Chromium with every plot decoded. The report of a real pipeline run is checked in
tests/test_pipeline_e2e.py (it reuses that module's run)."""
import html
import json
import os

import hyperrec.pipeline  # noqa: F401  (Keras env before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from rich.console import Console
from tfx.orchestration import metadata

import browser
from hyperrec.components.evaluation import gate, metrics, personalisation, protocol, report
from hyperrec.schemas import features
from hyperrec.pipeline import cli
from hyperrec.pipeline.runners import local as local_runner

CATALOGUE = 100


def _task():
    """The two users of _result as protocol.Task holds them (what the personalisation block
    reads): user u0 engaged with items 3 and 4 in train, u1 with item 6."""
    return protocol.Task(
        catalogue=protocol.Catalogue(np.array([f"i{n}" for n in range(CATALOGUE)], object),
                                     np.zeros(CATALOGUE, bool)),
        cutoff=0, users=["u0", "u1"], excluded=[np.array([3, 4]), np.array([6])],
        history=[["i3", "i4"], ["i6"]], devices=["web", "web"],
        targets=[np.array([0]), np.array([1])], new_user=np.array([False, True]),
        popularity=np.full(CATALOGUE, 0.01),
        train=protocol.Events(
            users=np.array(["u0", "u0", "u1"], object), items=np.array(["i3", "i4", "i6"],
                                                                       object),
            timestamps=np.array([1, 2, 1]), events=np.array(["click"] * 3, object),
            labels=np.ones(3, np.int64), devices=np.array(["web"] * 3, object)))


def _result(winner: str, loser: str, with_blessed: bool = False, extra_rankings=None,
            truth=None):
    """metrics.json as the RankingEvaluator writes it, for two users and two methods.

    User 0 (returning) has target item 0, user 1 (new) target item 1. The winner ranks item
    0 first for user 0 and item 1 second for user 1: recall@10 = 1, MRR = (1 + 1/2) / 2 =
    0.75. The loser ranks items 7, 8 for both: no hit, every metric but coverage 0.
    `with_blessed`: the last blessed model ranks as the winner does (difference 0).
    `extra_rankings` are more methods; `truth` a ground truth for the taste match.
    """
    depth = 50
    winner_ranks = np.full((2, depth), -1)
    winner_ranks[0, :2] = [0, 5]
    winner_ranks[1, :2] = [5, 1]
    loser_ranks = np.full((2, depth), -1)
    loser_ranks[:, :2] = [7, 8]
    targets = [np.array([0]), np.array([1])]
    empty = np.array([], int)
    slices = {"overall": targets, "warm_items": targets, "cold_items": [empty, empty],
              "returning_users": [targets[0], empty], "new_users": [empty, targets[1]]}
    rankings = {winner: winner_ranks, loser: loser_ranks}
    if with_blessed:
        rankings[gate.BLESSED] = winner_ranks
    rankings.update(extra_rankings or {})
    result = metrics.evaluate(rankings, slices,
                              np.full(CATALOGUE, 0.01), n_resamples=200, seed=0)
    result["personalisation"] = personalisation.summarise(rankings, _task(), truth)
    blessed, reason = gate.decide(result, gate.Gate())
    result["decision"] = {"blessed": blessed, "reason": reason, "tfma_blessed": None,
                          "gate": {"metric": "recall@10", "must_beat": ["most_popular"],
                                   "max_regression": 0.0}}
    result.update(n_catalogue=CATALOGUE, n_cold_items=0,
                  baseline_hyperparameters={"ease": {
                      "grid": [10.0, 100.0, 1000.0], "metric": "recall@10",
                      "scores": [0.1, 0.2, 0.15], "validation_users": 5, "value": 100.0}})
    return result


class _Store:
    """A real MLMD SQLite store recorded the way TFX's LocalDagRunner records a run: one
    `pipeline_run` context, a `node` context per component, output events."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.path = os.path.join(self.workdir, "metadata.sqlite")
        self.store = metadata_store.MetadataStore(
            metadata.sqlite_metadata_connection_config(self.path))
        run_type = self.store.put_context_type(metadata_store_pb2.ContextType(name="pipeline_run"))
        self.node_type = self.store.put_context_type(metadata_store_pb2.ContextType(name="node"))
        self.run = metadata_store_pb2.Context(type_id=run_type, name="2026-01-01T00:00:00")
        [self.run.id] = self.store.put_contexts([self.run])

    def output(self, node: str, type_name: str, files=None, uri=None, **properties):
        """Records `node`'s execution in the run with one output artifact holding `files`."""
        uri = uri or os.path.join(self.workdir, "pipeline", node, type_name)
        for name, content in (files or {}).items():
            os.makedirs(os.path.dirname(os.path.join(uri, name)), exist_ok=True)
            with open(os.path.join(uri, name), "w") as f:
                f.write(content)
        artifact = metadata_store_pb2.Artifact(
            type_id=self.store.put_artifact_type(metadata_store_pb2.ArtifactType(name=type_name)),
            uri=uri, state=metadata_store_pb2.Artifact.LIVE)
        for key, value in properties.items():
            if isinstance(value, int):
                artifact.custom_properties[key].int_value = value
            elif isinstance(value, float):
                artifact.custom_properties[key].double_value = value
            else:
                artifact.custom_properties[key].string_value = value
        execution = metadata_store_pb2.Execution(
            type_id=self.store.put_execution_type(metadata_store_pb2.ExecutionType(name=node)),
            last_known_state=metadata_store_pb2.Execution.COMPLETE)
        node_context = metadata_store_pb2.Context(type_id=self.node_type,
                                                  name=f"hyperrec-tiny.{node}")
        event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
        self.store.put_execution(execution, [(artifact, event)], [self.run, node_context],
                                 reuse_context_if_already_exist=True)


def _catalogue_examples(directory) -> str:
    """An ExampleGen examples folder whose catalogue split holds items i0..i9 as ExampleGen
    writes them (GZIP TFRecords), each with an 8x8 PNG except i4 (no image)."""
    split = os.path.join(str(directory), f"Split-{features.CATALOG_SPLIT}")
    os.makedirs(split)
    with tf.io.TFRecordWriter(os.path.join(split, "data_tfrecord-00000-of-00001.gz"),
                              options="GZIP") as writer:
        for n in range(10):
            png = (b"" if n == 4 else
                   tf.io.encode_png(np.full((8, 8, 3), 25 * n, np.uint8)).numpy())
            values = {features.ITEM_ID: f"i{n}".encode(), features.TITLE: f"item {n}".encode(),
                      features.CATEGORY: b"clothes", features.IMAGE: png}
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
                for name, value in values.items()})).SerializeToString())
    return str(directory)


def _ranked_run(tmp_path, winner="hyperrec", loser="most_popular",
                with_blessed=True, extra_rankings=None, truth=None,
                catalogue=False) -> _Store:
    store = _Store(tmp_path)
    result = _result(winner, loser, with_blessed, extra_rankings, truth)
    if catalogue:
        store.output("FileBasedExampleGen", "Examples",
                     uri=_catalogue_examples(tmp_path / "examples"))
    store.output("RankingEvaluator", report.RANKING,
                 {"metrics.json": json.dumps(result, sort_keys=True)}, blessed=int(result["decision"]["blessed"]),
                 reason=result["decision"]["reason"])
    store.output("Evaluator", report.BLESSING, {"BLESSED": ""}, blessed=1)
    history = {"epochs": [0, 1], "metrics": {"loss": [2.0, 1.0], "val_loss": [2.5, 1.5]}}
    store.output("Trainer", report.MODEL_RUN, {"history.json": json.dumps(history)})
    return store


def test_report_shows_the_gate_ranking_slices_and_training_and_marks_the_rest_not_run(tmp_path):
    store = _ranked_run(tmp_path)
    document = report.build(store.store)
    assert report.sections_not_run(document) == [
        "Data statistics (TFDV, StatisticsGen)",
        "Anomalies (TFDV, ExampleValidator against the curated schema)", "Lineage"]
    assert "<p class='verdict blessed'>Blessed</p>" in document
    assert html.escape("recall@10 1.0000 > most_popular 0.0000; not significantly worse "
                       "(recall@10 vs last blessed 1.0000: difference +0.0000, 95% interval "
                       "[+0.0000, +0.0000])") in document
    # hyperrec's row: recall@10 1 for both users (interval collapses), MRR (1 + 1/2) / 2.
    row = document.split("<td>hyperrec</td>", 1)[1].split("</tr>", 1)[0]
    assert row.startswith("<td>1.0000 [1.000, 1.000]</td>")
    assert "<td>0.7500 [" in row
    assert "<td>hyperrec - most_popular</td><td>+1.0000 [+1.000, +1.000]</td>" in document
    assert "<td>hyperrec - last_blessed</td><td>+0.0000 [+0.000, +0.000]</td>" in document
    assert "Overall, against the baselines and the last blessed model" in document
    # Slices: the cold slice has no users; the new-users slice holds user 1 only.
    assert "<td>cold_items</td><td>0</td><td>0</td><td>no users</td>" in document
    assert "<td>new_users</td><td>1</td><td>1</td><td>1.0000 [1.000, 1.000]</td>" in document
    assert ("<td>ease</td><td>100.0</td><td>recall@10</td><td>10.0, 100.0, 1000.0</td>"
            "<td>0.1000, 0.2000, 0.1500</td><td>5</td>") in document
    # metrics.json's keys are sorted; the table keeps the run's order, candidate first.
    assert (document.index("<td>hyperrec</td>") < document.index("<td>last_blessed</td>")
            < document.index("<td>most_popular</td>"))
    # recall@k curves, slice bars, training curves.
    assert [alt for alt in ("recall@k and ndcg@k curves", "recall@10 by slice",
                            "training curves") if f'alt="{alt}"' in document] == [
        "recall@k and ndcg@k curves", "recall@10 by slice", "training curves"]
    assert document.count("<img ") == 3
    # Personalisation without ground truth or recent-popular: list difference only. hyperrec
    # lists {0, 5} and {5, 1}: Jaccard distance 1 - 1/3, coverage 3 of 100 items.
    assert ("<th>method</th><th>jaccard_distance@10</th><th>coverage@10</th></tr></thead>"
            "<tbody><tr><td>hyperrec</td><td>0.667</td><td>0.030</td></tr>") in document
    assert "<tr><td>most_popular</td><td>0.000</td><td>0.020</td></tr>" in document
    assert "(no ExampleGen catalogue in this run: no images)" in document
    assert "<h4>user u0 (train history: 2 distinct items)</h4>" in document


TRUTH = {"users": {"u0": {"fav_categories": ["dress"], "fav_colours": ["red", "blue"],
                          "fav_style": "casual"},
                   "u1": {"fav_categories": ["hat"], "fav_colours": ["green"],
                          "fav_style": "formal"}},
         "items": {f"i{n}": dict(zip(("category", "colour", "style"), traits)) for n, traits in
                   {0: ("dress", "red", "casual"), 1: ("hat", "green", "casual"),
                    3: ("dress", "blue", "formal"), 4: ("top", "red", "casual"),
                    5: ("hat", "blue", "formal"), 6: ("hat", "green", "casual"),
                    7: ("bag", "red", "formal"), 8: ("bag", "green", "formal")}.items()}}


def _personal_run(tmp_path) -> _Store:
    """A run whose evaluation has recent-popular (u0: items 0, 7; u1: 7, 8), the ground
    truth and ExampleGen's catalogue with images."""
    recent = np.full((2, 50), -1)
    recent[:, :2] = [[0, 7], [7, 8]]
    return _ranked_run(tmp_path, extra_rankings={"recent_popular": recent}, truth=TRUTH,
                       catalogue=True)


def test_personalisation_shows_taste_list_difference_and_sample_users_with_images(tmp_path):
    document = report.build(_personal_run(tmp_path).store)
    assert "Personalisation (top-10 lists)" not in report.sections_not_run(document)
    assert ("<th>method</th><th>taste_category@10</th><th>taste_colour@10</th>"
            "<th>taste_style@10</th><th>jaccard_distance@10</th><th>coverage@10</th>"
            "<th>overlap_recent_popular@10</th>") in document
    # hyperrec: u0 gets i0 (dress red casual), i5 (hat blue formal): 1/2, 1, 1/2; u1 gets
    # i5, i1 (hat green casual): 1, 1/2, 1/2. Overlap with recent-popular: 1/2 and 0.
    assert ("<tr><td>hyperrec</td><td>0.750</td><td>0.750</td><td>0.500</td><td>0.667</td>"
            "<td>0.030</td><td>0.250</td></tr>") in document
    # most-popular lists i7, i8 for both: u0 0, 1/2, 0; u1 0, 1/2, 1; overlap 1/2 and 1.
    assert ("<tr><td>most_popular</td><td>0.000</td><td>0.500</td><td>0.500</td>"
            "<td>0.000</td><td>0.020</td><td>0.750</td></tr>") in document
    # Their own past, most recent first: u0 i4 (top red casual), i3 (dress blue formal);
    # u1 i6 (hat green casual).
    assert ("<tr><td>own_last_10 (their past, not a recommender)</td><td>0.750</td>"
            "<td>1.000</td><td>0.250</td><td>-</td><td>-</td><td>-</td></tr>") in document
    assert ("<p>Hidden favourites (ground truth): categories dress; colours red, blue; style "
            "casual.</p>") in document
    assert "<b>hyperrec&#x27;s top-2</b>" in document
    card = document.split('alt="item i0"', 1)[1].split("</div>", 1)[0]
    assert ("<b>i0</b><br>item 0<br>dress, red, casual<br><span class=\"fav\">favourite "
            "category, colour, style</span>") in card
    # u0: history i3, i4 (no image) + list i0, i5; u1: history i6 + list i5, i1.
    assert document.count('alt="item ') == 6
    assert document.count('<div class="noimg">no image</div>') == 1


def test_a_candidate_that_loses_to_most_popular_shows_not_blessed_and_why(tmp_path):
    store = _ranked_run(tmp_path, winner="most_popular", loser="hyperrec", with_blessed=False)
    document = report.build(store.store)
    assert "(no blessed model yet)" in document
    assert "<p class='verdict refused'>Not blessed</p>" in document
    assert "<td>NOT BLESSED</td><td>recall@10 0.0000 &lt;= most_popular 1.0000</td>" in document


def test_the_infra_validation_row_shows_its_numbers_and_a_refusal_overrides_the_blessing(
        tmp_path):
    store = _ranked_run(tmp_path)
    store.output("InfraValidator", report.INFRA_BLESSING, {"INFRA_NOT_BLESSED": ""}, blessed=0,
                 reason="memory: peak RSS 900 MiB exceeded the limit of 800 MiB (server killed)",
                 load_seconds=3.25, peak_rss_mb=900.0, memory_limit_mb=800.0)
    document = report.build(store.store)
    assert "<p class='verdict refused'>Not blessed</p>" in document
    assert ("<td>NOT BLESSED</td><td>memory: peak RSS 900 MiB exceeded the limit of 800 MiB "
            "(server killed)</td>") in document
    assert "load 3.25 s, peak RSS 900 MiB, limit 800 MiB" in document


def test_an_empty_store_renders_every_section_as_not_run(tmp_path):
    document = report.build(_Store(tmp_path).store)
    assert report.sections_not_run(document) == [
        "Ranking evaluation (full catalogue, temporal split)",
        "Data statistics (TFDV, StatisticsGen)",
        "Anomalies (TFDV, ExampleValidator against the curated schema)",
        "Training curves (Trainer)", "Lineage"]
    assert "<p class='verdict unknown'>No gate ran</p>" in document
    assert document.count("<td>NOT RUN</td>") == 3  # ranking, TFMA and infra validation
    assert "<img " not in document


def test_tfma_alone_says_the_ranking_gate_did_not_run(tmp_path):
    store = _Store(tmp_path)
    store.output("Evaluator", report.BLESSING, {"NOT_BLESSED": ""}, blessed=0)
    document = report.build(store.store)
    assert ("<p class='verdict refused'>Not blessed (by TFMA alone: the ranking gate did not "
            "run)</p>") in document


def test_an_artifact_whose_files_are_gone_is_reported_unreadable_and_the_rest_renders(tmp_path):
    store = _ranked_run(tmp_path)
    store.output("StatisticsGen", report.STATISTICS, uri=str(tmp_path / "deleted"))
    store.output("Trainer", report.MODEL_RUN, {"keras.json": "{}"},  # newer, no history.json
                 uri=str(tmp_path / "model_run_2"))
    document = report.build(store.store)
    assert ('<section class="unreadable"><h2>Data statistics</h2><p class="notrun">Could not '
            'be read: NotFoundError:') in document
    assert "Training curves (Trainer)" in report.sections_not_run(document)
    assert "the Trainer recorded no history.json" in document
    assert "<p class='verdict blessed'>Blessed</p>" in document


def test_report_command_writes_the_file_and_names_a_missing_store(tmp_path):
    store = _ranked_run(tmp_path / "run")
    result = CliRunner().invoke(cli.main, ["report", "--workdir", store.workdir])
    assert result.exit_code == 0, result.output
    written = os.path.join(store.workdir, report.REPORT_FILE)
    assert f"run report: {written}" in result.output.replace("\n", "")
    with open(written) as f:
        assert "recall@10 by slice" in f.read()
    missing = CliRunner().invoke(cli.main, ["report", "--workdir", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert "no MLMD store at" in missing.output


def test_report_command_names_an_unsupported_metadata_uri_in_one_line():
    result = CliRunner().invoke(cli.main, ["report", "--metadata", "postgres://h/db"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        "Error: metadata URI scheme 'postgres' is not supported (mysql:// or a SQLite path)"]
    assert "Traceback" not in result.output


def test_a_report_failure_after_a_run_prints_one_clear_line(tmp_path):
    not_a_database = tmp_path / "metadata.sqlite"
    not_a_database.mkdir()  # SQLite cannot open a directory
    console = Console(record=True, width=400)
    assert local_runner.report_after_run(str(not_a_database), str(tmp_path), console) is None
    text = console.export_text()
    assert text.startswith("run report FAILED (")
    assert f"retry: hyperrec report --workdir {tmp_path}" in text


def test_report_opens_in_headless_chromium_with_every_plot_decoded(tmp_path):
    store = _personal_run(tmp_path / "run")
    path = report.write(store.store, str(tmp_path / "report.html"),
                        lineage_text="served version 1 at /tmp/x <- Pusher")
    check = browser.check_page(path, tmp_path / "report_unit.png")
    assert check.title == "hyperrec run report"
    assert len(check.images) == 3 + 6  # the plots and the sample users' item images
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in check.images), check.images
    assert check.errors == []
    assert check.screenshot.stat().st_size > 10_000
