"""Image side of the item tower: PNG bytes -> pixels + mask -> a small residual CNN.

Images arrive as the raw PNG bytes of the tf.Example (Transform passes them through), so the
serving graph takes the same bytes as training. Decoding happens per example with
`tf.map_fn`; empty (missing/corrupt, as ExampleGen writes them) or non-PNG bytes decode to a
black image AND a 0 in the mask, so the tower can tell "no image" from "a black image".
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import tensorflow as tf

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png_batch(image_bytes: tf.Tensor, image_size: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Decodes a [batch] string tensor of PNG bytes.

    Returns pixels float32 [batch, image_size, image_size, 3] in [0, 1] and mask float32
    [batch] (1 = decoded image, 0 = missing). Images of another size are resized, so a
    stray size never breaks serving.
    """
    image_bytes = tf.reshape(image_bytes, [-1])
    is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_SIGNATURE)), _PNG_SIGNATURE)

    def decode_one(args: Tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        data, valid = args

        def decode() -> tf.Tensor:
            pixels = tf.io.decode_png(data, channels=3)
            pixels = tf.image.convert_image_dtype(pixels, tf.float32)
            return tf.image.resize(pixels, [image_size, image_size])

        return tf.cond(valid, decode,
                       lambda: tf.zeros([image_size, image_size, 3], tf.float32))

    pixels = tf.map_fn(
        decode_one, (image_bytes, is_png),
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))
    return pixels, tf.cast(is_png, tf.float32)


# Product photos are shot on a light background: a pixel whose darkest channel is above this
# is background, the rest is the product.
_BACKGROUND_MIN_CHANNEL = 0.8
# A fixed palette: the 27 points of a 3x3x3 grid over the RGB cube, and the width of the
# Gaussian soft assignment of a colour to them (about a third of the grid spacing).
_PALETTE = [[r, g, b] for r in (0.2, 0.5, 0.8) for g in (0.2, 0.5, 0.8) for b in (0.2, 0.5, 0.8)]
_PALETTE_SIGMA = 0.15
COLOUR_SIGNATURE_DIM = len(_PALETTE)


def colour_signature(pixels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """[batch, 27]: the product's mean colour, softly binned into a fixed 27-colour palette
    (unit length; zeros without an image).

    A fixed (not learned) colour histogram in the manner of content-based image retrieval.
    Soft bins, not raw RGB, so that a sum over several items counts colours instead of
    blending them (red + blue is not purple). It is cheap enough to precompute for every
    catalogue item, which lets the query tower compare the colours of a user's recent items
    with a candidate's (model/item_content.py) without running the CNN on history items.
    """
    foreground = tf.cast(tf.reduce_min(pixels, axis=-1, keepdims=True)
                         < _BACKGROUND_MIN_CHANNEL, pixels.dtype)
    mean = tf.math.divide_no_nan(tf.reduce_sum(pixels * foreground, axis=[1, 2]),
                                 tf.reduce_sum(foreground, axis=[1, 2]))  # [batch, 3]
    distances = tf.reduce_sum(
        tf.square(mean[:, tf.newaxis, :] - tf.constant(_PALETTE, pixels.dtype)), axis=-1)
    bins = tf.math.l2_normalize(tf.exp(-distances / (2 * _PALETTE_SIGMA ** 2)), axis=-1)
    return bins * mask[:, tf.newaxis]


class ResidualSeparableBlock(tf.keras.layers.Layer):
    """Two depthwise-separable 3x3 convolutions with a residual shortcut, then 2x pooling.

    The shortcut is a 1x1 projection when the channel count changes. LayerNormalization over
    channels (not BatchNorm) keeps each example's output independent of its batch.
    """

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.conv_a = tf.keras.layers.SeparableConv2D(filters, 3, padding="same")
        self.conv_b = tf.keras.layers.SeparableConv2D(filters, 3, padding="same")
        self.norm = tf.keras.layers.LayerNormalization()
        self.projection = None
        self.pool = tf.keras.layers.MaxPooling2D(2, padding="same")

    def build(self, input_shape: tf.TensorShape) -> None:
        if input_shape[-1] != self.filters:
            self.projection = tf.keras.layers.Conv2D(self.filters, 1)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        hidden = tf.nn.relu(self.conv_a(inputs))
        hidden = self.conv_b(hidden)
        shortcut = self.projection(inputs) if self.projection is not None else inputs
        return self.pool(tf.nn.relu(self.norm(hidden + shortcut)))

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "filters": self.filters}


class ImageEncoder(tf.keras.layers.Layer):
    """CNN image encoder: stem conv, one residual separable block per filter count, global
    average pooling, a dense projection to `output_dim`.

    Call with (pixels [batch, H, W, 3], mask [batch]); masked-out rows come back as zeros so
    a missing image contributes nothing (the tower adds its learned "missing image" vector).
    """

    def __init__(self, filters: Sequence[int], output_dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.output_dim = output_dim
        self.stem = tf.keras.layers.Conv2D(self.filters[0], 3, padding="same",
                                           activation="relu")
        self.blocks = [ResidualSeparableBlock(f) for f in self.filters]
        self.pool = tf.keras.layers.GlobalAveragePooling2D()
        self.projection = tf.keras.layers.Dense(output_dim)

    def call(self, inputs: Tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        pixels, mask = inputs
        hidden = self.stem(pixels * 2.0 - 1.0)  # centre [0, 1] pixels
        for block in self.blocks:
            hidden = block(hidden)
        return self.projection(self.pool(hidden)) * mask[:, tf.newaxis]

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "filters": list(self.filters),
                "output_dim": self.output_dim}
