"""Product images rendered from an item's latent attributes.

Each image is a flat "catalogue photo": a category-specific silhouette (a T-shirt, a dress, a
shoe in profile, ...) filled with the item's colour, textured with its pattern (stripes, dots
or checks in a contrasting shade of the same colour), on a light background. Small
deterministic jitter (position, scale, pattern phase and period, background tint, pixel noise)
keeps two items with equal attributes from having equal pixels, so a CNN has to learn the
shapes, colours and textures rather than memorise images.

Files are written without metadata (no timestamps, no EXIF, fixed encoder settings), so the
same item and seed always give the same bytes.
"""
from __future__ import annotations

import io
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from hyperrec.data.synthetic import attributes, streams

Point = Tuple[float, float]

# Silhouettes in unit coordinates (x right, y down) inside the item's bounding square.
# Each is a list of polygons; shapes that need ellipses are handled in _draw_silhouette.
SILHOUETTES: Dict[str, List[List[Point]]] = {
    "tops": [[(0.30, 0.10), (0.42, 0.10), (0.50, 0.18), (0.58, 0.10), (0.70, 0.10),
              (0.95, 0.30), (0.85, 0.44), (0.75, 0.36), (0.75, 0.92), (0.25, 0.92),
              (0.25, 0.36), (0.15, 0.44), (0.05, 0.30)]],
    "jackets": [[(0.32, 0.05), (0.68, 0.05), (0.85, 0.15), (0.98, 0.86), (0.86, 0.89),
                 (0.78, 0.40), (0.78, 0.96), (0.22, 0.96), (0.22, 0.40), (0.14, 0.89),
                 (0.02, 0.86), (0.15, 0.15)]],
    "dresses": [[(0.38, 0.04), (0.45, 0.04), (0.50, 0.12), (0.55, 0.04), (0.62, 0.04),
                 (0.64, 0.35), (0.60, 0.42), (0.90, 0.96), (0.10, 0.96), (0.40, 0.42),
                 (0.36, 0.35)]],
    "skirts": [[(0.30, 0.18), (0.70, 0.18), (0.92, 0.82), (0.08, 0.82)]],
    "trousers": [[(0.25, 0.04), (0.75, 0.04), (0.83, 0.96), (0.58, 0.96), (0.50, 0.36),
                  (0.42, 0.96), (0.17, 0.96)]],
    "shoes": [[(0.04, 0.52), (0.10, 0.32), (0.40, 0.32), (0.56, 0.48), (0.90, 0.56),
               (0.96, 0.68), (0.96, 0.78), (0.04, 0.78)]],
    "bags": [[(0.14, 0.38), (0.86, 0.38), (0.90, 0.92), (0.10, 0.92)]],
    "hats": [],  # dome and brim: ellipses
}


def _contrast_shade(rgb: Tuple[int, int, int]) -> Tuple[int, int, int]:
    """A darker shade for light colours, a lighter one for dark colours."""
    colour = np.asarray(rgb, dtype=np.float64)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    shade = colour * 0.55 if luminance > 110 else colour + (255.0 - colour) * 0.55
    return tuple(int(round(c)) for c in shade)


def _draw_silhouette(draw: ImageDraw.ImageDraw, category: str, box: Sequence[float]) -> None:
    """Fills the category's shape (value 255) into an "L" mask within box (x0, y0, side)."""
    x0, y0, side = box

    def to_pixels(points):
        return [(x0 + x * side, y0 + y * side) for x, y in points]

    for polygon in SILHOUETTES[category]:
        draw.polygon(to_pixels(polygon), fill=255)
    if category == "hats":
        draw.pieslice(to_pixels([(0.22, 0.22), (0.78, 0.90)]), 180, 360, fill=255)
        draw.ellipse(to_pixels([(0.04, 0.50), (0.96, 0.70)]), fill=255)
    elif category == "bags":
        # The handle: a thick arc above the body.
        draw.arc(to_pixels([(0.30, 0.10), (0.70, 0.62)]), 180, 360, fill=255,
                 width=max(2, int(side * 0.07)))


def _draw_details(draw: ImageDraw.ImageDraw, category: str, box: Sequence[float],
                  shade: Tuple[int, int, int]) -> None:
    """Category cues drawn in the contrast shade: a zip, a sole, a waistband, a hat band."""
    x0, y0, side = box
    line = max(1, int(side * 0.03))

    def at(x, y):
        return x0 + x * side, y0 + y * side

    if category == "jackets":
        draw.line([at(0.50, 0.08), at(0.50, 0.96)], fill=shade, width=line)
    elif category == "shoes":
        draw.rectangle([at(0.04, 0.78), at(0.96, 0.86)], fill=shade)
    elif category == "skirts":
        draw.rectangle([at(0.30, 0.18), at(0.70, 0.25)], fill=shade)
    elif category == "hats":
        draw.rectangle([at(0.23, 0.46), at(0.77, 0.53)], fill=shade)
    elif category == "trousers":
        draw.rectangle([at(0.25, 0.04), at(0.75, 0.10)], fill=shade)


def _pattern_mask(rng: np.random.Generator, pattern: str, width: int, height: int,
                  side: float) -> np.ndarray:
    """Where the contrast shade goes: True pixels form stripes, dots or checks."""
    if pattern == "solid":
        return np.zeros((height, width), dtype=bool)
    period = max(4.0, side * rng.uniform(0.11, 0.16))
    phase_x, phase_y = rng.uniform(0, period, size=2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    xs, ys = xs + phase_x, ys + phase_y
    if pattern == "stripes":
        direction = int(rng.integers(3))  # horizontal, vertical or diagonal
        coordinate = (ys, xs, (xs + ys) / np.sqrt(2.0))[direction]
        return (coordinate % period) < period / 2
    if pattern == "dots":
        dx = xs % period - period / 2
        dy = ys % period - period / 2
        return dx * dx + dy * dy < (period * 0.28) ** 2
    if pattern == "checks":
        half = period / 2
        return ((np.floor(xs / half) + np.floor(ys / half)) % 2) == 0
    raise ValueError(f"unknown pattern {pattern!r}")


def render(seed: int, item) -> Image.Image:
    """The item's image as an RGB Pillow image of the item's source size."""
    rng = streams.stream(seed, streams.ITEM_IMAGE, item.index)
    width, height = item.image_size
    base = np.asarray(attributes.COLOURS[item.colour], dtype=np.float64)
    shade = _contrast_shade(attributes.COLOURS[item.colour])

    # The silhouette's bounding square: most of the short side, jittered in scale and place.
    side = min(width, height) * rng.uniform(0.80, 0.95)
    x0 = (width - side) / 2 + rng.uniform(-0.06, 0.06) * side
    y0 = (height - side) / 2 + rng.uniform(-0.06, 0.06) * side
    box = (x0, y0, side)

    mask_image = Image.new("L", (width, height), 0)
    _draw_silhouette(ImageDraw.Draw(mask_image), item.category, box)
    inside = np.asarray(mask_image, dtype=np.float64)[..., None] / 255.0

    background = 238.0 + rng.uniform(-8, 8) + rng.uniform(-3, 3, size=3)
    texture = np.broadcast_to(base, (height, width, 3)).copy()
    texture[_pattern_mask(rng, item.pattern, width, height, side)] = shade
    pixels = inside * texture + (1.0 - inside) * background
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    _draw_details(ImageDraw.Draw(image), item.category, box, shade)

    # Sensor-like noise so no two images are pixel-identical.
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0.0, 3.0, size=(height, width, 3))
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, image_format: str) -> bytes:
    """Deterministic file bytes: fixed encoder settings and no metadata chunks or EXIF."""
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    elif image_format == "jpg":
        image.save(buffer, format="JPEG", quality=90, subsampling=0, optimize=False,
                   progressive=False)
    else:
        raise ValueError(f"unknown image format {image_format!r}")
    return buffer.getvalue()
