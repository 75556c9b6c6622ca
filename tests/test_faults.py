"""Fault tests: real ``keyblend worker`` processes against tansu while events flow.

Every test feeds pebble events at a steady rate, injects its faults, stops the workers with
SIGTERM, reads the output topics from the beginning and asserts the same property: every
pebble got a suggestion, exactly one idempotency key per pebble, no gaps, every malformed
event dead-lettered exactly once (after de-duplication) with its reason, every input
offset committed. Raw duplicates (the same idempotency key published twice) are counted
and reported, not failed: tansu shows aborted transactions to read_committed readers.

The ``soak`` ones run with ``make soak`` (each under ~2 minutes); one short kill test runs
in the default suite. Counts land in bench-results/soak.{json,md} (see tests/fault_harness).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException

import consumer.worker as worker_module
from consumer.metrics import Metrics
from consumer.settings import DeliveryMode, Settings
from consumer.worker import ABORT_ATTEMPTS, FatalWorkerError, Worker
from tests.fault_harness import (
    HealthWatch,
    assert_delivered,
    fault_env,
    make_workload,
    save_model,
    wait_for,
)
from tests.worker_helpers import hashing_engine, produce_raw, small_catalog


@pytest.mark.broker
def test_kill_dash_nine_once_while_events_flow(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The short version of the kill test, in the default suite: one kill -9 mid-stream."""
    with fault_env(tmp_path, "fast-kill") as env:
        workload = make_workload(200, bad_fraction=0.05)
        supervisor = env.supervisor(["w1", "w2"])
        verifier = env.verifier()
        supervisor.wait_ready(60)
        producer = env.producer(workload, rate=25)
        producer.start()
        producer.wait_sent(0.5)
        supervisor.kill9("w1", mid_batch_within_s=3)
        env.finish("fast: 1 kill -9, 2 workers", workload, producer, verifier, supervisor,
                   drain_s=40, capsys=capsys)


@pytest.mark.soak
def test_repeated_kill_dash_nine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 1: two workers in one group; kill -9 one of them four times while events
    flow; the supervisor restarts it under the same worker id (same transactional.id)."""
    with fault_env(tmp_path, "kill9") as env:
        workload = make_workload(3000, bad_fraction=0.02)
        supervisor = env.supervisor(["w1", "w2"])
        verifier = env.verifier()
        supervisor.wait_ready(60)
        producer = env.producer(workload, rate=80)
        producer.start()
        for fraction, name in ((0.15, "w1"), (0.35, "w2"), (0.55, "w1"), (0.75, "w2")):
            producer.wait_sent(fraction)
            supervisor.kill9(name, mid_batch_within_s=5)
        env.finish("1: kill -9 x4, 2 workers", workload, producer, verifier, supervisor,
                   capsys=capsys)


@pytest.mark.soak
def test_scale_out_and_in_while_events_flow(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 2: three workers; a fourth joins at a third of the stream and the first
    leaves (SIGTERM: finish the batch, commit, leave) at two thirds: cooperative-sticky
    rebalances while events flow."""
    with fault_env(tmp_path, "scale") as env:
        workload = make_workload(2400, bad_fraction=0.02)
        supervisor = env.supervisor(["w1", "w2", "w3"])
        verifier = env.verifier()
        supervisor.wait_ready(90)
        producer = env.producer(workload, rate=40)
        producer.start()
        producer.wait_sent(1 / 3)
        supervisor.add("w4")
        producer.wait_sent(2 / 3)
        assert supervisor.remove("w1") == 0, supervisor.workers["w1"].log_tail()
        counts = env.finish("2: +1/-1 workers of 3", workload, producer, verifier, supervisor,
                            capsys=capsys, assigns=lambda: supervisor.log_count("assigned ["),
                            revokes=lambda: supervisor.log_count("revoked ["))
        assert counts.faults["kills"] == 0
        # w4 took partitions over from the others, and w1's went to the rest when it left.
        assert "assigned [" in supervisor.workers["w4"].log_text()
        assert "revoked [" in supervisor.workers["w2"].log_text() + \
            supervisor.workers["w3"].log_text()


@pytest.mark.soak
def test_broker_unreachable_for_30_seconds(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 3: the broker is frozen (SIGSTOP) for 30 s while events flow. Nothing is lost,
    the workers report unready (/readyz 503) during the outage and ready after it."""
    pause_s = 30.0
    with fault_env(tmp_path, "outage") as env:
        workload = make_workload(2400, bad_fraction=0.02)
        supervisor = env.supervisor(["w1", "w2"])
        verifier = env.verifier()
        supervisor.wait_ready(60)
        health = HealthWatch(supervisor)
        health.start()
        producer = env.producer(workload, rate=40)
        producer.start()
        producer.wait_sent(0.25)
        env.broker.pause()
        paused_at = time.monotonic()
        time.sleep(pause_s)
        env.broker.resume()
        resumed_at = time.monotonic()
        supervisor.wait_ready(90)
        back_after = time.monotonic() - resumed_at
        counts = env.finish("3: broker paused 30 s, 2 workers", workload, producer, verifier,
                            supervisor, capsys=capsys, pause_s=pause_s,
                            ready_again_s=round(back_after, 1))
        health.stop()
        during = health.between(paused_at, resumed_at)
        after = health.between(resumed_at, time.monotonic())
        for name in ("w1", "w2"):
            assert False in during.get(name, []), f"{name} never reported unready: {during}"
            assert True in after.get(name, []), f"{name} never ready again: {after}"
        assert counts.faults["crashes"] == 0


@pytest.mark.soak
@pytest.mark.parametrize("delivery", ["exactly-once", "at-least-once"])
def test_outage_longer_than_the_message_timeout(tmp_path: Path, delivery: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 3b: the broker is paused, in the middle of a batch, for longer than the
    producer's message timeout (10 s; transaction.timeout.ms caps it for a transactional
    producer). On tansu a timed-out message wedges an idempotent or transactional producer
    for good (no KIP-360 epoch bump, see the broker NOTES): the worker must replace its
    producer and carry on."""
    client: dict[str, object] = ({"transaction.timeout.ms": 10_000} if delivery == "exactly-once"
                                 else {"message.timeout.ms": 10_000})
    with fault_env(tmp_path, f"wedge-{delivery}") as env:
        workload = make_workload(1200, bad_fraction=0.02)
        # Batches of ~10 events (200 ms to fill one): tens of ms of work to pause inside.
        supervisor = env.supervisor(["w1", "w2"], client=client, KEYBLEND_DELIVERY=delivery,
                                    KEYBLEND_BATCH_TIMEOUT_MS="200")
        verifier = env.verifier()
        supervisor.wait_ready(60)
        producer = env.producer(workload, rate=60)
        producer.start()
        producer.wait_sent(0.3)
        mid_batch = supervisor.wait_busy("w1", 10)
        env.broker.pause()  # its outputs are produced into the outage and time out
        time.sleep(16)
        env.broker.resume()
        supervisor.wait_ready(90)
        counts = env.finish(f"3b: paused 16 s > 10 s message timeout, {delivery}", workload,
                            producer, verifier, supervisor, capsys=capsys, pause_s=16,
                            paused_mid_batch=mid_batch,
                            new_producers=lambda: supervisor.log_count("new producer"))
        assert mid_batch and counts.faults["new_producers"] >= 1, supervisor.logs()


@pytest.mark.soak
def test_five_percent_malformed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 4: 5 % of the stream is malformed (every kind in consumer.demo): all good
    events answered, all bad ones dead-lettered once with their reason; counts reconcile."""
    with fault_env(tmp_path, "malformed") as env:
        workload = make_workload(2000, bad_fraction=0.05)
        supervisor = env.supervisor(["w1", "w2"])
        verifier = env.verifier()
        supervisor.wait_ready(60)
        producer = env.producer(workload, rate=50)
        producer.start()
        counts = env.finish("4: 5% malformed, 2 workers", workload, producer, verifier,
                            supervisor, capsys=capsys)
        assert counts.bad_in == 100 and counts.dead_letters_unique == 100
        expected = Counter(t for _, t in workload.bad.values())
        assert set(expected) == {"too_large", "not_utf8", "not_json", "unknown_version", "invalid"}
        assert counts.dead_letter_types == dict(sorted(expected.items()))


@pytest.mark.soak
def test_model_swap_while_events_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Scenario 5: v1 -> v2 mid-stream, by the control topic (every worker) and SIGHUP (the
    worker reloads its configured folder, a symlink flipped to v2 first, as a deploy would).
    No event lost, each suggestion names one version, everything produced after both
    workers report v2 is answered by v2."""
    with fault_env(tmp_path, "swap") as env:
        model_v2 = save_model(tmp_path / "model-v2", "v2")
        current = tmp_path / "model-current"
        current.symlink_to(env.model_v1)
        workload = make_workload(2000, bad_fraction=0.02)
        supervisor = env.supervisor(["w1", "w2"], model_dir=current)
        verifier = env.verifier()
        supervisor.wait_ready(60)
        producer = env.producer(workload, rate=50)
        producer.start()
        producer.wait_sent(0.4)
        flip = tmp_path / "model-current.new"
        flip.symlink_to(model_v2)
        flip.replace(current)  # atomic: a worker (re)starting now loads v1 or v2, whole
        produce_raw(env.broker.bootstrap, env.topics.control, [(None, json.dumps(
            {"action": "swap_model", "model_dir": str(model_v2)}).encode())])
        supervisor.workers["w2"].signal(signal.SIGHUP)
        swapped = lambda: all(  # noqa: E731
            w.metric("keyblend_model_info", {"version": "v2"}) == 1 for w in supervisor.active())
        wait_for(swapped, 30, "both workers on v2", every=0.1)
        swapped_at = time.monotonic()
        assert producer.is_alive(), "the stream ended before the swap: make it longer"
        counts = env.finish("5: model swap v1->v2, 2 workers", workload, producer, verifier,
                            supervisor, capsys=capsys,
                            swaps=lambda: supervisor.log_count("model swapped"))
        assert set(counts.versions) == {"v1", "v2"} and counts.conflicts == 0
        late = {key.decode() for key, at in producer.sent_at.items() if at > swapped_at}
        stale = [a for a in verifier.answers if a.pebble_id in late and a.model_version != "v2"]
        assert late and not stale, f"{len(stale)} answers after the swap were not v2"
        assert_delivered(counts)


# -- the recovery code on its own (no broker, no processes: part of the default suite) ------
def _unit_worker(delivery: DeliveryMode = "exactly-once") -> Worker:
    settings = Settings(brokers="127.0.0.1:9", delivery=delivery, retry_backoff_ms=1,
                        max_backoff_ms=1, metrics_port=0)
    return Worker(settings, hashing_engine(small_catalog()), Metrics(), worker_id="unit")


class _StubbornProducer:
    """A transactional producer whose abort times out ``failures`` times (for ever: -1), as
    tansu's does after a message timed out."""

    def __init__(self, failures: int) -> None:
        self.failures, self.aborts, self.purged = failures, 0, False

    def abort_transaction(self, timeout: float) -> None:
        self.aborts += 1
        if self.failures < 0 or self.aborts <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "abort timed out",
                                            retriable=True))

    def purge(self, in_queue: bool, in_flight: bool, blocking: bool) -> None:
        self.purged = True


def test_a_fenced_abort_is_fatal_not_a_new_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _unit_worker()
    renewals: list[str] = []
    monkeypatch.setattr(worker, "_new_producer", lambda reason="": renewals.append(reason))

    class Fenced(_StubbornProducer):
        def abort_transaction(self, timeout: float) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    with pytest.raises(FatalWorkerError):  # a newer instance owns the transactional.id
        worker._abort_or_replace(cast(Any, Fenced(0)))
    assert not renewals


@pytest.mark.parametrize(("failures", "replaced"), [(1, False), (-1, True)])
def test_a_transaction_that_will_not_abort_gets_a_new_producer(
        monkeypatch: pytest.MonkeyPatch, failures: int, replaced: bool) -> None:
    worker = _unit_worker()
    renewals: list[str] = []
    monkeypatch.setattr(worker, "_new_producer", lambda reason="": renewals.append(reason))
    producer = _StubbornProducer(failures)
    worker._abort_or_replace(cast(Any, producer))
    assert producer.aborts == (ABORT_ATTEMPTS if replaced else 2)
    assert bool(renewals) == replaced


def test_new_producer_replaces_and_purges_the_old_one() -> None:
    worker = _unit_worker("at-least-once")  # no init_transactions: no broker needed
    old = _StubbornProducer(0)
    worker._producer = cast(Any, old)
    worker._new_producer("test")
    assert old.purged and worker._producer is not None and worker._producer is not old


def test_a_stalled_broker_call_makes_the_worker_unready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "STALL_S", 0.2)
    worker = _unit_worker()
    worker.metrics.set_health(assigned=True, broker=True)
    done = threading.Event()
    watchdog = threading.Thread(target=worker._watch_stalls, args=(done,), daemon=True)
    watchdog.start()
    try:
        with worker._broker_call("send offsets"):  # blocked in librdkafka past its timeout
            wait_for(lambda: not worker.metrics.health.ready, 5, "unready while stalled")
            assert "send offsets: no answer" in worker.metrics.health.detail
        assert worker.metrics.health.ready  # it returned: the broker answers again
        with worker._broker_call("acknowledgements", answer_means_up=False):
            wait_for(lambda: not worker.metrics.health.ready, 5, "unready while stalled")
        assert not worker.metrics.health.ready  # deliveries may have ended by timing out
    finally:
        done.set()
        watchdog.join(5)
