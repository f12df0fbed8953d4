"""The server's Prometheus metrics: requests by route, errors by code, latency, batch sizes, and
per model the answers given and the outcomes crawlers reported (right, wrong; the rest are
unreported): the accuracy the sites themselves measure."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

# Where worker processes keep their metrics for /metrics to add up (prometheus_client's variable).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("capforge_requests", "Requests by route", ["route"], registry=self.registry)
        self.errors = Counter("capforge_errors", "Error answers by code", ["code"], registry=self.registry)
        self.keys = Counter("capforge_key_requests", "Requests by API key name (with keys set)", ["key"],
                            registry=self.registry)
        self.latency = Histogram("capforge_latency_seconds", "Recognition latency", registry=self.registry,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2))
        self.answers = Counter("capforge_answers", "Answers given, by model", ["model"], registry=self.registry)
        self.outcomes = Counter("capforge_outcomes", "Outcomes crawlers reported, by model and outcome",
                                ["model", "outcome"], registry=self.registry)
        self.kept = Counter("capforge_kept_images", "Answered images kept in data/inbox, by model and why",
                            ["model", "why"], registry=self.registry)
        self.batch = Histogram("capforge_batch_size", "Images per model call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))

    def exposition(self) -> bytes:
        """The Prometheus text: this app's metrics, or the sum over every worker process when
        ``capforge serve --workers N`` shares them through PROMETHEUS_MULTIPROC_DIR."""
        if os.environ.get(MULTIPROCESS_DIR):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)
