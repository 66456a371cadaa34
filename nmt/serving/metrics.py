"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own (two servers in one process,
as in tests, never share counts)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from nmt.serving.batcher import BatchStats

# Seconds: from a one-word greedy translation to a long request on a busy CPU.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


disable_created_metrics()  # the *_created series: a timestamp per label set, noise for a server's dashboards


class Metrics:
    def __init__(self, *, queued: Callable[[], int], loaded: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "nmt_requests", "HTTP requests answered, by endpoint and status code", ["endpoint", "code"], registry=r
        )
        self.latency = Histogram(
            "nmt_request_seconds", "Time from request to response", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.in_flight = Gauge(
            "nmt_requests_in_flight", "Requests received and not yet answered (GET /metrics not counted)", registry=r
        )
        self.sentences = Counter(
            "nmt_sentences", "Sentences translated or pairs scored, by endpoint", ["endpoint"], registry=r
        )
        self.batch_requests = Histogram(
            "nmt_batch_requests", "Requests decoded together in one batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_sentences = Histogram(
            "nmt_batch_sentences", "Sentences in one batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "nmt_batch_tokens", "Source pieces in one batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "nmt_batch_seconds", "Time the model took for one batch", buckets=LATENCY_BUCKETS, registry=r
        )
        Gauge("nmt_queued_requests", "Requests waiting for the model", registry=r).set_function(queued)
        Gauge("nmt_model_loaded", "1 once the model is loaded and requests are served", registry=r).set_function(
            lambda: float(loaded())
        )

    def batch(self, stats: BatchStats) -> None:
        self.batch_requests.observe(stats.jobs)
        self.batch_sentences.observe(stats.sentences)
        self.batch_tokens.observe(stats.tokens)
        self.batch_seconds.observe(stats.seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
