"""Pytest fixtures and helpers for tests that talk to a real Kafka-protocol broker.

The broker is tansu (see ``consumer.local_broker``), started once per session.
Register this module as a plugin once, in ``tests/conftest.py``::

    pytest_plugins = ["tests.broker_fixtures"]

and import the plain helpers (``unique_topics``, ``produce_json``,
``consume_all``) where needed. Topics are never shared between tests: each test
gets fresh, uniquely named ones, so no test sees another's messages or offsets.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from consumer.local_broker import BrokerError, LocalBroker, fast_test_client_config, find_tansu


class TopicSpec(NamedTuple):
    partitions: int = 1
    config: Mapping[str, str] = {}


# The worker's topics as tests need them. Fewer partitions than production
# (6 for uploads) would hide ordering/assignment bugs, so keep 6 where it matters.
KEYBLEND_TOPICS: Mapping[str, TopicSpec] = {
    "pebbles.uploaded": TopicSpec(6),
    "pebbles.suggestions": TopicSpec(3),
    "pebbles.dlq": TopicSpec(1),
    "products": TopicSpec(3, {"cleanup.policy": "compact"}),
    "keyblend.control": TopicSpec(1),
}


class Record(NamedTuple):
    """One consumed message, as tests compare it."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """One tansu broker for the whole test session (starts in well under a second)."""
    try:
        find_tansu()
    except BrokerError as exc:
        pytest.skip(f"no local broker: {exc}")
    with LocalBroker() as running:
        yield running


@pytest.fixture
def topics(broker: LocalBroker, request: pytest.FixtureRequest) -> dict[str, str]:
    """Fresh KeyBlend topics for this test: logical name -> real topic name."""
    return unique_topics(broker, request.node.name)


def unique_topics(
    broker: LocalBroker,
    prefix: str,
    specs: Mapping[str, TopicSpec] = KEYBLEND_TOPICS,
) -> dict[str, str]:
    """Create one fresh topic per spec and return logical name -> real name.

    ``prefix`` is usually the test's name; a random suffix keeps reruns and
    parametrised cases apart (topics live as long as the session's broker).
    """
    # Kafka topic names allow only [a-zA-Z0-9._-] and at most 249 characters.
    safe = re.sub(r"[^a-zA-Z0-9._-]+", "-", prefix).strip("-.")[:120] or "t"
    run = uuid.uuid4().hex[:8]
    names = {logical: f"{safe}-{run}.{logical}" for logical in specs}
    for logical, spec in specs.items():
        broker.create_topics([names[logical]], partitions=spec.partitions, config=spec.config)
    return names


def produce_json(
    bootstrap: str,
    topic: str,
    items: Iterable[Any],
    key: str | Callable[[Any], str | bytes | None] | None = None,
    headers: Mapping[str, str | bytes] | None = None,
    timeout: float = 10.0,
) -> int:
    """Produce each item as JSON and wait for delivery; returns how many were sent.

    ``key`` is either the name of a field of each (dict) item or a function of
    the item; its value (str is UTF-8 encoded) becomes the message key.
    """
    producer = Producer(
        {
            **fast_test_client_config("producer"),
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
        }
    )
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    header_list = [(k, v.encode() if isinstance(v, str) else v) for k, v in (headers or {}).items()]
    count = 0
    for item in items:
        raw_key = key(item) if callable(key) else (item[key] if key is not None else None)
        key_bytes = raw_key.encode() if isinstance(raw_key, str) else raw_key
        producer.produce(
            topic,
            value=json.dumps(item).encode(),
            key=key_bytes,
            headers=header_list or None,
            on_delivery=on_delivery,
        )
        producer.poll(0)
        count += 1
    left = producer.flush(timeout)
    if left or errors:
        raise AssertionError(f"produce to {topic}: {left} undelivered, errors: {errors[:3]}")
    return count


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float = 10.0,
    settle: float = 0.0,
) -> list[Record]:
    """Read ``topic`` from the beginning until ``expected`` messages or ``timeout``.

    Uses manual assignment of every partition (no group join, so no rebalance
    wait) and a throwaway group id that is never committed. After reaching
    ``expected`` it keeps reading for ``settle`` seconds, so a test can assert
    that nothing extra (e.g. a duplicate) arrives. Returns what it read, in
    arrival order; the caller asserts on the count.
    """
    consumer = Consumer(
        {
            **fast_test_client_config("consumer"),
            "bootstrap.servers": bootstrap,
            # librdkafka insists on a group id even for assign(); nothing is committed.
            "group.id": f"consume-all-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(records) >= expected:
                settle_until = now + settle
            if now >= deadline or (settle_until is not None and now >= settle_until):
                return records
            msg = consumer.poll(0.05)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                # End-of-partition and similar events are informational here.
                if err.fatal():
                    raise AssertionError(f"consuming {topic}: {err}")
                continue
            records.append(Record(msg.key(), msg.value(), list(msg.headers() or [])))
    finally:
        consumer.close()
