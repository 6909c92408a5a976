"""Offline ranking evaluation: the protocol, metrics with paired bootstrap intervals,
baselines, the push gate, and the RankingEvaluator TFX component (component.py)."""
