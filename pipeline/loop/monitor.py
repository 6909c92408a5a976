"""One monitoring window: the requests logged since the last window -> statistics -> skew
against the served version's training statistics and drift against the previous window ->
WORKDIR/monitoring/window-<n>/{statistics.pb, summary.json, report.html}.

State (WORKDIR/monitoring/state.json) holds the log cursor and the windows so far, so each run
profiles only new requests and compares with the window before it.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_data_validation as tfdv

from hyperrec.components.config import CanaryConfig
from hyperrec.pipeline.loop import canary, drift, logs, report, training_stats

MONITORING_DIR = "monitoring"
STATE_FILE = "state.json"
STATISTICS_FILE = "statistics.pb"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"


class NoNewRequests(Exception):
    """The log holds no record after the cursor: there is no window to profile."""


def _read_json(path: str, default: Any) -> Any:
    if not tf.io.gfile.exists(path):
        return default
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _write_json(path: str, value: Any) -> None:
    # Written whole then renamed, so a killed monitor never leaves half a state file.
    staging = path + ".tmp"
    with tf.io.gfile.GFile(staging, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    tf.io.gfile.rename(staging, path, overwrite=True)


def monitoring_dir(workdir: str) -> str:
    return os.path.join(workdir, MONITORING_DIR)


def window_dir(workdir: str, window: int) -> str:
    return os.path.join(monitoring_dir(workdir), f"window-{window}")


def load_state(workdir: str) -> Dict[str, Any]:
    return _read_json(os.path.join(monitoring_dir(workdir), STATE_FILE),
                      {"cursor": {}, "windows": []})


def _served_version(rows: List[Dict[str, Any]]) -> Optional[int]:
    """The version that answered most of the window's requests (the one users saw)."""
    counts = collections.Counter(row[logs.VERSION] for row in rows if row[logs.VERSION])
    return max(counts, key=lambda v: (counts[v], v)) if counts else None


def _as_dicts(measurements: List[drift.Measurement]) -> List[Dict[str, Any]]:
    return [{**dataclasses.asdict(m), "above": m.above} for m in measurements]


def run(serving_log: str, workdir: str, schema_path: str,
        training_statistics: Optional[str] = None, feedback: Optional[str] = None,
        canary_config: CanaryConfig = CanaryConfig()) -> Dict[str, Any]:
    """Profiles the new window and returns its summary (also written to summary.json).

    `training_statistics` (a FeatureStats.pb) replaces the MLMD lookup of the served
    version's training split. `feedback` (a span folder of later interactions) adds the
    canary block: the window's requests per label against it (canary.py). Raises
    NoNewRequests when nothing was logged since last time.
    """
    state = load_state(workdir)
    window = logs.read_window(serving_log, state["cursor"])
    if not window.records:
        raise NoNewRequests(f"no requests logged in {serving_log} since window "
                            f"{len(state['windows'])}")
    rows = list(logs.rows_of(window.records))
    schema = drift.load_schema(schema_path)
    current = drift.statistics(rows, schema)
    number = len(state["windows"]) + 1
    out = window_dir(workdir, number)
    tf.io.gfile.makedirs(out)
    with tf.io.gfile.GFile(os.path.join(out, STATISTICS_FILE), "wb") as f:
        f.write(current.SerializeToString())

    version = _served_version(rows)
    summary: Dict[str, Any] = {
        "window": number, "requests": len(window.records), "examples": len(rows),
        "versions": dict(sorted(collections.Counter(
            str(r[logs.VERSION]) for r in rows).items())),
        "labels": dict(sorted(collections.Counter(
            r[logs.VERSION_LABEL] or "-" for r in rows).items())),
        "served_version": version, "torn_files": window.torn_files,
        "previous_window": state["windows"][-1]["window"] if state["windows"] else None,
        "training_statistics": None, "training_run": None,
        "anomalies": drift.schema_anomalies(current, schema), "skew": [], "drift": []}

    try:
        if training_statistics:
            path, run_name = training_statistics, None
        else:
            path, run_name = training_stats.find(workdir, version)
        training = tfdv.load_stats_binary(path)
        summary["skew"] = _as_dicts(drift.compare_skew(training, current, schema))
        summary["training_statistics"], summary["training_run"] = path, run_name
    except training_stats.TrainingStatisticsNotFound as err:
        summary["skew_unavailable"] = str(err)

    if state["windows"]:
        previous_path = os.path.join(window_dir(workdir, summary["previous_window"]),
                                     STATISTICS_FILE)
        summary["drift"] = _as_dicts(drift.compare_drift(
            current, tfdv.load_stats_binary(previous_path), schema))
    else:
        summary["drift_unavailable"] = "the first window has no previous window"

    summary["drifted_features"] = sorted({m["feature"] for m in summary["drift"] if m["above"]})
    summary["skewed_features"] = sorted({m["feature"] for m in summary["skew"] if m["above"]})
    summary["above_threshold"] = bool(summary["drifted_features"] or summary["skewed_features"])
    if feedback:
        summary["canary"] = canary.evaluate(canary.requests_of(window.records), feedback,
                                            canary_config)
    _write_json(os.path.join(out, SUMMARY_FILE), summary)
    with tf.io.gfile.GFile(os.path.join(out, REPORT_FILE), "w") as f:
        f.write(report.html_page(summary))
    state["cursor"] = window.cursor
    state["windows"].append({"window": number, "requests": len(window.records),
                             "above_threshold": summary["above_threshold"]})
    _write_json(os.path.join(monitoring_dir(workdir), STATE_FILE), state)
    return summary


def text_lines(summary: Dict[str, Any]) -> List[str]:
    """The summary as lines for a terminal."""
    lines = [f"window {summary['window']}: {summary['requests']} requests, "
             f"{summary['examples']} examples, versions {summary['versions']}, "
             f"labels {summary['labels']}"]
    for kind in ("skew", "drift"):
        if not summary[kind]:
            lines.append(f"  {kind}: {summary.get(kind + '_unavailable', 'none')}")
        for m in summary[kind]:
            moved = "; ".join(f"{v['value']} {v['before']:.3f}->{v['now']:.3f}"
                              for v in m["top_shifted"])
            lines.append(f"  {kind:5s} {m['feature']:16s} {m['comparator']:26s} "
                         f"{m['value']:.4f} (threshold {m['threshold']:.4f})"
                         f"{'  ABOVE' if m['above'] else ''}{'  ' + moved if moved else ''}")
    for name, text in summary["anomalies"].items():
        lines.append(f"  anomaly {name}: {text}")
    lines.append(f"  above threshold: {summary['above_threshold']}")
    if "canary" in summary:
        lines.extend(canary.text_lines(summary["canary"]))
    return lines
