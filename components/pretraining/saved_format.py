"""The saved format of a pretrained encoder: its manifest, weights and vocabulary, and the
architecture an encoder must share with the model to be loaded into it.

A directory (a URL points to a .tar.gz or .zip of it):

    manifest.json   {"format": FORMAT, "format_version": 1, "kind": "image" | "text",
                     "architecture": {...}, "weights": "weights", "vocabulary": "vocab.txt"
                     (text only), "special_ids": {...} (text only), "metrics": {...},
                     "source": {...}}
    weights.index, weights.data-*   a TensorFlow object-based checkpoint of the encoder
                     layer alone (tf.train.Checkpoint(encoder=...)), matched by structure,
                     not by variable names, so a layer's name inside a model does not matter
    vocab.txt       text only: one token a line; token id = line number + 1 (0 = padding),
                     then one out-of-vocabulary id and the [MASK] id
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components.model.image_encoder import ImageEncoder
from hyperrec.components.model.text_encoder import TextEncoder

FORMAT = "hyperrec-pretrained-encoder"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights"  # checkpoint prefix inside the directory
VOCABULARY = "vocab.txt"
IMAGE, TEXT = "image", "text"


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


def new_image_encoder(architecture: Dict[str, Any]) -> ImageEncoder:
    encoder = ImageEncoder(architecture["filters"], architecture["output_dim"], name=IMAGE)
    build_encoder(encoder, image_size=architecture["image_size"])
    return encoder


def new_text_encoder(architecture: Dict[str, Any], vocab_size: int,
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


def save_encoder(encoder: tf.keras.layers.Layer, out_dir: str, manifest: Dict[str, Any],
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


def check_architecture(kind: str, location: str, saved: Dict[str, Any],
                        expected: Dict[str, Any]) -> None:
    differ = {name: (saved.get(name), value) for name, value in expected.items()
              if saved.get(name) != value}
    if differ:
        raise ArchitectureMismatch(kind, location, differ)


def restore_encoder(encoder: tf.keras.layers.Layer, directory: str) -> None:
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
