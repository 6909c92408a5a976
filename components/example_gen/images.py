"""Image normalisation: every catalogue image is decoded, validated and re-encoded once.

Downstream stages (statistics, Transform, the model, serving) then see one format only: a
square RGB PNG of the configured size, or empty bytes with a status saying why.
"""
from __future__ import annotations

import io
import os
from typing import Tuple

from PIL import Image, UnidentifiedImageError

from hyperrec.components import features

STATUS_OK, STATUS_MISSING, STATUS_CORRUPT = features.IMAGE_STATUSES

# A decompression bomb is a corrupt image, not a reason to exhaust a worker's memory.
MAX_SOURCE_PIXELS = 40_000_000


def _read(path: str) -> bytes:
    # tf.io.gfile reads gs://, s3:// and local paths alike; imported lazily (worker start-up).
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def normalise_image_bytes(raw: bytes, size: int) -> Tuple[bytes, str]:
    """Decodes `raw`, centre-crops to a square, resizes to `size` and re-encodes as PNG.

    Returns (png_bytes, status); png_bytes is b"" unless status is "ok".
    """
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_SOURCE_PIXELS:
                return b"", STATUS_CORRUPT
            img.load()  # forces a full decode: truncated files fail here, not later
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return b"", STATUS_CORRUPT
    side = min(rgb.width, rgb.height)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    resized = square.resize((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    resized.save(out, format="PNG", optimize=False)
    return out.getvalue(), STATUS_OK


def load_normalised_image(data_root: str, reference: str, size: int) -> Tuple[bytes, str]:
    """Normalises the image an item row references (a path relative to the data root, or a URI).

    An empty reference or an unreadable file is "missing"; undecodable bytes are "corrupt".
    """
    if not reference:
        return b"", STATUS_MISSING
    path = reference if "://" in reference or os.path.isabs(reference) else os.path.join(
        data_root, reference)
    try:
        raw = _read(path)
    except Exception:  # NotFoundError, PermissionDenied, ... : the bytes are not there
        return b"", STATUS_MISSING
    return normalise_image_bytes(raw, size)
