"""Baselines fitted on the train split's positives, ranked on exactly the model's task.

RecTools (MTS AI, Apache-2.0) provides them: `PopularModel` (by distinct users, all time or
the last `recent_days`), `ImplicitItemKNNWrapperModel` around implicit's
`CosineRecommender` (cosine item-item, top-K neighbours, a sparse similarity matrix) and
EASE (Steck 2019) as `ease.ScalableEASEModel`: RecTools' `EASEModel` with a solve that fits
in memory (the dual, or an in-place Cholesky inverse, float32 past 8,192 on a side; top-N
items past 20,000) and scoring in user batches with top-k per batch (see ease.py;
`ease_solver="rectools"` is RecTools' dense float64 inverse, the reference the tests and
bench/bench_ranking_eval.py compare with).
Hyper-parameters that matter (EASE's lambda, ItemKNN's K) are chosen on a validation slice
carved from the END of the train period (the last `validation_days` before the cutoff,
fitted on what came before), never on the eval period. A choice at the edge of its grid
means the grid was too narrow: the grid is then extended in that direction (x `edge_step`)
until the best value is inside it, a few times at most. `validation_users` caps the
validation users that score each value (a seeded sample: protocol.sample_users).
"""
from __future__ import annotations

import dataclasses
import warnings
from datetime import timedelta
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from hyperrec.schemas import features
from hyperrec.components.evaluation import ease, metrics, protocol

MOST_POPULAR = "most_popular"
RECENT_POPULAR = "recent_popular"
ITEM_KNN = "itemknn"
EASE = "ease"
BASELINES = (MOST_POPULAR, RECENT_POPULAR, ITEM_KNN, EASE)
EASE_SOLVERS = ("scalable", "rectools")


@dataclasses.dataclass
class BaselineConfig:
    recent_days: float = 7.0
    validation_days: float = 7.0
    ease_lambdas: Tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
    knn_neighbours: Tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    selection_metric: str = "recall@10"
    max_grid_extensions: int = 4
    ease_solver: str = "scalable"  # or "rectools": RecTools' dense inverse (the reference)
    ease_max_dense: int = ease.MAX_DENSE  # past it on both sides: EASE on the top-N items
    validation_users: Optional[int] = None  # None: every validation user scores the grid
    sample_seed: int = 0


def interactions_frame(events: protocol.Events) -> pd.DataFrame:
    """RecTools' interactions table: one row per engaged (user, item), weight 1, last time."""
    positive = events.labels == 1
    frame = pd.DataFrame({"user_id": events.users[positive], "item_id": events.items[positive],
                          "ts": events.timestamps[positive]})
    frame = frame.groupby(["user_id", "item_id"], as_index=False)["ts"].max()
    frame["weight"] = 1.0
    frame["datetime"] = pd.to_datetime(frame["ts"], unit="s")
    return frame[["user_id", "item_id", "weight", "datetime"]]


def _rectools():
    from rectools.dataset import Dataset
    return Dataset


def make_model(name: str, value: Optional[float] = None, config: BaselineConfig = BaselineConfig()):
    from rectools.models import EASEModel, ImplicitItemKNNWrapperModel, PopularModel
    if name == MOST_POPULAR:
        return PopularModel(popularity="n_users")
    if name == RECENT_POPULAR:
        return PopularModel(popularity="n_users", period=timedelta(days=config.recent_days))
    if name == ITEM_KNN:
        from implicit.nearest_neighbours import CosineRecommender
        return ImplicitItemKNNWrapperModel(CosineRecommender(K=int(value), num_threads=1))
    if name == EASE:
        if config.ease_solver == "rectools":
            return EASEModel(regularization=float(value), recommend_n_threads=1)
        if config.ease_solver == "scalable":
            return ease.ScalableEASEModel(float(value), max_dense=config.ease_max_dense)
        raise ValueError(f"unknown ease_solver {config.ease_solver!r}; choose from "
                         f"{EASE_SOLVERS}")
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")


def rank(model, frame: pd.DataFrame, users: Sequence[str], excluded: Sequence[np.ndarray],
         catalogue_index: Dict[str, int], depth: int) -> np.ndarray:
    """Fits `model` on `frame` and returns its top-`depth` catalogue indices per user."""
    Dataset = _rectools()
    dataset = Dataset.construct(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit's OpenBLAS-threads advice
        model.fit(dataset)
        known = set(frame["user_id"])
        targets = [u for u in users if u in known]
        reco = model.recommend(targets, dataset, k=depth, filter_viewed=True,
                               on_unsupported_targets="ignore") if targets else None
    ranked: Dict[str, List[int]] = {u: [] for u in users}
    if reco is not None:
        reco = reco.sort_values(["user_id", "rank"])
        for user, item in zip(reco["user_id"], reco["item_id"]):
            if item in catalogue_index:
                ranked[user].append(catalogue_index[item])
    return protocol.exclude_and_truncate([ranked[u] for u in users], excluded, depth)


def validation_task(task: protocol.Task, validation_days: float) -> protocol.Task:
    """The same protocol one step back: train = train before the last `validation_days`,
    eval = those last days of train."""
    train = task.train
    split = task.cutoff - int(validation_days * features.SECONDS_PER_DAY)
    before, after = train.subset(train.timestamps < split), train.subset(train.timestamps >= split)
    if len(before) == 0 or len(after) == 0:
        raise ValueError(f"cannot carve a {validation_days}-day validation slice from train")
    return protocol.build_task(before, after, task.catalogue, history_length=1,
                               new_user_days=validation_days, cutoff=split)


def select(name: str, grid: Sequence[float], task: protocol.Task, config: BaselineConfig,
           step: float, integer: bool = False) -> Dict[str, object]:
    """Picks `name`'s hyper-parameter on `task` (a validation task); widens an edge choice."""
    frame = interactions_frame(task.train)
    index = task.catalogue.index()
    k = int(config.selection_metric.split("@")[1])
    exclusions = task.exclusions()
    scores: Dict[float, float] = {}

    def score(value: float) -> float:
        if value not in scores:
            ranked = rank(make_model(name, value, config), frame, task.users, exclusions,
                          index, k)
            scores[value] = float(metrics.per_user(ranked, task.targets, task.popularity,
                                                   [k])[config.selection_metric].mean())
        return scores[value]

    grid = sorted(set(grid))
    for extension in range(config.max_grid_extensions + 1):
        values = [score(v) for v in grid]
        best = max(values)
        # Ties (flat regions on small data): take the middle of the best values.
        tied = [v for v, s in zip(grid, values) if s == best]
        choice = tied[len(tied) // 2]
        # The last pass only scores: a value added after it would have no score.
        if grid[0] < choice < grid[-1] or extension == config.max_grid_extensions:
            break
        if choice == grid[0]:
            new = grid[0] / step
            if integer:
                new = max(1, int(round(new)))
                if new == grid[0]:
                    break  # cannot go lower than one neighbour
            grid.insert(0, new)
        else:
            new = grid[-1] * step
            grid.append(int(round(new)) if integer else new)
    return {"value": choice, "grid": grid, "scores": [scores[v] for v in grid],
            "metric": config.selection_metric, "validation_users": len(task.users)}


def rank_baselines(task: protocol.Task, depth: int, config: BaselineConfig = BaselineConfig(),
                   names: Sequence[str] = BASELINES
                   ) -> Tuple[Dict[str, np.ndarray], Dict[str, object]]:
    """Every baseline's rankings on `task`, and the chosen hyper-parameters."""
    frame = interactions_frame(task.train)
    index = task.catalogue.index()
    rankings, chosen = {}, {}
    tuned = {EASE: (config.ease_lambdas, np.sqrt(10.0), False),
             ITEM_KNN: (config.knn_neighbours, 2.0, True)}
    validation = None
    exclusions = task.exclusions()  # baselines query at the cutoff
    for name in names:
        value = None
        if name in tuned:
            if validation is None:
                validation = protocol.sample_users(
                    validation_task(task, config.validation_days), config.validation_users,
                    config.sample_seed)
            grid, step, integer = tuned[name]
            chosen[name] = select(name, grid, validation, config, step, integer)
            if name == EASE:
                chosen[name]["solver"] = config.ease_solver
            value = chosen[name]["value"]
        model = make_model(name, value, config)
        rankings[name] = rank(model, frame, task.users, exclusions, index, depth)
        if getattr(model, "restricted_to", None):  # EASE's top-N item rule applied
            chosen[name]["restricted_to"] = model.restricted_to
    return rankings, chosen


