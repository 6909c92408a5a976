"""Named, independent random streams derived from the one user-facing seed.

Every part of the generator draws from its own PCG64 stream keyed by (seed, purpose[, index]).
Keys are fixed integers, never Python's hash() (salted per process), so:
- the same seed gives the same numbers on every run and machine;
- drawing one more number for, say, item text does not shift the numbers the images or the
  sessions get, so tuning one module does not reshuffle the whole dataset;
- per-item and per-user streams make each item's image and each user's sessions independent
  of how many other items or users there are.
"""
from __future__ import annotations

import numpy as np

# One fixed key per purpose. Append new purposes; never renumber existing ones.
CATALOGUE = 1
ITEM_TEXT = 2
ITEM_IMAGE = 3
USERS = 4
SESSIONS = 5
SHIFT = 6


def stream(seed: int, purpose: int, index: int = 0) -> np.random.Generator:
    """The random generator for one purpose (and one item/user index within it)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, index])))
