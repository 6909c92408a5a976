"""Pretrained item-tower encoders: pretraining, the saved format, and loading into a model.

Transfer learning for the two content encoders of the item tower (towers.ItemTower):

- image: the project's own `ImageEncoder` plus a softmax head, trained to classify photos in
  a folder of class subfolders (`pretrain_image`). Photos are decoded like the tower decodes
  its PNGs (decode_png_batch): any JPEG/PNG -> float pixels in [0, 1] -> resized to
  `image_size`, so the encoder sees the same pixel range in both places.
- text: the project's own `TextEncoder` trained by masked-token prediction (MLM) on product
  texts tokenised with Transform's own `tokenize` (`pretrain_text`).

Saved format (a directory; a URL points to a .tar.gz or .zip of it):

    manifest.json   {"format": FORMAT, "format_version": 1, "kind": "image" | "text",
                     "architecture": {...}, "weights": "weights", "vocabulary": "vocab.txt"
                     (text only), "special_ids": {...} (text only), "metrics": {...},
                     "source": {...}}
    weights.index, weights.data-*   a TensorFlow object-based checkpoint of the encoder
                     layer alone (tf.train.Checkpoint(encoder=...)), matched by structure,
                     not by variable names, so a layer's name inside a model does not matter
    vocab.txt       text only: one token a line; token id = line number + 1 (0 = padding),
                     then one out-of-vocabulary id and the [MASK] id

A location may also be a Keras model: a `.keras` file or (image only) a Keras SavedModel
directory (`saved_model.pb`), local, gs:// or an http(s) URL (a file, or a .tar.gz/.zip of
the directory), holding exactly one of the project's `ImageEncoder` / `TextEncoder` layers
(e.g. a classifier built around it). Its architecture is read from the layer; a text
encoder's vocabulary is the `vocab.txt` beside the file, with the same id convention as
above (the row after the last token is the OOV row). Text from a SavedModel is refused:
tf_keras revives the MultiHeadAttention of a custom layer from a SavedModel with other
weights than it saved (the revived encoder computes other outputs), a `.keras` file is exact.

Loading (`load_pretrained_encoders`, called by the Trainer's build_model after the towers
exist) checks the architecture field by field (a mismatch is `ArchitectureMismatch` naming
the fields, never a partial load), restores the checkpoint into an encoder of the SAVED
architecture and copies it into the model's encoder. The text token table is copied BY TOKEN
STRING: Transform's vocabulary at train time differs from the pretraining vocabulary, so row
`i` of the pretrained table lands on the Transform id of the same token; tokens the
pretraining never saw keep their fresh initialisation, and Transform's OOV buckets get the
pretrained OOV row. Position embeddings and the Transformer blocks are copied as they are.

`mode` frozen makes the encoders untrainable; fine_tune trains them with a second optimizer
at learning_rate * lr_multiplier (TwoTowerModel.train_step). The text token table is shared
with the content vector (model/item_content.py), which therefore follows the text encoder.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components import transform
from hyperrec.components.model.image_encoder import ImageEncoder, ResidualSeparableBlock
from hyperrec.components.model.text_encoder import TextEncoder, TransformerBlock

FORMAT = "hyperrec-pretrained-encoder"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights"  # checkpoint prefix inside the directory
VOCABULARY = "vocab.txt"
IMAGE, TEXT = "image", "text"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
KERAS_SUFFIXES = (".keras",)
SAVED_MODEL = "saved_model.pb"
MASK_RATE = 0.15


class PretrainedEncoderError(ValueError):
    """Base of the named errors of this module."""


class PretrainedEncoderNotFound(PretrainedEncoderError):
    """The location has no pretrained encoder (no manifest.json there)."""


class PretrainedEncoderDownloadError(PretrainedEncoderError):
    """An http(s) location could not be downloaded or unpacked."""


class InvalidPretrainedEncoder(PretrainedEncoderError):
    """A manifest of another format / version / kind, or weights that do not restore."""


class ArchitectureMismatch(PretrainedEncoderError):
    """The saved encoder's architecture differs from the model's; `fields` names how."""

    def __init__(self, kind: str, location: str, fields: Dict[str, Tuple[Any, Any]]) -> None:
        self.fields = fields
        diffs = ", ".join(f"{name}: saved {saved!r} vs model {model!r}"
                          for name, (saved, model) in sorted(fields.items()))
        super().__init__(f"pretrained {kind} encoder at {location} does not fit the model "
                         f"({diffs})")


class PhotoFolderError(PretrainedEncoderError):
    """The photo folder is not a folder of >= 2 class subfolders with photos."""


# ---- architectures --------------------------------------------------------------------------
def image_architecture(model_config: config_lib.ModelConfig, image_size: int) -> Dict[str, Any]:
    """The fields an image encoder must share with the model to be loaded into it."""
    return {"filters": [int(f) for f in model_config.cnn_filters],
            "output_dim": int(model_config.embedding_dim), "image_size": int(image_size)}


def text_architecture(model_config: config_lib.ModelConfig, max_tokens: int) -> Dict[str, Any]:
    """The fields a text encoder must share with the model (the vocabulary is mapped)."""
    return {"model_dim": int(model_config.text_embedding_dim),
            "num_heads": int(model_config.text_heads),
            "num_layers": int(model_config.text_layers),
            "ff_dim": int(model_config.text_ff_dim), "max_tokens": int(max_tokens)}


def _image_encoder(architecture: Dict[str, Any]) -> ImageEncoder:
    encoder = ImageEncoder(architecture["filters"], architecture["output_dim"], name=IMAGE)
    build_encoder(encoder, image_size=architecture["image_size"])
    return encoder


def _text_encoder(architecture: Dict[str, Any], vocab_size: int,
                  dropout: float = 0.0) -> TextEncoder:
    encoder = TextEncoder(vocab_size, architecture["max_tokens"], architecture["model_dim"],
                          architecture["num_heads"], architecture["num_layers"],
                          architecture["ff_dim"], dropout, name=TEXT)
    build_encoder(encoder, max_tokens=architecture["max_tokens"])
    return encoder


def build_encoder(encoder: tf.keras.layers.Layer, image_size: int = 0,
                  max_tokens: int = 0) -> None:
    """Creates an encoder's variables by calling it once on a dummy batch."""
    if isinstance(encoder, ImageEncoder):
        encoder((tf.zeros([1, image_size, image_size, 3]), tf.ones([1])))
    else:
        encoder(tf.zeros([1, max_tokens], tf.int64), training=False)


# ---- saving ---------------------------------------------------------------------------------
def _save(encoder: tf.keras.layers.Layer, out_dir: str, manifest: Dict[str, Any],
          vocabulary: Optional[Sequence[str]] = None) -> str:
    tf.io.gfile.makedirs(out_dir)
    tf.train.Checkpoint(encoder=encoder).write(os.path.join(out_dir, WEIGHTS))
    if vocabulary is not None:
        with tf.io.gfile.GFile(os.path.join(out_dir, VOCABULARY), "w") as f:
            f.write("".join(f"{token}\n" for token in vocabulary))
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "weights": WEIGHTS,
                **manifest}
    with tf.io.gfile.GFile(os.path.join(out_dir, MANIFEST), "w") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True))
    return out_dir


class _EpochLines(tf.keras.callbacks.Callback):
    """One progress line per epoch through `report` (the CLI prints, tests stay quiet)."""

    def __init__(self, report: Callable[[str], None], what: str) -> None:
        super().__init__()
        self.report, self.what = report, what

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        values = " ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()))
        self.report(f"{self.what} epoch {epoch + 1}/{self.params['epochs']}: {values}")


def _quiet(_: str) -> None:
    pass


# ---- image ----------------------------------------------------------------------------------
@dataclasses.dataclass
class PhotoSplit:
    """A seeded, stratified split of a photo folder: file paths and class indices."""

    classes: List[str]
    train_files: List[str]
    train_labels: np.ndarray
    holdout_files: List[str]
    holdout_labels: np.ndarray


def split_photos(photos_dir: str, holdout_fraction: float, seed: int) -> PhotoSplit:
    """Class = subfolder name (sorted); per class, a seeded shuffle of the sorted file names
    puts round(holdout_fraction * n) photos (at least one) in the holdout."""
    if not tf.io.gfile.isdir(photos_dir):
        raise PhotoFolderError(f"{photos_dir} is not a folder of class subfolders")
    classes, per_class = [], {}
    for name in sorted(tf.io.gfile.listdir(photos_dir)):
        name = name.rstrip("/")
        folder = os.path.join(photos_dir, name)
        if not tf.io.gfile.isdir(folder):
            continue
        files = sorted(os.path.join(folder, f) for f in tf.io.gfile.listdir(folder)
                       if f.lower().endswith(IMAGE_SUFFIXES))
        if files:
            classes.append(name)
            per_class[name] = files
    if len(classes) < 2:
        raise PhotoFolderError(f"{photos_dir}: need at least 2 class subfolders with "
                               f"{'/'.join(IMAGE_SUFFIXES)} photos, found {classes}")
    rng = np.random.default_rng(seed)
    split = PhotoSplit(classes, [], [], [], [])
    for index, name in enumerate(classes):
        files = [per_class[name][i] for i in rng.permutation(len(per_class[name]))]
        n_holdout = max(1, int(round(holdout_fraction * len(files)))) if len(files) > 1 else 0
        split.holdout_files += files[:n_holdout]
        split.holdout_labels += [index] * n_holdout
        split.train_files += files[n_holdout:]
        split.train_labels += [index] * (len(files) - n_holdout)
    split.train_labels = np.asarray(split.train_labels, np.int64)
    split.holdout_labels = np.asarray(split.holdout_labels, np.int64)
    return split


def load_photo(path: str, image_size: int) -> tf.Tensor:
    """A JPEG/PNG file as the tower sees images: float32 [size, size, 3] in [0, 1]."""
    pixels = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    pixels = tf.image.convert_image_dtype(pixels, tf.float32)
    return tf.image.resize(pixels, [image_size, image_size])


def _photo_array(files: Sequence[str], image_size: int) -> np.ndarray:
    return np.stack([load_photo(path, image_size).numpy() for path in files]) if files \
        else np.zeros([0, image_size, image_size, 3], np.float32)


class _PretrainingModel(tf.keras.Model):
    """Keras' own steps, not autograph-converted: converting them transpiles all of tf_keras
    (not on autograph's allowlist), tens of seconds per step function (see
    TwoTowerModel.train_step)."""

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data: Any) -> Dict[str, tf.Tensor]:
        return super().train_step(data)

    @tf.autograph.experimental.do_not_convert
    def predict_step(self, data: Any) -> tf.Tensor:
        return super().predict_step(data)


class _Classifier(_PretrainingModel):
    """Encoder + dense softmax head (the head is dropped when saving)."""

    def __init__(self, encoder: ImageEncoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = tf.keras.layers.Dense(num_classes)

    def call(self, pixels: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        return self.head(tf.nn.relu(self.encoder((pixels, tf.ones(tf.shape(pixels)[:1])))))


def pretrain_image(photos_dir: str, out_dir: str, model_config: config_lib.ModelConfig,
                   image_size: int, epochs: int = 20, batch_size: int = 32,
                   learning_rate: float = 3e-3, holdout_fraction: float = 0.2,
                   seed: int = 42, report: Callable[[str], None] = _quiet) -> Dict[str, Any]:
    """Trains ImageEncoder(cnn_filters, embedding_dim) + a classifier on the photo folder,
    saves the encoder to out_dir; returns the manifest (held-out accuracy, the majority
    class's held-out share, chance = 1 / classes)."""
    split = split_photos(photos_dir, holdout_fraction, seed)
    report(f"photos: {len(split.classes)} classes, {len(split.train_files)} train, "
           f"{len(split.holdout_files)} held out")
    tf.keras.utils.set_random_seed(seed)
    train_x = _photo_array(split.train_files, image_size)
    holdout_x = _photo_array(split.holdout_files, image_size)
    architecture = image_architecture(model_config, image_size)
    encoder = _image_encoder(architecture)
    classifier = _Classifier(encoder, len(split.classes))
    classifier.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                       loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    # Mirrored copies double the few photos; the flip is a fixed, seed-free augmentation.
    train_x = np.concatenate([train_x, train_x[:, :, ::-1, :]])
    train_y = np.concatenate([split.train_labels, split.train_labels])
    classifier.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, shuffle=True,
                   verbose=0, callbacks=[_EpochLines(report, "image")])
    predicted = np.argmax(classifier.predict(holdout_x, verbose=0), axis=1)
    accuracy = float(np.mean(predicted == split.holdout_labels))
    majority = float(np.bincount(split.holdout_labels).max() / len(split.holdout_labels))
    metrics = {"holdout_accuracy": accuracy, "holdout_majority_class": majority,
               "chance": 1.0 / len(split.classes), "holdout_photos": len(split.holdout_files),
               "train_photos": len(split.train_files), "epochs": epochs}
    report(f"image: held-out accuracy {accuracy:.3f} (majority class {majority:.3f}, "
           f"chance {1.0 / len(split.classes):.3f})")
    manifest = {"kind": IMAGE, "architecture": architecture, "metrics": metrics,
                "source": {"photos": os.path.abspath(photos_dir), "classes": split.classes,
                           "holdout_fraction": holdout_fraction, "seed": seed}}
    _save(encoder, out_dir, manifest)
    return manifest


# ---- text -----------------------------------------------------------------------------------
def tokenize_texts(texts: Sequence[str]) -> List[List[str]]:
    """Tokens of each text, by Transform's own tokenisation (`transform.tokenize`)."""
    if not texts:
        return []
    tokens = transform.tokenize(tf.constant(list(texts)), tf.constant([""] * len(texts)))
    return [[t.decode("utf-8") for t in row] for row in tokens.to_list()]


def build_vocabulary(token_lists: Sequence[Sequence[str]], size: int,
                     min_frequency: int = 1) -> List[str]:
    """The `size` most frequent tokens (ties: lexical order) seen >= min_frequency times."""
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [token for token, count in ranked if count >= min_frequency][:size]


def _encode(token_lists: Sequence[Sequence[str]], vocabulary: Sequence[str],
            max_tokens: int) -> np.ndarray:
    """[n, max_tokens] ids: token = vocabulary position + 1, unknown = len + 1, 0 = pad."""
    index = {token: i + 1 for i, token in enumerate(vocabulary)}
    oov = len(vocabulary) + 1
    ids = np.zeros([len(token_lists), max_tokens], np.int64)
    for row, tokens in enumerate(token_lists):
        values = [index.get(t, oov) for t in tokens[:max_tokens]]
        ids[row, :len(values)] = values
    return ids


def mask_tokens(ids: np.ndarray, mask_id: int, rng: np.random.Generator,
                rate: float = MASK_RATE) -> Tuple[np.ndarray, np.ndarray]:
    """(inputs with [MASK] at the chosen positions, 0/1 weights of those positions): each
    in-vocabulary token (1 .. mask_id - 2) with probability `rate`, and at least one per row
    that has one. Out-of-vocabulary tokens are never targets: predicting "unknown" teaches
    nothing."""
    real = (ids > 0) & (ids < mask_id - 1)
    chosen = (rng.random(ids.shape) < rate) & real
    for row in np.flatnonzero(real.any(axis=1) & ~chosen.any(axis=1)):
        chosen[row, rng.choice(np.flatnonzero(real[row]))] = True
    return np.where(chosen, mask_id, ids), chosen.astype(np.float32)


class _MaskedLanguageModel(_PretrainingModel):
    """TextEncoder's per-token states (its embeddings and blocks; the encoder pools them,
    MLM needs them per position) -> logits over the vocabulary."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = tf.keras.layers.Dense(encoder.vocab_size)

    def call(self, token_ids: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        encoder = self.encoder
        token_mask = tf.not_equal(token_ids, 0)
        states = (encoder.token_embedding(token_ids)
                  + encoder.position_embedding(tf.range(tf.shape(token_ids)[1])))
        for block in encoder.blocks:
            states = block(states, token_mask, training=training)
        return self.head(states)


def pretrain_text(texts: Sequence[str], out_dir: str, model_config: config_lib.ModelConfig,
                  max_tokens: int, vocab_size: int, epochs: int = 10, batch_size: int = 64,
                  learning_rate: float = 3e-3, holdout_fraction: float = 0.1,
                  min_frequency: int = 1, seed: int = 42, source: Optional[Dict] = None,
                  report: Callable[[str], None] = _quiet) -> Dict[str, Any]:
    """Masked-token pretraining of TextEncoder(text_* sizes of model_config) on `texts`
    (distinct texts; a seeded holdout of them), saves encoder + vocabulary to out_dir;
    returns the manifest (held-out masked accuracy and the most-frequent-token baseline)."""
    texts = sorted(set(t for t in texts if t and t.strip()))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    n_holdout = max(1, int(round(holdout_fraction * len(texts))))
    holdout_texts = [texts[i] for i in order[:n_holdout]]
    train_texts = [texts[i] for i in order[n_holdout:]]
    if len(train_texts) < 2:
        raise PretrainedEncoderError(f"text pretraining needs more texts, got {len(texts)}")
    train_tokens = tokenize_texts(train_texts)
    vocabulary = build_vocabulary(train_tokens, vocab_size, min_frequency)
    oov_id, mask_id = len(vocabulary) + 1, len(vocabulary) + 2
    report(f"texts: {len(train_texts)} train, {len(holdout_texts)} held out; "
           f"vocabulary {len(vocabulary)} tokens")
    train_ids = _encode(train_tokens, vocabulary, max_tokens)
    holdout_ids = _encode(tokenize_texts(holdout_texts), vocabulary, max_tokens)
    # A fresh masking each epoch (seeded); the holdout's masking is fixed.
    holdout_inputs, holdout_weights = mask_tokens(holdout_ids, mask_id, rng)

    tf.keras.utils.set_random_seed(seed)
    architecture = text_architecture(model_config, max_tokens)
    encoder = _text_encoder(architecture, len(vocabulary) + 3, model_config.dropout)
    mlm = _MaskedLanguageModel(encoder)
    mlm.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                weighted_metrics=["accuracy"])
    lines = _EpochLines(report, "text")
    for epoch in range(epochs):
        inputs, weights = mask_tokens(train_ids, mask_id, rng)
        history = mlm.fit(inputs, train_ids, sample_weight=weights, batch_size=batch_size,
                          epochs=1, shuffle=True, verbose=0)
        lines.params = {"epochs": epochs}
        lines.on_epoch_end(epoch, {k: v[-1] for k, v in history.history.items()})
    logits = mlm.predict(holdout_inputs, batch_size=256, verbose=0)
    masked = holdout_weights > 0
    accuracy = float(np.mean(np.argmax(logits, axis=-1)[masked] == holdout_ids[masked]))
    # Baseline: always predict the train split's most frequent (in-vocabulary) token.
    train_counts = np.bincount(train_ids[(train_ids > 0) & (train_ids < oov_id)],
                               minlength=oov_id)
    most_frequent = int(np.argmax(train_counts))
    baseline = float(np.mean(holdout_ids[masked] == most_frequent))
    metrics = {"holdout_masked_accuracy": accuracy, "most_frequent_token_accuracy": baseline,
               "most_frequent_token": vocabulary[most_frequent - 1],
               "holdout_masked_tokens": int(masked.sum()), "train_texts": len(train_texts),
               "holdout_texts": len(holdout_texts), "epochs": epochs}
    report(f"text: held-out masked-token accuracy {accuracy:.3f} (most frequent token "
           f"{baseline:.3f})")
    manifest = {"kind": TEXT, "architecture": architecture, "vocabulary": VOCABULARY,
                "special_ids": {"padding": 0, "oov": oov_id, "mask": mask_id},
                "vocab_size": len(vocabulary) + 3, "metrics": metrics,
                "source": {**(source or {}), "mask_rate": MASK_RATE, "seed": seed,
                           "holdout_fraction": holdout_fraction,
                           "tokenizer": "components.transform.tokenize"}}
    _save(encoder, out_dir, manifest, vocabulary)
    return manifest


# ---- locating and reading -------------------------------------------------------------------
def is_keras_model(location: str) -> bool:
    """A .keras/.h5 file or a SavedModel directory (rather than a `hyperrec pretrain` one)."""
    return location.endswith(KERAS_SUFFIXES) or (
        tf.io.gfile.exists(os.path.join(location, SAVED_MODEL))
        and not tf.io.gfile.exists(os.path.join(location, MANIFEST)))


def resolve(location: str, cache_dir: str = "") -> str:
    """A local / gs:// path for `location`: a directory with manifest.json, or a Keras model
    (`is_keras_model`). http(s) files are downloaded (once) into
    cache_dir/hyperrec_pretrained/<url hash>, archives unpacked there."""
    if location.startswith(("http://", "https://")):
        digest = hashlib.sha256(location.encode()).hexdigest()[:16]
        subdir = os.path.join("hyperrec_pretrained", digest)
        name = os.path.basename(location.split("?")[0]) or "encoder.tar.gz"
        keras_file = name.endswith(KERAS_SUFFIXES)
        try:
            downloaded = tf.keras.utils.get_file(name, origin=location, extract=not keras_file,
                                                 cache_dir=cache_dir or None,
                                                 cache_subdir=subdir)
        except Exception as error:  # get_file raises a bare Exception for URL failures
            raise PretrainedEncoderDownloadError(
                f"could not download pretrained encoder {location}: {error}") from error
        if keras_file:
            return downloaded
        directory = os.path.dirname(downloaded)
        for marker in (MANIFEST, SAVED_MODEL):
            found = ([directory] if tf.io.gfile.exists(os.path.join(directory, marker)) else
                     [os.path.dirname(p)
                      for p in tf.io.gfile.glob(os.path.join(directory, "*", marker))])
            if len(found) == 1:
                return found[0]
        raise PretrainedEncoderDownloadError(
            f"{location} is not a .tar.gz/.zip of a pretrained encoder directory (no "
            f"{MANIFEST} or {SAVED_MODEL} inside)")
    if is_keras_model(location) and tf.io.gfile.exists(location):
        return location
    if not tf.io.gfile.exists(os.path.join(location, MANIFEST)):
        raise PretrainedEncoderNotFound(
            f"no pretrained encoder at {location!r} (neither {MANIFEST}, written by "
            f"`hyperrec pretrain`, nor a Keras model: {'/'.join(KERAS_SUFFIXES)} or "
            f"{SAVED_MODEL})")
    return location


def _keras_encoder(path: str, kind: str) -> tf.keras.layers.Layer:
    """The one ImageEncoder / TextEncoder layer of the Keras model at `path`."""
    layer_class = ImageEncoder if kind == IMAGE else TextEncoder
    try:
        model = tf.keras.models.load_model(
            path, compile=False,
            custom_objects={cls.__name__: cls for cls in (ImageEncoder, ResidualSeparableBlock,
                                                          TextEncoder, TransformerBlock)})
    except Exception as error:  # Keras raises many types for an unreadable model
        raise InvalidPretrainedEncoder(
            f"{path} does not load as a Keras model: {error}") from error
    found = {id(m): m for m in [model, *model.submodules] if isinstance(m, layer_class)}
    if len(found) != 1:
        raise InvalidPretrainedEncoder(
            f"the Keras model at {path} has {len(found)} {layer_class.__name__} layers; a "
            f"pretrained {kind} encoder needs exactly one")
    return next(iter(found.values()))


def _canonical(layer: tf.keras.layers.Layer, fresh: tf.keras.layers.Layer,
               location: str) -> tf.keras.layers.Layer:
    """`fresh` (built, same architecture) holding `layer`'s weights. Through a checkpoint,
    which matches variables by the layers' attribute structure: a layer revived from a
    SavedModel lists its weights in another order than one built by calling it."""
    with tempfile.TemporaryDirectory() as scratch:
        tf.train.Checkpoint(encoder=layer).write(os.path.join(scratch, WEIGHTS))
        try:
            _restore(fresh, scratch)
        except InvalidPretrainedEncoder as error:
            raise InvalidPretrainedEncoder(f"{location}: {error}") from error
    return fresh


def _keras_vocabulary(path: str) -> List[str]:
    """vocab.txt beside a .keras model file."""
    folder = os.path.dirname(path)
    if tf.io.gfile.exists(os.path.join(folder, VOCABULARY)):
        return read_vocabulary(folder)
    raise InvalidPretrainedEncoder(
        f"a text encoder from the Keras model {path} needs its vocabulary: {VOCABULARY} "
        f"beside it (one token a line, id = line + 1)")


def read_manifest(directory: str, kind: str) -> Dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(directory, MANIFEST)) as f:
        try:
            manifest = json.loads(f.read())
        except json.JSONDecodeError as error:
            raise InvalidPretrainedEncoder(f"{directory}/{MANIFEST}: {error}") from error
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidPretrainedEncoder(
            f"{directory}/{MANIFEST} is not a {FORMAT} v{FORMAT_VERSION} manifest")
    if manifest.get("kind") != kind:
        raise ArchitectureMismatch(kind, directory, {"kind": (manifest.get("kind"), kind)})
    return manifest


def _check_architecture(kind: str, location: str, saved: Dict[str, Any],
                        expected: Dict[str, Any]) -> None:
    differ = {name: (saved.get(name), value) for name, value in expected.items()
              if saved.get(name) != value}
    if differ:
        raise ArchitectureMismatch(kind, location, differ)


def _restore(encoder: tf.keras.layers.Layer, directory: str) -> None:
    try:
        tf.train.Checkpoint(encoder=encoder).read(
            os.path.join(directory, WEIGHTS)).assert_consumed()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise InvalidPretrainedEncoder(
            f"weights of {directory} do not restore into its manifest's architecture: "
            f"{error}") from error


def read_vocabulary(directory: str) -> List[str]:
    with tf.io.gfile.GFile(os.path.join(directory, VOCABULARY)) as f:
        return f.read().split("\n")[:-1]


def token_row_map(pretrained_vocabulary: Sequence[str], oov_id: int,
                  target_vocabulary: Sequence[str], num_oov_buckets: int,
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """(target rows, pretrained rows) to copy: padding 0 -> 0, every token of both
    vocabularies (ids = position + 1 on both sides), and each of Transform's OOV buckets
    (ids len(target) + 1 ..) from the pretrained OOV row."""
    pretrained = {token: i + 1 for i, token in enumerate(pretrained_vocabulary)}
    pairs = [(0, 0)]
    pairs += [(i + 1, pretrained[token]) for i, token in enumerate(target_vocabulary)
              if token in pretrained]
    pairs += [(len(target_vocabulary) + 1 + b, oov_id) for b in range(num_oov_buckets)]
    target_rows, source_rows = zip(*pairs)
    return np.asarray(target_rows, np.int64), np.asarray(source_rows, np.int64)


def _copy(source: tf.keras.layers.Layer, target: tf.keras.layers.Layer,
          remap: Optional[Tuple[tf.Variable, np.ndarray, np.ndarray]] = None) -> None:
    """Assigns source's weights to target's (same class, same order), the `remap`ped
    variable row by row."""
    if len(source.weights) != len(target.weights):
        raise InvalidPretrainedEncoder(
            f"{len(source.weights)} saved weights vs {len(target.weights)} in the model")
    for saved, variable in zip(source.weights, target.weights):
        if remap is not None and variable is remap[0]:
            rows = variable.numpy()
            rows[remap[1]] = saved.numpy()[remap[2]]
            variable.assign(rows)
            continue
        if saved.shape != variable.shape:
            raise InvalidPretrainedEncoder(
                f"weight {variable.name}: saved shape {saved.shape} vs {variable.shape}")
        variable.assign(saved)


# ---- loading into a model -------------------------------------------------------------------
@dataclasses.dataclass
class LoadedEncoders:
    """What was loaded: the encoder layers and, per kind, the manifest and (text) how many
    Transform tokens got a pretrained row."""

    layers: List[tf.keras.layers.Layer]
    manifests: Dict[str, Dict[str, Any]]
    tokens_copied: int = 0


def load_image_encoder(encoder: ImageEncoder, location: str, model_config: config_lib.ModelConfig,
                       image_size: int, cache_dir: str = "") -> Dict[str, Any]:
    """Loads a pretrained image encoder into `encoder` (built here if it is not)."""
    directory = resolve(location, cache_dir)
    expected = image_architecture(model_config, image_size)
    if is_keras_model(directory):
        layer = _keras_encoder(directory, IMAGE)
        # The CNN's weights do not depend on the input size: a Keras model records none.
        architecture = {**expected, "filters": list(layer.filters),
                        "output_dim": layer.output_dim}
        _check_architecture(IMAGE, location, architecture, expected)
        source = _canonical(layer, _image_encoder(expected), location)
        manifest = {"kind": IMAGE, "architecture": architecture,
                    "source": {"keras_model": location}}
    else:
        manifest = read_manifest(directory, IMAGE)
        _check_architecture(IMAGE, location, manifest.get("architecture", {}), expected)
        source = _image_encoder(expected)
        _restore(source, directory)
    if not encoder.built:
        build_encoder(encoder, image_size=image_size)
    _copy(source, encoder)
    return manifest


def load_text_encoder(encoder: TextEncoder, location: str, model_config: config_lib.ModelConfig,
                      max_tokens: int, vocabulary: Sequence[str], num_oov_buckets: int,
                      cache_dir: str = "") -> Tuple[Dict[str, Any], int]:
    """Loads a pretrained text encoder into `encoder`, mapping token rows by string from the
    pretrained vocabulary to `vocabulary` (Transform's, ids = position + 1). Returns the
    manifest and how many of `vocabulary`'s tokens got a pretrained row."""
    directory = resolve(location, cache_dir)
    expected = text_architecture(model_config, max_tokens)
    if is_keras_model(directory):
        if not directory.endswith(KERAS_SUFFIXES):
            raise InvalidPretrainedEncoder(
                f"{location}: a text encoder loads from a .keras file or a `hyperrec pretrain` "
                f"directory, not a SavedModel (tf_keras does not revive its attention "
                f"weights faithfully)")
        layer = _keras_encoder(directory, TEXT)
        architecture = {name: layer.get_config()[name] for name in expected}
        _check_architecture(TEXT, location, architecture, expected)
        pretrained_vocabulary = _keras_vocabulary(directory)
        # Padding, the tokens, then (at least) the OOV row.
        if layer.vocab_size < len(pretrained_vocabulary) + 2:
            raise InvalidPretrainedEncoder(
                f"{location}: its token table has {layer.vocab_size} rows, fewer than "
                f"padding + {len(pretrained_vocabulary)} tokens + an OOV row")
        source = _canonical(layer, _text_encoder(architecture, layer.vocab_size), location)
        manifest = {"kind": TEXT, "architecture": architecture,
                    "vocab_size": layer.vocab_size,
                    "special_ids": {"padding": 0, "oov": len(pretrained_vocabulary) + 1},
                    "source": {"keras_model": location}}
    else:
        manifest = read_manifest(directory, TEXT)
        _check_architecture(TEXT, location, manifest.get("architecture", {}), expected)
        pretrained_vocabulary = read_vocabulary(directory)
        if manifest.get("vocab_size") != len(pretrained_vocabulary) + 3:
            raise InvalidPretrainedEncoder(f"{directory}: {VOCABULARY} has "
                                           f"{len(pretrained_vocabulary)} tokens, the manifest "
                                           f"says a table of {manifest.get('vocab_size')} rows")
        source = _text_encoder(manifest["architecture"], manifest["vocab_size"])
        _restore(source, directory)
    if not encoder.built:
        build_encoder(encoder, max_tokens=max_tokens)
    if encoder.vocab_size != 1 + len(vocabulary) + num_oov_buckets:
        raise InvalidPretrainedEncoder(
            f"the model's token table has {encoder.vocab_size} rows, the Transform vocabulary "
            f"{len(vocabulary)} tokens + {num_oov_buckets} OOV buckets + padding")
    target_rows, source_rows = token_row_map(pretrained_vocabulary,
                                             manifest["special_ids"]["oov"], vocabulary,
                                             num_oov_buckets)
    _copy(source, encoder, (encoder.token_embedding.embeddings, target_rows, source_rows))
    return manifest, len(target_rows) - 1 - num_oov_buckets


def load_pretrained_encoders(item_tower: tf.keras.layers.Layer,
                             model_config: config_lib.ModelConfig, image_size: int,
                             max_tokens: int, text_vocabulary: Optional[Sequence[str]],
                             num_oov_buckets: int) -> LoadedEncoders:
    """Loads the model_config.pretrained encoders into the item tower's `image_encoder` /
    `text_encoder` and freezes them in mode frozen. Call in the strategy's scope, after the
    towers are built and before compiling; text_vocabulary: Transform's TEXT_VOCAB tokens."""
    settings = model_config.pretrained
    loaded = LoadedEncoders([], {})
    if not (settings.image or settings.text):
        return loaded
    if not model_config.use_content:
        raise PretrainedEncoderError("model.pretrained encoders need model.use_content=true "
                                     "(an id-only item tower has no image or text encoder)")
    if settings.image:
        loaded.manifests[IMAGE] = load_image_encoder(
            item_tower.image_encoder, settings.image, model_config, image_size,
            settings.cache_dir)
        loaded.layers.append(item_tower.image_encoder)
    if settings.text:
        loaded.manifests[TEXT], loaded.tokens_copied = load_text_encoder(
            item_tower.text_encoder, settings.text, model_config, max_tokens,
            list(text_vocabulary or []), num_oov_buckets, settings.cache_dir)
        loaded.layers.append(item_tower.text_encoder)
    if settings.mode == "frozen":
        for layer in loaded.layers:
            layer.trainable = False
    return loaded


def decode_vocabulary(tokens: Sequence[Any]) -> List[str]:
    """tft_output.vocabulary_by_name gives bytes; the pretrained vocabulary is text."""
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in tokens]

