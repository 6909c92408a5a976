"""The push gate on the ranking result, and the readable table of a result.

Blessed when (1) the candidate's gate metric (overall slice) is strictly above each baseline
in `must_beat` (every baseline by default; a smoke configuration such as `tiny` requires
none, and its reason says so), (2) it is not significantly worse than the last blessed
model: the upper end
of the paired interval of (candidate - blessed) is not below -max_regression, and, with
`must_improve_on_blessed` (a retraining triggered by drift must show it helps), its value is
strictly above the blessed model's on the same eval period, and (3) when TFMA's Evaluator
gave a blessing, that blessing is positive. Every failed condition is
named in the reason, with its numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

from hyperrec.components.evaluation import personalisation

CANDIDATE = "hyperrec"
BLESSED = "last_blessed"


@dataclasses.dataclass
class Gate:
    metric: str = "recall@10"
    must_beat: Tuple[str, ...] = ("most_popular",)
    max_regression: float = 0.0  # tolerated significant drop against the last blessed model
    must_improve_on_blessed: bool = False  # also strictly above the last blessed model's value
    smoke_configuration: str = ""  # the experiment's name when it is a smoke configuration


def decide(result: Dict[str, object], gate: Gate,
           tfma_blessed: Optional[bool] = None) -> Tuple[bool, str]:
    """(blessed, reason) for `result` (metrics.evaluate output with CANDIDATE in it)."""
    overall = result["slices"]["overall"]
    if "metrics" not in overall:
        return False, "no evaluated users: nothing shows the candidate is better"
    values = overall["metrics"]
    if gate.metric not in values[CANDIDATE]:
        raise ValueError(f"gate metric {gate.metric!r} is not among {sorted(values[CANDIDATE])}")
    mine = values[CANDIDATE][gate.metric]["value"]
    failures: List[str] = []
    passes: List[str] = []
    if not gate.must_beat:
        passes.append(f"smoke configuration ({gate.smoke_configuration}): baselines reported, "
                      "not required" if gate.smoke_configuration
                      else "no baseline required (must_beat is empty): baselines reported")
    for baseline in gate.must_beat:
        if baseline not in values:
            raise ValueError(f"must_beat names {baseline!r}, which was not evaluated; "
                             f"evaluated: {sorted(values)}")
        theirs = values[baseline][gate.metric]["value"]
        text = f"{gate.metric} {mine:.4f} {'>' if mine > theirs else '<='} {baseline} {theirs:.4f}"
        (passes if mine > theirs else failures).append(text)
    if BLESSED in values:
        diff = overall["differences"][f"{CANDIDATE} - {BLESSED}"][gate.metric]
        low, high = diff["interval"]
        text = (f"{gate.metric} vs last blessed {values[BLESSED][gate.metric]['value']:.4f}: "
                f"difference {diff['value']:+.4f}, {result['level']:.0%} interval "
                f"[{low:+.4f}, {high:+.4f}]")
        if high < -gate.max_regression:
            failures.append(f"significantly worse than the last blessed model ({text})")
        else:
            passes.append(f"not significantly worse ({text})")
        if gate.must_improve_on_blessed:
            (passes if diff["value"] > 0 else failures).append(
                f"{'improves' if diff['value'] > 0 else 'does not improve'} on the last "
                f"blessed model ({gate.metric} {mine:.4f} vs "
                f"{values[BLESSED][gate.metric]['value']:.4f})")
    else:
        passes.append("no blessed model to compare with")
    if tfma_blessed is not None:
        (passes if tfma_blessed else failures).append(
            "TFMA Evaluator " + ("blessed" if tfma_blessed else "did not bless"))
    if failures:
        return False, "; ".join(failures)
    return True, "; ".join(passes)


def table(result: Dict[str, object], slice_name: str = "overall",
          columns: Sequence[str] = ("recall@10", "ndcg@10", "recall@50", "mrr", "coverage@10",
                                    "popularity@10"),
          reference: Optional[str] = None) -> str:
    """A plain-text table: each method's value and interval; with `reference`, ratio rows
    (method / reference) and the paired difference intervals against it."""
    entry = result["slices"][slice_name]
    header = f"{slice_name}: {entry['n_users']} users, {entry['n_targets']} targets"
    if "metrics" not in entry:
        return header + " (no users)"
    methods = list(entry["metrics"])
    width = max(len(m) for m in methods) + len(reference or "") + 3
    lines = [header, " " * width + "".join(f"{c:>24}" for c in columns)]
    for method in methods:
        cells = []
        for column in columns:
            value = entry["metrics"][method][column]
            low, high = value["interval"]
            cells.append(f"{value['value']:.4f} [{low:.3f},{high:.3f}]")
        lines.append(f"{method:<{width}}" + "".join(f"{c:>24}" for c in cells))
    if reference and reference in methods:
        lines.append(f"-- ratio to {reference}, and {result['level']:.0%} interval of the "
                     f"paired difference")
        for method in methods:
            if method == reference:
                continue
            cells = []
            for column in columns:
                base = entry["metrics"][reference][column]["value"]
                diff = entry["differences"][f"{method} - {reference}"][column]
                ratio = (f"x{entry['metrics'][method][column]['value'] / base:.2f}" if base
                         else "x-")
                cells.append(f"{ratio} [{diff['interval'][0]:+.3f},{diff['interval'][1]:+.3f}]")
            lines.append(f"{method + ' / ' + reference:<{width}}"
                         + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def personalisation_table(result: Dict[str, object]) -> str:
    """A plain-text table of how personal each method's lists are (the result's
    `personalisation` block): list difference, coverage and overlap with recent-popular, and
    on synthetic data the taste match, with the users' own last items as the last row."""
    block = result.get("personalisation")
    if not block:
        return "personalisation: not measured"
    k = block["k"]
    columns = personalisation.columns(block)
    rows = dict(block["methods"])
    own = personalisation.OWN_HISTORY
    if own in block:
        rows[own] = block[own]
    width = max(len(name) for name in rows) + 2
    lines = [f"personalisation of the top-{k} lists, {block['n_users']} users"
             + (f" ({own}: the users' own past items, not a recommender)" if own in block
                else ""),
             " " * width + "".join(f"{c:>{len(c) + 2}}" for c in columns)]
    for name, values in rows.items():
        cells = [values.get(c) for c in columns]
        lines.append(f"{name:<{width}}" + "".join(
            f"{'-' if v is None else f'{v:.4f}':>{len(c) + 2}}" for v, c in zip(cells, columns)))
    return "\n".join(lines)
