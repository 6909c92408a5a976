"""Users, their sessions, and the choice model that turns impressions into funnel events.

Every user has latent tastes (favourite colours, categories and style, a price sensitivity, a
usual device) and an activity rate. A session happens at some hour of some day; the shop shows
5-10 items available at that moment, picked by a mix of popularity, chance and a "new
arrivals" shelf. For each shown item a logistic choice model decides the deepest stage reached:

    utility = base
            + colour, category and style match with the user's tastes
            + the trend bonus (after the shift, for trend followers, on the trendy colour)
            - price sensitivity x how expensive the item is for its category
              (stronger on mobile: phone shoppers click cheaper items)
            + context: evenings favour going-out categories, mornings sporty items,
              weekends casual items
            + the item's latent quality + noise
    P(click) = sigmoid(utility); add_to_cart and purchase follow with their own sigmoids.

So the logs carry personal taste (learnable from a user's history and the item's image/text),
context effects, popularity, and a dated drift.

This is the project's one impression simulator: the importers' synthetic log over a real
catalogue (data/importers/synthetic_log.py) runs the same users, sessions and choice model on
an `ItemTable.from_categories` table, where the category is the only attribute an item has.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Protocol, Sequence, Tuple

import numpy as np

from hyperrec.data.synthetic import attributes, streams
from hyperrec.data.synthetic.catalogue import Item, id_width
from hyperrec.schemas.features import SECONDS_PER_DAY
from hyperrec.data.contract import iso_utc
from hyperrec.data.synthetic.scales import DatagenScale

SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
# Relative chance that a session starts in each hour of the day (UTC): quiet nights, a lunch
# bump and an evening peak.
HOUR_WEIGHTS = np.array([1.0, 0.5, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 3.0, 3.0, 3.0, 3.5, 4.0,
                         3.5, 3.0, 3.0, 3.5, 4.0, 5.0, 6.0, 6.5, 6.0, 4.0, 2.0])
EVENING_HOURS = range(18, 24)
MORNING_HOURS = range(6, 12)
EVENING_CATEGORIES = ("dresses", "skirts", "bags")
TREND_ADOPTION = 0.6  # share of users who follow the trendy colour after the shift


@dataclasses.dataclass(frozen=True)
class ChoiceModel:
    """The weights of the logistic choice model (recorded in ground_truth.json)."""

    base: float = -3.3
    colour_match: float = 1.6
    category_match: float = 1.4
    style_match: float = 0.6
    trend: float = 1.8
    price: float = 0.8  # x price_sensitivity x price_z
    mobile_price_extra: float = 0.8  # on mobile the price term is (1 + this) times stronger
    evening_category: float = 0.6
    morning_sporty: float = 0.6
    weekend_casual: float = 0.3
    noise_sd: float = 0.3
    cart_base: float = -0.8
    cart_match: float = 0.5
    cart_price: float = 0.5
    purchase_base: float = -0.5
    purchase_price: float = 0.6
    purchase_desktop: float = 0.3
    # How the shop picks what to show: popularity ~ exp(popularity_temperature x quality).
    popularity_share: float = 0.45
    random_share: float = 0.45
    new_arrivals_share: float = 0.10
    new_arrival_days: int = 14
    popularity_temperature: float = 1.5


CHOICE_MODEL = ChoiceModel()


class ShopScale(Protocol):
    """What the simulation reads of a scale (DatagenScale has it; so does an importer's log)."""

    n_users: int
    sessions_per_week: float  # mean sessions of an active user per week
    min_impressions: int  # impressions per session are uniform in [min, max]
    max_impressions: int
    late_users_fraction: float  # users whose first visit is inside the timeline

    @property
    def start_ts(self) -> int: ...

    @property
    def end_ts(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class Shift:
    """What changes at the shift date."""

    timestamp: int
    trendy_colour: str  # trend followers gain a strong taste for it
    batch_category: str  # a batch of new items of this category arrives


@dataclasses.dataclass
class User:
    """One user's hidden tastes and habits."""

    index: int
    user_id: str
    fav_colours: Tuple[str, ...]
    fav_categories: Tuple[str, ...]
    fav_style: str
    price_sensitivity: float
    primary_device: str
    first_active: int  # epoch seconds of the earliest possible session
    sessions_per_week: float
    follows_trend: bool


def draw_shift(seed: int, scale: DatagenScale) -> Shift:
    rng = streams.stream(seed, streams.SHIFT)
    colour = attributes.COLOUR_NAMES[int(rng.integers(len(attributes.COLOUR_NAMES)))]
    category = attributes.CATEGORIES[int(rng.integers(len(attributes.CATEGORIES)))]
    return Shift(timestamp=scale.shift_ts, trendy_colour=colour, batch_category=category)


def _pick_some(rng: np.random.Generator, options: Sequence[str], low: int,
               high: int) -> Tuple[str, ...]:
    """low..high distinct options, kept in vocabulary order for a stable ground truth."""
    count = int(rng.integers(low, high + 1))
    chosen = sorted(int(i) for i in rng.choice(len(options), size=count, replace=False))
    return tuple(options[i] for i in chosen)


def build_users(seed: int, scale: ShopScale,
                categories: Sequence[str] = attributes.CATEGORIES) -> List[User]:
    """`scale.n_users` users whose favourite categories are 1-3 of `categories`."""
    rng = streams.stream(seed, streams.USERS)
    width = id_width(scale.n_users)
    duration = scale.end_ts - scale.start_ts
    # Mean-one log-normal activity: a few heavy users, many light ones.
    activity_sd = 0.6
    users = []
    for index in range(scale.n_users):
        is_late = rng.random() < scale.late_users_fraction
        first_active = (scale.start_ts + int(rng.integers(0, int(0.9 * duration)))
                        if is_late else scale.start_ts)
        activity = rng.lognormal(0.0, activity_sd) / np.exp(activity_sd ** 2 / 2)
        users.append(User(
            index=index,
            user_id=f"u{index + 1:0{width}d}",
            fav_colours=_pick_some(rng, attributes.COLOUR_NAMES, 1, 2),
            fav_categories=_pick_some(rng, categories, 1, min(3, len(categories))),
            fav_style=attributes.STYLES[int(rng.integers(len(attributes.STYLES)))],
            price_sensitivity=float(rng.uniform(0.1, 1.2)),
            primary_device=attributes.DEVICES[int(rng.choice(len(attributes.DEVICES),
                                                             p=attributes.DEVICE_PROBS))],
            first_active=first_active,
            sessions_per_week=float(scale.sessions_per_week * activity),
            follows_trend=bool(rng.random() < TREND_ADOPTION),
        ))
    return users


class ItemTable:
    """The catalogue as arrays (items are in arrival order), for vectorised utilities.

    Colour, category and style are indices into attributes' vocabularies (the category into
    `categories`); -1 is an attribute the item does not have, which matches no taste.
    """

    def __init__(self, items: Sequence[Item]):
        self._fill(np.array([item.first_seen for item in items], dtype=np.int64),
                   np.array([attributes.COLOUR_NAMES.index(i.colour) for i in items]),
                   np.array([attributes.CATEGORIES.index(i.category) for i in items]),
                   np.array([attributes.STYLES.index(i.style) for i in items]),
                   np.array([item.price_z for item in items]),
                   np.array([item.quality for item in items]), attributes.CATEGORIES)

    @classmethod
    def from_categories(cls, first_seen: Sequence[int], item_categories: Sequence[str]
                        ) -> "ItemTable":
        """A real catalogue that knows only each item's category and arrival: no colour or
        style, average price and quality (so the shop shows popular and random items alike)."""
        categories = tuple(sorted(set(item_categories)))
        none, zeros = np.full(len(item_categories), -1), np.zeros(len(item_categories))
        table = cls.__new__(cls)
        table._fill(np.asarray(first_seen, dtype=np.int64), none,
                    np.array([categories.index(c) for c in item_categories]), none, zeros,
                    zeros, categories)
        return table

    def _fill(self, first_seen: np.ndarray, colour: np.ndarray, category: np.ndarray,
              style: np.ndarray, price_z: np.ndarray, quality: np.ndarray,
              categories: Sequence[str]) -> None:
        if np.any(np.diff(first_seen) < 0):
            raise ValueError("items must be in arrival order")
        self.first_seen, self.colour, self.category, self.style = (first_seen, colour, category,
                                                                   style)
        self.price_z, self.quality, self.categories = price_z, quality, tuple(categories)
        self.popularity = np.exp(CHOICE_MODEL.popularity_temperature * self.quality)
        self.evening = np.isin(self.category, [self.categories.index(c)
                                               for c in EVENING_CATEGORIES
                                               if c in self.categories])

    def available(self, timestamp: int) -> int:
        """How many items (a prefix, in arrival order) exist at `timestamp`."""
        return int(np.searchsorted(self.first_seen, timestamp, side="right"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _session_starts(rng: np.random.Generator, user: User, scale: ShopScale) -> List[int]:
    """Session start times: random days in the user's active period, hours by HOUR_WEIGHTS."""
    active_from = max(user.first_active, scale.start_ts)
    active_weeks = (scale.end_ts - active_from) / SECONDS_PER_WEEK
    count = int(rng.poisson(user.sessions_per_week * active_weeks))
    first_day = active_from // SECONDS_PER_DAY
    last_day = (scale.end_ts - 1) // SECONDS_PER_DAY
    days = rng.integers(first_day, last_day + 1, size=count)
    hours = rng.choice(24, size=count, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    seconds = rng.integers(0, 3600, size=count)
    starts = days * SECONDS_PER_DAY + hours * 3600 + seconds
    return sorted(int(s) for s in starts if s >= active_from)


def simulate_user(seed: int, user: User, table: ItemTable, scale: ShopScale,
                  shift: Shift) -> List[Tuple[int, int, int, int, str]]:
    """One user's impressions as (timestamp, user index, item index, depth 0..3, device)."""
    rng = streams.stream(seed, streams.SESSIONS, user.index)
    model = CHOICE_MODEL
    fav_colours = [attributes.COLOUR_NAMES.index(c) for c in user.fav_colours]
    fav_categories = [table.categories.index(c) for c in user.fav_categories]
    fav_style = attributes.STYLES.index(user.fav_style)
    trendy = attributes.COLOUR_NAMES.index(shift.trendy_colour)
    sporty = attributes.STYLES.index("sporty")
    casual = attributes.STYLES.index("casual")
    new_arrival_seconds = model.new_arrival_days * SECONDS_PER_DAY

    rows = []
    session_end = -1
    for start in _session_starts(rng, user, scale):
        # Sessions of one user never overlap: a too-early one starts after a short break.
        start = max(start, session_end + 900)
        n_shown = int(rng.integers(scale.min_impressions, scale.max_impressions + 1))
        gaps = rng.integers(3, 90, size=n_shown)  # seconds spent on each item
        offsets = np.concatenate([[0], np.cumsum(gaps[:-1])])
        if start + int(offsets[-1]) >= scale.end_ts:
            break  # the timeline is over
        n_available = table.available(start)
        if n_available == 0:
            continue
        n_shown = min(n_shown, n_available)

        # What the shop shows: popular items, random items, and new arrivals.
        weights = model.popularity_share * table.popularity[:n_available]
        weights = weights / weights.sum()
        weights = weights + model.random_share / n_available
        is_new = table.first_seen[:n_available] >= start - new_arrival_seconds
        if is_new.any():
            weights = weights + model.new_arrivals_share * is_new / is_new.sum()
        shown = rng.choice(n_available, size=n_shown, replace=False, p=weights / weights.sum())

        device = (user.primary_device if rng.random() < 0.8
                  else attributes.DEVICES[int(rng.integers(len(attributes.DEVICES)))])
        hour = (start % SECONDS_PER_DAY) // 3600
        weekday = (start // SECONDS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday=0

        colour = table.colour[shown]
        category = table.category[shown]
        style = table.style[shown]
        price_z = table.price_z[shown]
        colour_match = np.isin(colour, fav_colours)
        category_match = np.isin(category, fav_categories)
        price_weight = user.price_sensitivity * (
            1.0 + model.mobile_price_extra * (device == "mobile"))
        utility = (model.base
                   + model.colour_match * colour_match
                   + model.category_match * category_match
                   + model.style_match * (style == fav_style)
                   - model.price * price_weight * price_z
                   + table.quality[shown]
                   + rng.normal(0.0, model.noise_sd, size=n_shown))
        if user.follows_trend and start >= shift.timestamp:
            utility += model.trend * (colour == trendy)
        if hour in EVENING_HOURS:
            utility += model.evening_category * table.evening[shown]
        if hour in MORNING_HOURS:
            utility += model.morning_sporty * (style == sporty)
        if weekday >= 5:
            utility += model.weekend_casual * (style == casual)

        clicked = rng.random(n_shown) < _sigmoid(utility)
        carted = clicked & (rng.random(n_shown) < _sigmoid(
            model.cart_base + model.cart_match * (colour_match + category_match)
            - model.cart_price * user.price_sensitivity * price_z))
        purchased = carted & (rng.random(n_shown) < _sigmoid(
            model.purchase_base - model.purchase_price * user.price_sensitivity * price_z
            + model.purchase_desktop * (device == "desktop")))
        stage = clicked.astype(int) + carted + purchased  # index into EVENTS

        for offset, item_index, depth in zip(offsets[:n_shown], shown, stage):
            rows.append((start + int(offset), user.index, int(item_index), int(depth), device))
        session_end = start + int(offsets[n_shown - 1])
    return rows


def simulate(seed: int, users: Sequence[User], items: Sequence[Item] | ItemTable,
             scale: ShopScale, shift: Shift) -> List[Tuple[int, int, int, int, str]]:
    """Every impression of every user, sorted by (timestamp, user, item).

    Rows are (timestamp, user index, item index, funnel depth 0..3, device); ids are
    zero-padded in index order, so this sort equals sorting by the id strings.
    """
    table = items if isinstance(items, ItemTable) else ItemTable(items)
    rows: List[Tuple[int, int, int, int, str]] = []
    for user in users:
        rows.extend(simulate_user(seed, user, table, scale, shift))
    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    return rows


def describe_user(user: User) -> Dict[str, object]:
    """The user's ground truth as JSON-ready values."""
    return {
        "fav_colours": list(user.fav_colours),
        "fav_categories": list(user.fav_categories),
        "fav_style": user.fav_style,
        "price_sensitivity": round(user.price_sensitivity, 4),
        "primary_device": user.primary_device,
        "first_active": iso_utc(user.first_active),
        "sessions_per_week": round(user.sessions_per_week, 4),
        "follows_trend": user.follows_trend,
    }
