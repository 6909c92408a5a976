"""Ranking evaluation at catalogue scale: time and peak RSS, the scalable EASE beside RecTools'.

Builds a deterministic synthetic log (`synthetic_log`: Zipf item popularity inside 50 topics,
each user engaging mostly with two favourite topics, 10 % of the items launched during the
log, one impression per engagement, the last 7 days as the eval split), then runs what the
RankingEvaluator runs on it: protocol.build_task, every baseline with its grid chosen on the
validation slice (run.evaluate), a stand-in model ranked through model_ranking.rank_task
(a tf.function doing the `recommend` signature's matmul + top_k over 64-d random item
embeddings), metrics with 1000 paired bootstrap resamples and the personalisation block.

Each configuration runs in its own fresh process (spawn), so its peak RSS (ru_maxrss) is its
own. The target (issue 28): 20k items and 2k users in <= 180 s and <= 4 GB. The old path
(RecTools' dense float64 EASE inverse, `ease_solver="rectools"`) runs side by side at the
`--compare` size, where it fits, and the ratios and the agreement of the two EASE rankings
are printed.

    .venv/bin/python bench/bench_ranking_eval.py    # 20k x 2k; 5k x 1k both ways
    .venv/bin/python bench/bench_ranking_eval.py --items 2000 --users 300 --compare 1000x200
    # the sampled-users path at 10^6 items (components/evaluation/README.md, "At 10^6 items")
    .venv/bin/python bench/bench_ranking_eval.py --items 1000000 --users 20000 \\
        --max-users 2000 --ease-max-dense 8192 --compare none
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from typing import Dict, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hyperrec.pipeline import quiet  # noqa: E402  (Keras env, quiet logs before TensorFlow)

quiet.native_logs()

import numpy as np  # noqa: E402

from hyperrec.schemas import features  # noqa: E402
from hyperrec.components.evaluation import protocol  # noqa: E402

DAY = features.SECONDS_PER_DAY
TARGET_SECONDS, TARGET_GB = 180.0, 4.0


def synthetic_log(n_items: int, n_users: int, seed: int = 0, *, days: int = 60,
                  eval_days: int = 7, events_per_user: float = 60.0, topics: int = 50
                  ) -> Tuple[protocol.Events, protocol.Events, protocol.Catalogue]:
    """(train, eval, catalogue) of a deterministic synthetic log (see the module docstring)."""
    rng = np.random.default_rng(seed)
    item_topic = rng.integers(topics, size=n_items)
    weight = 1.0 / (rng.permutation(n_items) + 10.0) ** 0.9  # Zipf-like popularity
    first_seen = np.where(rng.random(n_items) < 0.9, 0,
                          rng.integers(0, days * DAY, size=n_items)).astype(np.int64)
    favourites = rng.integers(topics, size=(n_users, 2))
    counts = np.maximum(1, rng.lognormal(np.log(events_per_user) - 0.5, 1.0, n_users)).astype(int)
    users = np.repeat(np.arange(n_users), counts)
    n = len(users)
    from_favourite = rng.random(n) < 0.7
    topic = favourites[users, rng.integers(2, size=n)]
    items = np.empty(n, np.int64)
    for t in range(topics):  # inside the topic, by popularity
        members = np.flatnonzero(item_topic == t)
        rows = np.flatnonzero(from_favourite & (topic == t))
        if len(members) and len(rows):
            share = weight[members] / weight[members].sum()
            items[rows] = rng.choice(members, size=len(rows), p=share)
        elif len(rows):
            from_favourite[rows] = False
    rows = np.flatnonzero(~from_favourite)
    items[rows] = rng.choice(n_items, size=len(rows), p=weight / weight.sum())
    timestamps = rng.integers(0, days * DAY, size=n)
    timestamps = np.maximum(timestamps, first_seen[items] + rng.integers(1, DAY, size=n))
    # One impression (a negative) per engagement, of a random available item.
    shown = rng.choice(n_items, size=n, p=weight / weight.sum())
    shown_at = np.maximum(timestamps, first_seen[shown] + 1)
    all_users = np.concatenate([users, users])
    all_items = np.concatenate([items, shown])
    all_times = np.concatenate([timestamps, shown_at])
    labels = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
    events = np.where(labels == 1, np.where(rng.random(2 * n) < 0.3, "purchase", "click"),
                      "impression").astype(object)
    order = np.argsort(all_times, kind="stable")
    user_ids = np.array([f"u{u}" for u in range(n_users)], object)
    item_ids = np.array([f"i{i}" for i in range(n_items)], object)
    log = protocol.Events(users=user_ids[all_users[order]], items=item_ids[all_items[order]],
                          timestamps=all_times[order], events=events[order],
                          labels=labels[order],
                          devices=np.full(2 * n, "mobile", object))
    cutoff = (days - eval_days) * DAY
    return (log.subset(log.timestamps < cutoff), log.subset(log.timestamps >= cutoff),
            protocol.Catalogue(item_ids=item_ids, first_seen=first_seen))


def stand_in_model(catalogue: protocol.Catalogue, dim: int = 64, seed: int = 0):
    """A `recommend` callable for model_ranking.rank_task: random user and item embeddings,
    matmul + tf.math.top_k over the catalogue, history and exclusions ignored (rank_task
    asks for k + exclusions and filters, as it does for a plain `recommend`)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    items = tf.constant(rng.normal(size=(len(catalogue.item_ids), dim)).astype(np.float32))
    ids = tf.constant(catalogue.item_ids.astype(str))
    buckets = 4096
    users = tf.constant(rng.normal(size=(buckets, dim)).astype(np.float32))

    @tf.function(reduce_retracing=True)
    def recommend(user_id, k):
        query = tf.gather(users, tf.strings.to_hash_bucket_fast(user_id, buckets))
        scores = tf.matmul(query, items, transpose_b=True)
        _, rows = tf.math.top_k(scores, k=tf.minimum(k, tf.shape(items)[0]))
        return tf.gather(ids, rows)

    def call(request):
        return {features.ITEM_IDS: recommend(request[features.USER_ID],
                                             tf.reduce_max(request[features.K]))}

    return call


def evaluate_once(n_items: int, n_users: int, seed: int, solver: str,
                  max_users: Optional[int], with_model: bool,
                  ease_max_dense: int = 20_000) -> Dict[str, object]:
    """One evaluation in this process; its seconds per stage and peak RSS."""
    from hyperrec.components.evaluation import baselines, model_ranking, run

    stages: Dict[str, float] = {}
    start = time.monotonic()
    train, eval_events, catalogue = synthetic_log(n_items, n_users, seed)
    stages["generate"] = time.monotonic() - start
    start = time.monotonic()
    task = protocol.build_task(train, eval_events, catalogue, history_length=10,
                               new_user_days=7)
    stages["build_task"] = time.monotonic() - start
    total = time.monotonic()
    extra = {}
    if with_model:
        start = time.monotonic()
        sampled = protocol.sample_users(task, max_users, seed)
        ranked = model_ranking.rank_task(stand_in_model(task.catalogue), sampled, depth=100,
                                         k_covers_exclusions=True)
        if sampled is not task:  # run.evaluate samples the same rows from the whole task
            full = np.full((len(task.users), ranked.shape[1]), -1, np.int64)
            full[protocol.sample_rows(len(task.users), max_users, seed)] = ranked
            ranked = full
        extra["stand_in_model"] = ranked
        stages["model ranking"] = time.monotonic() - start
    config = baselines.BaselineConfig(ease_solver=solver, validation_users=max_users,
                                      ease_max_dense=ease_max_dense)
    start = time.monotonic()
    result = run.evaluate(task, {}, history_length=10, baseline_config=config,
                          extra_rankings=extra, seed=seed, max_users=max_users)
    stages["baselines (grids on validation + final fits)"] = result["seconds"]["baselines"]
    stages["metrics, bootstrap, personalisation"] = (time.monotonic() - start
                                                    - result["seconds"]["baselines"])
    seconds = time.monotonic() - total
    overall = result["slices"]["overall"]["metrics"]
    return {"seconds": seconds, "stages": stages,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "users": len(task.users), "evaluated_users": result["slices"]["overall"]["n_users"],
            "train_positives": int(train.labels.sum()),
            "recall@10": {m: v["recall@10"]["value"] for m, v in overall.items()},
            "chosen": {n: c["value"] for n, c in result["baseline_hyperparameters"].items()},
            "ease": {k: v for k, v in result["baseline_hyperparameters"].get("ease", {}).items()
                     if k in ("solver", "restricted_to", "grid")},
            "seconds_per_method": result["seconds"]}


def ease_rankings(n_items: int, n_users: int, seed: int, solver: str, lam: float,
                  depth: int = 10) -> Dict[str, object]:
    """EASE alone at one lambda (the final fit): its top-`depth` and the fit's time / RSS."""
    from hyperrec.components.evaluation import baselines

    train, eval_events, catalogue = synthetic_log(n_items, n_users, seed)
    task = protocol.build_task(train, eval_events, catalogue, history_length=10,
                               new_user_days=7)
    config = baselines.BaselineConfig(ease_solver=solver)
    start = time.monotonic()
    ranked = baselines.rank(baselines.make_model(baselines.EASE, lam, config),
                            baselines.interactions_frame(task.train), task.users,
                            task.exclusions(), task.catalogue.index(), depth)
    return {"seconds": time.monotonic() - start, "ranked": ranked,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def in_fresh_process(function, *args):
    """function(*args) in a spawned process (its own peak RSS)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def _size(text: str) -> Tuple[int, int]:
    items, users = text.lower().split("x")
    return int(items), int(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-users", type=int, default=None,
                        help="evaluate a seeded sample of at most this many users")
    parser.add_argument("--compare", default="5000x1000",
                        help="ITEMSxUSERS where the old path runs beside the new; 'none'")
    parser.add_argument("--no-model", action="store_true", help="skip the stand-in model")
    parser.add_argument("--ease-max-dense", type=int, default=20_000,
                        help="EASE's largest dense side (past it: top-N items)")
    args = parser.parse_args()

    print(f"ranking evaluation, {args.items} items x {args.users} users (seed {args.seed}"
          + (f", at most {args.max_users} users sampled" if args.max_users else "") + ")")
    new = in_fresh_process(evaluate_once, args.items, args.users, args.seed, "scalable",
                           args.max_users, not args.no_model, args.ease_max_dense)
    print(f"  users evaluated {new['evaluated_users']} of {new['users']}; "
          f"train positives {new['train_positives']}")
    for stage, seconds in new["stages"].items():
        print(f"  {stage:<45} {seconds:7.1f} s")
    print(f"  evaluation total (after build_task)          {new['seconds']:7.1f} s "
          f"= {new['seconds'] / TARGET_SECONDS:.2f} x the {TARGET_SECONDS:.0f} s target")
    print(f"  peak RSS (whole process)                     {new['peak_rss_gb']:7.2f} GB "
          f"= {new['peak_rss_gb'] / TARGET_GB:.2f} x the {TARGET_GB:.0f} GB target")
    print("  recall@10: " + ", ".join(f"{m} {v:.4f}" for m, v in new["recall@10"].items()))
    print("  chosen: " + ", ".join(f"{n} {v:g}" for n, v in new["chosen"].items())
          + f"; EASE {new['ease']}")

    if args.compare == "none":
        return
    items, users = _size(args.compare)
    print(f"\nold path beside the new, {items} items x {users} users (each a fresh process)")
    runs = {solver: in_fresh_process(evaluate_once, items, users, args.seed, solver, None, False)
            for solver in ("rectools", "scalable")}
    old, fast = runs["rectools"], runs["scalable"]
    fits = "baselines (grids on validation + final fits)"
    print(f"  {'':<38}{'RecTools EASE':>14}{'scalable':>12}{'old / new':>11}")
    for label, a, b in (("baselines (grids + final fits), s", old["stages"][fits],
                         fast["stages"][fits]),
                        ("evaluation total, s", old["seconds"], fast["seconds"]),
                        ("peak RSS, GB", old["peak_rss_gb"], fast["peak_rss_gb"])):
        print(f"  {label:<38}{a:14.2f}{b:12.2f}{a / b:10.2f}x")
    print(f"  EASE lambda chosen: RecTools {old['chosen']['ease']:g}, scalable "
          f"{fast['chosen']['ease']:g}; recall@10 {old['recall@10']['ease']:.4f} / "
          f"{fast['recall@10']['ease']:.4f}")
    lam = fast["chosen"]["ease"]
    ranked = {solver: in_fresh_process(ease_rankings, items, users, args.seed, solver, lam)
              for solver in ("rectools", "scalable")}
    a, b = ranked["rectools"]["ranked"], ranked["scalable"]["ranked"]
    seconds = {solver: r["seconds"] for solver, r in ranked.items()}
    print(f"  one EASE fit + top-10 at lambda {lam:g}: {seconds['rectools']:.1f} s / "
          f"{seconds['scalable']:.1f} s = {seconds['rectools'] / seconds['scalable']:.1f}x; "
          f"identical top-10 rows {np.mean(np.all(a == b, axis=1)):.4f}, same item at a "
          f"rank {np.mean(a == b):.4f}, same top-10 sets "
          f"{np.mean([set(x) == set(y) for x, y in zip(a, b)]):.4f}")


if __name__ == "__main__":
    main()
