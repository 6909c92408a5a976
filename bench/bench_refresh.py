"""Catalogue refresh against a full retrain, on the same data, in one run.

Generates the synthetic sample data, runs the whole pipeline once (LocalDagRunner, a fresh
workdir: no cache) -- what a retrain costs for new items to be served today -- then adds
`--new-items` brand-new items to the pushed version with the catalogue refresh
(pipeline/loop/catalogue_refresh.py; no training). The new items are copies of the newest
span's catalogue rows (text, category, price, image) under new ids.

    python bench/bench_refresh.py --workdir /tmp/bench-refresh --experiment tiny

Prints the pipeline's total and its Trainer's time, the refresh's time, and the ratios.
When the gates do not bless the run's model (nothing pushed), the Trainer's model is pushed
as version 1 by hand so that the refresh has a served version (said in the output).
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import shutil
import time

from hyperrec.pipeline import quiet  # Keras environment and quiet logs before TensorFlow

quiet.native_logs()

from hyperrec.components import pusher
from hyperrec.pipeline.loop import catalogue_refresh
from hyperrec.components import config as config_lib
from hyperrec.data import contract
from hyperrec.data import synthetic
from hyperrec.pipeline.runners import local as local_runner

quiet.python_logs()


def new_items_csv(data_root: str, count: int, path: str) -> int:
    """Writes `count` rows copied from the newest span's items.csv under new ids."""
    spans = sorted(glob.glob(os.path.join(data_root, "span-*")),
                   key=lambda p: int(p.rsplit("-", 1)[1]))
    with open(os.path.join(spans[-1], contract.ITEMS_FILE), newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        for index in range(count):
            row = dict(rows[index % len(rows)])
            row["item_id"] = f"refresh-{index:05d}"
            writer.writerow(row)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--experiment", default="tiny")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--new-items", type=int, default=100)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="PATH=VALUE")
    args = parser.parse_args()

    data_root = os.path.join(args.workdir, "data")
    run_dir = os.path.join(args.workdir, "run")
    shutil.rmtree(run_dir, ignore_errors=True)  # a cached run would time nothing
    synthetic.generate(args.experiment, args.seed, data_root)
    config = config_lib.load(args.experiment, args.overrides)

    started = time.monotonic()
    paths = local_runner.run(config, data_root, run_dir)
    retrain = time.monotonic() - started
    trainer = sum(t.seconds for t in paths.timings if t.name == "Trainer")

    base = paths.serving_dir
    note = ""
    if not pusher.pushed_versions(base):
        models = glob.glob(os.path.join(paths.pipeline_root, "Trainer", "model", "*"))
        newest = max(models, key=lambda p: int(os.path.basename(p)))
        shutil.copytree(os.path.join(newest, "Format-Serving"), os.path.join(base, "1"))
        note = " (not blessed by the gates: the Trainer's model pushed as version 1 by hand)"

    items_csv = os.path.join(args.workdir, "new_items.csv")
    new_items_csv(data_root, args.new_items, items_csv)
    started = time.monotonic()
    summary = catalogue_refresh.refresh(items_csv, data_root, base)
    refresh = time.monotonic() - started

    print(f"\nexperiment {args.experiment} (seed {args.seed}){note}")
    print(f"{'full retrain (pipeline run, no cache)':<44} {retrain:8.1f} s")
    print(f"{'  of which Trainer':<44} {trainer:8.1f} s")
    label = (f"catalogue refresh (+{summary['new_items']} items, "
             f"{summary['old_catalogue_size']} -> {summary['new_catalogue_size']})")
    print(f"{label:<44} {refresh:8.1f} s")
    print(f"{'retrain / refresh':<44} {retrain / refresh:8.1f} x")
    print(f"{'Trainer alone / refresh':<44} {trainer / refresh:8.1f} x")


if __name__ == "__main__":
    main()
