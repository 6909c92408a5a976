"""The latent attributes every generated item has, and their fixed vocabularies.

These attributes are the hidden truth behind the data: images are rendered from them, titles
and descriptions are written from them, and users' choices depend on them. Only `category`
and `price` appear as columns; colour, pattern and style have to be recovered from the image
and the text, which is what the CNN and Transformer towers are for.

Order matters: attributes are drawn by index, so reordering a tuple changes the data.
"""
from __future__ import annotations

from typing import Dict, Tuple

CATEGORIES: Tuple[str, ...] = ("tops", "dresses", "shoes", "bags", "hats", "trousers",
                               "jackets", "skirts")

# Distinct, saturated colours so that a small CNN separates them from mean pixel values
# alone; none is close to the light background.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "orange": (240, 130, 20),
    "yellow": (230, 200, 30),
    "green": (40, 150, 60),
    "blue": (30, 70, 200),
    "purple": (120, 50, 160),
    "pink": (240, 110, 170),
    "black": (30, 30, 35),
}
COLOUR_NAMES: Tuple[str, ...] = tuple(COLOURS)

PATTERNS: Tuple[str, ...] = ("solid", "stripes", "dots", "checks")
STYLES: Tuple[str, ...] = ("casual", "formal", "sporty", "vintage")
PRICE_BANDS: Tuple[str, ...] = ("budget", "mid", "premium")
PRICE_BAND_PROBS: Tuple[float, ...] = (0.35, 0.45, 0.20)

# A typical mid-band price per category; bands scale it (see PRICE_BAND_MULTIPLIERS).
CATEGORY_BASE_PRICE: Dict[str, float] = {
    "tops": 25.0, "dresses": 60.0, "shoes": 80.0, "bags": 70.0, "hats": 20.0,
    "trousers": 45.0, "jackets": 110.0, "skirts": 40.0,
}
# (low, high) multiplier of the category base price; the bands do not overlap.
PRICE_BAND_MULTIPLIERS: Dict[str, Tuple[float, float]] = {
    "budget": (0.45, 0.75),
    "mid": (0.85, 1.35),
    "premium": (1.8, 3.5),
}

DEVICES: Tuple[str, ...] = ("mobile", "desktop", "tablet")
DEVICE_PROBS: Tuple[float, ...] = (0.55, 0.35, 0.10)
