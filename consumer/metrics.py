"""Prometheus metrics and the worker's health, served over plain HTTP.

Each ``Metrics`` owns its own ``CollectorRegistry`` so tests (and several workers in one
process) never collide in prometheus-client's global registry. The HTTP server is the
standard library's, in a daemon thread: three read-only endpoints do not need a framework.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

# Batches run from one event to a few thousand; encode/match from a millisecond to seconds.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


@dataclass
class Health:
    """What /healthz and /readyz answer from; written by the worker loop, read by the server."""

    liveness_s: float = 60.0  # a loop silent for longer than this is considered stuck
    heartbeat: float = field(default_factory=time.monotonic)
    started: bool = False  # before the loop starts (model loading), liveness is not judged
    assigned: bool = False  # joined the group (an empty assignment still counts)
    broker: bool = False  # the last broker round trip succeeded
    model: bool = False  # an engine is loaded
    detail: str = ""

    @property
    def alive(self) -> bool:
        return not self.started or time.monotonic() - self.heartbeat < self.liveness_s

    @property
    def ready(self) -> bool:
        return self.assigned and self.broker and self.model


class Metrics:
    """Every metric the worker exports, on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None, liveness_s: float = 60.0) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.health = Health(liveness_s=liveness_s)
        self._lock = threading.Lock()
        r = self.registry
        self.pebbles_consumed = Counter(
            "keyblend_pebbles_consumed", "Pebble events read from the input topic.", registry=r)
        self.suggestions_published = Counter(
            "keyblend_suggestions_published", "Suggestion events acknowledged by the broker.",
            registry=r)
        self.events_rejected = Counter(
            "keyblend_events_rejected", "Events sent to the dead-letter topic, by reason.",
            ["reason"], registry=r)
        self.retries = Counter(
            "keyblend_retries", "Retried engine calls and broker operations.", registry=r)
        self.batch_size = Histogram(
            "keyblend_batch_size", "Pebble events per consumed batch.", buckets=_BATCH_BUCKETS,
            registry=r)
        self.encode_seconds = Histogram(
            "keyblend_encode_seconds", "Encoder time per batch.", buckets=_SECONDS_BUCKETS,
            registry=r)
        self.match_seconds = Histogram(
            "keyblend_match_seconds", "Scoring, fusion and explanation time per batch.",
            buckets=_SECONDS_BUCKETS, registry=r)
        self.end_to_end_seconds = Histogram(
            "keyblend_end_to_end_seconds", "Pebble event timestamp to its suggestions published.",
            buckets=_E2E_BUCKETS, registry=r)
        self.catalog_products = Gauge(
            "keyblend_catalog_products", "Live products in the engine's catalog.", registry=r)
        self.consumer_lag = Gauge(
            "keyblend_consumer_lag", "High watermark minus position, per input partition.",
            ["partition"], registry=r)
        self.ready = Gauge("keyblend_ready", "1 when assigned, broker reachable and model loaded.",
                           registry=r)
        self.model = Info("keyblend_model", "The model version making suggestions.", registry=r)
        self._lag_partitions: set[str] = set()

    # -- health ----------------------------------------------------------------------------
    def beat(self) -> None:
        self.health.heartbeat = time.monotonic()
        self.health.started = True

    def set_health(self, *, assigned: bool | None = None, broker: bool | None = None,
                   model: bool | None = None, detail: str | None = None) -> None:
        with self._lock:
            h = self.health
            if assigned is not None:
                h.assigned = assigned
            if broker is not None:
                h.broker = broker
            if model is not None:
                h.model = model
            if detail is not None:
                h.detail = detail
            self.ready.set(1 if h.ready else 0)

    def set_model(self, version: str) -> None:
        self.model.info({"version": version})
        self.set_health(model=True)

    def set_lag(self, lags: dict[int, int]) -> None:
        """Replace the per-partition lag; partitions no longer assigned lose their series."""
        labels = {str(p): lag for p, lag in lags.items()}
        for gone in self._lag_partitions - labels.keys():
            self.consumer_lag.remove(gone)
        for partition, lag in labels.items():
            self.consumer_lag.labels(partition=partition).set(lag)
        self._lag_partitions = set(labels)

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Start /metrics, /healthz, /readyz on ``port`` (0: any free port) in a daemon thread."""
        return MetricsServer(self, host, port)


class _Handler(BaseHTTPRequestHandler):
    metrics: ClassVar[Metrics]  # set on the per-server subclass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        health = self.metrics.health
        if path == "/metrics":
            self._send(200, self.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            age = time.monotonic() - health.heartbeat
            alive = {"alive": health.alive, "heartbeat_age_s": round(age, 3)}
            self._send(200 if health.alive else 503, json.dumps(alive).encode(), "application/json")
        elif path == "/readyz":
            ready = {"ready": health.ready, "assigned": health.assigned, "broker": health.broker,
                     "model": health.model, "detail": health.detail}
            self._send(200 if health.ready else 503, json.dumps(ready).encode(), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # probes every few seconds would drown the worker's own log


class MetricsServer:
    """A ThreadingHTTPServer in a daemon thread; ``close()`` stops it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        handler = type("MetricsHandler", (_Handler,), {"metrics": metrics})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="keyblend-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
