"""Image pretraining: the project's own `ImageEncoder` plus a softmax head, trained to classify
photos in a folder of class subfolders (`pretrain_image`).

Photos are decoded like the tower decodes its PNGs (decode_png_batch): any JPEG/PNG -> float
pixels in [0, 1] -> resized to `image_size`, so the encoder sees the same pixel range in both
places.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from hyperrec.components import config as config_lib
from hyperrec.components.model.image_encoder import ImageEncoder
from hyperrec.components.pretraining.saved_format import (IMAGE, PhotoFolderError,
                                                          image_architecture,
                                                          new_image_encoder, save_encoder)
from hyperrec.components.pretraining.training import EpochLines, PretrainingModel, quiet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


class _Classifier(PretrainingModel):
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
                   seed: int = 42, report: Callable[[str], None] = quiet) -> Dict[str, Any]:
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
    encoder = new_image_encoder(architecture)
    classifier = _Classifier(encoder, len(split.classes))
    classifier.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                       loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    # Mirrored copies double the few photos; the flip is a fixed, seed-free augmentation.
    train_x = np.concatenate([train_x, train_x[:, :, ::-1, :]])
    train_y = np.concatenate([split.train_labels, split.train_labels])
    classifier.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, shuffle=True,
                   verbose=0, callbacks=[EpochLines(report, "image")])
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
    save_encoder(encoder, out_dir, manifest)
    return manifest
