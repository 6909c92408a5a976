"""The item catalogue: latent attributes, prices, arrival dates and content gaps.

Items arrive over time, as in a real shop: half the catalogue exists before the timeline
starts, a steady trickle arrives during the first 80% of it, a chunk arrives in the last 20%
(cold-start items: no interactions in earlier spans, only their image and text describe them)
and, at the shift date, a batch of one category lands at once (the catalogue shift).

Item ids are assigned in order of arrival (like an auto-increment key), zero-padded so that
lexical order is numeric order.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Tuple

import numpy as np

from hyperrec.data.synthetic import attributes, streams
from hyperrec.schemas.features import SECONDS_PER_DAY
from hyperrec.data.synthetic.scales import DatagenScale

IMAGE_SIZES: Tuple[Tuple[int, int], ...] = (  # (width, height): square and non-square sources
    (48, 48), (64, 64), (96, 96), (64, 48), (48, 64), (80, 96), (96, 72))
JPEG_FRACTION = 0.4  # the rest are PNG
MISSING_IMAGE_FRACTION = 0.05
MISSING_DESCRIPTION_FRACTION = 0.05
PRE_TIMELINE_DAYS = 60  # the initial catalogue arrived during the two months before the start


@dataclasses.dataclass
class Item:
    """One catalogue item with its hidden truth and the rendering choices made for it."""

    index: int  # 0-based position in arrival order
    item_id: str
    category: str
    colour: str
    pattern: str
    style: str
    price_band: str
    price: float
    first_seen: int  # epoch seconds
    quality: float  # latent appeal: drives both popularity (exposure) and click probability
    in_shift_batch: bool
    has_image: bool
    has_description: bool
    image_size: Tuple[int, int]  # (width, height) of the source image
    image_format: str  # "png" or "jpg"
    title: str = ""
    description: str = ""

    @property
    def image_path(self) -> str:
        """Path relative to the output root, or "" when the item has no image."""
        return f"images/{self.item_id}.{self.image_format}" if self.has_image else ""

    @property
    def price_z(self) -> float:
        """How expensive the item is for its category (about -0.9 budget .. +1.8 premium)."""
        return math.log(self.price / attributes.CATEGORY_BASE_PRICE[self.category]) / 0.5


def id_width(count: int) -> int:
    """Zero-padding width of ids: at least 5 digits, more when the count needs them."""
    return max(5, len(str(count)))


def _arrival_times(rng: np.random.Generator, scale: DatagenScale) -> Tuple[np.ndarray,
                                                                          np.ndarray]:
    """first_seen of every item, plus whether it belongs to the shift batch."""
    n = scale.n_items
    n_steady = int(round(n * scale.steady_item_fraction))
    n_late = int(round(n * scale.late_item_fraction))
    n_batch = int(round(n * scale.shift_batch_fraction))
    n_initial = n - n_steady - n_late - n_batch
    start, end, duration = scale.start_ts, scale.end_ts, scale.end_ts - scale.start_ts
    late_begin = start + int(0.8 * duration)
    times = np.concatenate([
        rng.integers(start - PRE_TIMELINE_DAYS * SECONDS_PER_DAY, start, n_initial),
        rng.integers(start, late_begin, n_steady),
        # Stop an hour before the end so even the newest item can still be shown once.
        rng.integers(late_begin, end - 3600, n_late),
        # The batch lands over the first two days after the shift.
        rng.integers(scale.shift_ts, scale.shift_ts + 2 * SECONDS_PER_DAY, n_batch),
    ])
    in_batch = np.zeros(n, dtype=bool)
    in_batch[n - n_batch:] = True
    return times, in_batch


def build_catalogue(seed: int, scale: DatagenScale, shift_category: str) -> List[Item]:
    """Draws every item's attributes and arrival; text and images are filled in later."""
    rng = streams.stream(seed, streams.CATALOGUE)
    times, in_batch = _arrival_times(rng, scale)
    n = scale.n_items
    categories = rng.integers(len(attributes.CATEGORIES), size=n)
    categories[in_batch] = attributes.CATEGORIES.index(shift_category)
    colours = rng.integers(len(attributes.COLOUR_NAMES), size=n)
    patterns = rng.integers(len(attributes.PATTERNS), size=n)
    styles = rng.integers(len(attributes.STYLES), size=n)
    bands = rng.choice(len(attributes.PRICE_BANDS), size=n, p=attributes.PRICE_BAND_PROBS)
    band_position = rng.random(n)
    quality = rng.normal(0.0, 0.4, size=n)
    has_image = rng.random(n) >= MISSING_IMAGE_FRACTION
    has_description = rng.random(n) >= MISSING_DESCRIPTION_FRACTION
    sizes = rng.integers(len(IMAGE_SIZES), size=n)
    is_jpeg = rng.random(n) < JPEG_FRACTION

    # Ids follow arrival order; a stable sort keeps ties (same second) in draw order.
    order = np.argsort(times, kind="stable")
    width = id_width(n)
    items = []
    for index, i in enumerate(order):
        category = attributes.CATEGORIES[categories[i]]
        band = attributes.PRICE_BANDS[bands[i]]
        low, high = attributes.PRICE_BAND_MULTIPLIERS[band]
        multiplier = low + (high - low) * band_position[i]
        price = round(attributes.CATEGORY_BASE_PRICE[category] * multiplier, 2)
        items.append(Item(
            index=index,
            item_id=f"i{index + 1:0{width}d}",
            category=category,
            colour=attributes.COLOUR_NAMES[colours[i]],
            pattern=attributes.PATTERNS[patterns[i]],
            style=attributes.STYLES[styles[i]],
            price_band=band,
            price=max(price, 0.01),
            first_seen=int(times[i]),
            quality=float(quality[i]),
            in_shift_batch=bool(in_batch[i]),
            has_image=bool(has_image[i]),
            has_description=bool(has_description[i]),
            image_size=IMAGE_SIZES[sizes[i]],
            image_format="jpg" if is_jpeg[i] else "png",
        ))
    return items
