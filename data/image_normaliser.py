"""Image normalisation: every catalogue image is decoded, validated and re-encoded once.

Downstream stages (statistics, Transform, the model, serving) then see one format only: a
square RGB PNG of the configured size, or empty bytes with a status saying why.
"""
from __future__ import annotations

import io
import os
import warnings
from typing import Tuple

from PIL import Image, UnidentifiedImageError

from hyperrec.schemas import features

STATUS_OK, STATUS_MISSING, STATUS_CORRUPT = features.IMAGE_STATUSES
# Outcome (report counter suffix) of an image over the decode budget that cannot be reduced
# while decoding; its status is "missing": the model masks it like an absent image.
OUTCOME_TOO_LARGE = "too_large"

# Decode budget: a full decode holds width * height * 4 bytes (160 MB here) plus a copy or
# two while cropping. JPEGs above it are decoded at 1/2..1/8 scale (DCT scaling, PIL's
# draft), so they never occupy full size; other formats above it are skipped, never decoded.
MAX_DECODE_PIXELS = 40_000_000


class _TooLarge(Exception):
    pass


def _read(path: str) -> bytes:
    # tf.io.gfile reads gs://, s3:// and local paths alike; imported lazily (worker start-up).
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _decode_rgb(raw: bytes, size: int) -> Image.Image:
    with warnings.catch_warnings():
        # Our own budget decides below; PIL's warning above its 89 MP default is noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(raw))
    with img:
        if img.width * img.height > MAX_DECODE_PIXELS:
            # Only JPEG can decode smaller than its size; draft is a no-op elsewhere.
            img.draft("RGB", (size, size))
            if img.width * img.height > MAX_DECODE_PIXELS:
                raise _TooLarge()
        img.load()  # forces a full decode: truncated files fail here, not later
        return img.convert("RGB")


def normalise(raw: bytes, size: int) -> Tuple[bytes, str, str]:
    """Decodes `raw`, centre-crops to a square, resizes to `size` and re-encodes as PNG.

    Returns (png_bytes, status, outcome): png_bytes is b"" unless status is "ok"; outcome is
    the status, or "too_large" for an image over the decode budget (status "missing").
    """
    try:
        rgb = _decode_rgb(raw, size)
    except (_TooLarge, Image.DecompressionBombError):
        # PIL refuses to even open beyond twice its pixel limit: too large, not corrupt.
        return b"", STATUS_MISSING, OUTCOME_TOO_LARGE
    except (UnidentifiedImageError, OSError, ValueError):
        return b"", STATUS_CORRUPT, STATUS_CORRUPT
    side = min(rgb.width, rgb.height)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    resized = square.resize((size, size), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    resized.save(out, format="PNG", optimize=False)
    return out.getvalue(), STATUS_OK, STATUS_OK


def normalise_image_bytes(raw: bytes, size: int) -> Tuple[bytes, str]:
    """(png_bytes, status) of `normalise`."""
    return normalise(raw, size)[:2]


def load_image(data_root: str, reference: str, size: int) -> Tuple[bytes, str, str]:
    """Normalises the image an item row references (a path relative to the data root, or a URI).

    An empty reference or an unreadable file is "missing"; undecodable bytes are "corrupt".
    Returns (png_bytes, status, outcome) as `normalise`.
    """
    if not reference:
        return b"", STATUS_MISSING, STATUS_MISSING
    path = reference if "://" in reference or os.path.isabs(reference) else os.path.join(
        data_root, reference)
    try:
        raw = _read(path)
    except Exception:  # NotFoundError, PermissionDenied, ... : the bytes are not there
        return b"", STATUS_MISSING, STATUS_MISSING
    return normalise(raw, size)


def load_normalised_image(data_root: str, reference: str, size: int) -> Tuple[bytes, str]:
    """(png_bytes, status) of `load_image`."""
    return load_image(data_root, reference, size)[:2]
