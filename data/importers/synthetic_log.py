"""A small, documented, synthetic interaction log over a real catalogue that has none.

A folder of product photos is a catalogue without behaviour, but the pipeline trains on
interactions. So that such a catalogue can still go through the pipeline end to end, this
module draws a deliberately simple log over its real items. It is synthetic and says so (the
import report labels it); it is for trying the pipeline, not for judging a model.

The model, per user (each user draws from their own seeded random stream, so adding users
never changes the others):
- 1-3 favourite categories, and one device (mobile 55%, desktop 35%, tablet 10%);
- each week, Poisson(`sessions_per_week`) sessions, starting uniformly within the week;
- a session shows 5-10 distinct items, `favourite_share` of them (binomially) from the
  favourite categories and the rest from the whole catalogue, one every 10-60 s;
- each impression is clicked with `click_favourite` (favourite category) or `click_other`;
  a click becomes add_to_cart with `cart_after_click`, a cart a purchase with
  `purchase_after_cart`; the row's event is the deepest stage reached.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd

from hyperrec.schemas import features
from hyperrec.data.synthetic import streams

# The importers' stream keys, apart from the generator's keys in data/synthetic/streams.py.
SAMPLE_USERS_STREAM = 101
DEVICES = ("mobile", "desktop", "tablet")


@dataclasses.dataclass(frozen=True)
class SampleUserModel:
    """The knobs of the synthetic log (all written into the import report)."""

    sessions_per_week: float = 1.5
    min_impressions: int = 5
    max_impressions: int = 10
    favourite_share: float = 0.6
    click_favourite: float = 0.35
    click_other: float = 0.05
    cart_after_click: float = 0.30
    purchase_after_cart: float = 0.50
    device_shares: Sequence[float] = (0.55, 0.35, 0.10)  # in DEVICES order
    min_gap_seconds: int = 10
    max_gap_seconds: int = 60

    def as_dict(self) -> Dict[str, object]:
        values = dataclasses.asdict(self)
        values["device_shares"] = dict(zip(DEVICES, self.device_shares))
        return values


def draw_log(item_ids: Sequence[str], item_categories: Sequence[str], n_users: int, seed: int,
             start: int, weeks: int, model: SampleUserModel = SampleUserModel()) -> pd.DataFrame:
    """The synthetic interactions (INTERACTION_HEADER columns, epoch-second timestamps)."""
    item_ids = np.asarray(item_ids, dtype=object)
    item_categories = np.asarray(item_categories, dtype=object)
    category_names = np.array(sorted(set(item_categories)), dtype=object)
    week_seconds = 7 * 86_400
    session_room = model.max_impressions * model.max_gap_seconds  # a session ends in its week
    width = len(str(n_users))
    rows: List[tuple] = []
    for user in range(n_users):
        rng = streams.stream(seed, SAMPLE_USERS_STREAM, user)
        user_id = f"u{user + 1:0{width}d}"
        n_favourites = min(int(rng.integers(1, 4)), len(category_names))
        favourites = set(rng.choice(category_names, size=n_favourites, replace=False))
        liked = np.flatnonzero([category in favourites for category in item_categories])
        device = DEVICES[int(rng.choice(len(DEVICES), p=model.device_shares))]
        for week in range(weeks):
            for _ in range(int(rng.poisson(model.sessions_per_week))):
                moment = start + week * week_seconds + int(
                    rng.integers(0, week_seconds - session_room))
                shown = _session_items(rng, liked, len(item_ids), model)
                for item in shown:
                    moment += int(rng.integers(model.min_gap_seconds, model.max_gap_seconds + 1))
                    depth = _funnel_depth(rng, item_categories[item] in favourites, model)
                    rows.append((user_id, item_ids[item], moment, features.EVENTS[depth], device))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event", "device"])


def _session_items(rng: np.random.Generator, liked: np.ndarray, n_items: int,
                   model: SampleUserModel) -> np.ndarray:
    """5-10 distinct item indices: a binomial share from the liked ones, the rest from all."""
    size = min(int(rng.integers(model.min_impressions, model.max_impressions + 1)), n_items)
    n_liked = min(int(rng.binomial(size, model.favourite_share)), len(liked))
    chosen = list(rng.choice(liked, size=n_liked, replace=False)) if n_liked else []
    others = np.setdiff1d(np.arange(n_items), chosen)
    chosen += list(rng.choice(others, size=size - n_liked, replace=False))
    return rng.permutation(np.asarray(chosen, dtype=np.int64))


def _funnel_depth(rng: np.random.Generator, is_favourite: bool, model: SampleUserModel) -> int:
    """0 impression, 1 click, 2 add_to_cart, 3 purchase (indices into features.EVENTS)."""
    click = model.click_favourite if is_favourite else model.click_other
    if rng.random() >= click:
        return 0
    if rng.random() >= model.cart_after_click:
        return 1
    return 3 if rng.random() < model.purchase_after_cart else 2
