"""The local tansu broker and the broker test helpers, against the real binary."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from consumer.local_broker import BrokerError, LocalBroker, fast_test_client_config, find_tansu
from tests.broker_fixtures import KEYBLEND_TOPICS, consume_all, produce_json, unique_topics

pytestmark = pytest.mark.broker


def test_find_tansu_returns_an_executable() -> None:
    try:
        path = find_tansu()
    except BrokerError as exc:
        pytest.skip(str(exc))
    assert path.name == "tansu"
    assert os.access(path, os.X_OK)


def test_broker_answers_metadata(broker: LocalBroker) -> None:
    host, port = broker.bootstrap.split(":")
    assert host == "127.0.0.1"
    assert int(port) == broker.port
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
    assert [b.port for b in metadata.brokers.values()] == [broker.port]


def test_create_topics_is_idempotent_and_keeps_config(broker: LocalBroker) -> None:
    name = f"products-{time.monotonic_ns()}"
    broker.create_topics([name], partitions=3, config={"cleanup.policy": "compact"})
    broker.create_topics([name], partitions=3, config={"cleanup.policy": "compact"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert len(admin.list_topics(name, timeout=5).topics[name].partitions) == 3
    (future,) = admin.describe_configs([ConfigResource("topic", name)]).values()
    assert future.result(timeout=5)["cleanup.policy"].value == "compact"


def test_unique_topics_are_fresh_per_call(broker: LocalBroker) -> None:
    first = unique_topics(broker, "test_x[param-1]")
    second = unique_topics(broker, "test_x[param-1]")
    assert set(first) == set(KEYBLEND_TOPICS)
    assert not set(first.values()) & set(second.values())
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5)
    for logical, real in first.items():
        assert len(metadata.topics[real].partitions) == KEYBLEND_TOPICS[logical].partitions


def test_json_round_trip_with_keys_and_headers(broker: LocalBroker, topics: dict[str, str]) -> None:
    topic = topics["pebbles.uploaded"]
    items = [{"pebble_id": f"p{i}", "caption": f"caption {i}"} for i in range(20)]
    sent = produce_json(broker.bootstrap, topic, items, key="pebble_id", headers={"source": "test"})
    assert sent == 20
    records = consume_all(broker.bootstrap, topic, expected=20, timeout=10, settle=0.3)
    assert len(records) == 20  # and nothing extra during the settle time
    received = sorted((json.loads(r.value or b"") for r in records), key=json.dumps)
    assert received == sorted(items, key=json.dumps)
    assert {r.key for r in records} == {f"p{i}".encode() for i in range(20)}
    assert all(r.headers == [("source", b"test")] for r in records)


def test_consume_all_returns_what_it_has_on_timeout(broker: LocalBroker, topics: dict[str, str]) -> None:
    produce_json(broker.bootstrap, topics["pebbles.dlq"], [1, 2], key=lambda item: str(item))
    started = time.monotonic()
    records = consume_all(broker.bootstrap, topics["pebbles.dlq"], expected=5, timeout=1.5)
    assert [r.value for r in records] == [b"1", b"2"]
    assert time.monotonic() - started < 5


def test_group_consumer_is_quick_with_fast_config(broker: LocalBroker, topics: dict[str, str]) -> None:
    # Guards the measured settings: with librdkafka's defaults this takes ~23 s.
    topic = topics["pebbles.uploaded"]
    produce_json(broker.bootstrap, topic, [{"n": 1}])
    consumer = Consumer(
        {
            **fast_test_client_config("consumer"),
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"quick-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    started = time.monotonic()
    try:
        consumer.subscribe([topic])
        message = None
        while message is None and time.monotonic() - started < 15:
            candidate = consumer.poll(0.1)
            if candidate is not None and candidate.error() is None:
                message = candidate
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
    assert message is not None
    assert elapsed < 8, f"first message after {elapsed:.1f} s"


def test_pause_holds_deliveries_until_resume() -> None:
    # A broker of its own: pausing the session's broker would stall other tests.
    with LocalBroker() as own:
        own.create_topics(["outage"])
        delivered: list[KafkaError | None] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            delivered.append(err)

        producer = Producer({**fast_test_client_config("producer"), "bootstrap.servers": own.bootstrap})
        own.pause()
        assert own.paused
        producer.produce("outage", b"during", on_delivery=on_delivery)
        assert producer.flush(1.5) == 1  # nothing answers while paused
        assert delivered == []
        own.resume()
        assert not own.paused
        assert producer.flush(10) == 0
        assert delivered == [None]
        assert [r.value for r in consume_all(own.bootstrap, "outage", 1)] == [b"during"]


def test_stop_is_idempotent_and_removes_the_log() -> None:
    own = LocalBroker().start()
    log_path = own.log_path
    assert log_path is not None and log_path.exists()
    assert "listening on" in own.log_tail()
    own.pause()  # stop() must also end a paused broker
    own.stop()
    own.stop()
    assert not log_path.exists()
    with pytest.raises(BrokerError):
        own.pause()


def _fake_broker(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "tansu"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_startup_timeout_reports_the_log_tail(tmp_path: Path) -> None:
    fake = _fake_broker(tmp_path, "echo hello-from-a-hung-broker; exec sleep 30")
    broker = LocalBroker(binary=fake, startup_timeout=1.0)
    with pytest.raises(BrokerError, match="hello-from-a-hung-broker") as info:
        broker.start()
    assert "did not listen within" in str(info.value)


def test_early_exit_reports_code_and_log(tmp_path: Path) -> None:
    fake = _fake_broker(tmp_path, "echo bad-flag >&2; exit 3")
    with pytest.raises(BrokerError, match=r"code 3(.|\n)*bad-flag"):
        LocalBroker(binary=fake, startup_timeout=5.0).start()
