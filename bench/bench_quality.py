"""Offline ranking quality: hyperrec against the baselines (and the generator's oracle).

Runs the real pipeline (LocalDagRunner; cached when the workdir already holds a run of the
same data and code), then evaluates its Trainer's model with the project's protocol
(components/evaluation: full catalogue, whole train history excluded, paired bootstrap
intervals) next to most-popular (all time, recent), ItemKNN and EASE. On synthetic data it
adds the oracle: the generator's own choice model (data/synthetic/behaviour.py) scoring
every user x item for the eval window (see `oracle_rankings`).

    python bench/bench_quality.py synthetic --scale default --workdir /tmp/bq-default
    python bench/bench_quality.py online-retail \
        --rda ../shared/data/online_retail/onlineretail.rda --workdir /tmp/bq-retail
    # the newest model of a run that exists already (here `make demo`'s), not a new run:
    python bench/bench_quality.py synthetic --from-run runs/demo \
        --data-root runs/demo/data/default-seed42 --workdir /tmp/bq-demo

Prints one table per slice (value and 95 % interval per method; ratio rows against
most-popular with the paired interval of the difference) and writes metrics.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import hyperrec.pipeline  # noqa: F401  (Keras environment before TensorFlow)

import numpy as np

from hyperrec.components import config as config_lib
from hyperrec.schemas import features
from hyperrec.components.evaluation import component as ranking_evaluator
from hyperrec.components.evaluation import gate, protocol, run
from hyperrec.data import synthetic
from hyperrec.data.synthetic import attributes, behaviour, catalogue
from hyperrec.pipeline.runners import local as local_runner


def _latest(parent: str) -> str:
    return max(glob.glob(os.path.join(parent, "*")), key=lambda p: int(os.path.basename(p)))


def oracle_rankings(task: protocol.Task, seed: int, scale_name: str, end_ts: int,
                    depth: int) -> np.ndarray:
    """The generator's expected engagement of each task user with each catalogue item over
    the eval window [cutoff, end): sum over the window's days of P(item shown | available
    items that day, the shop's popularity / random / new-arrival mix) x sigmoid(utility),
    with the utility of the choice model at the user's usual device (context terms that
    vary by session hour are left out; they average over a week). Ranked, best first."""
    scale = synthetic.get_scale(scale_name)
    shift = behaviour.draw_shift(seed, scale)
    items = catalogue.build_catalogue(seed, scale, shift.batch_category)
    users = {u.user_id: u for u in behaviour.build_users(seed, scale)}
    table = behaviour.ItemTable(items)
    model = behaviour.CHOICE_MODEL
    position = {item.item_id: i for i, item in enumerate(items)}
    columns = np.array([position[i] for i in task.catalogue.item_ids])
    trendy = attributes.COLOUR_NAMES.index(shift.trendy_colour)
    days = np.arange(task.cutoff, end_ts, features.SECONDS_PER_DAY) + features.SECONDS_PER_DAY // 2
    exposure = np.zeros(len(items))
    for t in days:
        n = table.available(int(t))
        weights = model.popularity_share * table.popularity[:n] / table.popularity[:n].sum()
        weights = weights + model.random_share / n
        new = table.first_seen[:n] >= t - model.new_arrival_days * features.SECONDS_PER_DAY
        if new.any():
            weights = weights + model.new_arrivals_share * new / new.sum()
        exposure[:n] += weights / weights.sum()
    exposure = exposure[columns]
    colour, category = table.colour[columns], table.category[columns]
    style, price_z, quality = table.style[columns], table.price_z[columns], table.quality[columns]
    ranked = []
    for user_id in task.users:
        user = users[user_id]
        utility = (model.base
                   + model.colour_match * np.isin(colour, [attributes.COLOUR_NAMES.index(c)
                                                           for c in user.fav_colours])
                   + model.category_match * np.isin(category, [attributes.CATEGORIES.index(c)
                                                               for c in user.fav_categories])
                   + model.style_match * (style == attributes.STYLES.index(user.fav_style))
                   - model.price * user.price_sensitivity * price_z
                   * (1.0 + model.mobile_price_extra * (user.primary_device == "mobile"))
                   + quality)
        if user.follows_trend and task.cutoff >= shift.timestamp:
            utility = utility + model.trend * (colour == trendy)
        score = exposure / (1.0 + np.exp(-utility))
        ranked.append(np.argsort(-score, kind="stable")[:depth + len(items)])
    return np.array(ranked)


def _pipeline(experiment: str, data_root: str, workdir: str, overrides: List[str]):
    config = config_lib.load(experiment, overrides)
    start = time.monotonic()
    paths = local_runner.run(config, data_root, workdir)
    print(f"pipeline: {time.monotonic() - start:.0f}s", flush=True)
    root = paths.pipeline_root
    examples = _latest(os.path.join(root, "FileBasedExampleGen", "examples"))
    model = os.path.join(_latest(os.path.join(root, "Trainer", "model")), "Format-Serving")
    return config, examples, model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", choices=("synthetic", "online-retail"))
    parser.add_argument("--scale", default="default", help="synthetic scale")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--rda", default="../shared/data/online_retail/onlineretail.rda")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override, as `hyperrec run --set`")
    parser.add_argument("--from-run", default="",
                        help="a pipeline workdir whose newest model is evaluated instead of "
                             "running the pipeline (its data: --data-root)")
    parser.add_argument("--data-root", default="", help="the data (default: WORKDIR/data)")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    data_root = os.path.abspath(args.data_root) if args.data_root else os.path.join(workdir,
                                                                                     "data")
    extra: Dict[str, np.ndarray] = {}
    if args.data == "synthetic":
        if not os.path.exists(os.path.join(data_root, "ground_truth.json")):
            synthetic.generate(args.scale, args.seed, data_root)
        experiment = args.scale if args.scale in config_lib.EXPERIMENTS else "default"
    else:
        if not glob.glob(os.path.join(data_root, "span-*")):
            subprocess.run([sys.executable, "-m", "hyperrec.data.importers.cli",
                            "online-retail", os.path.abspath(args.rda), "--out", data_root],
                           check=True)
        experiment = "online_retail"
    if args.from_run:
        config = config_lib.load(experiment, args.overrides)
        root = os.path.join(os.path.abspath(args.from_run), "pipeline")
        examples = _latest(os.path.join(root, "FileBasedExampleGen", "examples"))
        model = os.path.join(_latest(os.path.join(root, "Trainer", "model")), "Format-Serving")
    else:
        config, examples, model = _pipeline(experiment, data_root,
                                            os.path.join(workdir, "run"), args.overrides)
    start = time.monotonic()
    _, baseline_config = ranking_evaluator.settings(config.eval)
    task = protocol.load_task(examples, history_length=config.data.history_length,
                              new_user_days=config.eval.new_user_days)
    depth = 100
    if args.data == "synthetic":
        with open(os.path.join(data_root, "ground_truth.json")) as f:
            truth = json.load(f)
        scale = synthetic.get_scale(truth["scale"])
        extra["oracle"] = oracle_rankings(task, truth["seed"], truth["scale"], scale.end_ts,
                                          depth)
    result = run.evaluate(task, {gate.CANDIDATE: model},
                          history_length=config.data.history_length,
                          ks=config.eval.ranking_ks, mrr_depth=depth,
                          baseline_config=baseline_config, extra_rankings=extra,
                          n_resamples=args.resamples, seed=config.eval.bootstrap_seed)
    print(f"evaluation: {time.monotonic() - start:.0f}s; catalogue {result['n_catalogue']} "
          f"items ({result['n_cold_items']} cold); chosen: "
          + ", ".join(f"{name} {c['value']:g} (grid {c['grid'][0]:g}..{c['grid'][-1]:g})"
                      for name, c in result["baseline_hyperparameters"].items()))
    for name in protocol.SLICES:
        print()
        print(gate.table(result, name, reference="most_popular"))
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
