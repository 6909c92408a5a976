"""The monitoring report's HTML section: per-feature distance against its threshold (a
matplotlib PNG inlined as base64, so the file travels alone) and the most shifted values."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Dict, List

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402


def distance_plot(measurements: List[Dict[str, Any]], title: str) -> str:
    """A PNG (base64) of each feature's distance as a bar and its threshold as a tick."""
    names = [m["feature"] for m in measurements]
    figure, axes = plt.subplots(figsize=(6, 0.5 + 0.45 * max(1, len(names))), dpi=80)
    try:
        rows = range(len(names))
        colours = ["#c0392b" if m["above"] else "#2e86c1" for m in measurements]
        axes.barh(list(rows), [m["value"] for m in measurements], color=colours)
        axes.scatter([m["threshold"] for m in measurements], list(rows), marker="|", s=400,
                     color="black", label="threshold")
        axes.set_yticks(list(rows))
        axes.set_yticklabels([f"{m['feature']} ({m['comparator']})" for m in measurements])
        axes.set_xlabel("distance")
        axes.set_title(title)
        axes.legend(loc="lower right")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(measurements: List[Dict[str, Any]]) -> str:
    lines = ["<table><tr><th>feature</th><th>comparator</th><th>distance</th>"
             "<th>threshold</th><th>verdict</th><th>most shifted values</th></tr>"]
    for m in measurements:
        moves = ", ".join(f"{html.escape(v['value'])} {v['before']:.3f}&rarr;{v['now']:.3f}"
                          for v in m["top_shifted"])
        lines.append(f"<tr><td>{html.escape(m['feature'])}</td><td>{m['comparator']}</td>"
                     f"<td>{m['value']:.4f}</td><td>{m['threshold']:.4f}</td>"
                     f"<td>{'ABOVE' if m['above'] else 'ok'}</td><td>{moves}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def html_section(summary: Dict[str, Any]) -> str:
    """The HTML section of one monitoring window's summary (monitor.py's JSON)."""
    parts = [f"<section><h2>Monitoring window {summary['window']}</h2>",
             f"<p>{summary['requests']} logged requests, {summary['examples']} examples, "
             f"versions {html.escape(str(summary['versions']))}.</p>"]
    for kind, against in (("skew", summary.get("training_statistics") or "unavailable"),
                          ("drift", f"window {summary.get('previous_window')}")):
        measurements = summary[kind]
        parts.append(f"<h3>{kind} (against {html.escape(str(against))})</h3>")
        if not measurements:
            reason = summary.get(f"{kind}_unavailable", "no comparison")
            parts.append(f"<p>{html.escape(reason)}</p>")
            continue
        png = distance_plot(measurements, f"{kind}: distance vs threshold")
        parts.append(f'<img alt="{kind} distances" src="data:image/png;base64,{png}"/>')
        parts.append(_table(measurements))
    if summary["anomalies"]:
        parts.append("<h3>schema anomalies (SERVING)</h3><ul>" + "".join(
            f"<li>{html.escape(k)}: {html.escape(v)}</li>"
            for k, v in summary["anomalies"].items()) + "</ul>")
    if "canary" in summary:
        parts.append(canary_section(summary["canary"]))
    parts.append("</section>")
    return "\n".join(parts)


def _interval(values, sign: str = "") -> str:
    return f"[{values[0]:{sign}.4f}, {values[1]:{sign}.4f}]" if values else "-"


def canary_section(block: Dict[str, Any]) -> str:
    """Canary against stable: engaged rate per label with its interval, the difference and
    the decision (canary.py's block)."""
    level = f"{block['confidence']:.0%}"
    lines = [f"<h3>Canary ({html.escape(block['canary_label'])} against "
             f"{html.escape(block['stable_label'])}, engaged within "
             f"{block['horizon_hours']:g} h)</h3>",
             f"<p><b>{html.escape(block['decision'])}</b>: {html.escape(block['reason'])}</p>",
             f"<table><tr><th>label</th><th>requests</th><th>engaged</th><th>rate</th>"
             f"<th>{level} interval</th><th>versions</th></tr>"]
    for label, stats in block["labels"].items():
        rate = "-" if stats["rate"] is None else f"{stats['rate']:.4f}"
        lines.append(f"<tr><td>{html.escape(label)}</td><td>{stats['requests']}</td>"
                     f"<td>{stats['engaged']}</td><td>{rate}</td>"
                     f"<td>{_interval(stats['interval'])}</td>"
                     f"<td>{html.escape(str(stats['versions']))}</td></tr>")
    lines.append("</table>")
    if block["difference"]:
        lines.append(f"<p>canary - stable: {block['difference']['value']:+.4f}, {level} "
                     f"interval {_interval(block['difference']['interval'], '+')} (margin "
                     f"{block['margin']:g})</p>")
    return "\n".join(lines)


def html_page(summary: Dict[str, Any]) -> str:
    return ("<!doctype html><html><head><meta charset='utf-8'><title>hyperrec monitoring"
            "</title></head><body>" + html_section(summary) + "</body></html>")
