"""Ablations of the two-tower model, measured with the ranking evaluator's protocol.

Generates synthetic data (or uses a data root), runs the pipeline's ExampleGen and Transform
once (LocalDagRunner, as bench_input_pipeline.py does), then trains each variant with
the Trainer's own `run_fn` on those artifacts and ranks the full catalogue with its exported
`recommend` signature (components/evaluation: temporal split, whole train history excluded).
The baselines are ranked once on the same task. One row per variant: recall@10, NDCG@10,
coverage@10 and train seconds; the recall@10 of the variant / most-popular.

    python bench/bench_ablations.py --scale small --workdir /tmp/ablations-small
    python bench/bench_ablations.py --scale small --variants base,no_logq --epochs 4
    python bench/bench_ablations.py --experiment online_retail --data-root DIR --workdir W

A variant is a set of ModelConfig overrides (VARIANTS); `--set model.x=y` applies to all.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Dict, List

import hyperrec.pipeline  # noqa: F401  (Keras environment before TensorFlow)

import numpy as np

from bench_input_pipeline import run_ingest_and_transform  # the pipeline's ExampleGen..Transform
from hyperrec.components import config as config_lib
from hyperrec.components import trainer
from hyperrec.components.evaluation import component as ranking_evaluator
from hyperrec.components.evaluation import baselines, metrics, model_ranking, protocol
from hyperrec.data import synthetic

K = 10
DEPTH = 50

# name -> ModelConfig overrides on top of the experiment's (and --set) values.
VARIANTS: Dict[str, Dict[str, object]] = {
    "base": {},
    "no_logq": {"log_q_weight": 0.0},
    "half_logq": {"log_q_weight": 0.5},
    "serve_popularity_1": {"serving_popularity_weight": 1.0},
    "freshness": {"freshness_days": (1, 2, 3, 5, 7, 10, 14, 21, 28, 42, 60, 90)},
    "no_freshness": {"freshness_days": ()},
    "no_recent_popularity": {"recent_popularity_counts": ()},
    "fusion_1": {"fusion_weight": 1.0},
    "fusion_3": {"fusion_weight": 3.0},
    "id_only": {"use_content": False},
    "content_only": {"use_item_id": False},
    "batch_negatives": {"retrieval_negatives": "batch"},
    "no_validation_refit": {"refit_full_train": False},
    "no_validation": {"validation_days": 0.0},
    "emb64": {"embedding_dim": 64},
    "epochs8": {"epochs": 8},
    "temp_0.05": {"temperature": 0.05},
    "temp_0.2": {"temperature": 0.2},
    "lr_1e-3": {"learning_rate": 1e-3},
    "batch_256": {"batch_size": 256},
}


def scores(ranked: np.ndarray, task: protocol.Task) -> Dict[str, float]:
    values = metrics.per_user(ranked, task.targets, task.popularity, [K])
    return {f"recall@{K}": float(values[f"recall@{K}"].mean()),
            f"ndcg@{K}": float(values[f"ndcg@{K}"].mean()),
            f"coverage@{K}": metrics.coverage(ranked, K, len(task.catalogue.item_ids))}


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="")
    parser.add_argument("--scale", default="small", help="synthetic scale (no --data-root)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-root", default="")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], help="section.field=value")
    parser.add_argument("--out", default="", help="JSON lines of the rows (appended)")
    args = parser.parse_args(argv)

    config = config_lib.load(args.experiment or args.scale, args.set)
    data_root = args.data_root
    if not data_root:
        data_root = os.path.join(args.workdir, "data")
        if not os.path.isdir(data_root):
            synthetic.generate(args.scale, args.seed, data_root)
    run_dir = os.path.join(args.workdir, "run")
    os.makedirs(run_dir, exist_ok=True)
    examples, transform_dir = run_ingest_and_transform(config, os.path.abspath(data_root),
                                                       run_dir)
    artifacts = {"examples": examples.uri, "transform": transform_dir}
    task = protocol.load_task(artifacts["examples"], history_length=config.data.history_length,
                              new_user_days=config.eval.new_user_days)
    print(f"{len(task.users)} evaluated users, {len(task.catalogue.item_ids)} items "
          f"({int(task.catalogue.cold.sum())} cold)", flush=True)
    rows: List[Dict[str, object]] = []
    ranked, _ = baselines.rank_baselines(
        task, DEPTH, ranking_evaluator.settings(config.eval)[1],
        (baselines.MOST_POPULAR, baselines.RECENT_POPULAR, baselines.ITEM_KNN,
         baselines.EASE))
    for name, ranking in ranked.items():
        rows.append({"variant": name, **scores(ranking, task), "train_s": 0.0})
    popular = rows[0][f"recall@{K}"]
    header = (f"{'variant':<22} {'recall@10':>9} {'ndcg@10':>8} {'cov@10':>7} "
              f"{'x most-pop':>10} {'train s':>8}")
    print(header, flush=True)

    def show(row: Dict[str, object]) -> None:
        print(f"{row['variant']:<22} {row['recall@10']:9.4f} {row['ndcg@10']:8.4f} "
              f"{row['coverage@10']:7.3f} {row['recall@10'] / max(popular, 1e-9):10.2f} "
              f"{row['train_s']:8.1f}", flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({**row, "scale": args.experiment or args.scale}) + "\n")

    for row in rows:
        show(row)
    for variant in [v for v in args.variants.split(",") if v]:
        model = dataclasses.replace(config.model, **VARIANTS[variant])
        custom = {"model": dataclasses.asdict(model), "data": dataclasses.asdict(config.data),
                  "transform": dataclasses.asdict(config.transform)}
        model_root = os.path.join(args.workdir, "variants", variant)
        start = time.monotonic()
        trainer.run_fn(trainer.fn_args_for(artifacts["examples"], artifacts["transform"],
                                           model_root, custom))
        seconds = time.monotonic() - start
        ranking = model_ranking.rank_with_model(
            os.path.join(model_root, "serving_model"), task, DEPTH, config.data.history_length)
        show({"variant": variant, **scores(ranking, task), "train_s": seconds})


if __name__ == "__main__":
    main(sys.argv[1:])
