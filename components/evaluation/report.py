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

This module collects the run's artifacts and assembles the page; each section family is its
own module (report_ranking.py, report_statistics.py, report_personalisation.py) on the shared
HTML pieces of report_html.py.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from hyperrec.components.evaluation import component, report_personalisation
from hyperrec.components.evaluation.report_html import (
    escape, html_table, not_run, png_img, read_bytes)
from hyperrec.components.evaluation.report_ranking import load_ranking, ranking_section
from hyperrec.components.evaluation.report_statistics import anomalies_section, statistics_section

REPORT_FILE = "report.html"
STATISTICS = "ExampleStatistics"
ANOMALIES = "ExampleAnomalies"
RANKING = component.RankingEvaluation.TYPE_NAME
BLESSING = "ModelBlessing"
INFRA_BLESSING = "InfraBlessing"
MODEL_RUN = "ModelRun"
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


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
            + html_table(["gate", "decision", "reason / where"], rows, "gate") + "</section>")


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
        return not_run(title, "no ModelRun artifact in this run")
    path = os.path.join(artifact.uri, "history.json")
    if not tf.io.gfile.exists(path):
        return not_run(title, f"the Trainer recorded no history.json in {artifact.uri}")
    history = json.loads(read_bytes(path))
    epochs = [e + 1 for e in history.get("epochs", [])]
    values = history.get("metrics", {})
    names = sorted(name for name in values if not name.startswith("val_")
                   and name != "lr" and values[name])
    # Measured on the validation slice alone (ranking recall, how personal the scores are,
    # how spread the catalogue embeddings: evaluation/ranking_validation.py): panels of their own.
    names += sorted(name for name in values if name.startswith("val_") and values[name]
                    and name[len("val_"):] not in values)
    if not names or not epochs:
        return not_run(title, f"history.json in {artifact.uri} holds no epochs")
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
    return (f"<section><h2>{escape(title)}</h2><p class='src'>{escape(path)}</p>"
            f"{png_img(figure, 'training curves')}</section>")


def _configuration_section(configuration: Optional[Dict[str, Any]]) -> str:
    """What the run was configured with (the runner's run_config.json): the experiment, or
    the fields sized from the data with the reason for each, and the whole config."""
    if not configuration:
        return ""  # a report built straight from a store (no runner): nothing to show
    sizing = configuration.get("sizing") or {}
    rows = [(path, json.dumps(_lookup(configuration.get("config", {}), path)), reason)
            for path, reason in sorted(sizing.items())]
    chosen = (html_table(("field", "value", "why"), rows, "small") if rows else
              f"<p>experiment <b>{escape(configuration.get('experiment'))}</b> as named</p>")
    return (f"<section><h2>Configuration</h2><p>{escape(configuration.get('summary', ''))}</p>"
            f"{chosen}<p class='src'>schema: {escape(configuration.get('schema_file', ''))}</p>"
            "<details><summary>the whole configuration</summary><pre>"
            f"{escape(json.dumps(configuration.get('config', {}), indent=1, sort_keys=True))}"
            "</pre></details></section>")


def _lookup(values: Dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def _lineage_section(lineage_text: Optional[str]) -> str:
    if not lineage_text:
        return not_run("Lineage", "no pushed model to trace (nothing was pushed yet)")
    return ("<section><h2>Lineage of the served model</h2>"
            f"<pre>{escape(lineage_text)}</pre></section>")


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
        return (f'<section class="unreadable"><h2>{escape(title)}</h2><p class="notrun">Could not '
                f'be read: {escape(type(err).__name__)}: {escape(err)}</p></section>')


def build(store: metadata_store.MetadataStore, lineage_text: Optional[str] = None,
          title: str = "hyperrec run report",
          configuration: Optional[Dict[str, Any]] = None) -> str:
    """The report's HTML for the newest run in `store` (`configuration`: what the runner
    recorded about the run's config, shown as its own section)."""
    runs = collect(store)
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _guarded("Push decision", _gate_section, runs),
        _guarded("Ranking evaluation", ranking_section, runs.newest(RANKING)),
        _guarded(report_personalisation.TITLE, report_personalisation.section,
                 runs.newest(RANKING), runs.newest(report_personalisation.EXAMPLES,
                                                   node=report_personalisation.EXAMPLE_GEN_NODE)),
        _guarded("Data statistics", statistics_section,
                 runs.newest(STATISTICS, node="StatisticsGen")),
        _guarded("Anomalies", anomalies_section, runs.newest(ANOMALIES, node="ExampleValidator")),
        _guarded("Training curves", _training_section, runs.newest(MODEL_RUN)),
        _guarded("Configuration", _configuration_section, configuration),
        _lineage_section(lineage_text),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<link rel='icon' href='data:,'>"
            f"<title>{escape(title)}</title><style>{_STYLE}{report_personalisation.STYLE}</style>"
            "</head><body>"
            f"<h1>{escape(title)}</h1><p class='src'>run {escape(runs.run or '(no run context)')}, "
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
