"""Metrics and health endpoints: unit checks, a live worker, and a broker outage."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from consumer.local_broker import LocalBroker
from consumer.metrics import Metrics
from tests.broker_fixtures import KEYBLEND_TOPICS, consume_all, unique_topics
from tests.worker_helpers import (
    hashing_engine,
    pebble_event,
    produce_events,
    running,
    sample,
    small_catalog,
    suggestions_of,
    wait_until,
    worker_settings,
)

METRIC_NAMES = (
    "keyblend_pebbles_consumed_total", "keyblend_suggestions_published_total",
    "keyblend_events_rejected_total", "keyblend_retries_total", "keyblend_batch_size",
    "keyblend_encode_seconds", "keyblend_match_seconds", "keyblend_end_to_end_seconds",
    "keyblend_catalog_products", "keyblend_consumer_lag", "keyblend_ready", "keyblend_model_info",
)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics(liveness_s=0.3)
    server = metrics.serve(0, host="127.0.0.1")
    try:
        yield metrics, server.port
    finally:
        server.close()


def test_endpoints_follow_health(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    assert get(port, "/healthz")[0] == 200  # starting up (loading a model) counts as alive
    status, body = get(port, "/readyz")
    assert status == 503 and json.loads(body)["ready"] is False
    metrics.set_model("v9")
    metrics.set_health(assigned=True, broker=True)
    assert get(port, "/readyz")[0] == 200 and sample(metrics, "keyblend_ready") == 1
    metrics.set_health(broker=False, detail="all brokers down")
    status, body = get(port, "/readyz")
    assert status == 503 and json.loads(body)["detail"] == "all brokers down"
    assert sample(metrics, "keyblend_ready") == 0
    metrics.beat()
    assert get(port, "/healthz")[0] == 200
    time.sleep(0.4)  # a loop that stopped beating is not alive
    assert get(port, "/healthz")[0] == 503
    metrics.events_rejected.labels(reason="not_json").inc()
    metrics.set_lag({0: 3, 1: 0})
    metrics.set_lag({1: 2})  # partition 0 was revoked: its series goes
    status, text = get(port, "/metrics")
    assert status == 200
    for name in METRIC_NAMES:
        assert name in text, name
    assert 'keyblend_model_info{version="v9"} 1.0' in text
    assert 'keyblend_consumer_lag{partition="1"} 2.0' in text
    assert 'keyblend_consumer_lag{partition="0"}' not in text
    assert get(port, "/nope")[0] == 404


def test_separate_registries_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a.pebbles_consumed.inc(3)
    assert sample(a, "keyblend_pebbles_consumed_total") == 3
    assert sample(b, "keyblend_pebbles_consumed_total") == 0


@pytest.mark.broker
def test_a_running_worker_reports_metrics_and_readiness(
        broker: LocalBroker, topics: dict[str, str]) -> None:
    settings = worker_settings(broker, topics)
    metrics = Metrics()
    server = metrics.serve(0, host="127.0.0.1")
    try:
        with running(settings, hashing_engine(small_catalog()), metrics=metrics) as run:
            wait_until(lambda: get(server.port, "/readyz")[0] == 200, what="ready")
            events = [pebble_event(f"m{i}", f"lip balm {i}") for i in range(3)]
            produce_events(broker.bootstrap, settings.topics.pebbles, events)
            assert len(consume_all(broker.bootstrap, settings.topics.suggestions, 3)) == 3
            wait_until(lambda: sample(metrics, "keyblend_suggestions_published_total") == 3)
            wait_until(lambda: 'keyblend_consumer_lag{partition="' in get(server.port, "/metrics")[1],
                       what="the lag gauge")
            status, text = get(server.port, "/metrics")
            assert get(server.port, "/healthz")[0] == 200
            run.stop()
        assert get(server.port, "/readyz")[0] == 503  # left the group
    finally:
        server.close()
    assert status == 200
    assert "keyblend_pebbles_consumed_total 3.0" in text
    assert "keyblend_catalog_products 6.0" in text  # the draft product is in the catalog
    assert 'keyblend_model_info{version="test-v1"} 1.0' in text
    assert sample(metrics, "keyblend_batch_size_count") >= 1
    assert sample(metrics, "keyblend_encode_seconds_count") >= 1
    assert sample(metrics, "keyblend_end_to_end_seconds_count") == 3
    lags = [line for line in text.splitlines() if line.startswith("keyblend_consumer_lag{")]
    assert lags and all(line.endswith(" 0.0") for line in lags)  # everything read


@pytest.mark.broker
def test_broker_outages_mark_unready_and_lose_nothing() -> None:
    # A broker of its own: pausing the session's broker would stall other tests' clients.
    with LocalBroker() as broker:
        topics = unique_topics(broker, "outage", KEYBLEND_TOPICS)
        settings = worker_settings(broker, topics)
        t = settings.topics
        engine = hashing_engine(small_catalog())
        real = engine.suggest_batch
        frozen: list[threading.Timer] = []

        def freeze_mid_batch(posts, k=10):  # type: ignore[no-untyped-def]
            # The broker stops between computing a batch and committing its transaction.
            if not frozen and any("FREEZE" in p.caption for p in posts):
                broker.pause()
                frozen.append(threading.Timer(5.5, broker.resume))
                frozen[0].start()
            return real(posts, k)

        engine.suggest_batch = freeze_mid_batch  # type: ignore[method-assign]
        metrics = Metrics()
        server = metrics.serve(0, host="127.0.0.1")
        port = server.port
        try:
            with running(settings, engine, metrics=metrics) as run:
                batches = [[pebble_event(f"o{i}", f"cotton kurta {i}") for i in range(5)]]
                produce_events(broker.bootstrap, t.pebbles, batches[0])
                assert len(consume_all(broker.bootstrap, t.suggestions, 5)) == 5
                wait_until(lambda: get(port, "/readyz")[0] == 200, what="ready")

                # 1. An idle worker notices (the periodic probe) and recovers.
                broker.pause()
                wait_until(lambda: get(port, "/readyz")[0] == 503, timeout=15, what="unready")
                assert sample(metrics, "keyblend_ready") == 0
                assert get(port, "/healthz")[0] == 200  # waiting is not being stuck
                broker.resume()
                wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=30, what="ready again")

                # 2. The broker freezes mid-batch: the commit is retried until it returns.
                batches.append([pebble_event("o5", "FREEZE trail running shoes")]
                               + [pebble_event(f"o{i}", f"running shoes {i}") for i in range(6, 10)])
                produce_events(broker.bootstrap, t.pebbles, batches[1])
                wait_until(lambda: bool(frozen), what="the freeze")
                wait_until(lambda: get(port, "/readyz")[0] == 503, timeout=15, what="unready")
                frozen[0].join()
                wait_until(lambda: get(port, "/readyz")[0] == 200, timeout=30, what="ready again")

                batches.append([pebble_event(f"o{i}", f"caramel lip balm {i}") for i in range(10, 13)])
                produce_events(broker.bootstrap, t.pebbles, batches[2])
                records = consume_all(broker.bootstrap, t.suggestions, 13, timeout=40, settle=1.0)
                run.stop()
        finally:
            for timer in frozen:
                timer.join()
            if broker.paused:
                broker.resume()
            server.close()
    ids = [a.pebble_id for a in suggestions_of([r.value for r in records])]
    # Nothing lost. Duplicates are possible (an aborted transaction stays visible on tansu)
    # and are told apart by idempotency key.
    assert set(ids) == {f"o{i}" for i in range(13)}
    assert len(ids) - len(set(ids)) <= 5, f"{len(ids) - len(set(ids))} duplicates"
    assert sample(metrics, "keyblend_retries_total") >= 1
