"""Loading pretrained encoders into the Trainer's model (`load_pretrained_encoders`, called by
the Trainer's build_model after the towers exist).

A location is a `hyperrec pretrain` directory (saved_format.py), or a Keras model: a `.keras`
file or (image only) a Keras SavedModel directory (`saved_model.pb`), local, gs:// or an
http(s) URL (a file, or a .tar.gz/.zip of the directory), holding exactly one of the
project's `ImageEncoder` / `TextEncoder` layers (e.g. a classifier built around it). Its
architecture is read from the layer; a text encoder's vocabulary is the `vocab.txt` beside
the file, with the same id convention as the saved format (the row after the last token is
the OOV row). Text from a SavedModel is refused: tf_keras revives the MultiHeadAttention of
a custom layer from a SavedModel with other weights than it saved (the revived encoder
computes other outputs), a `.keras` file is exact.

Loading checks the architecture field by field (a mismatch is `ArchitectureMismatch` naming
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

import dataclasses
import hashlib
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components.model.image_encoder import ImageEncoder, ResidualSeparableBlock
from hyperrec.components.model.text_encoder import TextEncoder, TransformerBlock
from hyperrec.components.pretraining.saved_format import (
    IMAGE, MANIFEST, TEXT, VOCABULARY, WEIGHTS, InvalidPretrainedEncoder,
    PretrainedEncoderDownloadError, PretrainedEncoderError, PretrainedEncoderNotFound,
    build_encoder, check_architecture, image_architecture, new_image_encoder,
    new_text_encoder, read_manifest, read_vocabulary, restore_encoder, text_architecture)

KERAS_SUFFIXES = (".keras",)
SAVED_MODEL = "saved_model.pb"


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
            restore_encoder(fresh, scratch)
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
        check_architecture(IMAGE, location, architecture, expected)
        source = _canonical(layer, new_image_encoder(expected), location)
        manifest = {"kind": IMAGE, "architecture": architecture,
                    "source": {"keras_model": location}}
    else:
        manifest = read_manifest(directory, IMAGE)
        check_architecture(IMAGE, location, manifest.get("architecture", {}), expected)
        source = new_image_encoder(expected)
        restore_encoder(source, directory)
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
        check_architecture(TEXT, location, architecture, expected)
        pretrained_vocabulary = _keras_vocabulary(directory)
        # Padding, the tokens, then (at least) the OOV row.
        if layer.vocab_size < len(pretrained_vocabulary) + 2:
            raise InvalidPretrainedEncoder(
                f"{location}: its token table has {layer.vocab_size} rows, fewer than "
                f"padding + {len(pretrained_vocabulary)} tokens + an OOV row")
        source = _canonical(layer, new_text_encoder(architecture, layer.vocab_size), location)
        manifest = {"kind": TEXT, "architecture": architecture,
                    "vocab_size": layer.vocab_size,
                    "special_ids": {"padding": 0, "oov": len(pretrained_vocabulary) + 1},
                    "source": {"keras_model": location}}
    else:
        manifest = read_manifest(directory, TEXT)
        check_architecture(TEXT, location, manifest.get("architecture", {}), expected)
        pretrained_vocabulary = read_vocabulary(directory)
        if manifest.get("vocab_size") != len(pretrained_vocabulary) + 3:
            raise InvalidPretrainedEncoder(f"{directory}: {VOCABULARY} has "
                                           f"{len(pretrained_vocabulary)} tokens, the manifest "
                                           f"says a table of {manifest.get('vocab_size')} rows")
        source = new_text_encoder(manifest["architecture"], manifest["vocab_size"])
        restore_encoder(source, directory)
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
