"""The worker against a real broker (tansu): what goes in, what comes out, what is committed.

The engine runs on the deterministic hashing encoder for speed, except the one ``slow``
test, which runs ``make run``'s demo with the real base ONNX model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from consumer.codec import original_bytes
from consumer.demo import demo_catalog, demo_pebbles, malformed_events, run_demo
from consumer.local_broker import LocalBroker
from consumer.metrics import Metrics
from consumer.settings import Settings
from consumer.worker import replay_dead_letters
from schemas.events import ProductSuggestions
from tests.broker_fixtures import consume_all
from tests.worker_helpers import (
    committed_and_ends,
    dead_letters_of,
    hashing_engine,
    pebble_event,
    produce_events,
    produce_raw,
    product,
    product_event,
    running,
    sample,
    small_catalog,
    suggestions_of,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[1]


def _answers(broker: LocalBroker, topic: str, expected: int, settle: float = 0.0,
             timeout: float = 30.0) -> list[ProductSuggestions]:
    records = consume_all(broker.bootstrap, topic, expected, timeout=timeout, settle=settle)
    return suggestions_of([r.value for r in records])


def _ids(answer: ProductSuggestions) -> list[str]:
    return [s.product_id for s in answer.suggestions]


def _assert_all_committed(broker: LocalBroker, group: str, topic: str) -> None:
    committed, ends = committed_and_ends(broker, group, topic)
    assert ends and committed == ends


def test_exactly_once_suggestions_dead_letters_and_counts(
        broker: LocalBroker, topics: dict[str, str]) -> None:
    settings = worker_settings(broker, topics)
    pebbles = demo_pebbles()[:20]
    bad = malformed_events()
    metrics = Metrics()
    with running(settings, hashing_engine(demo_catalog()), metrics=metrics) as run:
        good = [(p.id.encode(), p.model_dump_json().encode()) for p in pebbles]
        junk = [(f"bad-{i}".encode(), value) for i, (value, _) in enumerate(bad)]
        mixed = [m for pair in zip(good, junk, strict=False) for m in pair]
        produce_raw(broker.bootstrap, settings.topics.pebbles, mixed + junk[len(good):])
        records = consume_all(broker.bootstrap, settings.topics.suggestions, len(pebbles),
                              timeout=30, settle=1.0)
        letters = dead_letters_of([r.value for r in consume_all(
            broker.bootstrap, settings.topics.dead_letters, len(bad), timeout=20, settle=0.5)])
        total = len(pebbles) + len(bad)
        wait_until(lambda: sample(metrics, "keyblend_pebbles_consumed_total") == total,
                   what="all events counted")
        run.stop()

    # Exactly one answer per pebble, keyed by pebble id, with its idempotency key.
    answers = suggestions_of([r.value for r in records])
    assert sorted(a.pebble_id for a in answers) == sorted(p.id for p in pebbles)
    catalog = demo_catalog()
    for record, answer in zip(records, answers, strict=True):
        headers = {k: v for k, v in record.headers}
        assert record.key == answer.pebble_id.encode()
        assert answer.idempotency_key == f"{answer.pebble_id}:test-v1"
        assert headers["idempotency-key"] == answer.idempotency_key.encode()
        assert headers["model-version"] == b"test-v1" and answer.model_version == "test-v1"
        assert [s.rank for s in answer.suggestions] == list(range(1, len(answer.suggestions) + 1))
        assert 0 < len(answer.suggestions) <= settings.top_k
        for item in answer.suggestions:  # only live, published products
            live = catalog.get(item.product_id)
            assert live is not None and live.is_published

    # Every malformed event is dead-lettered once, under the expected error type.
    assert Counter((original_bytes(d), d.error_type) for d in letters) == Counter(bad)
    by_bytes = {original_bytes(d): d for d in letters}
    for d in letters:
        assert d.source_topic == settings.topics.pebbles and d.worker == "w1"
        assert d.reason and d.key is not None and d.key.startswith("bad-")
    fields = {json.dumps({"caption": "Summer glow serum #summerglowup"}).encode(): "id",
              json.dumps({"schema_version": 2, "id": "m-08",
                          "caption": "Summer glow serum #summerglowup"}).encode(): "schema_version"}
    for raw, field in fields.items():
        assert by_bytes[raw].field == field, by_bytes[raw]
    assert {d.field for d in letters if d.error_type == "invalid"} >= {
        "id", "caption", "hashtags.0", "label.interests", "created_at", "catalog_ids"}

    # The counters reconcile: consumed = published + rejected, per reason.
    assert sample(metrics, "keyblend_suggestions_published_total") == len(pebbles)
    for reason, count in Counter(t for _, t in bad).items():
        assert sample(metrics, "keyblend_events_rejected_total", {"reason": reason}) == count
    _assert_all_committed(broker, settings.group, settings.topics.pebbles)

    # Dead letters can be re-submitted: a dry run counts, a real one re-publishes the bytes.
    versions = sum(t == "unknown_version" for _, t in bad)
    assert replay_dead_letters(settings, None, ["unknown_version"], dry_run=True) == versions
    assert replay_dead_letters(settings, 2, ["invalid"], dry_run=False) == 2
    replayed = consume_all(broker.bootstrap, settings.topics.pebbles, total + 2, timeout=10)
    assert len(replayed) == total + 2


def test_catalog_changes_are_visible_to_the_next_pebble(
        broker: LocalBroker, topics: dict[str, str]) -> None:
    settings = worker_settings(broker, topics)
    t = settings.topics
    caption = "mango body butter for dry skin"
    with running(settings, hashing_engine(small_catalog())) as run:
        produce_events(broker.bootstrap, t.pebbles, [pebble_event("q1", caption)])
        first = _answers(broker, t.suggestions, 1)[0]
        assert "p-draft" not in _ids(first)  # unpublished: never suggested, however close

        # A new product (and a broken product event), then at once a pebble: it sees it.
        new = product("p-new", "Mango Body Butter Deluxe", keywords=["mango", "body butter"])
        produce_raw(broker.bootstrap, t.products, [
            (b"p-new", json.dumps(product_event(new)).encode()),
            (b"p-junk", b'{"op": "upsert", "product_id": '),
        ])
        produce_events(broker.bootstrap, t.pebbles, [pebble_event("q2", caption)])
        second = {a.pebble_id: a for a in _answers(broker, t.suggestions, 2)}["q2"]
        assert _ids(second)[0] == "p-new"
        assert second.catalog_version != first.catalog_version

        # Unpublish it, delete one product by event and one by Kafka tombstone.
        hidden = new.model_copy(update={"status": "unpublished"})
        produce_raw(broker.bootstrap, t.products, [
            (b"p-new", json.dumps(product_event(hidden)).encode()),
            (b"p-serum", json.dumps(product_event(None, "delete", "p-serum")).encode()),
            (b"p-spf", None),
        ])
        produce_events(broker.bootstrap, t.pebbles, [pebble_event(
            "q3", "mango body butter, vitamin c glow serum and spf 50 sunscreen lotion")])
        third = {a.pebble_id: a for a in _answers(broker, t.suggestions, 3)}["q3"]
        assert not {"p-new", "p-serum", "p-spf", "p-draft"} & set(_ids(third))
        assert third.suggestions  # the rest of the catalog still answers
        assert len(run.worker.engine.catalog) == 5  # 6 + p-new - serum - spf (hidden ones stay)
        run.stop()
    letters = dead_letters_of([r.value for r in consume_all(
        broker.bootstrap, t.dead_letters, 1, timeout=10, settle=0.5)])
    assert [(d.source_topic, d.key, d.error_type) for d in letters] == [
        (t.products, "p-junk", "not_json")]


def test_sigterm_commits_and_the_next_worker_gets_only_new_events(
        broker: LocalBroker, topics: dict[str, str], tmp_path: Path) -> None:
    settings = worker_settings(broker, topics)
    config = settings.client_config
    t = settings.topics
    model_dir = tmp_path / "model"
    hashing_engine(small_catalog()).save(model_dir)
    catalog_path = tmp_path / "catalog.jsonl"
    catalog_path.write_text("".join(p.model_dump_json() + "\n" for p in small_catalog()))
    env = {**os.environ, "KEYBLEND_BROKERS": broker.bootstrap, "KEYBLEND_GROUP": settings.group,
           "KEYBLEND_TOPIC_PEBBLES": t.pebbles, "KEYBLEND_TOPIC_SUGGESTIONS": t.suggestions,
           "KEYBLEND_TOPIC_DEAD_LETTERS": t.dead_letters, "KEYBLEND_TOPIC_PRODUCTS": t.products,
           "KEYBLEND_TOPIC_CONTROL": t.control, "KEYBLEND_MODEL_DIR": str(model_dir),
           "KEYBLEND_CATALOG_PATH": str(catalog_path), "KEYBLEND_METRICS_PORT": "0",
           "KEYBLEND_CLIENT_CONFIG": json.dumps(config), "KEYBLEND_WORKER_ID": "proc-a"}
    first = [pebble_event(f"s{i}", f"caption {i} lip balm serum") for i in range(10)]
    produce_events(broker.bootstrap, t.pebbles, first)
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "consumer.cli", "worker"], env=env,
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert len(_answers(broker, t.suggestions, 10, timeout=40)) == 10
        proc.send_signal(signal.SIGHUP)  # reload the configured model, swap between batches
        wait_until(lambda: b"model swapped" in (tmp_path / "worker.log").read_bytes(),
                   what="the SIGHUP reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    _assert_all_committed(broker, settings.group, t.pebbles)

    later = [pebble_event(f"s{i}", f"caption {i} running shoes") for i in range(10, 15)]
    produce_events(broker.bootstrap, t.pebbles, later)
    with running(settings, hashing_engine(small_catalog()), worker_id="w2") as run:
        answers = _answers(broker, t.suggestions, 15, settle=1.5)
        run.stop()
    ids = [a.pebble_id for a in answers]
    assert sorted(ids) == sorted(e["id"] for e in first + later)  # nothing processed twice
    _assert_all_committed(broker, settings.group, t.pebbles)


def test_at_least_once_isolates_a_poison_event(
        broker: LocalBroker, topics: dict[str, str]) -> None:
    settings = worker_settings(broker, topics, delivery="at-least-once", retries=2)
    t = settings.topics
    engine = hashing_engine(small_catalog())
    real = engine.suggest_batch

    def explode_on_poison(posts, k=10):  # type: ignore[no-untyped-def]
        if any("POISON" in p.caption for p in posts):
            raise RuntimeError("encoder exploded")
        return real(posts, k)

    engine.suggest_batch = explode_on_poison  # type: ignore[method-assign]
    events = [pebble_event(f"a{i}", f"caption {i} kurta cotton") for i in range(9)]
    events.insert(4, pebble_event("poison", "POISON pill lip balm"))
    metrics = Metrics()
    with running(settings, engine, metrics=metrics) as run:
        produce_raw(broker.bootstrap, t.pebbles,  # one partition: one batch holds them all
                    [(b"same-key", json.dumps(e).encode()) for e in events])
        answers = _answers(broker, t.suggestions, 9, settle=1.0)
        letters = dead_letters_of([r.value for r in consume_all(
            broker.bootstrap, t.dead_letters, 1, timeout=10, settle=0.5)])
        wait_until(lambda: sample(metrics, "keyblend_pebbles_consumed_total") == 10)
        run.stop()
    assert sorted(a.pebble_id for a in answers) == sorted(f"a{i}" for i in range(9))
    [letter] = letters
    assert letter.error_type == "processing_failed"
    assert letter.attempts == settings.retries + 1 and "encoder exploded" in letter.reason
    assert json.loads(original_bytes(letter))["id"] == "poison"
    assert sample(metrics, "keyblend_retries_total") >= 2 * settings.retries
    assert sample(metrics, "keyblend_events_rejected_total", {"reason": "processing_failed"}) == 1
    _assert_all_committed(broker, settings.group, t.pebbles)


def test_model_swap_from_the_control_topic(
        broker: LocalBroker, topics: dict[str, str], tmp_path: Path) -> None:
    settings = worker_settings(broker, topics)
    t = settings.topics
    hashing_engine(small_catalog(), version="test-v2").save(tmp_path / "v2")
    metrics = Metrics()
    caption = "mango body butter"
    with running(settings, hashing_engine(small_catalog()), metrics=metrics) as run:
        produce_events(broker.bootstrap, t.pebbles, [pebble_event("b1", caption)])
        assert _answers(broker, t.suggestions, 1)[0].model_version == "test-v1"
        # A catalog change before the swap must survive it (the new engine gets the catalog).
        new = product("p-new", "Mango Body Butter Deluxe", keywords=["mango", "body butter"])
        produce_raw(broker.bootstrap, t.products,
                    [(b"p-new", json.dumps(product_event(new)).encode())])
        produce_raw(broker.bootstrap, t.control, [(None, json.dumps(
            {"action": "swap_model", "model_dir": str(tmp_path / "v2")}).encode())])
        wait_until(lambda: run.worker.engine.version == "test-v2", what="the swap")
        produce_events(broker.bootstrap, t.pebbles, [pebble_event("b2", caption)])
        after = {a.pebble_id: a for a in _answers(broker, t.suggestions, 2)}["b2"]
        run.stop()
    assert after.model_version == "test-v2" and after.idempotency_key == "b2:test-v2"
    assert _ids(after)[0] == "p-new"
    assert sample(metrics, "keyblend_model_info", {"version": "test-v2"}) == 1


@pytest.mark.slow
def test_run_demo_with_the_base_model(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(models_root=REPO / "models", group=f"demo-{uuid.uuid4().hex[:6]}")
    assert run_demo(settings, count=3) == 0
    out = capsys.readouterr().out
    assert "3/3 pebbles answered, 1 dead letter(s)" in out
    assert out.count("▶ pebble") == 3 and "dead letter" in out
    assert "all-MiniLM-L6-v2" in out

