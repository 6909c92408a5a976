"""The report's ranking section, read from the RankingEvaluator's metrics.json: every
method with its interval, the paired differences, recall@k over k and the slices."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from matplotlib.figure import Figure
from ml_metadata.proto import metadata_store_pb2

from hyperrec.components.evaluation import baselines, component, gate, protocol
from hyperrec.components.evaluation.report_html import (
    COLORS, escape, html_table, not_run, png_img, read_bytes)

RANKING_COLUMNS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr", "coverage@10",
                   "popularity@10")
SLICE_METRIC = "recall@10"


def _cell(value: Dict[str, Any]) -> str:
    low, high = value["interval"]
    return f"{value['value']:.4f} [{low:.3f}, {high:.3f}]"


def _diff_cell(value: Dict[str, Any]) -> str:
    low, high = value["interval"]
    return f"{value['value']:+.4f} [{low:+.3f}, {high:+.3f}]"


def methods_of(result: Dict[str, Any]) -> List[str]:
    """The candidate first, then the last blessed model, then the baselines in run order
    (metrics.json's keys are sorted; its `methods` list keeps the order)."""
    first = [m for m in (gate.CANDIDATE, gate.BLESSED) if m in result["methods"]]
    return first + [m for m in result["methods"] if m not in first]


def _slices(result: Dict[str, Any]) -> List[str]:
    known = [s for s in protocol.SLICES if s in result["slices"]]
    return known + sorted(s for s in result["slices"] if s not in known)


def _ranking_table(entry: Dict[str, Any], methods: Sequence[str], columns: Sequence[str],
                   references: Sequence[str]) -> str:
    metrics = entry["metrics"]
    columns = [c for c in columns if c in metrics[methods[0]]]
    rows = [[method] + [_cell(metrics[method][c]) for c in columns] for method in methods]
    for reference in references:
        for method in methods:
            key = f"{method} - {reference}"
            if method != reference and key in entry.get("differences", {}):
                rows.append([key] + [_diff_cell(entry["differences"][key][c]) for c in columns])
    return f'<div class="wide">{html_table(["method"] + list(columns), rows, "ranking")}</div>'


def _recall_curves(result: Dict[str, Any]) -> str:
    overall = result["slices"]["overall"]["metrics"]
    ks = result["ks"]
    figure = Figure(figsize=(9.6, 3.2))
    for axes, family in zip(figure.subplots(1, 2), ("recall", "ndcg")):
        for number, method in enumerate(methods_of(result)):
            values = overall[method]
            points = [values[f"{family}@{k}"] for k in ks]
            y = [p["value"] for p in points]
            errors = [[v - p["interval"][0] for v, p in zip(y, points)],
                      [p["interval"][1] - v for v, p in zip(y, points)]]
            axes.errorbar(ks, y, yerr=errors, marker="o", capsize=3, label=method,
                          color=COLORS[number % len(COLORS)],
                          linewidth=2.5 if method == gate.CANDIDATE else 1.2)
        axes.set_xlabel("k")
        axes.set_xticks(ks)
        axes.set_ylabel(f"{family}@k (95% interval)")
        axes.set_title(f"{family}@k, overall", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return png_img(figure, "recall@k and ndcg@k curves")


def _slice_plot(result: Dict[str, Any], metric: str) -> Optional[str]:
    slices = [(name, result["slices"][name]) for name in _slices(result)
              if "metrics" in result["slices"][name]]
    if not slices:
        return None
    methods = methods_of(result)
    figure = Figure(figsize=(9.6, 3.2))
    axes = figure.subplots()
    width = 0.8 / len(methods)
    for number, method in enumerate(methods):
        values = [entry["metrics"][method][metric] for _, entry in slices]
        y = [v["value"] for v in values]
        axes.bar([i + number * width for i in range(len(slices))], y, width, label=method,
                 color=COLORS[number % len(COLORS)],
                 yerr=[[v - p["interval"][0] for v, p in zip(y, values)],
                       [p["interval"][1] - v for v, p in zip(y, values)]], capsize=2)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(slices))])
    axes.set_xticklabels([f"{name}\n({entry['n_users']} users)" for name, entry in slices],
                         fontsize=8)
    axes.set_ylabel(f"{metric} (95% interval)")
    axes.set_title(f"{metric} by slice", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png_img(figure, f"{metric} by slice")


def load_ranking(artifact: metadata_store_pb2.Artifact) -> Dict[str, Any]:
    return json.loads(read_bytes(os.path.join(artifact.uri, component.METRICS_JSON)))


def ranking_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Ranking evaluation (full catalogue, temporal split)"
    if artifact is None:
        return not_run(title, "no RankingEvaluation artifact in this run (the "
                               "RankingEvaluator is not in the pipeline, or the run stopped "
                               "before it)")
    result = load_ranking(artifact)
    overall = result["slices"]["overall"]
    parts = [f"<section><h2>{escape(title)}</h2><p class='src'>{escape(artifact.uri)}</p>",
             f"<p>{overall['n_users']} evaluated users, {overall['n_targets']} targets, "
             f"catalogue of {result.get('n_catalogue', '?')} items "
             f"({result.get('n_cold_items', '?')} cold); {result['level']:.0%} paired "
             f"bootstrap intervals over {result['n_resamples']} resamples of users.</p>"]
    if "metrics" not in overall:
        parts.append("<p class='notrun'>No evaluated users: no metrics.</p></section>")
        return "".join(parts)
    # Paired differences against most-popular, whatever else the gate must beat, and the
    # last blessed model.
    must_beat = result.get("decision", {}).get("gate", {}).get("must_beat", [])
    references = [m for m in dict.fromkeys((baselines.MOST_POPULAR, *must_beat, gate.BLESSED))
                  if m in overall["metrics"]]
    methods = methods_of(result)
    parts.append("<h3>Overall, against the baselines"
                 + (" and the last blessed model" if gate.BLESSED in references else
                    " (no blessed model yet)") + "</h3>")
    parts.append(_ranking_table(overall, methods, RANKING_COLUMNS, references))
    parts.append(_recall_curves(result))
    parts.append("<h3>Slices: warm / cold items, returning / new users</h3>")
    rows = []
    for name in _slices(result):
        entry = result["slices"][name]
        if "metrics" not in entry:
            rows.append([name, entry["n_users"], entry["n_targets"]] + ["no users"]
                        * len(methods))
            continue
        rows.append([name, entry["n_users"], entry["n_targets"]]
                    + [_cell(entry["metrics"][m][SLICE_METRIC]) for m in methods])
    parts.append(f"<p>{escape(SLICE_METRIC)} per slice and method:</p>")
    parts.append('<div class="wide">' + html_table(["slice", "users", "targets"] + methods, rows,
                                                "ranking") + "</div>")
    plot = _slice_plot(result, SLICE_METRIC)
    if plot:
        parts.append(plot)
    chosen = result.get("baseline_hyperparameters") or {}
    if chosen:
        parts.append("<h3>Baselines' hyper-parameters (chosen on the end of train)</h3>")
        rows = []
        for name, value in sorted(chosen.items()):
            if isinstance(value, dict) and "value" in value:
                scores = ", ".join(f"{v:.4f}" for v in value.get("scores", []))
                rows.append((name, value["value"], value.get("metric", ""),
                             ", ".join(str(g) for g in value.get("grid", [])), scores,
                             value.get("validation_users", "")))
            else:
                rows.append((name, json.dumps(value, sort_keys=True), "", "", "", ""))
        parts.append(html_table(["baseline", "chosen", "selected on", "grid", "validation scores",
                             "validation users"], rows, "small"))
    parts.append("</section>")
    return "".join(parts)
