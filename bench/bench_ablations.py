"""Ablations of the two-tower model, measured with the ranking evaluator's protocol.

Generates synthetic data (or uses a data root), runs the pipeline's ExampleGen and Transform
once (LocalDagRunner, as bench_input_pipeline.py does), then trains each variant with
the Trainer's own `run_fn` on those artifacts and ranks the full catalogue with its exported
`recommend` signature (components/evaluation: temporal split, whole train history excluded).
The baselines are ranked once on the same task. One row per variant: recall@10, NDCG@10,
coverage@10 and train seconds; the recall@10 of the variant / most-popular.

    python bench/bench_ablations.py --scale small --workdir /tmp/ablations-small
    python bench/bench_ablations.py --scale small --variants base,no_logq --set model.epochs=4
    python bench/bench_ablations.py --scale small --workdir W --variants base --seeds 42,43,44
    python bench/bench_ablations.py --experiment online_retail --data-root DIR --workdir W
    python bench/bench_ablations.py --scale small --workdir W \
        --variants base,pretrained_image_fine_tune,pretrained_text_fine_tune

A variant is a set of ModelConfig overrides (VARIANTS), or several joined by "+"
(`batch_512+emb64`: both sets, later ones win); `--set model.x=y` applies to all.
The pretrained_* variants (PRETRAINED_VARIANTS) train with pretrained item-tower encoders
(components/pretraining/): --pretrained-image / --pretrained-text, or pretrained once
into WORKDIR/pretrained/ on ../shared/data (clothing photos, Online Retail texts). Rows also
show recall@50 and recall@50 on cold items (first seen after the cutoff).

Every user is queried at the cutoff, so every query has the same hour and day of week;
`--query-times cutoff,first_eval_event` also ranks each model with each user queried at
their first eval event (their next visit), the protocol in which time-of-day context can
matter: those rows are named `<variant>@first_eval_event`. `--rank-existing` ranks the
models a previous run left in WORKDIR/variants/ instead of training them again.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Dict, List

from hyperrec.pipeline import quiet  # Keras environment, quiet logs before TensorFlow

quiet.native_logs()

import numpy as np  # noqa: E402

from bench_input_pipeline import run_ingest_and_transform  # noqa: E402  (ExampleGen..Transform)
from hyperrec.components import config as config_lib  # noqa: E402
from hyperrec.components import trainer  # noqa: E402
from hyperrec.components.evaluation import component as ranking_evaluator  # noqa: E402
from hyperrec.components.evaluation import (  # noqa: E402
    baselines, metrics, model_ranking, protocol)
from hyperrec.components.model import diagnostics  # noqa: E402
from hyperrec.data import synthetic  # noqa: E402
from hyperrec.schemas import features  # noqa: E402

quiet.python_logs()
# tf.Transform's "Tables initialized inside a tf.function" notices, once per variant.
logging.getLogger("absl").setLevel(logging.ERROR)

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
    "batch_512": {"batch_size": 512},
    "batch_1024": {"batch_size": 1024},
    "id32": {"id_embedding_dim": 32},
    "id64": {"id_embedding_dim": 64},
    "mixed_negatives_64": {"sampled_negatives": 64},
    "mixed_negatives_256": {"sampled_negatives": 256},
    "pool_mean": {"history_pooling": "mean"},
    "pool_recency": {"history_pooling": "recency"},
    "no_time_of_day": {"use_time_of_day": False},
    "affinity_0": {"affinity_weight": 0.0},
    "affinity_1": {"affinity_weight": 1.0},
    "affinity_3": {"affinity_weight": 3.0},
    "no_global_terms": {"freshness_days": (), "recent_popularity_counts": (),
                        "log_q_weight": 0.0},
    "bias_without_id": {"item_bias_reads_id": False},
    # P(engaged | shown) from the affinity task x P(shown)^w from recent impressions.
    "served_affinity": {"affinity_weight": 1.0, "served_score": "affinity",
                        "recent_popularity_events": "shown"},
    # The same with the demand factor read from recent engagements (what recent-popular counts).
    "served_affinity_engaged": {"affinity_weight": 1.0, "served_score": "affinity"},
    "no_retrieval_loss": {"retrieval_weight": 0.0},
    "epochs_2": {"epochs": 2},
    "id_dropout_0.3": {"id_dropout": 0.3},
    "dropout_0.3": {"dropout": 0.3},
    "id_dropout_0.5": {"id_dropout": 0.5},
    "new_item_days_0": {"new_item_days": 0.0},
    "recent_shown": {"recent_popularity_events": "shown"},
    "recent_shown_wide": {"recent_popularity_events": "shown", "recent_popularity_counts": (
        1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 513)},
    "recent_days_1": {"recent_popularity_days": 1},
    "recent_days_3": {"recent_popularity_days": 3},
    "recent_days_14": {"recent_popularity_days": 14},
}
# name -> (pretrained encoders, mode): model.pretrained of the variant, with the encoders of
# --pretrained-image / --pretrained-text (or pretrained once into WORKDIR/pretrained/).
PRETRAINED_VARIANTS = {
    "pretrained_image_fine_tune": (("image",), "fine_tune"),
    "pretrained_image_frozen": (("image",), "frozen"),
    "pretrained_text_fine_tune": (("text",), "fine_tune"),
    "pretrained_text_frozen": (("text",), "frozen"),
    "pretrained_both_fine_tune": (("image", "text"), "fine_tune"),
}
SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "data")


def paired_difference(ranked: np.ndarray, task: protocol.Task,
                      other_ranking: np.ndarray) -> Dict[str, object]:
    """recall@K of `ranked` minus `other_ranking`'s with its paired 95 % bootstrap interval
    over users: the ranking evaluator's own difference (metrics.evaluate)."""
    difference = metrics.evaluate({"variant": ranked, "other": other_ranking},
                                  {"overall": task.targets}, task.popularity, ks=[K],
                                  )["slices"]["overall"]["differences"]["variant - other"]
    return difference[f"recall@{K}"]


def versus_best_baseline(ranked: np.ndarray, task: protocol.Task, best: str,
                         best_ranking: np.ndarray) -> Dict[str, object]:
    """The variant's recall@K minus the best baseline's, with its paired interval."""
    difference = paired_difference(ranked, task, best_ranking)
    return {"best_baseline": best, f"minus_best@{K}": difference["value"],
            f"minus_best@{K}_interval": difference["interval"]}


def scores(ranked: np.ndarray, task: protocol.Task) -> Dict[str, float]:
    values = metrics.per_user(ranked, task.targets, task.popularity, [K, DEPTH])
    cold_targets = task.slice_targets("cold_items")
    with_cold = np.array([len(t) > 0 for t in cold_targets])
    cold = (metrics.per_user(ranked[with_cold], [t for t in cold_targets if len(t)],
                             task.popularity, [DEPTH])[f"recall@{DEPTH}"].mean()
            if with_cold.any() else float("nan"))
    return {f"recall@{K}": float(values[f"recall@{K}"].mean()),
            f"ndcg@{K}": float(values[f"ndcg@{K}"].mean()),
            f"coverage@{K}": metrics.coverage(ranked, K, len(task.catalogue.item_ids)),
            f"recall@{DEPTH}": float(values[f"recall@{DEPTH}"].mean()),
            f"cold_recall@{DEPTH}": float(cold)}


def served_personalisation(serving_model: str, task: protocol.Task,
                           users: int = 400) -> Dict[str, float]:
    """How personal the variant's served scores are (model/diagnostics.py): the share of
    the score variance that depends on the user over the first `users` evaluated users,
    and the spread of the catalogue embeddings."""
    import tensorflow as tf

    loaded = tf.saved_model.load(serving_model)
    signature = loaded.signatures[features.RECOMMEND]
    scores = diagnostics.served_scores(
        lambda request: signature(**request), task.users[:users], task.history[:users],
        task.devices[:users], task.query_timestamps()[:users], task.catalogue.item_ids)
    spread = diagnostics.embedding_spread(loaded.catalog_embeddings.numpy())
    return {"user_share": diagnostics.user_variance_share(scores),
            "item_cosine": spread["mean_pairwise_cosine"],
            "item_rank": spread["effective_rank"]}


def pretrained_encoders(args: argparse.Namespace, config: config_lib.HyperrecConfig,
                        kinds: set) -> Dict[str, str]:
    """kind -> directory of the pretrained encoder: --pretrained-* or pretrained once here
    (the clothing photos / Online Retail texts of ../shared/data) with the experiment's
    encoder sizes."""
    from hyperrec.components import pretraining
    from hyperrec.pipeline.cli import pretrain as pretrain_cli
    found = {"image": args.pretrained_image, "text": args.pretrained_text}
    for kind in sorted(kinds):
        if found[kind]:
            continue
        found[kind] = os.path.join(args.workdir, "pretrained", kind)
        if os.path.exists(os.path.join(found[kind], pretraining.MANIFEST)):
            continue
        if kind == "image":
            manifest = pretraining.pretrain_image(args.photos, found[kind], config.model,
                                                  config.data.image_size, report=print)
        else:
            texts, source = pretrain_cli.online_retail_texts(args.rda)
            manifest = pretraining.pretrain_text(
                texts, found[kind], config.model, config.transform.text_max_tokens,
                config.transform.text_vocab_size, source=source, report=print)
        print(f"pretrained {kind}: {manifest['metrics']}", flush=True)
    return found


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="")
    parser.add_argument("--scale", default="small", help="synthetic scale (no --data-root)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", default="",
                        help="comma-separated model.seed values: each variant trains once per "
                        "seed (rows <variant>@seed<s>), then mean, min and max over the seeds")
    parser.add_argument("--data-root", default="")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"of {', '.join([*VARIANTS, *PRETRAINED_VARIANTS])}")
    parser.add_argument("--set", action="append", default=[], help="section.field=value")
    parser.add_argument("--out", default="", help="JSON lines of the rows (appended)")
    parser.add_argument("--query-times", default="cutoff",
                        help=f"comma-separated, of {', '.join(protocol.QUERY_TIMES)}: when "
                        "each user is queried (the model rows; baselines ignore the time)")
    parser.add_argument("--rank-existing", action="store_true",
                        help="rank WORKDIR/variants/<variant>/serving_model where it exists "
                        "instead of training the variant (train s is then 0)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse WORKDIR's ExampleGen and Transform outputs where data and "
                        "settings match (TFX's execution cache); other settings run them again")
    parser.add_argument("--pretrained-image", default="",
                        help="pretrained image encoder of the pretrained_image_* variants")
    parser.add_argument("--pretrained-text", default="",
                        help="pretrained text encoder of the pretrained_text_* variants")
    parser.add_argument("--photos", default=os.path.join(SHARED_DATA, "clothing_photos"),
                        help="photos to pretrain the image encoder on (no --pretrained-image)")
    parser.add_argument("--rda", default=os.path.join(SHARED_DATA, "online_retail",
                                                      "onlineretail.rda"),
                        help="Online Retail file to pretrain the text encoder on")
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
                                                       run_dir, reuse=args.reuse)
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
    best = max(rows, key=lambda row: row[f"recall@{K}"])["variant"]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in PRETRAINED_VARIANTS
               and any(part not in VARIANTS for part in v.split("+"))]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    query_times = [q for q in args.query_times.split(",") if q]
    if not query_times or any(q not in protocol.QUERY_TIMES for q in query_times):
        parser.error(f"--query-times: choose from {', '.join(protocol.QUERY_TIMES)}")
    encoders = pretrained_encoders(args, config, {
        kind for v in variants if v in PRETRAINED_VARIANTS for kind in PRETRAINED_VARIANTS[v][0]})
    header = (f"{'variant':<32} {'recall@10':>9} {'ndcg@10':>8} {'cov@10':>7} "
              f"{'recall@50':>9} {'cold r@50':>9} {'x most-pop':>10} {'train s':>8}")
    if args.set:
        print(f"every variant with --set {' '.join(args.set)}", flush=True)
    print(header, flush=True)

    def show(row: Dict[str, object]) -> None:
        print(f"{row['variant']:<32} {row['recall@10']:9.4f} {row['ndcg@10']:8.4f} "
              f"{row['coverage@10']:7.3f} {row['recall@50']:9.4f} {row['cold_recall@50']:9.4f} "
              f"{row['recall@10'] / max(popular, 1e-9):10.2f} {row['train_s']:8.1f}",
              flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({**row, "scale": args.experiment or args.scale,
                                    "set": args.set}) + "\n")

    for row in rows:
        show(row)
    model_rankings: Dict[str, np.ndarray] = {}  # row name -> ranking, for "- base"
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    seeded_rows: Dict[str, List[Dict[str, object]]] = {}  # row name without @seed -> rows
    for variant, seed in [(v, s) for v in variants for s in seeds or [None]]:
        suffix = "" if seed is None else f"@seed{seed}"
        if variant in PRETRAINED_VARIANTS:
            kinds, mode = PRETRAINED_VARIANTS[variant]
            model = dataclasses.replace(config.model, pretrained=dataclasses.replace(
                config.model.pretrained, mode=mode, **{kind: encoders[kind] for kind in kinds}))
        else:
            overrides: Dict[str, object] = {}
            for part in variant.split("+"):
                overrides.update(VARIANTS[part])
            model = dataclasses.replace(config.model, **overrides)
        if seed is not None:
            model = dataclasses.replace(model, seed=seed)
        custom = {"model": dataclasses.asdict(model), "data": dataclasses.asdict(config.data),
                  "transform": dataclasses.asdict(config.transform)}
        model_root = os.path.join(args.workdir, "variants", variant + suffix)
        serving_model = os.path.join(model_root, "serving_model")
        seconds = 0.0
        if not (args.rank_existing and os.path.isdir(serving_model)):
            start = time.monotonic()
            trainer.run_fn(trainer.fn_args_for(artifacts["examples"], artifacts["transform"],
                                               model_root, custom))
            seconds = time.monotonic() - start
        for query_time in query_times:
            ranking = model_ranking.rank_with_model(serving_model, task, DEPTH,
                                                    config.data.history_length,
                                                    query_time=query_time)
            unseeded = variant if query_time == "cutoff" else f"{variant}@{query_time}"
            name = unseeded + suffix
            row = {"variant": name, **scores(ranking, task), "train_s": seconds,
                   **versus_best_baseline(ranking, task, best, ranked[best]),
                   **served_personalisation(serving_model, task)}
            base = ("base" if query_time == "cutoff" else f"base@{query_time}") + suffix
            model_rankings[name] = ranking
            if variant != "base" and base in model_rankings:
                versus_base = paired_difference(ranking, task, model_rankings[base])
                row.update({f"minus_base@{K}": versus_base["value"],
                            f"minus_base@{K}_interval": versus_base["interval"]})
            seeded_rows.setdefault(unseeded, []).append(row)
            show(row)
            print(f"  {name}: user share of score variance {row['user_share']:.3f}, "
                  f"catalogue mean cosine {row['item_cosine']:.3f}, effective rank "
                  f"{row['item_rank']:.1f}", flush=True)
            for other, key in ((best, "minus_best"), (base, "minus_base")):
                if f"{key}@{K}" in row:
                    low, high = row[f"{key}@{K}_interval"]
                    print(f"  {name} - {other}: recall@{K} {row[f'{key}@{K}']:+.4f} "
                          f"[{low:+.4f}, {high:+.4f}]", flush=True)

    if seeds:
        print_seed_spread(seeded_rows, seeds)


def print_seed_spread(rows_by_variant: Dict[str, List[Dict[str, object]]],
                      seeds: List[int]) -> None:
    """Mean, min and max over the model seeds of each variant's recall@10 and NDCG@10: the
    noise that a difference between variants, or the gate's margin, has to exceed."""
    print(f"\nover model seeds {','.join(map(str, seeds))}: mean [min, max]", flush=True)
    print(f"{'variant':<32} {'recall@10':>24} {'ndcg@10':>24}", flush=True)
    for variant, rows in rows_by_variant.items():
        cells = []
        for metric in (f"recall@{K}", f"ndcg@{K}"):
            values = np.array([row[metric] for row in rows])
            cells.append(f"{values.mean():.4f} [{values.min():.4f}, {values.max():.4f}]")
        print(f"{variant:<32} {cells[0]:>24} {cells[1]:>24}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
