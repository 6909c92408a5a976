"""A small, documented, synthetic interaction log over a real catalogue that has none.

A folder of product photos is a catalogue without behaviour, but the pipeline trains on
interactions. So that such a catalogue can still go through the pipeline end to end, this
module draws a log over its real items. It is synthetic and says so (the import report
labels it); it is for trying the pipeline, not for judging a model.

The log comes from the generator's impression simulator (data/synthetic/behaviour.py, the
project's one): the same users (1-3 favourite categories, a usual device, a heavy-tailed
activity), sessions (days and hours of a shop's week, 5-10 impressions one after another)
and logistic choice model (click, add_to_cart, purchase). A real catalogue here knows only
each item's category, so of the item terms only the category match moves a choice; colour,
style, price and quality are average for every item, and there is no dated trend.
`SampleUserModel` holds the knobs; the import report records them with the choice model's
weights.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence

import pandas as pd

from hyperrec.data.synthetic import attributes, behaviour
from hyperrec.schemas import features


@dataclasses.dataclass(frozen=True)
class SampleUserModel:
    """How much the sample users shop (all written into the import report)."""

    sessions_per_week: float = 1.5
    min_impressions: int = 5
    max_impressions: int = 10

    def as_dict(self) -> Dict[str, object]:
        return {**dataclasses.asdict(self),
                "choice_model": dataclasses.asdict(behaviour.CHOICE_MODEL),
                "simulator": "data/synthetic/behaviour.py"}


@dataclasses.dataclass(frozen=True)
class _LogScale:
    """The simulation's scale for `weeks` weeks from `start` (a behaviour.ShopScale)."""

    n_users: int
    start_ts: int
    end_ts: int
    sessions_per_week: float
    min_impressions: int
    max_impressions: int
    late_users_fraction: float = 0.0  # every sample user shops from the first day


def draw_log(item_ids: Sequence[str], item_categories: Sequence[str], n_users: int, seed: int,
             start: int, weeks: int, model: SampleUserModel = SampleUserModel()) -> pd.DataFrame:
    """The synthetic interactions (INTERACTION_HEADER columns, epoch-second timestamps) of
    `n_users` users over `weeks` weeks from `start`; every item exists from `start`."""
    item_ids = list(item_ids)
    scale = _LogScale(n_users, start, start + weeks * 7 * features.SECONDS_PER_DAY,
                      model.sessions_per_week, model.min_impressions, model.max_impressions)
    table = behaviour.ItemTable.from_categories([start] * len(item_ids), item_categories)
    users = behaviour.build_users(seed, scale, table.categories)
    # No trend: the shift would come after the log ends.
    no_shift = behaviour.Shift(scale.end_ts, attributes.COLOUR_NAMES[0], "")
    rows = behaviour.simulate(seed, users, table, scale, no_shift)
    return pd.DataFrame(
        [(users[user].user_id, item_ids[item], timestamp, features.EVENTS[depth], device)
         for timestamp, user, item, depth, device in rows],
        columns=["user_id", "item_id", "timestamp", "event", "device"])
