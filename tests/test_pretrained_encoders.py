"""Pretrained item-tower encoders (components/pretraining/): pretraining on the real
clothing photos and Online Retail descriptions through `hyperrec pretrain`, the saved format,
loading into the Trainer's model (vocabulary mapping by token, architecture checks, named
errors for bad locations), frozen and fine-tuned training with a second optimizer.

The model is the Trainer's own (trainer/build.py) on a real Transform output of the shared
synthetic rows (tests/test_transform.py), with images of the pretraining's size.
"""
from __future__ import annotations

import dataclasses
import functools
import http.server
import os
import shutil
import socket
import tarfile
import threading

import hyperrec.components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from hyperrec.components import config as config_lib
from hyperrec.components import trainer, transform
from hyperrec.components.trainer.build import build_model
from hyperrec.components.trainer.input import build_dataset
from hyperrec.components import pretraining
from hyperrec.components.model.image_encoder import ImageEncoder
from hyperrec.components.model.text_encoder import TextEncoder
from hyperrec.pipeline.cli import pretrain as pretrain_cli
from hyperrec.schemas import features

import test_model
import test_transform as synthetic

pytestmark = pytest.mark.needs_shared

IMAGE_SIZE = 32
# The tiny experiment's encoder sizes (what `--experiment tiny` pretrains), 8 text tokens.
MODEL_CONFIG = dataclasses.replace(
    test_model.TEST_MODEL_CONFIG, cnn_filters=(8, 16), embedding_dim=16,
    text_embedding_dim=16, text_heads=2, text_layers=1, text_ff_dim=32,
    lr_schedule="constant", validation_days=0.0)
DATA_CONFIG = dataclasses.replace(synthetic.TEST_DATA_CONFIG, image_size=IMAGE_SIZE)
TRANSFORM_CONFIG = synthetic.TEST_TRANSFORM_CONFIG
CLI_SIZES = ["--experiment", "tiny", "--set", f"data.image_size={IMAGE_SIZE}",
             "--set", f"transform.text_max_tokens={TRANSFORM_CONFIG.text_max_tokens}"]
IMAGE_EPOCHS = 15
TEXT_EPOCHS = 10
TEXT_SAMPLE = 1500


def _invoke(args):
    result = CliRunner().invoke(pretrain_cli.pretrain, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_dir(shared_data, tmp_path_factory):
    """The CNN pretrained on the real clothing photos by `hyperrec pretrain image`."""
    out = str(tmp_path_factory.mktemp("pretrained_image"))
    output = _invoke(["image", "--photos", str(shared_data / "clothing_photos"), "--out", out,
                      "--epochs", str(IMAGE_EPOCHS), *CLI_SIZES])
    assert "held-out accuracy" in output and "image epoch 1/" in output
    return out


@pytest.fixture(scope="module")
def text_dir(shared_data, tmp_path_factory):
    """The Transformer pretrained by MLM on a sample of Online Retail's product texts."""
    out = str(tmp_path_factory.mktemp("pretrained_text"))
    output = _invoke(["text", "--rda", str(shared_data / "online_retail" / "onlineretail.rda"),
                      "--out", out, "--max-texts", str(TEXT_SAMPLE),
                      "--epochs", str(TEXT_EPOCHS), *CLI_SIZES])
    assert "masked-token accuracy" in output
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Synthetic splits (32 px images) -> Transform analysis; FnArgs for the datasets."""
    examples_root = str(tmp_path_factory.mktemp("examples"))
    synthetic.write_examples(examples_root, DATA_CONFIG)
    transform_dir = str(tmp_path_factory.mktemp("transform_output"))
    tft_output = synthetic.run_transform_analysis(
        examples_root, transform_dir, synthetic.raw_schema(),
        synthetic.transform_custom_config(TRANSFORM_CONFIG, DATA_CONFIG))
    fn_args = trainer.fn_args_for(examples_root, transform_dir,
                                  str(tmp_path_factory.mktemp("model")), {})
    batch = next(iter(build_dataset(
        fn_args.train_files, fn_args.data_accessor, tft_output, 32, shuffle=False, seed=0,
        num_epochs=1)))
    return {"tft_output": tft_output, "batch": batch, "fn_args": fn_args}


def _saved(directory, kind):
    """The encoder as saved (restored into the manifest's architecture)."""
    manifest = pretraining.read_manifest(directory, kind)
    if kind == pretraining.IMAGE:
        encoder = pretraining.new_image_encoder(manifest["architecture"])
    else:
        encoder = pretraining.new_text_encoder(manifest["architecture"], manifest["vocab_size"])
    pretraining.restore_encoder(encoder, directory)
    return encoder


def _model(env, **pretrained):
    model_config = dataclasses.replace(
        MODEL_CONFIG, pretrained=config_lib.PretrainedConfig(**pretrained))
    tf.keras.utils.set_random_seed(MODEL_CONFIG.seed)
    model = build_model(model_config, DATA_CONFIG, TRANSFORM_CONFIG, env["tft_output"])
    model(env["batch"])  # builds the rest of the model
    return model


def _values(layer):
    return [v.numpy().copy() for v in layer.weights]


# ---- pretraining on the real data ---------------------------------------------------------
def test_image_encoder_pretrained_on_clothing_photos_beats_chance(image_dir):
    metrics = pretraining.read_manifest(image_dir, pretraining.IMAGE)["metrics"]
    assert metrics["chance"] == pytest.approx(0.1)  # 10 classes
    assert metrics["holdout_photos"] + metrics["train_photos"] == 372
    # Twice chance: on 73 held-out photos, chance guessing reaches 0.2 with p < 1e-3.
    assert metrics["holdout_accuracy"] >= 2 * metrics["chance"], metrics


def test_text_encoder_masked_accuracy_beats_the_most_frequent_token(text_dir):
    manifest = pretraining.read_manifest(text_dir, pretraining.TEXT)
    metrics = manifest["metrics"]
    assert metrics["holdout_masked_tokens"] >= 100
    assert metrics["holdout_masked_accuracy"] >= metrics["most_frequent_token_accuracy"] + 0.03, \
        metrics
    vocabulary = pretraining.read_vocabulary(text_dir)
    assert manifest["vocab_size"] == len(vocabulary) + 3  # padding, OOV, [MASK]
    assert manifest["special_ids"] == {"padding": 0, "oov": len(vocabulary) + 1,
                                       "mask": len(vocabulary) + 2}
    assert manifest["source"]["kind"] == "online_retail"


def test_pretraining_tokenises_like_transform():
    assert pretraining.tokenize_texts(["Red-Shoe, SALE!", "it's  50% off."]) == [
        ["red", "shoe", "sale"], ["it", "s", "50", "off"]]
    assert pretraining.build_vocabulary([["b", "a"], ["a", "c"], ["b", "a"]], 2) == ["a", "b"]
    ids = pretraining.encode_tokens([["a", "x", "b"], []], ["a", "b"], 4)
    assert ids.tolist() == [[1, 3, 2, 0], [0, 0, 0, 0]]  # OOV = 3


def test_masking_targets_only_in_vocabulary_tokens():
    ids = np.array([[1, 2, 3, 0], [3, 3, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]])  # OOV = 3
    inputs, weights = pretraining.mask_tokens(ids, 4, np.random.default_rng(0), rate=0.0)
    # rate 0: exactly one forced position in each row with an in-vocabulary token
    assert weights.sum(axis=1).tolist() == [1, 0, 0, 1]
    assert weights[0, :2].sum() == 1 and weights[3, 0] == 1
    assert (inputs[weights > 0] == 4).all() and (inputs[weights == 0] == ids[weights == 0]).all()


def test_photos_decode_like_the_tower(shared_data):
    path = sorted((shared_data / "clothing_photos" / "hat").glob("*.jpg"))[0]
    pixels = pretraining.load_photo(str(path), IMAGE_SIZE).numpy()
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0 and pixels.max() > 0.5


def test_photo_split_is_seeded_and_stratified(shared_data):
    photos = str(shared_data / "clothing_photos")
    first, again = (pretraining.split_photos(photos, 0.2, 42) for _ in range(2))
    assert first.holdout_files == again.holdout_files
    assert set(first.holdout_files).isdisjoint(first.train_files)
    assert len(first.classes) == 10 and set(first.holdout_labels) == set(range(10))
    # hat has 12 photos: round(0.2 * 12) = 2 held out
    assert (first.holdout_labels == first.classes.index("hat")).sum() == 2
    other = pretraining.split_photos(photos, 0.2, 7)
    assert other.holdout_files != first.holdout_files


# ---- loading ---------------------------------------------------------------------------------
def test_vocabulary_rows_map_by_token_string():
    # pretrained ids: red 1, shoe 2, blue 3, OOV 4; Transform ids: shoe 1, hat 2, red 3,
    # OOV buckets 4 and 5
    target, source = pretraining.token_row_map(["red", "shoe", "blue"], 4,
                                               ["shoe", "hat", "red"], 2)
    assert list(zip(target.tolist(), source.tolist())) == [(0, 0), (1, 2), (3, 1), (4, 4),
                                                           (5, 4)]


def test_text_rows_copied_by_token_others_keep_their_initialisation(text_dir):
    pretrained_vocabulary = pretraining.read_vocabulary(text_dir)
    saved = _saved(text_dir, pretraining.TEXT)
    saved_rows = saved.token_embedding.embeddings.numpy()
    shared = pretrained_vocabulary[0]  # the most frequent pretrained token
    vocabulary = ["zzunseenzz", shared]  # Transform ids 1 and 2, OOV bucket 3
    target = TextEncoder(4, TRANSFORM_CONFIG.text_max_tokens, 16, 2, 1, 32, 0.1, name="text")
    pretraining.build_encoder(target, max_tokens=TRANSFORM_CONFIG.text_max_tokens)
    initial = target.token_embedding.embeddings.numpy().copy()
    _, copied = pretraining.load_text_encoder(
        target, text_dir, MODEL_CONFIG, TRANSFORM_CONFIG.text_max_tokens, vocabulary, 1)
    rows = target.token_embedding.embeddings.numpy()
    assert copied == 1
    np.testing.assert_array_equal(rows[2], saved_rows[1])  # pretrained id of `shared`: 1
    np.testing.assert_array_equal(rows[1], initial[1])  # never seen in pretraining
    np.testing.assert_array_equal(rows[3], saved_rows[len(pretrained_vocabulary) + 1])  # OOV
    np.testing.assert_array_equal(rows[0], saved_rows[0])
    np.testing.assert_array_equal(target.position_embedding.embeddings.numpy(),
                                  saved.position_embedding.embeddings.numpy())
    for mine, theirs in zip(target.blocks[0].weights, saved.blocks[0].weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_architecture_mismatch_names_the_field(image_dir, text_dir):
    with pytest.raises(pretraining.ArchitectureMismatch, match=r"filters: saved \[8, 16\] "
                       r"vs model \[4, 8\]") as error:
        pretraining.load_image_encoder(ImageEncoder((4, 8), 16), image_dir,
                                       dataclasses.replace(MODEL_CONFIG, cnn_filters=(4, 8)),
                                       IMAGE_SIZE)
    assert set(error.value.fields) == {"filters"}
    with pytest.raises(pretraining.ArchitectureMismatch, match="image_size: saved 32 vs model 24"):
        pretraining.load_image_encoder(ImageEncoder((8, 16), 16), image_dir, MODEL_CONFIG, 24)
    with pytest.raises(pretraining.ArchitectureMismatch) as error:
        pretraining.load_text_encoder(
            TextEncoder(10, 8, 16, 4, 2, 32, 0.1), text_dir,
            dataclasses.replace(MODEL_CONFIG, text_heads=4, text_layers=2), 8, ["a"] * 8, 1)
    assert set(error.value.fields) == {"num_heads", "num_layers"}
    with pytest.raises(pretraining.ArchitectureMismatch, match="kind: saved 'text' vs model "
                       "'image'"):
        pretraining.load_image_encoder(ImageEncoder((8, 16), 16), text_dir, MODEL_CONFIG,
                                       IMAGE_SIZE)


def test_bad_locations_are_named_errors(tmp_path):
    with pytest.raises(pretraining.PretrainedEncoderNotFound, match="no pretrained encoder"):
        pretraining.resolve(str(tmp_path / "absent"))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(pretraining.PretrainedEncoderDownloadError, match="could not download"):
        pretraining.resolve(f"http://127.0.0.1:{port}/encoder.tar.gz", str(tmp_path / "cache"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / pretraining.MANIFEST).write_text('{"format": "other"}')
    with pytest.raises(pretraining.InvalidPretrainedEncoder, match="not a hyperrec"):
        pretraining.read_manifest(str(tmp_path / "bad"), pretraining.IMAGE)
    with pytest.raises(pretraining.PhotoFolderError, match="at least 2 class subfolders"):
        pretraining.split_photos(str(tmp_path), 0.2, 0)
    id_only = dataclasses.replace(MODEL_CONFIG, use_content=False,
                                  pretrained=config_lib.PretrainedConfig(image="somewhere"))
    with pytest.raises(pretraining.PretrainedEncoderError, match="use_content"):
        pretraining.load_pretrained_encoders(None, id_only, IMAGE_SIZE, 8, None, 1)
    with pytest.raises(config_lib.UnknownPretrainedMode, match="'thawed'"):
        config_lib.load("tiny", ["model.pretrained.mode=thawed"])
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        config_lib.PretrainedConfig(lr_multiplier=0.0)


def test_config_nests_and_overrides_pretrained():
    config = config_lib.load("tiny", ["model.pretrained.image=gs://b/enc",
                                      "model.pretrained.mode=frozen",
                                      "model.pretrained.lr_multiplier=0.25"])
    assert config.model.pretrained == config_lib.PretrainedConfig(
        image="gs://b/enc", mode="frozen", lr_multiplier=0.25)
    again = config_lib.from_dict(config_lib.HyperrecConfig, dataclasses.asdict(config))
    assert again.model.pretrained == config.model.pretrained


def test_an_http_archive_downloads_and_loads(image_dir, tmp_path):
    archive = tmp_path / "site" / "image_encoder.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_dir, arcname="image_encoder")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/image_encoder.tar.gz"
        encoder = ImageEncoder((8, 16), 16)
        manifest = pretraining.load_image_encoder(encoder, url, MODEL_CONFIG, IMAGE_SIZE,
                                                  str(tmp_path / "cache"))
    finally:
        server.shutdown()
        server.server_close()
    assert manifest["kind"] == pretraining.IMAGE
    for mine, theirs in zip(_values(encoder), _values(_saved(image_dir, pretraining.IMAGE))):
        np.testing.assert_array_equal(mine, theirs)


def _keras_models(image_dir, text_dir):
    """Classifiers built around the pretrained encoders: Keras models holding one of them."""
    image = _saved(image_dir, pretraining.IMAGE)
    pixels = tf.keras.Input([IMAGE_SIZE, IMAGE_SIZE, 3])
    image_model = tf.keras.Model(pixels, tf.keras.layers.Dense(3)(
        image((pixels, tf.ones_like(pixels[:, 0, 0, 0])))))
    text = _saved(text_dir, pretraining.TEXT)
    tokens = tf.keras.Input([TRANSFORM_CONFIG.text_max_tokens], dtype=tf.int64)
    pooled, _ = text(tokens)
    text_model = tf.keras.Model(tokens, tf.keras.layers.Dense(3)(pooled))
    return image, image_model, text, text_model


def test_a_keras_model_holding_an_encoder_loads_too(image_dir, text_dir, tmp_path):
    """.keras files for both encoders, a SavedModel for the image encoder."""
    image, image_model, text, text_model = _keras_models(image_dir, text_dir)
    image_model.save(str(tmp_path / "image_model"), save_format="tf")
    image_model.save(str(tmp_path / "image.keras"))
    for image_path in (str(tmp_path / "image_model"), str(tmp_path / "image.keras")):
        target = ImageEncoder((8, 16), 16)
        manifest = pretraining.load_image_encoder(target, image_path, MODEL_CONFIG, IMAGE_SIZE)
        assert manifest["source"] == {"keras_model": image_path}
        for mine, theirs in zip(_values(target), _values(image)):
            np.testing.assert_array_equal(mine, theirs)

    text_path = str(tmp_path / "text.keras")
    text_model.save(text_path)
    shutil.copy(os.path.join(text_dir, pretraining.VOCABULARY), tmp_path)  # beside the file
    pretrained_vocabulary = pretraining.read_vocabulary(text_dir)
    shared = pretrained_vocabulary[0]
    target = TextEncoder(4, TRANSFORM_CONFIG.text_max_tokens, 16, 2, 1, 32, 0.1, name="text")
    _, copied = pretraining.load_text_encoder(
        target, text_path, MODEL_CONFIG, TRANSFORM_CONFIG.text_max_tokens,
        ["zzunseenzz", shared], 1)
    saved_rows = text.token_embedding.embeddings.numpy()
    rows = target.token_embedding.embeddings.numpy()
    assert copied == 1
    np.testing.assert_array_equal(rows[2], saved_rows[1])
    np.testing.assert_array_equal(rows[3], saved_rows[len(pretrained_vocabulary) + 1])  # OOV
    for mine, theirs in zip(target.blocks[0].weights, text.blocks[0].weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_keras_models_without_one_encoder_or_a_vocabulary_are_named_errors(
        image_dir, text_dir, tmp_path):
    _, image_model, _, text_model = _keras_models(image_dir, text_dir)
    plain = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])
    plain.save(str(tmp_path / "plain.keras"))
    with pytest.raises(pretraining.InvalidPretrainedEncoder, match="0 ImageEncoder layers"):
        pretraining.load_image_encoder(ImageEncoder((8, 16), 16), str(tmp_path / "plain.keras"),
                                       MODEL_CONFIG, IMAGE_SIZE)
    text_model.save(str(tmp_path / "text.keras"))  # no vocab.txt beside it
    with pytest.raises(pretraining.InvalidPretrainedEncoder, match="needs its vocabulary"):
        pretraining.load_text_encoder(TextEncoder(4, TRANSFORM_CONFIG.text_max_tokens, 16, 2, 1,
                                                  32, 0.1), str(tmp_path / "text.keras"),
                                      MODEL_CONFIG, TRANSFORM_CONFIG.text_max_tokens, ["a"], 1)
    text_model.save(str(tmp_path / "text_model"), save_format="tf")
    with pytest.raises(pretraining.InvalidPretrainedEncoder, match="not a SavedModel"):
        pretraining.load_text_encoder(TextEncoder(4, TRANSFORM_CONFIG.text_max_tokens, 16, 2, 1,
                                                  32, 0.1), str(tmp_path / "text_model"),
                                      MODEL_CONFIG, TRANSFORM_CONFIG.text_max_tokens, ["a"], 1)
    image_model.save(str(tmp_path / "image.keras"))
    with pytest.raises(pretraining.ArchitectureMismatch, match="filters: saved"):
        pretraining.load_image_encoder(ImageEncoder((4, 8), 16), str(tmp_path / "image.keras"),
                                       dataclasses.replace(MODEL_CONFIG, cnn_filters=(4, 8)),
                                       IMAGE_SIZE)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(pretraining.InvalidPretrainedEncoder, match="does not load"):
        pretraining.load_image_encoder(ImageEncoder((8, 16), 16),
                                       str(tmp_path / "broken.keras"), MODEL_CONFIG, IMAGE_SIZE)


# ---- training with pretrained encoders ------------------------------------------------------
def test_frozen_encoders_keep_their_pretrained_weights(env, image_dir, text_dir):
    model = _model(env, image=image_dir, text=text_dir, mode="frozen")
    image, text = model.item_tower.image_encoder, model.item_tower.text_encoder
    for mine, theirs in zip(_values(image), _values(_saved(image_dir, pretraining.IMAGE))):
        np.testing.assert_array_equal(mine, theirs)
    frozen = {v.ref() for v in image.weights + text.weights}
    assert not frozen & {v.ref() for v in model.trainable_variables}
    before, text_before = _values(image), _values(text)
    rest_before = [v.numpy().copy() for v in model.trainable_variables]
    for _ in range(2):
        model.train_step(env["batch"])
    for a, b in zip(before + text_before, _values(image) + _values(text)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, v.numpy())
               for a, v in zip(rest_before, model.trainable_variables))


def test_fine_tuned_encoders_step_at_the_lower_rate(env, image_dir, text_dir):
    multiplier = 0.1
    model = _model(env, image=image_dir, text=text_dir, mode="fine_tune",
                   lr_multiplier=multiplier)
    encoders = [model.item_tower.image_encoder, model.item_tower.text_encoder]
    encoder_refs = {v.ref() for layer in encoders for v in layer.trainable_variables}
    variables = model.trainable_variables
    assert encoder_refs <= {v.ref() for v in variables}
    before = [v.numpy().copy() for v in variables]
    model.train_step(env["batch"])
    # Adam's first step moves each weight by lr * g / (|g| + eps): lr where the gradient is
    # not tiny, whatever its scale. So the largest move is the rate itself.
    rate = MODEL_CONFIG.learning_rate
    moves = {"encoders": 0.0, "rest": 0.0}
    for variable, old in zip(variables, before):
        part = "encoders" if variable.ref() in encoder_refs else "rest"
        moves[part] = max(moves[part], float(np.abs(variable.numpy() - old).max()))
    assert moves["encoders"] == pytest.approx(rate * multiplier, rel=1e-3)
    assert moves["rest"] == pytest.approx(rate, rel=1e-3)
    # The encoder optimizer's state is part of the model's checkpoint (BackupAndRestore).
    assert model.encoder_optimizer.iterations.numpy() == 1
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.write(str(env["fn_args"].model_run_dir) + "/fine_tune_ckpt")
    names = [name for name, _ in tf.train.list_variables(path)]
    assert any(name.startswith("model/encoder_optimizer/") for name in names), names[:20]


def test_the_loaded_text_table_uses_transform_ids(env, text_dir):
    model = _model(env, text=text_dir, mode="frozen")
    pretrained_vocabulary = pretraining.read_vocabulary(text_dir)
    saved_rows = _saved(text_dir, pretraining.TEXT).token_embedding.embeddings.numpy()
    vocabulary = pretraining.decode_vocabulary(
        env["tft_output"].vocabulary_by_name(transform.TEXT_VOCAB))
    rows = model.item_tower.text_encoder.token_embedding.embeddings.numpy()
    shared = [t for t in vocabulary if t in pretrained_vocabulary]
    assert "red" in shared  # the synthetic texts' colours are in Online Retail's descriptions
    for token in shared:
        np.testing.assert_array_equal(rows[vocabulary.index(token) + 1],
                                      saved_rows[pretrained_vocabulary.index(token) + 1])
    # The transformed batch indexes the same table: a token id of a row maps to its string.
    ids = env["batch"][features.TITLE_TOKENS_XF].numpy()
    assert ids.max() <= len(vocabulary) + TRANSFORM_CONFIG.num_oov_buckets
