"""The run report: one self-contained HTML file (inline PNG plots) a person can read.

Everything is read back from ML Metadata and the artifacts it points at, never recomputed:
- data: StatisticsGen's ExampleStatistics (rows per split, a few feature distributions) and
  ExampleValidator's ExampleAnomalies (every anomaly, per split);
- ranking: the RankingEvaluator's metrics.json (every method with its interval, the paired
  difference against most-popular and the last blessed model, recall@k over k, the slices,
  the baselines' chosen hyper-parameters) and its decision with the reason;
- personalisation (report_personalisation.py): the same metrics.json's list difference and
  taste match per method, and three sample users' history and list with ExampleGen's images;
- TFMA: the Evaluator's blessing;
- training: the Trainer's ModelRun history.json (per-epoch train and validation metrics);
- lineage: text the caller passes in (pipeline/lineage.py lives above components/).

Which artifacts: those the newest pipeline run produced or reused from the cache (its
executions' output events); a store without run contexts falls back to the newest artifact of
each type. A missing artifact (a component that is not in the pipeline, or a run that stopped
early) becomes a section that says "not run" and why, not a failure.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from hyperrec.components.evaluation import baselines, component, gate, protocol

REPORT_FILE = "report.html"
STATISTICS = "ExampleStatistics"
ANOMALIES = "ExampleAnomalies"
RANKING = component.RankingEvaluation.TYPE_NAME
BLESSING = "ModelBlessing"
INFRA_BLESSING = "InfraBlessing"
MODEL_RUN = "ModelRun"
RANKING_COLUMNS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "mrr", "coverage@10",
                   "popularity@10")
SLICE_METRIC = "recall@10"
# Distributions shown: categorical features with few values, numeric ones; the rest is
# summarised in the statistics table.
MAX_CATEGORIES = 30
MAX_DISTRIBUTIONS = 6
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f")


@dataclasses.dataclass
class Output:
    node: str  # the pipeline node whose execution output it ("" when unknown)
    type_name: str
    artifact: metadata_store_pb2.Artifact


@dataclasses.dataclass
class RunArtifacts:
    """The output artifacts of one run."""

    run: str
    outputs: List[Output]

    def newest(self, type_name: str, node: Optional[str] = None
               ) -> Optional[metadata_store_pb2.Artifact]:
        """The newest artifact of the type (output by `node`, when given and known)."""
        found = [o.artifact for o in self.outputs if o.type_name == type_name
                 and (node is None or o.node in ("", node))]
        return max(found, key=lambda a: a.id) if found else None


def _prop(artifact: metadata_store_pb2.Artifact, name: str) -> Any:
    for props in (artifact.custom_properties, artifact.properties):
        if name in props:
            value = props[name]
            kind = value.WhichOneof("value")
            return getattr(value, kind) if kind else None
    return None


def collect(store: metadata_store.MetadataStore) -> RunArtifacts:
    """The newest run's output artifacts (cached executions included), with their node."""
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return RunArtifacts("", [Output("", type_names.get(a.type_id, "?"), a)
                                 for a in store.get_artifacts()])
    run = max(runs, key=lambda c: (c.create_time_since_epoch, c.id))
    executions = store.get_executions_by_context(run.id)
    node_of = {}
    for context in store.get_contexts_by_type("node"):
        for execution in store.get_executions_by_context(context.id):
            node_of[execution.id] = context.name.split(".", 1)[-1]
    events = [e for e in store.get_events_by_execution_ids([e.id for e in executions])
              if e.type in _OUTPUT_EVENTS]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(
        sorted({e.artifact_id for e in events}))}
    outputs = [Output(node_of.get(e.execution_id, ""),
                      type_names.get(artifacts[e.artifact_id].type_id, "?"),
                      artifacts[e.artifact_id]) for e in events]
    return RunArtifacts(run.name, outputs)


# ---------------------------------------------------------------- HTML and plot helpers

def _e(value: Any) -> str:
    return html.escape(str(value))


def _png(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _not_run(title: str, why: str) -> str:
    return (f'<section class="missing"><h2>{_e(title)}</h2>'
            f'<p class="notrun">Not run: {_e(why)}</p></section>')


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read()


def _splits(uri: str, file_name: str) -> Dict[str, str]:
    """split name -> path of `file_name` in the artifact's Split-* folders."""
    found = {}
    for folder in sorted(tf.io.gfile.listdir(uri)):
        folder = folder.rstrip("/")
        path = os.path.join(uri, folder, file_name)
        if folder.startswith("Split-") and tf.io.gfile.exists(path):
            found[folder[len("Split-"):]] = path
    return found


# ---------------------------------------------------------------- data statistics

def _feature_name(feature: statistics_pb2.FeatureNameStatistics) -> str:
    return ".".join(feature.path.step) or feature.name


def _distribution_plot(name: str, per_split: Dict[str, statistics_pb2.FeatureNameStatistics]
                       ) -> Optional[str]:
    figure = Figure(figsize=(4.6, 2.8))
    axes = figure.subplots()
    first = next(iter(per_split.values()))
    if first.HasField("string_stats"):
        labels = [v.value for v in first.string_stats.top_values][:MAX_CATEGORIES]
        width = 0.8 / len(per_split)
        for number, (split, feature) in enumerate(per_split.items()):
            counts = {v.value: v.frequency for v in feature.string_stats.top_values}
            # Shares of all values, not only of the top ones TFDV keeps.
            total = feature.string_stats.common_stats.tot_num_values or sum(counts.values()) or 1
            axes.bar([i + number * width for i in range(len(labels))],
                     [counts.get(label, 0.0) / total for label in labels], width, label=split,
                     color=_COLORS[number % len(_COLORS)])
        axes.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
        axes.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        axes.set_ylabel("share of values")
    else:
        for number, (split, feature) in enumerate(per_split.items()):
            standard = [h for h in feature.num_stats.histograms
                        if h.type == statistics_pb2.Histogram.STANDARD]
            if not standard or not standard[0].buckets:
                return None
            buckets = standard[0].buckets
            total = sum(b.sample_count for b in buckets) or 1.0
            axes.stairs([b.sample_count / total for b in buckets],
                        [buckets[0].low_value] + [b.high_value for b in buckets], label=split,
                        color=_COLORS[number % len(_COLORS)], linewidth=1.5)
        axes.set_ylabel("share of examples")
    axes.set_title(name, fontsize=10)
    axes.legend(fontsize=7)
    return _png(figure, f"distribution of {name}")


def _statistics_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Data statistics (TFDV, StatisticsGen)"
    if artifact is None:
        return _not_run(title, "no ExampleStatistics artifact in this run")
    datasets: Dict[str, statistics_pb2.DatasetFeatureStatistics] = {}
    for split, path in _splits(artifact.uri, "FeatureStats.pb").items():
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(_read(path))
        if stats.datasets:
            datasets[split] = stats.datasets[0]
    if not datasets:
        return _not_run(title, f"no FeatureStats.pb under {artifact.uri}")
    parts = [f"<section><h2>{_e(title)}</h2><p class='src'>{_e(artifact.uri)}</p>",
             _table(["split", "rows", "features"],
                    [(s, f"{int(d.num_examples):,}", len(d.features))
                     for s, d in datasets.items()])]
    features: Dict[str, Dict[str, statistics_pb2.FeatureNameStatistics]] = {}
    for split, dataset in datasets.items():
        for feature in dataset.features:
            features.setdefault(_feature_name(feature), {})[split] = feature
    rows = []
    for name, per_split in sorted(features.items()):
        cells = [name]
        for split in datasets:
            feature = per_split.get(split)
            if feature is None:
                cells.append("-")
            elif feature.HasField("string_stats"):
                common = feature.string_stats.common_stats
                cells.append(f"{feature.string_stats.unique:,} unique, "
                             f"{int(common.num_missing):,} missing")
            else:
                num = feature.num_stats
                cells.append(f"mean {num.mean:.4g}, min {num.min:.4g}, max {num.max:.4g}, "
                             f"{int(num.common_stats.num_missing):,} missing")
        rows.append(cells)
    parts.append(_table(["feature"] + list(datasets), rows, "small"))
    shown = []
    for name, per_split in sorted(features.items()):
        first = next(iter(per_split.values()))
        few_values = (first.HasField("string_stats")
                      and 0 < first.string_stats.unique <= MAX_CATEGORIES)
        numeric = first.HasField("num_stats") and first.num_stats.max > first.num_stats.min
        if (few_values or numeric) and len(shown) < MAX_DISTRIBUTIONS:
            plot = _distribution_plot(name, per_split)
            if plot:
                shown.append(plot)
    parts.append('<div class="plots">' + "".join(shown) + "</div></section>")
    return "".join(parts)


def _anomalies_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Anomalies (TFDV, ExampleValidator against the curated schema)"
    if artifact is None:
        return _not_run(title, "no ExampleAnomalies artifact in this run")
    rows = []
    splits = _splits(artifact.uri, "SchemaDiff.pb")
    for split, path in splits.items():
        anomalies = anomalies_pb2.Anomalies.FromString(_read(path))
        for feature, info in sorted(anomalies.anomaly_info.items()):
            rows.append((split, feature, anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                         info.short_description, info.description))
        if anomalies.HasField("dataset_anomaly_info"):
            info = anomalies.dataset_anomaly_info
            rows.append((split, "(dataset)",
                         anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
                         info.short_description, info.description))
    body = (_table(["split", "feature", "severity", "anomaly", "description"], rows, "small")
            if rows else f"<p class='ok'>No anomalies in {', '.join(splits) or 'any split'}.</p>")
    return (f"<section><h2>{_e(title)}</h2><p class='src'>{_e(artifact.uri)}</p>{body}"
            "</section>")


# ---------------------------------------------------------------- ranking

def _cell(value: Dict[str, Any]) -> str:
    low, high = value["interval"]
    return f"{value['value']:.4f} [{low:.3f}, {high:.3f}]"


def _diff_cell(value: Dict[str, Any]) -> str:
    low, high = value["interval"]
    return f"{value['value']:+.4f} [{low:+.3f}, {high:+.3f}]"


def _methods(result: Dict[str, Any]) -> List[str]:
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
    return f'<div class="wide">{_table(["method"] + list(columns), rows, "ranking")}</div>'


def _recall_curves(result: Dict[str, Any]) -> str:
    overall = result["slices"]["overall"]["metrics"]
    ks = result["ks"]
    figure = Figure(figsize=(9.6, 3.2))
    for axes, family in zip(figure.subplots(1, 2), ("recall", "ndcg")):
        for number, method in enumerate(_methods(result)):
            values = overall[method]
            points = [values[f"{family}@{k}"] for k in ks]
            y = [p["value"] for p in points]
            errors = [[v - p["interval"][0] for v, p in zip(y, points)],
                      [p["interval"][1] - v for v, p in zip(y, points)]]
            axes.errorbar(ks, y, yerr=errors, marker="o", capsize=3, label=method,
                          color=_COLORS[number % len(_COLORS)],
                          linewidth=2.5 if method == gate.CANDIDATE else 1.2)
        axes.set_xlabel("k")
        axes.set_xticks(ks)
        axes.set_ylabel(f"{family}@k (95% interval)")
        axes.set_title(f"{family}@k, overall", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(figure, "recall@k and ndcg@k curves")


def _slice_plot(result: Dict[str, Any], metric: str) -> Optional[str]:
    slices = [(name, result["slices"][name]) for name in _slices(result)
              if "metrics" in result["slices"][name]]
    if not slices:
        return None
    methods = _methods(result)
    figure = Figure(figsize=(9.6, 3.2))
    axes = figure.subplots()
    width = 0.8 / len(methods)
    for number, method in enumerate(methods):
        values = [entry["metrics"][method][metric] for _, entry in slices]
        y = [v["value"] for v in values]
        axes.bar([i + number * width for i in range(len(slices))], y, width, label=method,
                 color=_COLORS[number % len(_COLORS)],
                 yerr=[[v - p["interval"][0] for v, p in zip(y, values)],
                       [p["interval"][1] - v for v, p in zip(y, values)]], capsize=2)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(slices))])
    axes.set_xticklabels([f"{name}\n({entry['n_users']} users)" for name, entry in slices],
                         fontsize=8)
    axes.set_ylabel(f"{metric} (95% interval)")
    axes.set_title(f"{metric} by slice", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure, f"{metric} by slice")


def load_ranking(artifact: metadata_store_pb2.Artifact) -> Dict[str, Any]:
    return json.loads(_read(os.path.join(artifact.uri, component.METRICS_JSON)))


def _ranking_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Ranking evaluation (full catalogue, temporal split)"
    if artifact is None:
        return _not_run(title, "no RankingEvaluation artifact in this run (the "
                               "RankingEvaluator is not in the pipeline, or the run stopped "
                               "before it)")
    result = load_ranking(artifact)
    overall = result["slices"]["overall"]
    parts = [f"<section><h2>{_e(title)}</h2><p class='src'>{_e(artifact.uri)}</p>",
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
    methods = _methods(result)
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
    parts.append(f"<p>{_e(SLICE_METRIC)} per slice and method:</p>")
    parts.append('<div class="wide">' + _table(["slice", "users", "targets"] + methods, rows,
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
        parts.append(_table(["baseline", "chosen", "selected on", "grid", "validation scores",
                             "validation users"], rows, "small"))
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------- gate and training

def _gate_section(runs: RunArtifacts) -> str:
    ranking = runs.newest(RANKING)
    tfma = runs.newest(BLESSING, node="Evaluator")
    rows = []
    final = None
    if ranking is not None:
        decision = load_ranking(ranking).get("decision", {})
        blessed = bool(decision.get("blessed", _prop(ranking, "blessed")))
        reason = decision.get("reason", _prop(ranking, component.REASON) or "")
        settings = decision.get("gate", {})
        rows.append(("Ranking gate (RankingEvaluator, combined with TFMA)",
                     "BLESSED" if blessed else "NOT BLESSED", reason))
        if settings:
            rows.append(("Gate settings", "",
                         f"{settings.get('metric')} must beat "
                         f"{', '.join(settings.get('must_beat', [])) or 'no baseline'}; "
                         f"tolerated regression vs last blessed "
                         f"{settings.get('max_regression')}"
                         + ("; must improve on the last blessed model"
                            if settings.get("must_improve_on_blessed") else "")))
        final = blessed
    else:
        rows.append(("Ranking gate (RankingEvaluator)", "NOT RUN",
                     "no RankingEvaluation artifact in this run"))
    if tfma is not None:
        tfma_blessed = _prop(tfma, "blessed") == 1
        rows.append(("TFMA Evaluator (ranking head)", "BLESSED" if tfma_blessed
                     else "NOT BLESSED", tfma.uri))
        final = tfma_blessed if final is None else final
    else:
        rows.append(("TFMA Evaluator", "NOT RUN", "no Evaluator blessing in this run"))
    infra = runs.newest(INFRA_BLESSING)
    rows.extend(_infra_rows(infra))
    if infra is not None and final and _prop(infra, "blessed") != 1:
        final = False  # the Pusher needs both blessings
    pushed = runs.newest("PushedModel")
    if pushed is not None:
        rows.append(("Pusher", "PUSHED" if _prop(pushed, "pushed") == 1 else "NOT PUSHED",
                     _prop(pushed, "pushed_destination") or pushed.uri))
    verdict = {True: ("blessed", "Blessed"), False: ("refused", "Not blessed"),
               None: ("unknown", "No gate ran")}[final]
    if ranking is None and final is not None:
        verdict = (verdict[0], verdict[1] + " (by TFMA alone: the ranking gate did not run)")
    return (f"<section><h2>Push decision</h2><p class='verdict {verdict[0]}'>{verdict[1]}</p>"
            + _table(["gate", "decision", "reason / where"], rows, "gate") + "</section>")


def _infra_rows(artifact: Optional[metadata_store_pb2.Artifact]) -> List[Sequence[str]]:
    """The InfraValidator's row (components/infra_validation) and one of its numbers."""
    if artifact is None:
        return [("Infra validation (InfraValidator)", "NOT RUN",
                 "no InfraBlessing in this run")]
    rows = [("Infra validation (InfraValidator: a fresh server, REST + gRPC)",
             "BLESSED" if _prop(artifact, "blessed") == 1 else "NOT BLESSED",
             _prop(artifact, "reason") or artifact.uri)]
    labels = (("load_seconds", "load {:.2f} s"), ("first_request_ms", "first request {:.1f} ms"),
              ("rest_p50_ms", "REST p50 {:.1f} ms"), ("rest_p99_ms", "p99 {:.1f} ms"),
              ("grpc_p50_ms", "gRPC p50 {:.1f} ms"), ("grpc_p99_ms", "p99 {:.1f} ms"),
              ("peak_rss_mb", "peak RSS {:.0f} MiB"), ("memory_limit_mb", "limit {:.0f} MiB"))
    numbers = [label.format(_prop(artifact, name)) for name, label in labels
               if _prop(artifact, name) is not None]
    if numbers:
        rows.append(("Infra validation numbers", "", ", ".join(numbers)))
    return rows


def _training_section(artifact: Optional[metadata_store_pb2.Artifact]) -> str:
    title = "Training curves (Trainer)"
    if artifact is None:
        return _not_run(title, "no ModelRun artifact in this run")
    path = os.path.join(artifact.uri, "history.json")
    if not tf.io.gfile.exists(path):
        return _not_run(title, f"the Trainer recorded no history.json in {artifact.uri}")
    history = json.loads(_read(path))
    epochs = [e + 1 for e in history.get("epochs", [])]
    values = history.get("metrics", {})
    names = sorted(name for name in values if not name.startswith("val_")
                   and name != "lr" and values[name])
    # Measured on the validation slice alone (ranking recall, how personal the scores are,
    # how spread the catalogue embeddings: model/validation.py): panels of their own.
    names += sorted(name for name in values if name.startswith("val_") and values[name]
                    and name[len("val_"):] not in values)
    if not names or not epochs:
        return _not_run(title, f"history.json in {artifact.uri} holds no epochs")
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.3 * columns, 2.5 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    for number, name in enumerate(names):
        axes = grid[number // columns][number % columns]
        axes.plot(epochs[:len(values[name])], values[name], marker="o",
                  label="validation" if name.startswith("val_") else "train")
        if values.get(f"val_{name}"):
            axes.plot(epochs[:len(values[f"val_{name}"])], values[f"val_{name}"], marker="s",
                      label="validation")
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("epoch", fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=7)
    for number in range(len(names), rows * columns):
        grid[number // columns][number % columns].set_visible(False)
    figure.tight_layout()
    return (f"<section><h2>{_e(title)}</h2><p class='src'>{_e(path)}</p>"
            f"{_png(figure, 'training curves')}</section>")


def _configuration_section(configuration: Optional[Dict[str, Any]]) -> str:
    """What the run was configured with (the runner's run_config.json): the experiment, or
    the fields sized from the data with the reason for each, and the whole config."""
    if not configuration:
        return ""  # a report built straight from a store (no runner): nothing to show
    sizing = configuration.get("sizing") or {}
    rows = [(path, json.dumps(_lookup(configuration.get("config", {}), path)), reason)
            for path, reason in sorted(sizing.items())]
    chosen = (_table(("field", "value", "why"), rows, "small") if rows else
              f"<p>experiment <b>{_e(configuration.get('experiment'))}</b> as named</p>")
    return (f"<section><h2>Configuration</h2><p>{_e(configuration.get('summary', ''))}</p>"
            f"{chosen}<p class='src'>schema: {_e(configuration.get('schema_file', ''))}</p>"
            "<details><summary>the whole configuration</summary><pre>"
            f"{_e(json.dumps(configuration.get('config', {}), indent=1, sort_keys=True))}"
            "</pre></details></section>")


def _lookup(values: Dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _lineage_section(lineage_text: Optional[str]) -> str:
    if not lineage_text:
        return _not_run("Lineage", "no pushed model to trace (nothing was pushed yet)")
    return f"<section><h2>Lineage of the served model</h2><pre>{_e(lineage_text)}</pre></section>"


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1600px;
color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.ranking td{font-family:ui-monospace,monospace;white-space:nowrap;
font-size:11px;padding:2px 5px}
table.small{font-size:12px}.src{color:#777;font-size:11px;word-break:break-all}
.verdict{font-size:22px;font-weight:bold;padding:8px 12px;display:inline-block;border-radius:4px}
.blessed{background:#e4f6e4;color:#1a6b1a}.refused{background:#fbe3e3;color:#9b1c1c}
.unknown{background:#eee}.notrun{color:#9b5b00;font-weight:bold}.ok{color:#1a6b1a}
.wide{overflow-x:auto}.plots{display:flex;flex-wrap:wrap;gap:8px}img{max-width:100%}
pre{background:#f7f7f7;padding:8px;font-size:11px;overflow-x:auto}
"""


def _guarded(title: str, section, *args) -> str:
    """The section, or one that says why its artifact could not be read (a file deleted
    under MLMD's feet, a foreign format): the rest of the report still renders."""
    try:
        return section(*args)
    except Exception as err:  # noqa: BLE001 (every failure becomes a readable section)
        return (f'<section class="unreadable"><h2>{_e(title)}</h2><p class="notrun">Could not '
                f'be read: {_e(type(err).__name__)}: {_e(err)}</p></section>')


def build(store: metadata_store.MetadataStore, lineage_text: Optional[str] = None,
          title: str = "hyperrec run report",
          configuration: Optional[Dict[str, Any]] = None) -> str:
    """The report's HTML for the newest run in `store` (`configuration`: what the runner
    recorded about the run's config, shown as its own section)."""
    # Imported here: the section's module uses this one's helpers.
    from hyperrec.components.evaluation import report_personalisation

    runs = collect(store)
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _guarded("Push decision", _gate_section, runs),
        _guarded("Ranking evaluation", _ranking_section, runs.newest(RANKING)),
        _guarded(report_personalisation.TITLE, report_personalisation.section,
                 runs.newest(RANKING), runs.newest(report_personalisation.EXAMPLES,
                                                   node=report_personalisation.EXAMPLE_GEN_NODE)),
        _guarded("Data statistics", _statistics_section,
                 runs.newest(STATISTICS, node="StatisticsGen")),
        _guarded("Anomalies", _anomalies_section, runs.newest(ANOMALIES, node="ExampleValidator")),
        _guarded("Training curves", _training_section, runs.newest(MODEL_RUN)),
        _guarded("Configuration", _configuration_section, configuration),
        _lineage_section(lineage_text),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<link rel='icon' href='data:,'>"
            f"<title>{_e(title)}</title><style>{_STYLE}{report_personalisation.STYLE}</style>"
            "</head><body>"
            f"<h1>{_e(title)}</h1><p class='src'>run {_e(runs.run or '(no run context)')}, "
            f"generated {generated}</p>" + "".join(sections) + "</body></html>")


def write(store: metadata_store.MetadataStore, path: str,
          lineage_text: Optional[str] = None,
          configuration: Optional[Dict[str, Any]] = None) -> str:
    """Writes the report to `path` (gfile: local or remote); returns the path."""
    document = build(store, lineage_text, configuration=configuration)
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(document)
    return path


def sections_not_run(document: str) -> List[str]:
    """Titles of the sections the report marks as not run (for callers and tests)."""
    return re.findall(r'<section class="missing"><h2>(.*?)</h2>', document)

