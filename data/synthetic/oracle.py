"""What the generator knows about the eval window: reference scores that bound any recommender.

Two user x item score matrices over the eval window [cutoff, end), both ranking by expected
engagements = expected exposure (the shop's popularity / random / new-arrival mix, summed
over the window's days) x P(click) of the choice model (behaviour.py):

- `oracle_scores`: with each user's TRUE tastes. The generator's own ranking; no learner can
  expect to beat it (context terms that vary by session hour are left out: they average
  over a week, and the user's usual device stands for the device).
- `inferred_taste_scores`: the same model, exposure, item attributes and quality, but each
  user's tastes are NOT given: they are inferred by exact Bayesian inference from that
  user's own impressions before the cutoff (shown items and how deep the funnel went), under
  the generator's prior over tastes. It is the best a learner can expect to do that knows
  everything except the user, and learns the user from the same log the pipeline reads.
  A real recommender knows less (it must also learn the choice model, exposure and item
  attributes from pixels and words), so the gap between these two is the part of the
  oracle that finite per-user data puts out of reach.

Tastes are enumerated: 36 colour sets x 92 category sets x 4 styles x a 6-point grid over the
price sensitivity's uniform range x trend follower or not (158,976 hypotheses per user).
"""
from __future__ import annotations

import itertools
import math
from typing import List, Sequence, Tuple

import numpy as np

from hyperrec.data.synthetic import attributes, behaviour, catalogue, scales
from hyperrec.schemas.features import SECONDS_PER_DAY

PRICE_GRID_POINTS = 6
# Prior bounds of behaviour.build_users: colours 1..2, categories 1..3, sensitivity U(0.1, 1.2).
_COLOUR_COUNTS = (1, 2)
_CATEGORY_COUNTS = (1, 2, 3)
_SENSITIVITY_RANGE = (0.1, 1.2)
# Hypotheses whose posterior mass adds up to this are kept for the predictive scores.
_PREDICTIVE_MASS = 0.999
_MAX_PREDICTIVE_HYPOTHESES = 4000


class _World:
    """The generator's catalogue, users and shift for a seed and scale, as arrays."""

    def __init__(self, seed: int, scale_name: str, item_ids: Sequence[str]):
        self.seed = seed
        self.scale = scales.get_scale(scale_name)
        self.shift = behaviour.draw_shift(seed, self.scale)
        self.items = catalogue.build_catalogue(seed, self.scale, self.shift.batch_category)
        self.users = {u.user_id: u for u in behaviour.build_users(seed, self.scale)}
        self.table = behaviour.ItemTable(self.items)
        position = {item.item_id: i for i, item in enumerate(self.items)}
        self.columns = np.array([position[i] for i in item_ids])
        self.trendy = attributes.COLOUR_NAMES.index(self.shift.trendy_colour)

    def exposure(self, start: int, end: int) -> np.ndarray:
        """[C]: expected number of times the shop shows each column's item per session slot
        over [start, end), one draw per day at midday (the shop's mix, behaviour.py)."""
        model, table = behaviour.CHOICE_MODEL, self.table
        exposure = np.zeros(len(self.items))
        for t in np.arange(start, end, SECONDS_PER_DAY) + SECONDS_PER_DAY // 2:
            n = table.available(int(t))
            weights = model.popularity_share * table.popularity[:n] / table.popularity[:n].sum()
            weights = weights + model.random_share / n
            new = table.first_seen[:n] >= t - model.new_arrival_days * SECONDS_PER_DAY
            if new.any():
                weights = weights + model.new_arrivals_share * new / new.sum()
            exposure[:n] += weights / weights.sum()
        return exposure[self.columns]


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def oracle_scores(seed: int, scale_name: str, user_ids: Sequence[str],
                  item_ids: Sequence[str], cutoff: int, end: int) -> np.ndarray:
    """[U, C] expected engagements over [cutoff, end) with each user's true tastes."""

    def true_tastes(world: _World, hypotheses: _Hypotheses, user: behaviour.User) -> np.ndarray:
        a, b, s, _, f = np.unravel_index(hypotheses.index_of(user), hypotheses.shape)
        return _click_probabilities(
            world, hypotheses, ([a], [b], [s], np.array([user.price_sensitivity]), [f]),
            user.primary_device, cutoff)[0]

    return _expected_engagements(seed, scale_name, user_ids, item_ids, cutoff, end,
                                 true_tastes)


def inferred_taste_scores(seed: int, scale_name: str, user_ids: Sequence[str],
                          item_ids: Sequence[str], cutoff: int, end: int) -> np.ndarray:
    """[U, C] expected engagements over [cutoff, end) under each user's posterior tastes,
    inferred from the user's impressions before `cutoff` (see the module docstring)."""

    def posterior_tastes(world: _World, hypotheses: _Hypotheses,
                         user: behaviour.User) -> np.ndarray:
        impressions = [row for row in behaviour.simulate_user(seed, user, world.table,
                                                              world.scale, world.shift)
                       if row[0] < cutoff]
        log_posterior = hypotheses.log_prior + _log_likelihood(world, hypotheses, impressions)
        posterior = np.exp(log_posterior - log_posterior.max())
        posterior /= posterior.sum()
        order = np.argsort(-posterior, kind="stable")
        kept = order[:min(_MAX_PREDICTIVE_HYPOTHESES,
                          int(np.searchsorted(np.cumsum(posterior[order]),
                                              _PREDICTIVE_MASS)) + 1)]
        weights = posterior[kept] / posterior[kept].sum()
        # The learner's best guess of the usual device: the most frequent one so far.
        devices = [row[4] for row in impressions] or [
            attributes.DEVICES[int(np.argmax(attributes.DEVICE_PROBS))]]
        usual_device = max(sorted(set(devices)), key=devices.count)
        a, b, s, p, f = np.unravel_index(kept, hypotheses.shape)
        return weights @ _click_probabilities(world, hypotheses,
                                              (a, b, s, hypotheses.sensitivities[p], f),
                                              usual_device, cutoff)

    return _expected_engagements(seed, scale_name, user_ids, item_ids, cutoff, end,
                                 posterior_tastes)


def _expected_engagements(seed: int, scale_name: str, user_ids: Sequence[str],
                          item_ids: Sequence[str], cutoff: int, end: int,
                          click_probabilities) -> np.ndarray:
    """[U, C]: the window's exposure x each user's P(click) from `click_probabilities(world,
    hypotheses, user)` -> [C]."""
    world = _World(seed, scale_name, item_ids)
    exposure = world.exposure(cutoff, end)
    hypotheses = _Hypotheses()
    return np.array([exposure * click_probabilities(world, hypotheses, world.users[u])
                     for u in user_ids]).reshape(len(user_ids), len(item_ids))


class _Hypotheses:
    """Every taste a user can have, as index grids, with the generator's prior."""

    def __init__(self) -> None:
        n_colours, n_categories = len(attributes.COLOUR_NAMES), len(attributes.CATEGORIES)
        self.colour_sets = [s for k in _COLOUR_COUNTS
                            for s in itertools.combinations(range(n_colours), k)]
        self.category_sets = [s for k in _CATEGORY_COUNTS
                              for s in itertools.combinations(range(n_categories), k)]
        self.styles = list(range(len(attributes.STYLES)))
        low, high = _SENSITIVITY_RANGE
        step = (high - low) / PRICE_GRID_POINTS
        self.sensitivities = low + step * (np.arange(PRICE_GRID_POINTS) + 0.5)
        self.trend = np.array([0.0, 1.0])
        # A count is drawn uniformly, then a subset of that size uniformly.
        colour_prior = np.array([1.0 / len(_COLOUR_COUNTS) / math.comb(n_colours, len(s))
                                 for s in self.colour_sets])
        category_prior = np.array([1.0 / len(_CATEGORY_COUNTS) / math.comb(n_categories,
                                                                               len(s))
                                   for s in self.category_sets])
        trend_prior = np.array([1 - behaviour.TREND_ADOPTION, behaviour.TREND_ADOPTION])
        self.shape = (len(self.colour_sets), len(self.category_sets), len(self.styles),
                      PRICE_GRID_POINTS, 2)
        self.log_prior = np.broadcast_to(
            np.log(colour_prior)[:, None, None, None, None]
            + np.log(category_prior)[None, :, None, None, None]
            - np.log(len(self.styles)) - np.log(PRICE_GRID_POINTS)
            + np.log(trend_prior)[None, None, None, None, :], self.shape).ravel()

    def index_of(self, user: behaviour.User) -> int:
        """The flat index of a user's true tastes (the sensitivity at its nearest grid point)."""
        colours = tuple(attributes.COLOUR_NAMES.index(c) for c in user.fav_colours)
        categories = tuple(attributes.CATEGORIES.index(c) for c in user.fav_categories)
        grid = int(np.argmin(np.abs(self.sensitivities - user.price_sensitivity)))
        return int(np.ravel_multi_index(
            (self.colour_sets.index(colours), self.category_sets.index(categories),
             attributes.STYLES.index(user.fav_style), grid, int(user.follows_trend)),
            self.shape))

    def matches(self, colour: np.ndarray, category: np.ndarray,
                style: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Match indicators [hypothesis values, n] of n items' colour, category, style."""
        return (np.array([np.isin(colour, s) for s in self.colour_sets], np.float64),
                np.array([np.isin(category, s) for s in self.category_sets], np.float64),
                np.array([style == s for s in self.styles], np.float64))


def _log_likelihood(world: _World, hypotheses: _Hypotheses,
                    impressions: List[Tuple[int, int, int, int, str]]) -> np.ndarray:
    """Flat [hypotheses] log P(the user's funnel depths | shown items, tastes), the noise
    term left out (sd 0.3 inside a sigmoid)."""
    if not impressions:
        return np.zeros(int(np.prod(hypotheses.shape)))
    model, table = behaviour.CHOICE_MODEL, world.table
    timestamps = np.array([row[0] for row in impressions])
    shown = np.array([row[2] for row in impressions])
    depth = np.array([row[3] for row in impressions])
    mobile = np.array([row[4] == "mobile" for row in impressions], np.float64)
    desktop = np.array([row[4] == "desktop" for row in impressions], np.float64)
    colour, category, style = table.colour[shown], table.category[shown], table.style[shown]
    price_z = table.price_z[shown]
    hour = (timestamps % SECONDS_PER_DAY) // 3600
    weekday = (timestamps // SECONDS_PER_DAY + 3) % 7
    fixed = (model.base + table.quality[shown]
             + model.evening_category * np.isin(hour, behaviour.EVENING_HOURS)
             * table.evening[shown]
             + model.morning_sporty * np.isin(hour, behaviour.MORNING_HOURS)
             * (style == attributes.STYLES.index("sporty"))
             + model.weekend_casual * (weekday >= 5) * (style == attributes.STYLES.index("casual")))
    colour_match, category_match, style_match = hypotheses.matches(colour, category, style)
    sensitivity = hypotheses.sensitivities[:, None]
    price_term = -model.price * sensitivity * (1.0 + model.mobile_price_extra * mobile) * price_z
    trend_term = (model.trend * hypotheses.trend[:, None]
                  * ((timestamps >= world.shift.timestamp) & (colour == world.trendy)))
    clicked, carted, bought = depth >= 1, depth >= 2, depth >= 3
    sign = np.where(clicked, 1.0, -1.0)
    total = np.zeros(hypotheses.shape)
    # The click stage depends on every taste: sum over impressions per colour set in turn.
    for a in range(len(hypotheses.colour_sets)):
        utility = (fixed + model.colour_match * colour_match[a]
                   + model.category_match * category_match[:, None, None, None, :]
                   + model.style_match * style_match[None, :, None, None, :]
                   + price_term[None, None, :, None, :]
                   + trend_term[None, None, None, :, :])
        total[a] = _log_sigmoid(sign * utility).sum(axis=-1)
    # Cart given click depends on colour and category match and the sensitivity; purchase
    # given cart on the sensitivity alone.
    at_cart = clicked
    cart_sign = np.where(carted[at_cart], 1.0, -1.0)
    cart_logit = (model.cart_base
                  + model.cart_match * (colour_match[:, None, None, at_cart]
                                        + category_match[None, :, None, at_cart])
                  - model.cart_price * sensitivity[None, None] * price_z[at_cart])
    total += _log_sigmoid(cart_sign * cart_logit).sum(axis=-1)[:, :, None, :, None]
    at_purchase = carted
    buy_sign = np.where(bought[at_purchase], 1.0, -1.0)
    buy_logit = (model.purchase_base - model.purchase_price * sensitivity * price_z[at_purchase]
                 + model.purchase_desktop * desktop[at_purchase])
    total += _log_sigmoid(buy_sign * buy_logit).sum(axis=-1)[None, None, None, :, None]
    return total.ravel()


def _click_probabilities(world: _World, hypotheses: _Hypotheses, tastes: Tuple,
                         device: str, now: int) -> np.ndarray:
    """[H, C] P(click) of every column's item under H tastes (colour-set, category-set and
    style indices, sensitivities, trend flags), at `device`, in `now`'s trend state, without
    the session-hour context."""
    model, table, columns = behaviour.CHOICE_MODEL, world.table, world.columns
    colour, category, style = table.colour[columns], table.category[columns], table.style[columns]
    a, b, s, sensitivity, f = (np.asarray(t) for t in tastes)
    colour_match, category_match, style_match = hypotheses.matches(colour, category, style)
    trendy = (colour == world.trendy) * (now >= world.shift.timestamp)
    utility = (model.base + table.quality[columns]
               + model.colour_match * colour_match[a] + model.category_match * category_match[b]
               + model.style_match * style_match[s]
               - model.price * sensitivity.astype(np.float64)[:, None]
               * (1.0 + model.mobile_price_extra * (device == "mobile")) * table.price_z[columns]
               + model.trend * hypotheses.trend[f][:, None] * trendy)
    return behaviour._sigmoid(utility)


def rank(scores: np.ndarray) -> np.ndarray:
    """Every row's column indices, best score first (ties: lower index first)."""
    return np.argsort(-scores, axis=1, kind="stable")
