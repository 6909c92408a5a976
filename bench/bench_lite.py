"""On-device benchmark: the TFLite recommender's forms against the served SavedModel.

For each form `hyperrec export-lite` writes (float32, dynamic-range quantised, full int8) and
for the SavedModel itself, on the same eval events (engaged events of the eval split: the
user, their history, device and time; the engaged item is the one to recall):
- size: the .tflite file against the SavedModel directory (and against the float32 form);
- p50 / p99 latency of one request (batch 1) on this CPU, one interpreter thread; the
  SavedModel's is its `recommend` signature called in-process, which takes raw features
  and so includes its Transform layer; the forms' host side (the Transform layer and the
  catalogue-row lookup, an app's vocabulary lookups) is computed beforehand, not timed;
- overlap@10: mean share of the SavedModel's top 10 that the form's top 10 holds;
- recall@10 of the engaged item, and its change relative to the SavedModel's.
Then the issue's targets: float32 overlap@10 >= 0.99; each quantised form's recall@10
within 2 % (relative) of the SavedModel's at <= 30 % of its size.

    python bench/bench_lite.py [--workdir runs/demo] [--lite DIR] [--events 300]

Without WORKDIR/lite (or --lite) holding an export, the export runs first.
"""
from __future__ import annotations

import hyperrec.serving  # noqa: F401  (Keras env before TensorFlow)

import argparse
import json
import os
import time
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from hyperrec.serving import lite


def _newest(folder: str) -> str:
    return os.path.join(folder, max((n for n in os.listdir(folder) if n.isdigit()), key=int))


def _percentiles(seconds: Sequence[float]) -> Dict[str, float]:
    values = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def measure(workdir: str, lite_dir: str, events: int) -> Dict[str, Dict[str, float]]:
    examples = _newest(os.path.join(workdir, "pipeline", "FileBasedExampleGen", "examples"))
    metadata_path = os.path.join(lite_dir, lite.METADATA_FILE)
    if not os.path.exists(metadata_path):
        lite.export(_newest(os.path.join(workdir, "serving_model", "hyperrec")), lite_dir,
                    os.path.join(examples, "Split-train"))
    with open(metadata_path) as handle:
        metadata = json.load(handle)
    model_dir = metadata["model_dir"]
    loaded = tf.saved_model.load(model_dir)
    host = lite.HostSide(loaded)
    pairs = lite.read_queries(os.path.join(examples, "Split-eval"), events, engaged_only=True)
    queries, targets = [q for q, _ in pairs], [t for _, t in pairs]
    inputs = [host.inputs([q]) for q in queries]

    rows: Dict[str, Dict[str, float]] = {"events": {"count": len(queries)}}
    reference: List[List[str]] = []
    latencies = []
    for query in queries:
        started = time.perf_counter()
        reference.extend(lite.saved_model_recommend(loaded, [query]))
        latencies.append(time.perf_counter() - started)
    rows["SavedModel"] = {"bytes": metadata["saved_model_bytes"], "overlap@10": 1.0,
                          "recall@10": lite.recall(reference, targets), **_percentiles(latencies)}
    for form, entry in metadata["forms"].items():
        with open(os.path.join(lite_dir, entry["file"]), "rb") as handle:
            model = lite.LiteRecommender(handle.read(), metadata["catalog"])
        model.recommend(inputs[0])  # first call allocates tensors
        answers, latencies = [], []
        for batch in inputs:
            started = time.perf_counter()
            answers.extend(model.recommend(batch))
            latencies.append(time.perf_counter() - started)
        rows[form] = {"bytes": entry["bytes"], "overlap@10": lite.top_k_parity(reference, answers),
                      "recall@10": lite.recall(answers, targets), **_percentiles(latencies)}
    return rows


def report(rows: Dict[str, Dict[str, float]]) -> List[str]:
    rows = dict(rows)
    events = int(rows.pop("events")["count"])
    saved = rows["SavedModel"]
    lines = [f"{events} eval events; latency per request, batch 1, one thread",
             f"{'form':>14} {'bytes':>11} {'of SM':>7} {'of f32':>7} {'p50 ms':>8} "
             f"{'p99 ms':>8} {'overlap@10':>11} {'recall@10':>10} {'vs SM':>7}"]
    for form, row in rows.items():
        change = ((row["recall@10"] - saved["recall@10"]) / saved["recall@10"]
                  if saved["recall@10"] else 0.0)
        of_float = row["bytes"] / rows["float32"]["bytes"] if "float32" in rows else 0.0
        lines.append(f"{form:>14} {row['bytes']:>11,} {row['bytes'] / saved['bytes']:>7.1%} "
                     f"{of_float:>7.1%} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
                     f"{row['overlap@10']:>11.3f} {row['recall@10']:>10.3f} {change:>+7.1%}")
    lines.append(f"float32 overlap@10 >= 0.99: "
                 f"{'yes' if rows['float32']['overlap@10'] >= 0.99 else 'NO'}")
    for form in ("dynamic_range", "int8"):
        row = rows[form]
        within = abs(row["recall@10"] - saved["recall@10"]) <= 0.02 * saved["recall@10"]
        small = row["bytes"] <= 0.3 * saved["bytes"]
        lines.append(f"{form}: recall@10 within 2 % of the SavedModel's: "
                     f"{'yes' if within else 'NO'}; <= 30 % of its size: "
                     f"{'yes' if small else 'NO'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--lite", default=None, help="export folder [default: WORKDIR/lite]")
    parser.add_argument("--events", type=int, default=300)
    args = parser.parse_args()
    rows = measure(args.workdir, args.lite or os.path.join(args.workdir, "lite"), args.events)
    print("\n".join(report(rows)))


if __name__ == "__main__":
    main()
