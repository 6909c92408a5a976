"""Offline ranking quality: hyperrec against the baselines (and the generator's oracle).

Runs the real pipeline (LocalDagRunner; cached when the workdir already holds a run of the
same data and code), then evaluates its Trainer's model with the project's protocol
(components/evaluation: full catalogue, whole train history excluded, paired bootstrap
intervals) next to most-popular (all time, recent), ItemKNN and EASE. On synthetic data it
adds two references from the generator (data/synthetic/oracle.py): the oracle, its own choice
model scoring every user x item for the eval window with the users' true tastes, and
`inferred_tastes`, the same with each user's tastes inferred by exact Bayesian inference from
their own train-period impressions: the best any learner of this log can expect, which bounds
what a recommender can reach. On any data, `random_items` draws each user's list uniformly
from their candidates: the chance level of every metric (`--no-model` evaluates the references and baselines alone,
after ExampleGen and Transform, without training).

    python bench/bench_quality.py synthetic --scale default --workdir /tmp/bq-default
    python bench/bench_quality.py online-retail \
        --rda ../shared/data/online_retail/onlineretail.rda --workdir /tmp/bq-retail
    # the newest model of a run that exists already (here `make demo`'s), not a new run:
    python bench/bench_quality.py synthetic --from-run runs/demo \
        --data-root runs/demo/data/default-seed42 --workdir /tmp/bq-demo
    # the bounds alone: baselines, oracle and inferred tastes, no Trainer
    python bench/bench_quality.py synthetic --scale default --no-model --workdir /tmp/bq-bound

Prints one table per slice (value and 95 % interval per method; ratio rows against
most-popular with the paired interval of the difference), then how personal each method's
top-10 lists are (components/evaluation/personalisation.py: Jaccard distance between users'
lists, coverage@10, overlap with recent-popular's top-10 and, on synthetic data, the taste
match against the generator's hidden tastes, with the users' own last 10 items as a reference
row) and writes all of it to metrics.json (`personalisation`).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import time
from typing import Dict, List

from hyperrec.pipeline import quiet  # Keras environment and quiet logs before TensorFlow

quiet.native_logs()

import numpy as np

from hyperrec.components import config as config_lib
from hyperrec.components.evaluation import component as ranking_evaluator
from hyperrec.components.evaluation import baselines, gate, personalisation, protocol, run
from hyperrec.data import synthetic
from hyperrec.data.synthetic import oracle

from bench_input_pipeline import run_ingest_and_transform  # the pipeline's ExampleGen..Transform
from hyperrec.pipeline.runners import local as local_runner

quiet.python_logs()


def _latest(parent: str) -> str:
    return max(glob.glob(os.path.join(parent, "*")), key=lambda p: int(os.path.basename(p)))


ORACLE = "oracle"
INFERRED_TASTES = "inferred_tastes"
RANDOM_ITEMS = "random_items"  # the chance level of every metric
BOUND_METRIC = "recall@10"


def bounds(result: Dict[str, object]) -> str:
    """The ratios issue-style targets are stated in: each method against the oracle and the
    best baseline, and its cold-item value against its warm-item value."""
    overall = result["slices"]["overall"]["metrics"]
    value = {name: overall[name][BOUND_METRIC]["value"] for name in overall}
    best = max(baselines.BASELINES, key=lambda name: value.get(name, -1.0))
    warm = result["slices"]["warm_items"]["metrics"]
    cold = result["slices"]["cold_items"]["metrics"]
    lines = [f"{BOUND_METRIC}: ratios (best baseline: {best} {value[best]:.4f})",
             f"{'method':<18} {'value':>7} {'x oracle':>9} {'x best':>7} {'cold/warm':>10}"]
    for name in value:
        ratio_cold = (cold[name][BOUND_METRIC]["value"]
                      / max(warm[name][BOUND_METRIC]["value"], 1e-12)) if cold else float("nan")
        to_oracle = value[name] / value[ORACLE] if ORACLE in value else float("nan")
        lines.append(f"{name:<18} {value[name]:7.4f} {to_oracle:9.2f} "
                     f"{value[name] / value[best]:7.2f} {ratio_cold:10.2f}")
    return "\n".join(lines)


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
    parser.add_argument("--no-model", action="store_true",
                        help="no Trainer: baselines and the generator's references only")
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
            from hyperrec.data.importers import online_retail
            online_retail.import_online_retail(os.path.abspath(args.rda), data_root)
        experiment = "online_retail"
    models: Dict[str, str] = {}
    if args.no_model:
        config = config_lib.load(experiment, args.overrides)
        examples_artifact, _ = run_ingest_and_transform(
            config, data_root, os.path.join(workdir, "ingest"), transform=False)
        examples = examples_artifact.uri
    elif args.from_run:
        config = config_lib.load(experiment, args.overrides)
        root = os.path.join(os.path.abspath(args.from_run), "pipeline")
        examples = _latest(os.path.join(root, "FileBasedExampleGen", "examples"))
        models[gate.CANDIDATE] = os.path.join(_latest(os.path.join(root, "Trainer", "model")),
                                              "Format-Serving")
    else:
        config, examples, models[gate.CANDIDATE] = _pipeline(
            experiment, data_root, os.path.join(workdir, "run"), args.overrides)
    start = time.monotonic()
    _, baseline_config = ranking_evaluator.settings(config.eval)
    task = protocol.load_task(examples, history_length=config.data.history_length,
                              new_user_days=config.eval.new_user_days)
    depth = 100
    truth = None
    extra[RANDOM_ITEMS] = personalisation.random_ranking(task, depth, seed=config.model.seed)
    if args.data == "synthetic":
        with open(os.path.join(data_root, "ground_truth.json")) as f:
            truth = json.load(f)
        scale = synthetic.get_scale(truth["scale"])
        window = (truth["seed"], truth["scale"], task.users, task.catalogue.item_ids,
                  task.cutoff, scale.end_ts)
        extra[ORACLE] = oracle.rank(oracle.oracle_scores(*window))
        reference_start = time.monotonic()
        extra[INFERRED_TASTES] = oracle.rank(oracle.inferred_taste_scores(*window))
        print(f"inferred tastes of {len(task.users)} users: "
              f"{time.monotonic() - reference_start:.0f}s", flush=True)
    result = run.evaluate(task, models,
                          history_length=config.data.history_length,
                          ks=config.eval.ranking_ks, mrr_depth=depth,
                          baseline_config=baseline_config, extra_rankings=extra,
                          n_resamples=args.resamples, seed=config.eval.bootstrap_seed,
                          truth=truth)
    print(f"evaluation: {time.monotonic() - start:.0f}s; catalogue {result['n_catalogue']} "
          f"items ({result['n_cold_items']} cold); chosen: "
          + ", ".join(f"{name} {c['value']:g} (grid {c['grid'][0]:g}..{c['grid'][-1]:g})"
                      for name, c in result["baseline_hyperparameters"].items()))
    for name in protocol.SLICES:
        print()
        print(gate.table(result, name, reference="most_popular"))
    print()
    print(bounds(result))
    print()
    print(gate.personalisation_table(result))
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
