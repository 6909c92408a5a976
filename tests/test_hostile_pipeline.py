"""Hostile and careless pipeline inputs: each has a named outcome, nothing passes silently.

One hostile span runs through the real ExampleGen executor (Beam DirectRunner); images are
checked on the normaliser; the terminal rules run the real `hyperrec` command in a
subprocess; one pipeline run (LocalDagRunner, tiny data) stops on a too-small eval split.
"""
import csv
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import hyperrec.components  # noqa: F401  (Keras env before TensorFlow)
import pytest
from PIL import Image

from hyperrec.components import config as config_lib
from hyperrec.schemas import features
from hyperrec.components.example_gen import contract_rows
from hyperrec.components.example_gen import executor as executor_lib
from hyperrec.components.example_gen import layout
from hyperrec.data import image_normaliser as images
from test_example_gen import DAY, T0, _iso, _png, _read_split, _run_executor, _write_csv

HYPERREC = os.path.join(os.path.dirname(sys.executable), "hyperrec")
NOISE = "Unable to register"


def big_png(width, height, colour=(128, 32, 32)):
    """A valid RGB PNG of any size, built row block by row block (never held decoded)."""
    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data)))
    compressor = zlib.compressobj(1)
    row = b"\x00" + bytes(colour) * width
    rows_per_block = max(1, min(height, 500))
    body = [compressor.compress(row * rows_per_block) for _ in range(height // rows_per_block)]
    body.append(compressor.compress(row * (height % rows_per_block)) + compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body))
            + chunk(b"IEND", b""))


# ---- one hostile span through the executor ----------------------------------------------------
WHALE_ROWS = 8  # the heavy user's eval rows; two other users have one eval row each


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "images").mkdir()
    (root / "images" / "a.png").write_bytes(_png((0, 0, 255)))
    (root / "images" / "huge.png").write_bytes(big_png(10_000, 10_000))
    items = [
        ("a", "Blue bag", "a bag", "bags", "10", "images/a.png", _iso(T0)),
        ("b", "Hat", "a hat", "hats", "12", "", _iso(T0)),
        ("noprice", "Bag", "bag", "bags", "", "", _iso(T0)),  # empty price
        ("dateonly", "Bag", "bag", "bags", "10", "", "2023-11-01"),  # date-only first_seen
        ("huge", "Big bag", "bag", "bags", "10", "images/huge.png", _iso(T0)),
    ]
    _write_csv(str(root / "span-1" / "items.csv"), features.ITEM_COLUMNS, items)
    eval_start = T0 + 4 * DAY  # newest kept row T0+5d, eval_days 1 -> cutoff T0+4d
    events = [
        ("u1", "a", _iso(T0 + DAY), "click", "mobile"),
        ("u2", "b", _iso(T0 + DAY), "impression", "mobile"),
        ("u3", "a", _iso(T0 + DAY), "click", "mobile"),
        ("u3", "huge", _iso(T0 + 2 * DAY), "click", "mobile"),
        ("u3", "noprice", _iso(T0 + DAY), "click", "mobile"),  # its item was skipped
        *[("whale", "ab"[k % 2], _iso(eval_start + 60 * k), "click", "mobile")
          for k in range(WHALE_ROWS)],
        ("u1", "a", _iso(eval_start + DAY // 2), "click", "mobile"),
        ("u2", "a", _iso(T0 + 5 * DAY), "click", "mobile"),
        ("u1", "b", "2099-01-01T00:00:00Z", "click", "mobile"),  # from the future
        ("u1", "b", "2023-11-20", "click", "mobile"),  # date only
        ("u1", "b", "2023-11-20T10:00:00", "click", "mobile"),  # no zone
        ("u1", "b", "2023-11-20T10:00:00+02:00", "click", "mobile"),  # an offset, not Z
        ("u1", "b", "2023-13-45T10:00:00Z", "click", "mobile"),  # no date at all
    ]
    _write_csv(str(root / "span-1" / "interactions.csv"),
               features.INTERACTION_COLUMNS + features.CONTEXT_COLUMNS, events)
    out = str(tmp_path_factory.mktemp("hostile_out"))
    artifact = _run_executor(str(root), out, span=1, eval_days=1.0, window_spans=1,
                             min_eval_examples=4, max_user_share=0.5, cap_user_share=True)
    with open(os.path.join(out, executor_lib.REPORT_FILE)) as f:
        report = json.load(f)
    return out, report, artifact


def test_a_row_from_2099_is_quarantined_and_the_split_uses_the_rest(hostile):
    out, report, artifact = hostile
    assert report["interaction_future_timestamp"] == 1
    assert artifact.get_int_custom_property("interaction_future_timestamp") == 1
    assert report["newest_timestamp"] == T0 + 5 * DAY
    assert report["cutoff_timestamp"] == T0 + 4 * DAY
    rows = _read_split(out, "train") + _read_split(out, "eval")
    assert all(r[features.TIMESTAMP][0] <= T0 + 5 * DAY for r in rows)
    (path,) = [os.path.join(out, executor_lib.QUARANTINE_DIR, n)
               for n in os.listdir(os.path.join(out, executor_lib.QUARANTINE_DIR))]
    with open(path) as f:
        (kept_aside,) = [json.loads(line) for line in f]
    assert (kept_aside["reason"], kept_aside["user_id"], kept_aside["timestamp"]) == (
        "interaction_future_timestamp", "u1", 4070908800)  # 2099-01-01T00:00:00Z


def test_date_only_and_other_non_contract_timestamps_are_rejected_and_counted(hostile):
    _, report, _ = hostile
    assert report["interaction_timestamp_not_contract"] == 3
    assert report["interaction_bad_timestamp"] == 1
    assert report["item_first_seen_not_contract"] == 1
    with pytest.raises(contract_rows.NotContractTimestamp):
        contract_rows.parse_contract_timestamp("2024-01-24")
    assert contract_rows.parse_contract_timestamp("2024-01-24T00:00:01Z") == 1706054401


def test_a_user_above_the_share_threshold_is_reported_and_capped(hostile):
    out, report, artifact = hostile
    # Eval: whale 8 of 10 rows (80% > 50%). Capped to c with c / (2 + c) <= 0.5: c = 2.
    assert report["user_share_eval"] == {"whale": {"examples": 8, "share": 0.8, "cap": 2}}
    assert json.loads(artifact.get_string_custom_property("user_share_eval"))["whale"][
        "share"] == 0.8
    assert report["user_share_train"] == {}  # u3: 2 of 4 train rows, not above 50%
    assert report["interaction_user_capped"] == 6
    evals = _read_split(out, "eval")
    whale = sorted(r[features.TIMESTAMP][0] for r in evals if r[features.USER_ID] == [b"whale"])
    assert whale == [T0 + 4 * DAY + 60 * 6, T0 + 4 * DAY + 60 * 7]  # the latest two
    assert report["eval_examples"] == len(evals) == 4
    assert any("whale is 80.0% of the eval split" in line
               for line in executor_lib.report_warnings(report))


def test_a_10000px_png_item_is_too_large_not_corrupt(hostile):
    out, report, _ = hostile
    catalog = {r[features.ITEM_ID][0].decode(): r for r in _read_split(out, "catalog")}
    assert catalog["huge"][features.IMAGE_STATUS] == [b"missing"]
    assert catalog["huge"][features.IMAGE] == [b""]
    assert report["image_too_large"] == 1 and "image_corrupt" not in report
    assert any(r[features.ITEM_ID] == [b"huge"] for r in _read_split(out, "train"))


def test_an_empty_price_skips_the_item_and_counts_it(hostile):
    out, report, _ = hostile
    catalog = {r[features.ITEM_ID][0].decode() for r in _read_split(out, "catalog")}
    assert catalog == {"a", "b", "huge"}
    assert report["item_missing_price"] == 1
    assert report["interaction_unknown_item"] == 1  # u3's click on "noprice"


def test_every_hostile_row_is_accounted_for(hostile):
    _, report, _ = hostile
    outcomes = ("train_examples", "eval_examples", "interaction_user_capped",
                "interaction_future_timestamp", "interaction_timestamp_not_contract",
                "interaction_bad_timestamp", "interaction_unknown_item")
    assert report["interaction_read"] == sum(report[k] for k in outcomes) == 20


def test_an_eval_split_below_the_minimum_names_the_cause():
    report = {"eval_examples": 1, "newest_timestamp": T0 + 5 * DAY,
              "cutoff_timestamp": T0 + 4 * DAY, "interaction_read": 9,
              "interaction_future_timestamp": 2}
    config = config_lib.DataConfig(eval_days=1.0, min_eval_examples=50)
    problem = executor_lib.eval_split_problem(report, config)
    assert problem == (
        "the eval split has 1 example(s), fewer than data.min_eval_examples=50: it holds the "
        "interactions of the last data.eval_days=1 day(s) before the newest one "
        "(2023-11-19T22:13:20Z, cutoff 2023-11-18T22:13:20Z); rows dropped before the "
        "split: {'interaction_future_timestamp': 2}")
    assert executor_lib.eval_split_problem({**report, "eval_examples": 50}, config) == ""


# ---- images ------------------------------------------------------------------------------------
def test_the_png_builder_writes_a_valid_png():
    with Image.open(io.BytesIO(big_png(30, 20, (1, 2, 3)))) as img:
        img.load()
        assert (img.size, img.mode, img.getpixel((29, 19))) == ((30, 20), "RGB", (1, 2, 3))


def test_a_10000x10000_png_is_too_large_without_being_decoded(tmp_path):
    """Its outcome is image_too_large, and the check never holds the 400 MB of pixels."""
    path = tmp_path / "huge.png"
    path.write_bytes(big_png(10_000, 10_000))
    code = ("import resource, sys; from hyperrec.data import image_normaliser as images; "
            "raw = open(sys.argv[1], 'rb').read(); "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "_, status, outcome = images.normalise(raw, 32); "
            "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "print(status, outcome, (after - before) // 1024)")
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, check=True, timeout=120)
    status, outcome, grown_mb = result.stdout.split()
    assert (status, outcome) == ("missing", "too_large")
    assert int(grown_mb) < 50, result.stdout


def test_a_jpeg_over_the_budget_is_decoded_reduced_and_a_png_skipped(monkeypatch):
    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 10_000)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 40)).save(jpeg, format="JPEG", quality=95)
    Image.new("RGB", (400, 300), (200, 30, 40)).save(png, format="PNG")
    # 120,000 px > 10,000: JPEG decodes at 1/8 scale (50 x 38 px), then the usual resize.
    out, status, outcome = images.normalise(jpeg.getvalue(), 16)
    assert (status, outcome) == ("ok", "ok")
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (16, 16)
        assert all(abs(a - b) <= 8 for a, b in zip(img.getpixel((8, 8)), (200, 30, 40)))
    assert images.normalise(png.getvalue(), 16) == (b"", "missing", "too_large")


def test_pil_decompression_bomb_error_is_too_large_not_corrupt(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # 100 x 100 > twice the limit
    assert images.normalise(_png((1, 2, 3), (100, 100)), 16) == (b"", "missing", "too_large")


# ---- the terminal ------------------------------------------------------------------------------
def _hyperrec(*args, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "GLOG_minloglevel")}
    env.update(env_extra or {})
    return subprocess.run([HYPERREC, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_cli_commands_print_no_tensorflow_start_up_noise(tmp_path):
    """Help, a usage error and a command that loads TensorFlow: none prints TF's C++ lines."""
    for args in (("run", "--help"), ("run", "--no-such-option"),
                 ("schema-diff", "--workdir", str(tmp_path))):
        result = _hyperrec(*args)
        assert NOISE not in result.stdout + result.stderr, (args, result.stderr[-2000:])
    assert _hyperrec("run", "--no-such-option").returncode == 2


def test_verbose_keeps_what_tensorflow_prints(tmp_path):
    plain = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                           text=True, timeout=300,
                           env={k: v for k, v in os.environ.items()
                                if k != "TF_CPP_MIN_LOG_LEVEL"})
    verbose = _hyperrec("--verbose", "schema-diff", "--workdir", str(tmp_path))
    # Where this TensorFlow build prints the lines at all, --verbose shows them.
    assert (NOISE in plain.stderr) == (NOISE in verbose.stderr), verbose.stderr[-2000:]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_missing_or_empty_data_folder_is_one_clear_line(tmp_path, make):
    data = tmp_path / "data"
    if make == "empty":
        data.mkdir()
    result = _hyperrec("run", "--data", str(data), "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == {"missing": f"error: data folder {data} does not exist",
                    "empty": f"error: data folder {data} has no span-N/ folders "
                             "(data/README.md describes the layout)"}[make]


def test_span_folders_without_csv_files_are_named(tmp_path):
    (tmp_path / "span-1").mkdir()
    (tmp_path / "span-1" / "notes.txt").write_text("not a table")
    assert layout.data_root_problem(str(tmp_path)) == (
        f"data folder {tmp_path}: no CSV file in any of ['span-1']")
    (tmp_path / "span-1" / "items.csv").write_text("item_id\n")
    assert layout.data_root_problem(str(tmp_path)) == ""


# ---- a Trainer epoch of minutes ----------------------------------------------------------------
def test_long_epochs_print_progress_lines_inside_the_epoch():
    import numpy as np
    import tensorflow as tf
    from hyperrec.components.trainer.callbacks import EpochProgress

    ticks = iter(range(1000))  # one second per clock reading
    lines = []
    callback = EpochProgress(interval_s=2, write=lines.append,
                                               clock=lambda: next(ticks))
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((12, 2)), np.ones((12, 1)), batch_size=2, epochs=1, verbose=0,
              callbacks=[callback])
    # Epoch start reads 0; batch k ends at k + 1: lines at 2, 4 and 6 s (steps 2, 4, 6).
    assert [line.split("  loss ")[0] for line in lines] == [
        "epoch 1/1  step 2/6", "epoch 1/1  step 4/6", "epoch 1/1  step 6/6"]
    assert all(line.endswith(("2s", "4s", "6s")) for line in lines)


def test_the_trainer_uses_the_progress_callback(tmp_path):
    from hyperrec.components.trainer.callbacks import EpochProgress, training_callbacks
    callbacks = training_callbacks(config_lib.ModelConfig(), str(tmp_path))
    assert any(isinstance(c, EpochProgress) for c in callbacks)


# ---- one pipeline run --------------------------------------------------------------------------
@pytest.mark.e2e
def test_pipeline_stops_on_a_small_eval_split_and_ignores_a_row_from_2099(tmp_path):
    """`hyperrec run` on tiny data: a 2099 row no longer moves the cutoff (quarantined, said
    so), and an eval window of 15 minutes is below the minimum: one error line says why."""
    from hyperrec.data import synthetic as datagen
    data = tmp_path / "data"
    datagen.generate("tiny", 42, str(data))
    latest = max(data.glob("span-*"), key=lambda p: int(p.name.split("-")[1]))
    with open(latest / "interactions.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["u00001", "i00001", "2099-01-01T00:00:00Z", "click", "mobile"])
    result = _hyperrec("run", "--experiment", "tiny", "--data", str(data), "--workdir",
                       str(tmp_path / "run"), "--set", "data.eval_days=0.01", timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output and NOISE not in output, output[-3000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "the eval split has" in error and "data.min_eval_examples=50" in error, error
    assert "data.eval_days=0.01" in error and "cutoff 2024-01-28T" in error, error
    assert "'interaction_future_timestamp': 1" in error, error
    assert "1 interaction(s) later than the horizon" in result.stderr
