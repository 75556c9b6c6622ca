"""Helpers for the worker tests: settings on fresh topics, a worker in a thread, readers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from consumer.catalog import Catalog
from consumer.encoder import HashingEncoder
from consumer.local_broker import LocalBroker, fast_test_client_config
from consumer.matcher import Engine, EngineConfig
from consumer.metrics import Metrics
from consumer.settings import Settings, Topics
from consumer.worker import Worker
from schemas.events import ProductRecord, ProductSuggestions, RejectedEvent

ClientConfig = dict[str, str | int | float | bool]


def fast_config() -> ClientConfig:
    # Quick group joins and fetches on tansu (see consumer.local_broker); the worker hands
    # each client only its own kind's properties.
    return cast(ClientConfig, fast_test_client_config("both"))


def worker_settings(broker: LocalBroker, topics: dict[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "brokers": broker.bootstrap,
        "group": f"keyblend-test-{uuid.uuid4().hex[:8]}",
        "topics": Topics(
            pebbles=topics["pebbles.uploaded"],
            suggestions=topics["pebbles.suggestions"],
            dead_letters=topics["pebbles.dlq"],
            products=topics["products"],
            control=topics["keyblend.control"],
        ),
        "metrics_port": 0,
        "batch_size": 16,
        "batch_timeout_ms": 20,
        "retries": 2,
        "retry_backoff_ms": 10,
        "max_backoff_ms": 50,
        "top_k": 5,
        "client_config": fast_config(),
    }
    values.update(overrides)
    return Settings(**values)


def product(pid: str, name: str, status: str = "published", **fields: Any) -> ProductRecord:
    return ProductRecord(id=pid, name=name, status=status, **fields)


def small_catalog() -> Catalog:
    """Six products; the draft one matches "mango body butter" best and must never be shown."""
    return Catalog([
        product("p-serum", "Vitamin C Glow Serum", keywords=["serum", "glow", "vitamin c"]),
        product("p-spf", "SPF 50 Sunscreen Lotion", keywords=["sunscreen", "spf", "beach"]),
        product("p-balm", "Caramel Lip Balm", keywords=["lip", "balm", "caramel"]),
        product("p-shoe", "Trail Running Shoes", keywords=["running", "shoes", "trail"]),
        product("p-kurta", "Cotton Kurta Set", keywords=["kurta", "cotton", "ethnic"]),
        product("p-draft", "Mango Body Butter", status="draft",
                keywords=["mango", "body butter", "moisturiser"]),
    ])


def hashing_engine(catalog: Catalog, version: str = "test-v1") -> Engine:
    # model_validate: EngineConfig's Field defaults confuse mypy without the pydantic plugin.
    return Engine(catalog, HashingEncoder(dim=64),
                  config=EngineConfig.model_validate({"version": version}))


class RunningWorker:
    def __init__(self, worker: Worker, thread: threading.Thread, errors: list[BaseException]):
        self.worker, self.thread, self.errors = worker, thread, errors

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.errors:
            raise self.errors[0]


@contextmanager
def running(settings: Settings, engine: Engine, *, worker_id: str = "w1",
            metrics: Metrics | None = None) -> Iterator[RunningWorker]:
    """A Worker in a thread; stopped (and its exception re-raised) on exit."""
    worker = Worker(settings, engine, metrics or Metrics(), worker_id=worker_id, housekeeping_s=0.5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"worker-{worker_id}", daemon=True)
    thread.start()
    handle = RunningWorker(worker, thread, errors)
    try:
        yield handle
    finally:
        if thread.is_alive() or errors:
            handle.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def pebble_event(pid: str, caption: str, **fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "id": pid, "caption": caption, **fields}


def product_event(record: ProductRecord | None, op: str = "upsert",
                  pid: str | None = None) -> dict[str, Any]:
    return {"schema_version": 1, "op": op, "product_id": pid or (record.id if record else ""),
            "product": json.loads(record.model_dump_json()) if record else None}


def suggestions_of(values: list[bytes | None]) -> list[ProductSuggestions]:
    return [ProductSuggestions.model_validate_json(v or b"") for v in values]


def dead_letters_of(values: list[bytes | None]) -> list[RejectedEvent]:
    return [RejectedEvent.model_validate_json(v or b"") for v in values]


def committed_and_ends(broker: LocalBroker, group: str, topic: str) -> tuple[dict[int, int],
                                                                             dict[int, int]]:
    """The group's committed offset and the true end offset, per non-empty partition.

    The end is read, not asked for: tansu 0.6 answers ListOffsets(latest) with the last
    record batch's base offset + 1, short of the end whenever that batch holds several."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        ends: dict[int, int] = {}
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            messages = consumer.consume(500, 0.1)
            if messages:
                quiet_since = time.monotonic()
            for m in messages:
                if m.error() is None:
                    ends[m.partition() or 0] = (m.offset() or 0) + 1
        return {p: committed[p] for p in ends}, ends
    finally:
        consumer.close()


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def produce_raw(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]],
                timeout: float = 15.0) -> None:
    """Produce (key, value) pairs exactly as given (malformed bytes, tombstones) and wait."""
    from confluent_kafka import KafkaError, Message, Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 1})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for key, value in messages:
        producer.produce(topic, value, key, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(timeout)
    assert not left and not errors, f"produce to {topic}: {left} undelivered, {errors[:3]}"


def produce_events(bootstrap: str, topic: str, events: list[dict[str, Any]],
                   key_field: str = "id") -> None:
    produce_raw(bootstrap, topic, [(str(e[key_field]).encode(), json.dumps(e).encode())
                                   for e in events])
