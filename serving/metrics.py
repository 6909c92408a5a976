"""Prometheus metrics, named like TF Serving's so the same dashboards read either server.

- `:tensorflow:serving:request_count{model_name,status}`: requests by outcome (counter; the
  client library exposes it with the conventional `_total` suffix);
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}`: wall time in
  microseconds (histogram);
- `:tensorflow:cc:saved_model:load_attempt_count{model_path,status}`: version loads;
- `:tensorflow:serving:batching_session:processed_batch_size`: rows per executed batch.
Each server owns its registry, so several servers in one process do not mix their counts.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS_US = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
                       100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# Metric names, as TF Serving exports them (readers such as bench/ use these too).
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"

disable_created_metrics()  # the `*_created` series only add noise to TF Serving's metric set


class ServingMetrics:
    """The server's metrics and their Prometheus text exposition."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_count = Counter(
            REQUEST_COUNT,
            "The total number of requests.", ["model_name", "status"], registry=self.registry)
        self.request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_LATENCY_BUCKETS_US,
            registry=self.registry)
        self.load_attempts = Counter(
            LOAD_ATTEMPT_COUNT,
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"], registry=self.registry)
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Tracks the batch size distribution on processing.", buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry)
        self._children = {}  # label values -> (count, latency) children: labels() is not free

    def observe_request(self, model_name: str, api: str, entrypoint: str, status: str,
                        seconds: float) -> None:
        key = (model_name, api, entrypoint, status)
        children = self._children.get(key)
        if children is None:
            children = (self.request_count.labels(model_name=model_name, status=status),
                        self.request_latency.labels(model_name=model_name, API=api,
                                                    entrypoint=entrypoint))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds * 1e6)

    def observe_load(self, model_path: str, ok: bool) -> None:
        self.load_attempts.labels(model_path=model_path, status="success" if ok else "fail").inc()

    def observe_batch(self, rows: int) -> None:
        self.batch_size.observe(rows)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
