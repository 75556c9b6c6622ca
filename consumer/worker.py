"""The streaming worker: pebble events in, one ProductSuggestions event per pebble out.

The loop only moves bytes: it decodes and validates (``consumer.codec``), calls the engine
(``consumer.matcher``), formats the answer, and hands it to the broker with the input
offsets. Everything the engine knows lives in the engine.

Delivery. ``exactly-once`` wraps each batch's outputs, dead letters and input offsets in
one producer transaction; ``at-least-once`` waits for every output to be acknowledged and
then commits offsets synchronously. Either way offsets are never committed before the
output is acknowledged, and every suggestion carries an idempotency key (pebble id + model
version) so consumers can drop the duplicates an at-least-once run, a rebalance or a broker
that does not hide aborted transactions (tansu) can produce.

Side topics. A second, group-less consumer follows the compacted products topic from the
beginning (catalog changes, applied between batches) and the control topic from its end
(model swaps). Before each batch the worker catches up with every product change the
broker has already acknowledged, so a change published before a pebble is visible to it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar, cast

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec
from pydantic import BaseModel, ConfigDict, ValidationError

from consumer.catalog import Catalog
from consumer.codec import Rejection, decode, original_bytes, rejected_event
from consumer.matcher import Engine, Suggestions
from consumer.metrics import Metrics
from consumer.settings import Settings
from schemas.events import (
    PebbleUploaded,
    ProductChanged,
    ProductSuggestions,
    RejectedEvent,
    Timings,
)

log = logging.getLogger(__name__)

# OffsetSpec's factories are unannotated; name the one used, typed.
_LATEST = cast("Callable[[], OffsetSpec]", OffsetSpec.latest)

T = TypeVar("T")

HOUSEKEEPING_S = 5.0  # lag gauge and broker probe; per event would cost a round trip each
PROBE_TIMEOUT_S = 2.0
OP_TIMEOUT_S = 5.0  # one broker call; a timeout is retried (and marks the worker unready)
# A broker call still blocked after this long marks the worker unready from a watchdog
# thread: librdkafka does not always honour a call's timeout (send_offsets_to_transaction
# blocked 28 s with timeout 5 s while tansu was paused), and the loop cannot report while
# it is blocked.
STALL_S = OP_TIMEOUT_S
ABORT_ATTEMPTS = 3  # then the producer is replaced (see _abort_or_replace)
SHUTDOWN_GRACE_S = 10.0  # after SIGTERM, how long to keep retrying an unreachable broker
IDLE_WAIT_S = 0.2  # poll wait when idle: wakes on the first message, bounds stop latency
SIDE_BATCH = 500
BARRIER_TIMEOUT_S = 1.0
STARTUP_CATCH_UP_S = 60.0

# Errors that say "the broker is not answering right now": retry the same call.
_TRANSIENT = frozenset({
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._WAIT_COORD, KafkaError.NETWORK_EXCEPTION,
})


# settings.client_config is one dict for every client; librdkafka warns about (and ignores)
# properties of the other client type, so each client gets only what applies to it.
_CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol", "group.protocol.type", "group.remote.assignor",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
    "auto.commit.interval.ms", "enable.auto.offset.store", "queued.min.messages",
    "queued.max.messages.kbytes", "fetch.wait.max.ms", "fetch.queue.backoff.ms",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes", "fetch.min.bytes",
    "fetch.error.backoff.ms", "isolation.level", "enable.partition.eof", "check.crcs",
    "auto.offset.reset", "consume.callback.max.messages",
})
_PRODUCER_ONLY = frozenset({
    "transactional.id", "transaction.timeout.ms", "enable.idempotence", "enable.gapless.guarantee",
    "queue.buffering.max.messages", "queue.buffering.max.kbytes", "queue.buffering.max.ms",
    "linger.ms", "message.send.max.retries", "retries", "queue.buffering.backpressure.threshold",
    "compression.codec", "compression.type", "compression.level", "batch.num.messages",
    "batch.size", "delivery.report.only.error", "sticky.partitioning.linger.ms",
    "request.required.acks", "acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "partitioner",
})


def client_overrides(settings: Settings, role: Literal["consumer", "producer"]) -> dict[str, Any]:
    """``settings.client_config`` without the other client type's properties."""
    skip = _PRODUCER_ONLY if role == "consumer" else _CONSUMER_ONLY
    return {k: v for k, v in settings.client_config.items() if k not in skip}


class FatalWorkerError(RuntimeError):
    """A client error no retry can fix (e.g. fenced by another instance with the same
    transactional.id). The process should exit and be restarted; nothing is lost, because
    the unfinished batch was never committed."""


class _GiveUpError(Exception):
    """Stop was requested and the broker stayed unreachable past the shutdown grace."""


class ControlEvent(BaseModel):
    """An operator's command on the control topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: Literal["swap_model"]
    model_dir: Path


@dataclass(frozen=True)
class Outgoing:
    """One message the batch will publish, with what the metrics need once it is acked."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    kind: Literal["suggestion", "dead_letter"]
    reason: str = ""  # a dead letter's error type
    event_ts: float | None = None  # the source event's timestamp (s), for end-to-end latency


@dataclass(frozen=True)
class _Failure:
    reason: str
    attempts: int


def backoff_s(attempt: int, base_ms: int, max_ms: int) -> float:
    """Exponential backoff for retry ``attempt`` (1 = first retry), capped."""
    return min(max_ms, base_ms << max(0, attempt - 1)) / 1000.0


def default_worker_id() -> str:
    """Stable across restarts of the same pod/host, so its transactional.id fences zombies."""
    return os.environ.get("KEYBLEND_WORKER_ID") or socket.gethostname()


def _where(message: Message) -> tuple[str, int, int]:
    return message.topic() or "", message.partition() or 0, message.offset() or 0


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``messages``: last offset + 1 per partition.

    Equal to ``consumer.position()`` of the batch's partitions here (nothing is consumed
    between a batch and its commit), without a dependency on the current assignment."""
    last: dict[tuple[str, int], int] = {}
    for m in messages:
        topic, partition, offset = _where(m)
        last[topic, partition] = max(offset, last.get((topic, partition), -1))
    return [TopicPartition(t, p, o + 1) for (t, p), o in sorted(last.items())]


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _is_transient(err: KafkaError | None) -> bool:
    if err is None or err.fatal() or err.txn_requires_abort():
        return False
    return err.retriable() or err.code() in _TRANSIENT


def open_engine(model_dir: Path, catalog: Catalog, settings: Settings) -> Engine:
    """A model folder against a catalog. Vectors come from the folder's own cache when it has
    one (trained models ship the catalog's vectors), else from ``settings.cache_dir``."""
    cache_dir = model_dir / "cache" if (model_dir / "cache").is_dir() else settings.cache_dir
    deployment = {"index": settings.index, "index_threshold": settings.index_threshold,
                  "brand_filter": settings.brand_filter}
    # Index snapshots go to the writable cache dir: the model folder may be a read-only volume.
    engine = Engine.load(model_dir, catalog, threads=settings.threads, cache_dir=cache_dir,
                         overrides=deployment, index_dir=settings.cache_dir / "index")
    try:
        engine.cache.save()  # the next start encodes only new or changed products
    except OSError as exc:  # a read-only model volume is fine; the cache is an optimisation
        log.info("embedding cache not saved: %s", exc)
    return engine


def load_engine(settings: Settings) -> Engine:
    """The engine a worker starts with: settings.model_dir (else the base model) over
    settings.catalog_path (else the demo catalog)."""
    from consumer.models import ensure_base_model

    model_dir = settings.model_dir or ensure_base_model(settings.models_root)
    if settings.catalog_path is not None:
        catalog, report = Catalog.from_file(settings.catalog_path)
        (log.warning if report.rejected else log.info)("catalog %s", report.summary())
    else:
        from consumer.demo import demo_catalog

        catalog = demo_catalog()
        log.info("catalog: the demo catalog (%d products)", len(catalog))
    started = time.perf_counter()
    engine = open_engine(model_dir, catalog, settings)
    log.info("model %s loaded from %s in %.1f s", engine.version, model_dir,
             time.perf_counter() - started)
    return engine


class Worker:
    """Consumes ``settings.topics.pebbles`` in a consumer group until ``run``'s event is set.

    Construct with a loaded engine (tests pass one built on the hashing encoder); all Kafka
    clients are created in ``run`` and used from that thread only.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        metrics: Metrics | None = None,
        *,
        worker_id: str | None = None,
        housekeeping_s: float = HOUSEKEEPING_S,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics if metrics is not None else Metrics()
        self.worker_id = worker_id or default_worker_id()
        self.housekeeping_s = housekeeping_s
        self.transactional = settings.delivery == "exactly-once"
        self._stop = threading.Event()
        self._stopping_since: float | None = None
        self._consumer: Consumer | None = None
        self._side: Consumer | None = None
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._products_partitions: list[int] = []
        self._assigned: set[int] = set()
        self._broker_suspect = False
        self._fatal: KafkaError | None = None
        # The blocking broker call in progress (what, since), read by the stall watchdog.
        self._in_flight: tuple[str, float] | None = None
        self._stalled = False
        self._next_housekeeping = 0.0
        self._txn_failures = 0
        # Dead letters from the side topics: sent with the next commit.
        self._pending_letters: list[Outgoing] = []
        # Model swap: a request (from a signal handler, the control topic or a caller), a
        # loader thread, and the catalog changes applied since the loader's snapshot.
        self._swap_requested = False
        self._swap_dir: Path | None = None
        self._loader: threading.Thread | None = None
        self._loaded: Engine | BaseException | None = None
        self._changes_since_snapshot: list[ProductChanged] | None = None
        self.swaps_failed = 0
        self.metrics.set_model(engine.version)
        self.metrics.catalog_products.set(len(engine.catalog))

    # -- client configuration -----------------------------------------------------------
    def _configure(self, config: dict[str, Any],
                   role: Literal["consumer", "producer"]) -> dict[str, Any]:
        merged: dict[str, Any] = {
            "bootstrap.servers": self.settings.brokers,
            "client.id": f"keyblend-{self.worker_id}",
            **config,
            **client_overrides(self.settings, role),
        }
        merged["error_cb"] = self._on_error
        return merged

    def consumer_config(self) -> dict[str, Any]:
        return self._configure({
            "group.id": self.settings.group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }, "consumer")

    def side_config(self) -> dict[str, Any]:
        # librdkafka wants a group.id even for assign(); nothing is ever committed under it.
        return self._configure({
            "group.id": f"{self.settings.group}.side.{self.worker_id}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 100,
        }, "consumer")

    def producer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
        if self.transactional:
            config["transactional.id"] = f"{self.settings.group}-{self.worker_id}"
        return self._configure(config, "producer")

    # -- callbacks (run inside poll/consume/flush, on the worker thread) -------------------
    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._broker_down(f"all brokers down: {err.str()}")
            self._broker_suspect = True  # probe again soon: the probe is what sees it return
        elif err.code() == KafkaError._TRANSPORT:
            self._broker_suspect = True  # often one idle connection closing: probe first
        elif err.fatal():
            self._fatal = err
        log.warning("kafka client error: %s", err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        self.metrics.set_health(assigned=True)
        log.info("assigned %s; now %s", [tp.partition for tp in partitions], sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing to commit: callbacks run inside poll(), and every batch is committed
        # before the next poll.
        self._assigned -= {tp.partition for tp in partitions}
        log.info("revoked %s; now %s", [tp.partition for tp in partitions], sorted(self._assigned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Out of the group until the rejoin assigns again (a plain revoke is a brief
        # rebalance step and does not make the worker unready).
        self._assigned -= {tp.partition for tp in partitions}
        self.metrics.set_health(assigned=False, detail="session lost: rejoining the group")
        log.warning("lost %s (session expired); uncommitted work will be redone by their owner",
                    [tp.partition for tp in partitions])

    # -- health ----------------------------------------------------------------------------
    def _broker_down(self, detail: str) -> None:
        if self.metrics.health.broker:
            log.warning("broker unreachable: %s", detail)
        self.metrics.set_health(broker=False, detail=detail)

    def _broker_up(self) -> None:
        if not self.metrics.health.broker:
            log.info("broker reachable")
        self.metrics.set_health(broker=True, detail="")

    @contextmanager
    def _broker_call(self, what: str, answer_means_up: bool = True) -> Iterator[None]:
        """Marks a blocking broker call for the stall watchdog; if the watchdog reported it
        stalled and it then succeeds (and ``answer_means_up``), the broker answers again."""
        self._in_flight = (what, time.monotonic())
        try:
            yield
        finally:
            self._in_flight = None
            stalled, self._stalled = self._stalled, False
        if stalled and answer_means_up:  # reached on success only
            self._broker_up()

    def _watch_stalls(self, done: threading.Event) -> None:
        """Watchdog thread: report the broker down while a call has been blocked > STALL_S."""
        while not done.wait(0.5):
            call = self._in_flight
            if call is not None and not self._stalled and time.monotonic() - call[1] > STALL_S:
                self._stalled = True
                self._broker_suspect = True  # the loop re-probes as soon as it is free
                self._broker_down(f"{call[0]}: no answer for {time.monotonic() - call[1]:.0f} s")

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Process batches until ``stop`` (or ``request_stop()``) is set; then finish the
        batch, commit, and leave the group."""
        if stop is not None:
            self._stop = stop
        stop = self._stop
        watchdog_done = threading.Event()
        watchdog = threading.Thread(target=self._watch_stalls, args=(watchdog_done,),
                                    name="keyblend-stall-watchdog", daemon=True)
        watchdog.start()
        try:
            self._start()
            while not stop.is_set():
                self.metrics.beat()
                if self._fatal is not None:
                    raise FatalWorkerError(f"fatal client error: {self._fatal}")
                self._maybe_swap()
                self._poll_side(0)
                self._housekeeping()
                messages = self._next_batch()
                if messages:
                    self._process(messages)
                elif self._pending_letters:
                    self._deliver([], [])
            if self._pending_letters:  # side-topic dead letters still owed
                self._deliver([], [])
            log.info("stopping: the last batch is committed")
        except _GiveUpError:
            log.warning("stopping with the broker unreachable: the last batch was not committed "
                        "and will be processed again by the group")
        finally:
            watchdog_done.set()
            self._close()

    def request_stop(self) -> None:
        self._stop.set()

    def _start(self) -> None:
        self._admin = AdminClient(self._configure({}, "producer"))  # admin is producer-type
        self._new_producer()
        self._side = Consumer(self.side_config())
        self._assign_side()
        # Follow the catalog before joining the group: the first pebble sees the whole catalog.
        self._catalog_barrier(STARTUP_CATCH_UP_S, wait_for_broker=True)
        self._consumer = Consumer(self.consumer_config())
        self._consumer.subscribe([self.settings.topics.pebbles], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        self._broker_up()
        self.metrics.beat()
        log.info("worker %s: group %s, %s, model %s, %d products", self.worker_id,
                 self.settings.group, self.settings.delivery, self.engine.version,
                 len(self.engine.catalog))

    def _new_producer(self, reason: str = "") -> None:
        """Create the producer (and init its transactions), replacing a wedged one.

        Why replace: after a message times out (an outage longer than message.timeout.ms,
        which transaction.timeout.ms caps) librdkafka must bump the producer epoch (KIP-360);
        tansu refuses, and the producer is wedged for good without a fatal error: an
        idempotent one fails every later delivery with PRODUCER_FENCED, a transactional one
        times out every abort_transaction. A new instance gets a new producer id (idempotent)
        or, with the same transactional.id, fences the old epoch and aborts its open
        transaction in init_transactions. On Kafka proper this is merely unnecessary."""
        old, self._producer = self._producer, None
        if old is not None:
            log.warning("new producer%s (%s)",
                        " with the same transactional.id" if self.transactional else "", reason)
            try:  # nothing in it is wanted any more: the batch is redone on the new producer
                old.purge(in_queue=True, in_flight=True, blocking=False)
            except (KafkaException, NotImplementedError, RuntimeError) as exc:
                log.info("purging the old producer: %s", exc)
            del old  # the caller's batch-local reference goes with its frame
        producer = Producer(self.producer_config())
        if self.transactional:
            self._retry("init transactions", lambda: producer.init_transactions(OP_TIMEOUT_S))
        self._producer = producer

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group now instead of after a session timeout
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)
            self._consumer = None
        if self._side is not None:
            self._side.close()
            self._side = None
        self._admin = None  # dropping the last reference closes it
        if self._producer is not None:
            self._producer.flush(1.0)
            self._producer = None
        self._assigned.clear()
        self.metrics.set_lag({})
        self.metrics.set_health(assigned=False)

    def _next_batch(self) -> list[Message]:
        assert self._consumer is not None
        first = self._consumer.poll(IDLE_WAIT_S)
        if first is None:
            return []
        size = self.settings.batch_size
        wait = self.settings.batch_timeout_ms / 1000
        more = self._consumer.consume(size - 1, wait) if size > 1 else []
        batch = []
        for message in (first, *more):
            err = message.error()
            if err is None:
                batch.append(message)
            elif err.fatal():
                raise FatalWorkerError(f"consumer: {err}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", err)
        return batch

    def _process(self, messages: list[Message]) -> None:
        self._catalog_barrier(BARRIER_TIMEOUT_S)
        engine = self.engine  # swaps happen between batches: this batch ends on this engine
        outgoing = self._outputs(engine, messages)
        self.metrics.batch_size.observe(len(messages))
        self._deliver(outgoing, messages)

    # -- decode, suggest, format -----------------------------------------------------------
    def _outputs(self, engine: Engine, messages: Sequence[Message]) -> list[Outgoing]:
        started = time.perf_counter()
        out: list[Outgoing | None] = [None] * len(messages)
        valid: list[tuple[int, PebbleUploaded]] = []
        for i, message in enumerate(messages):
            event = decode(message.value(), PebbleUploaded, self.settings.max_event_bytes)
            if isinstance(event, Rejection):
                out[i] = self._dead_letter(message, event)
            else:
                valid.append((i, event))
        results = self._suggest(engine, [p for _, p in valid], whole=True)
        answered = [r for r in results if isinstance(r, Suggestions)]
        if answered:
            self.metrics.encode_seconds.observe(sum(r.encode_ms for r in answered) / 1000)
            self.metrics.match_seconds.observe(sum(r.match_ms for r in answered) / 1000)
        share_ms = (time.perf_counter() - started) * 1000 / max(1, len(valid))
        catalog_version = engine.catalog.fingerprint()
        for (i, pebble), result in zip(valid, results, strict=True):
            if isinstance(result, _Failure):
                failed = Rejection("processing_failed", result.reason)
                out[i] = self._dead_letter(messages[i], failed, attempts=result.attempts)
            else:
                out[i] = self._suggestion(engine, messages[i], pebble, result, catalog_version,
                                          share_ms)
        return [o for o in out if o is not None]

    def _suggest(self, engine: Engine, pebbles: list[PebbleUploaded],
                 whole: bool) -> list[Suggestions | _Failure]:
        """The engine's answers; a failing batch is retried, then split to isolate the poison.

        The whole batch and each single event get the retry budget (transient failures heal
        there); the halves in between get one try each, so one poison event in a batch of
        64 costs ~a dozen extra calls, not a dozen backoffs."""
        if not pebbles:
            return []
        budget = self.settings.retries if whole or len(pebbles) == 1 else 0
        error: Exception | None = None
        for attempt in range(budget + 1):
            if attempt:
                self.metrics.retries.inc()
                self._sleep(backoff_s(attempt, self.settings.retry_backoff_ms,
                                      self.settings.max_backoff_ms))
            try:
                results = engine.suggest_batch(pebbles, self.settings.top_k)
                if len(results) != len(pebbles):
                    raise RuntimeError(f"engine answered {len(results)} of {len(pebbles)} pebbles")
                return list(results)
            except Exception as exc:  # any engine failure: retried, then isolated
                error = exc
                log.warning("engine failed on %d pebble(s) (attempt %d/%d): %r",
                            len(pebbles), attempt + 1, budget + 1, exc)
        if len(pebbles) == 1:
            return [_Failure(f"{type(error).__name__}: {error}", budget + 1)]
        mid = len(pebbles) // 2
        return (self._suggest(engine, pebbles[:mid], whole=False)
                + self._suggest(engine, pebbles[mid:], whole=False))

    def _suggestion(self, engine: Engine, message: Message, pebble: PebbleUploaded,
                    result: Suggestions, catalog_version: str, share_ms: float) -> Outgoing:
        key = ProductSuggestions.key_for(pebble.id, engine.version)
        event = ProductSuggestions(
            pebble_id=pebble.id,
            idempotency_key=key,
            suggestions=[r.to_event() for r in result.recommendations],
            model_version=engine.version,
            catalog_version=catalog_version,
            timings=Timings(
                encode_ms=round(result.encode_ms, 3),
                match_ms=round(result.match_ms, 3),
                total_ms=round(max(share_ms, result.encode_ms + result.match_ms), 3),
            ),
        )
        topic, partition, offset = _where(message)
        ts_type, ts = message.timestamp()
        return Outgoing(
            topic=self.settings.topics.suggestions,
            key=pebble.id.encode(),
            value=event.model_dump_json().encode(),
            headers=[("idempotency-key", key), ("model-version", engine.version),
                     ("catalog-version", catalog_version), ("schema-version", "1"),
                     ("source", f"{topic}/{partition}/{offset}")],
            kind="suggestion",
            event_ts=ts / 1000 if ts_type != TIMESTAMP_NOT_AVAILABLE and ts > 0 else None,
        )

    def _dead_letter(self, message: Message, rejection: Rejection, attempts: int = 1) -> Outgoing:
        topic, partition, offset = _where(message)
        event = rejected_event(rejection, topic=topic, partition=partition, offset=offset,
                               key=message.key(), value=message.value(), attempts=attempts,
                               worker=self.worker_id)
        log.info("dead letter %s/%d/%d: %s %s", topic, partition, offset, rejection.error_type,
                 rejection.field or "")
        return Outgoing(
            topic=self.settings.topics.dead_letters,
            key=message.key(),
            value=event.model_dump_json().encode(),
            headers=[("error-type", rejection.error_type),
                     ("source", f"{topic}/{partition}/{offset}")],
            kind="dead_letter",
            reason=rejection.error_type,
        )


    # -- delivery --------------------------------------------------------------------------
    def _deliver(self, outgoing: list[Outgoing], messages: Sequence[Message]) -> bool:
        """Publish ``outgoing`` (plus pending side dead letters) and commit ``messages``."""
        items = [*self._pending_letters, *outgoing]
        offsets = _next_offsets(messages)
        done = (self._deliver_transaction(items, offsets, messages) if self.transactional
                else self._deliver_acked(items, offsets))
        if done:
            self._pending_letters.clear()
            now = time.time()
            for item in items:
                if item.kind == "suggestion":
                    self.metrics.suggestions_published.inc()
                    if item.event_ts is not None:
                        self.metrics.end_to_end_seconds.observe(max(0.0, now - item.event_ts))
                else:
                    self.metrics.events_rejected.labels(reason=item.reason).inc()
            self.metrics.pebbles_consumed.inc(len(messages))
        return done

    def _produce_all(
        self,
        items: Sequence[Outgoing],
        on_delivery: Callable[[Outgoing, KafkaError | None], None] | None = None,
    ) -> None:
        assert self._producer is not None
        for item in items:
            callback = None
            if on_delivery is not None:
                def callback(err: KafkaError | None, _msg: Message, item: Outgoing = item) -> None:
                    on_delivery(item, err)
            while True:
                try:
                    self._producer.produce(item.topic, item.value, item.key, headers=item.headers,
                                           on_delivery=callback)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.1)
                    self.metrics.beat()
        self._producer.poll(0)

    def _deliver_transaction(self, items: list[Outgoing], offsets: list[TopicPartition],
                             messages: Sequence[Message]) -> bool:
        producer, consumer = self._producer, self._consumer
        assert producer is not None
        try:
            producer.begin_transaction()
            self._produce_all(items)
            if offsets:
                assert consumer is not None
                self._retry("send offsets", lambda: producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), OP_TIMEOUT_S))
            self._retry("commit transaction", lambda: producer.commit_transaction(OP_TIMEOUT_S))
            self._txn_failures = 0
            return True
        except _GiveUpError:
            self._try(lambda: producer.abort_transaction(1.0))
            raise
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is None or err.fatal():
                raise FatalWorkerError(f"transactional producer: {exc}") from exc
            # Abortable (e.g. a delivery timed out in an outage, or the group moved on):
            # abort, re-read the batch from its first offset and do it again.
            self._txn_failures += 1
            self.metrics.retries.inc()
            log.warning("transaction failed (%s); aborting and re-reading the batch", err)
            self._abort_or_replace(producer)
            self._rewind(messages)
            self._sleep(backoff_s(self._txn_failures, self.settings.retry_backoff_ms,
                                  self.settings.max_backoff_ms))
            return False

    def _abort_or_replace(self, producer: Producer) -> None:
        """Abort the open transaction, a few tries; if it will not abort, replace the producer
        (the new instance's init_transactions aborts it). Retrying the abort for as long as
        the broker is away (as before) never ended on tansu after a message timeout: every
        abort_transaction timed out, for good."""
        for attempt in range(1, ABORT_ATTEMPTS + 1):
            try:
                with self._broker_call("abort transaction"):
                    producer.abort_transaction(OP_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is None or err.fatal():  # e.g. fenced by a newer instance: do not
                    # fence it back with a new producer; exit, the group redoes the batch
                    raise FatalWorkerError(f"abort transaction: {exc}") from exc
                self.metrics.retries.inc()
                self._broker_down(f"abort transaction: {err}")
                self._check_give_up()
                if attempt < ABORT_ATTEMPTS:
                    self._sleep(backoff_s(attempt, self.settings.retry_backoff_ms,
                                          self.settings.max_backoff_ms))
        self._new_producer("the failed transaction could not be aborted")

    def _deliver_acked(self, items: list[Outgoing], offsets: list[TopicPartition]) -> bool:
        producer = self._producer
        assert producer is not None
        pending, attempt = items, 0
        while pending:
            failed: list[Outgoing] = []

            def note(item: Outgoing, err: KafkaError | None,
                     failed: list[Outgoing] = failed) -> None:
                if err is not None:
                    log.warning("delivery to %s failed: %s", item.topic, err)
                    failed.append(item)

            self._produce_all(pending, note)
            # Not "up" when this returns: deliveries also end by timing out locally.
            with self._broker_call("acknowledgements", answer_means_up=False):
                while len(producer) > 0:  # wait for every acknowledgement (or final failure)
                    producer.flush(0.5)
                    self.metrics.beat()
                    self._check_give_up()
            if failed:  # librdkafka already retried until message.timeout.ms: the broker is away
                attempt += 1
                self.metrics.retries.inc()
                self._broker_down(f"{len(failed)} deliveries failed")
                self._sleep(backoff_s(attempt, self.settings.retry_backoff_ms,
                                      self.settings.max_backoff_ms))
                self._check_give_up()
                # A timed-out message wedges an idempotent producer on tansu (every later
                # delivery: PRODUCER_FENCED): send the retries through a fresh one.
                self._new_producer(f"{len(failed)} deliveries failed")
                producer = self._producer
                assert producer is not None
            pending = failed
        if offsets:
            try:
                self._retry("commit offsets", lambda: self._commit(offsets))
            except KafkaException as exc:
                # E.g. the group rebalanced: the new owner re-reads these (at-least-once).
                log.warning("offset commit refused (%s); the batch may be delivered again", exc)
        return True

    def _commit(self, offsets: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in self._consumer.commit(offsets=offsets, asynchronous=False):
            if tp.error is not None:
                raise KafkaException(tp.error)

    def _rewind(self, messages: Sequence[Message]) -> None:
        """Seek each partition of the batch back to its first offset: the committed offset,
        since every earlier batch committed before this one was read; no broker round trip."""
        assert self._consumer is not None
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            topic, partition, offset = _where(m)
            first[topic, partition] = min(offset, first.get((topic, partition), offset))
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its new owner starts there
                log.info("not rewinding %s[%d]: %s", topic, partition, exc)

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """``call`` until it succeeds or fails for a reason other than an unreachable broker.

        While retrying the worker is unready; liveness stays (the loop is waiting, not stuck)."""
        attempt = 0
        while True:
            try:
                with self._broker_call(what):
                    result = call()
            except KafkaException as exc:
                err = _kafka_error(exc)
                if not _is_transient(err):
                    raise
                attempt += 1
                self.metrics.retries.inc()
                self._broker_down(f"{what}: {err}")
                self._check_give_up()
                delay = backoff_s(attempt, self.settings.retry_backoff_ms,
                                  self.settings.max_backoff_ms)
                # Jitter: workers that lost the broker together should not return in lockstep.
                self._sleep(delay * random.uniform(0.5, 1.0))
                continue
            if attempt:
                self._broker_up()
            return result

    def _try(self, call: Callable[[], object]) -> None:
        try:
            call()
        except (KafkaException, RuntimeError) as exc:
            log.info("ignored during shutdown: %s", exc)

    def _check_give_up(self) -> None:
        if not self._stop.is_set():
            return
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        elif time.monotonic() - self._stopping_since > SHUTDOWN_GRACE_S:
            raise _GiveUpError

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            self.metrics.beat()

    # -- side topics: catalog changes and control ----------------------------------------
    def _latest_offsets(self, parts: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        # The admin client has its own connection: a consumer's query would queue behind
        # its own fetch long-poll (tansu answers one request per connection at a time).
        assert self._admin is not None
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): _LATEST() for t, p in parts},
            request_timeout=PROBE_TIMEOUT_S)
        try:
            return {(tp.topic, tp.partition): int(f.result(timeout=PROBE_TIMEOUT_S + 1).offset)
                    for tp, f in futures.items()}
        except concurrent.futures.TimeoutError as exc:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "list offsets timed out",
                                            retriable=True)) from exc

    def _assign_side(self) -> None:
        assert self._admin is not None and self._side is not None
        admin, topics = self._admin, self.settings.topics
        metadata = self._retry("metadata", lambda: admin.list_topics(timeout=OP_TIMEOUT_S))
        assignment = []
        if topics.products in metadata.topics:
            self._products_partitions = sorted(metadata.topics[topics.products].partitions)
            assignment += [TopicPartition(topics.products, p, OFFSET_BEGINNING)
                           for p in self._products_partitions]
        else:
            log.warning("topic %s not found: catalog changes will not be followed", topics.products)
        if topics.control in metadata.topics:
            # From the end, resolved now: a restart must not replay old swaps, and a command
            # published after startup must not be missed.
            control = metadata.topics[topics.control].partitions
            parts = [(topics.control, p) for p in sorted(control)]
            ends = self._retry("control offsets", lambda: self._latest_offsets(parts))
            assignment += [TopicPartition(t, p, ends[t, p]) for t, p in parts]
        else:
            log.warning("topic %s not found: model swaps only by SIGHUP", topics.control)
        self._side.assign(assignment)

    def _catalog_barrier(self, timeout: float, wait_for_broker: bool = False) -> None:
        """Apply every product change the broker has acknowledged until now.

        tansu 0.6 reports the end as the last record batch's base offset + 1; reaching it
        still means the whole batch was fetched (a fetch returns whole batches)."""
        if not self._products_partitions or self._side is None:
            return
        topic = self.settings.topics.products
        parts = [(topic, p) for p in self._products_partitions]
        try:
            highs = (self._retry("catalog offsets", lambda: self._latest_offsets(parts))
                     if wait_for_broker else self._latest_offsets(parts))
        except KafkaException as exc:
            self._broker_suspect = True  # the batch's own commit will wait for the broker
            log.info("catalog barrier skipped: %s", exc)
            return
        deadline = time.monotonic() + timeout
        while True:
            positions = self._side.position([TopicPartition(t, p) for t, p in parts])
            behind = [tp for tp in positions if highs[tp.topic, tp.partition] > max(tp.offset, 0)]
            if not behind:
                return
            if time.monotonic() > deadline:
                where = [(tp.partition, tp.offset, highs[tp.topic, tp.partition]) for tp in behind]
                log.warning("catalog not caught up after %.1f s on %s", timeout, where)
                return
            self._poll_side(0.05)

    def _poll_side(self, timeout: float) -> int:
        if self._side is None:
            return 0
        messages = self._side.consume(SIDE_BATCH, timeout)
        changes: list[ProductChanged] = []
        for message in messages:
            err = message.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("side consumer: %s", err)
                continue
            if message.topic() == self.settings.topics.products:
                change = self._product_change(message)
                if change is not None:
                    changes.append(change)
            else:
                command = decode(message.value(), ControlEvent, self.settings.max_event_bytes)
                if isinstance(command, Rejection):
                    self._pending_letters.append(self._dead_letter(message, command))
                else:
                    log.info("control: %s %s", command.action, command.model_dir)
                    self.request_swap(command.model_dir)
        if changes:
            self._apply(changes)
        return len(messages)

    def _product_change(self, message: Message) -> ProductChanged | None:
        key = message.key()
        if message.value() is None and key:
            # A Kafka tombstone on the compacted topic deletes its key.
            try:
                return ProductChanged(op="delete", product_id=key.decode())
            except (UnicodeDecodeError, ValidationError) as exc:
                rejection = Rejection("invalid", str(exc), "key")
                self._pending_letters.append(self._dead_letter(message, rejection))
                return None
        change = decode(message.value(), ProductChanged, self.settings.max_event_bytes)
        if isinstance(change, Rejection):
            self._pending_letters.append(self._dead_letter(message, change))
            return None
        return change

    def _apply(self, changes: list[ProductChanged]) -> None:
        try:
            self.engine.apply(changes)
        except Exception:  # the catalog took the change; the engine re-indexes on its next sync
            log.exception("applying %d catalog changes failed", len(changes))
        if self._changes_since_snapshot is not None:
            self._changes_since_snapshot.extend(changes)
        self.metrics.catalog_products.set(len(self.engine.catalog))
        log.info("catalog: %d change(s) applied, %d products", len(changes),
                 len(self.engine.catalog))

    # -- model swap ------------------------------------------------------------------------
    def request_swap(self, model_dir: Path | None = None) -> None:
        """Load ``model_dir`` (None: settings.model_dir or the base model) in the background
        and swap it in between batches. Plain assignments: safe from a signal handler."""
        self._swap_dir = model_dir
        self._swap_requested = True

    @property
    def swapping(self) -> bool:
        return self._swap_requested or self._loader is not None

    def _maybe_swap(self) -> None:
        loader = self._loader
        if loader is not None:
            if loader.is_alive():
                return
            self._loader = None
            loaded, changes = self._loaded, self._changes_since_snapshot or []
            self._loaded, self._changes_since_snapshot = None, None
            if isinstance(loaded, Engine) and changes:
                try:  # changes that arrived while it loaded
                    loaded.apply(changes)
                except Exception as exc:
                    loaded = exc
            if isinstance(loaded, Engine):
                old, self.engine = self.engine, loaded
                self.metrics.set_model(loaded.version)
                self.metrics.catalog_products.set(len(loaded.catalog))
                log.info("model swapped: %s -> %s", old.version, loaded.version)
            else:
                self.swaps_failed += 1
                log.error("model swap failed, keeping %s: %r", self.engine.version, loaded)
        if self._swap_requested and self._loader is None:
            self._swap_requested = False
            # The loader gets its own copy of the catalog; changes applied meanwhile are
            # recorded and replayed onto it before the swap.
            snapshot = self.engine.catalog.copy()
            self._changes_since_snapshot = []
            self._loader = threading.Thread(target=self._load, args=(self._swap_dir, snapshot),
                                            name="keyblend-model-loader", daemon=True)
            self._loader.start()

    def _load(self, model_dir: Path | None, catalog: Catalog) -> None:
        try:
            if model_dir is None:
                from consumer.models import ensure_base_model

                model_dir = self.settings.model_dir or ensure_base_model(self.settings.models_root)
            log.info("loading model %s in the background", model_dir)
            self._loaded = open_engine(model_dir, catalog, self.settings)
        except Exception as exc:  # reported by the loop, which keeps the old engine
            self._loaded = exc

    # -- periodic --------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        """Consumer lag and a broker probe, every few seconds (every second while down)."""
        now = time.monotonic()
        if not self._broker_suspect and now < self._next_housekeeping:
            return
        self._broker_suspect = False
        consumer, admin = self._consumer, self._admin
        assert consumer is not None and admin is not None
        try:
            topic = self.settings.topics.pebbles
            parts = [(topic, p) for p in sorted(self._assigned)]
            if parts:
                highs = self._latest_offsets(parts)
                positions = consumer.position([TopicPartition(t, p) for t, p in parts])
                unread = [tp for tp in positions if tp.offset < 0]
                committed: dict[int, int] = {}
                if unread:  # nothing read since assignment: measure from the committed offset
                    committed = {tp.partition: tp.offset
                                 for tp in consumer.committed(unread, timeout=PROBE_TIMEOUT_S)}
                lags = {}
                for tp in positions:
                    start = tp.offset if tp.offset >= 0 else max(0, committed.get(tp.partition, 0))
                    lags[tp.partition] = max(0, highs[tp.topic, tp.partition] - start)
                self.metrics.set_lag(lags)
            else:
                admin.list_topics(topic=topic, timeout=PROBE_TIMEOUT_S)
                self.metrics.set_lag({})
            self._broker_up()
        except KafkaException as exc:
            self._broker_down(str(_kafka_error(exc) or exc))
        self._next_housekeeping = time.monotonic() + (
            self.housekeeping_s if self.metrics.health.broker else 1.0)


def run_worker(settings: Settings) -> int:
    """``keyblend worker``: serve metrics, load the engine, consume until SIGTERM/SIGINT."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = Metrics()
    server = metrics.serve(settings.metrics_port) if settings.metrics_port else None
    try:
        engine = load_engine(settings)
        worker = Worker(settings, engine, metrics)
        stop = threading.Event()

        def on_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()  # the loop finishes its batch, commits and leaves the group

        def on_hup(signum: int, frame: FrameType | None) -> None:
            worker.request_swap(None)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        worker.run(stop)
        return 0
    except (FatalWorkerError, KafkaException) as exc:  # the group redoes the open batch
        log.error("worker stopped: %s", exc)
        return 1
    finally:
        if server is not None:
            server.close()


def replay_dead_letters(settings: Settings, limit: int | None, error_types: Sequence[str] | None,
                        dry_run: bool) -> int:
    """Re-submit dead-lettered events (their original bytes and key) to their source topic.

    Reads the dead-letter topic from the beginning up to its end as of now, without a group
    (nothing is marked as replayed: downstream idempotency keys absorb repeats), keeping the
    original key. Returns how many were (or, with ``dry_run``, would be) re-submitted."""
    wanted = set(error_types) if error_types else None
    consumer = Consumer({"bootstrap.servers": settings.brokers,
                         **client_overrides(settings, "consumer"),
                         "group.id": f"{settings.group}.dlq-replay", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    producer = Producer({"bootstrap.servers": settings.brokers,
                         **client_overrides(settings, "producer"),
                         "enable.idempotence": True, "acks": "all"})
    topic = settings.topics.dead_letters
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    try:
        metadata = consumer.list_topics(topic, timeout=OP_TIMEOUT_S)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise RuntimeError(f"dead-letter topic {topic} not found")
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        # "The end as of now" by timestamp: ListOffsets can fall short of the end (tansu 0.6
        # answers the last batch's base offset + 1), and letters written after this started
        # (e.g. the replayed events failing again) must not be replayed in a loop.
        started_ms = int(time.time() * 1000)
        replayed, quiet_since = 0, time.monotonic()
        while (limit is None or replayed < limit) and time.monotonic() - quiet_since < 1.0:
            messages = consumer.consume(SIDE_BATCH, 0.2)
            if messages:
                quiet_since = time.monotonic()
            for message in messages:
                if message.error() is not None or message.timestamp()[1] > started_ms:
                    continue
                if limit is not None and replayed >= limit:
                    break
                _, partition, offset = _where(message)
                try:
                    dead = RejectedEvent.model_validate_json(message.value() or b"")
                except ValidationError as exc:
                    log.warning("skipping %s/%d/%d: not a RejectedEvent (%s)", topic, partition,
                                offset, exc.errors()[0]["msg"])
                    continue
                if wanted is not None and dead.error_type not in wanted:
                    continue
                replayed += 1
                if not dry_run:
                    producer.produce(dead.source_topic, original_bytes(dead),
                                     None if dead.key is None else dead.key.encode(),
                                     headers=[("replayed-from", f"{topic}/{partition}/{offset}")],
                                     on_delivery=on_delivery)
                    producer.poll(0)
        if producer.flush(OP_TIMEOUT_S) or failures:
            raise RuntimeError(f"replay not fully acknowledged: {failures[:3]}")
        return replayed
    finally:
        consumer.close()
