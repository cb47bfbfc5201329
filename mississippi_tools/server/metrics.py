"""Prometheus metrics: ``GET /metrics`` in the text exposition format.

Request counters and latencies are recorded by an ASGI middleware, labelled with the route's
path template (``/v1/ocr``), never the raw path, so the label set stays small. The engine's own
numbers (queue depth, running requests, decode batch sizes, tokens, feature-cache hits and misses)
are read from :meth:`~mississippi_tools.engine.local.LocalEngine.metrics_snapshot` at scrape time.

Each app has its own registry, so several apps (tests) can live in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from mississippi_tools.engine.cache import CacheStats
    from mississippi_tools.server.state import ServiceState

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServiceMetrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_OTHER = "other"


class _EngineCollector:
    """Reads the engine's counters at scrape time."""

    def __init__(self, state: Callable[[], ServiceState | None]) -> None:
        self._state = state

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        state = self._state()
        ready = GaugeMetricFamily(
            "mississippi_model_ready", "1 once the model is loaded and serving, else 0"
        )
        ready.add_metric([], 1.0 if state is not None and state.phase == "ready" else 0.0)
        yield ready
        vlm = state.vlm if state is not None else None
        snapshot_of = getattr(vlm.engine, "metrics_snapshot", None) if vlm is not None else None
        if snapshot_of is None:
            return
        snap = snapshot_of()
        yield _gauge(
            "mississippi_queue_depth", "Requests waiting for a batch slot", snap.queue_depth
        )
        yield _gauge("mississippi_running_requests", "Requests in the running batch", snap.running)
        outcomes = CounterMetricFamily(
            "mississippi_engine_requests",
            "Requests the engine ended, by outcome",
            labels=["outcome"],
        )
        for outcome, value in (
            ("finished", snap.requests_finished),
            ("failed", snap.requests_failed),
            ("cancelled", snap.requests_cancelled),
            ("expired", snap.requests_expired),
        ):
            outcomes.add_metric([outcome], value)
        yield outcomes
        yield _counter("mississippi_prompt_tokens", "Prompt tokens prefilled", snap.prompt_tokens)
        yield _counter("mississippi_generated_tokens", "Tokens generated", snap.generated_tokens)
        yield _counter("mississippi_decode_steps", "Batched decoding steps", snap.decode_steps)
        yield _batch_histogram(snap.batch_size_counts)
        for prefix, what, stats in (
            ("mississippi_feature_cache", "vision-feature cache", snap.cache),
            ("mississippi_prefix_cache", "image-prefix key/value cache", snap.prefix_cache),
        ):
            if stats is not None:
                yield from _cache_metrics(prefix, what, stats)


def _cache_metrics(prefix: str, what: str, stats: CacheStats) -> Iterator[Any]:
    yield _counter(f"{prefix}_hits", f"Lookups served by the {what}", stats.hits)
    yield _counter(f"{prefix}_misses", f"Lookups the {what} could not serve", stats.misses)
    yield _counter(f"{prefix}_evictions", f"Entries evicted from the {what}", stats.evictions)
    yield _gauge(f"{prefix}_entries", f"Entries in the {what}", stats.entries)
    yield _gauge(f"{prefix}_bytes", f"Bytes held by the {what}", stats.bytes)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], float(value))
    return family


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], float(value))
    return family


def _batch_histogram(counts: dict[int, int]) -> HistogramMetricFamily:
    """Decode steps by batch size, as a histogram of the batch size."""
    buckets: list[tuple[str, float]] = []
    for bound in _BATCH_BUCKETS:
        buckets.append((str(bound), float(sum(n for size, n in counts.items() if size <= bound))))
    buckets.append(("+Inf", float(sum(counts.values()))))
    family = HistogramMetricFamily(
        "mississippi_decode_batch_size", "Requests decoded together in each decoding step"
    )
    family.add_metric([], buckets, sum_value=float(sum(s * n for s, n in counts.items())))
    return family


class ServiceMetrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.state: ServiceState | None = None
        self.requests = Counter(
            "mississippi_http_requests",
            "HTTP requests answered, by route and status code",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mississippi_http_request_duration_seconds",
            "Seconds from request start to the end of the response, by route",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mississippi_http_requests_in_flight",
            "HTTP requests being handled",
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(lambda: self.state))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests and measures latency by route template."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call, recording HTTP requests."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or _OTHER
            self.metrics.requests.labels(endpoint, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
