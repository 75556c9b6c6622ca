"""A harness for fault tests: real worker processes against tansu, a steady producer, and a
verifier that reads the output topics from the beginning and counts what came out.

The pieces, each usable on its own:

- ``FaultEnv``: a private tansu broker, fresh KeyBlend topics, a consumer group, a work
  folder and model folders (hashing encoder: a worker process starts in ~2 s).
- ``Supervisor``: ``keyblend worker`` processes (``python -m consumer.cli worker``, settings
  from ``KEYBLEND_*`` env vars, one ONNX/OMP thread each, the fast test client config),
  restarted after an unrequested exit (a ``kill -9``) with the same worker id, so the new
  process's transactional.id fences what the dead one left open.
- ``SteadyProducer``: a thread producing a ``Workload`` (good pebbles, optionally with
  ``consumer.demo.malformed_events`` mixed in) at a steady rate, keyed by pebble id.
- ``Verifier``: a thread reading the suggestions and dead-letter topics from the beginning;
  ``counts()`` gives the count table (events in, suggestions out raw, unique keys, raw
  duplicates, gaps, dead letters) and ``assert_delivered`` the property every fault test
  asserts. Duplicates are counted, never hidden: tansu shows aborted transactions to
  read_committed consumers, so a killed worker's open transaction is visible output.
- ``record``: prints the table to the terminal and merges it into
  ``bench-results/soak.json`` and ``bench-results/soak.md``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from consumer.codec import original_bytes
from consumer.demo import demo_catalog, demo_pebbles, malformed_events
from consumer.encoder import HashingEncoder
from consumer.local_broker import LocalBroker, fast_test_client_config
from consumer.matcher import Engine, EngineConfig
from consumer.settings import Topics
from schemas.events import ProductSuggestions, RejectedEvent
from tests.broker_fixtures import unique_topics
from tests.worker_helpers import committed_and_ends

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench-results"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def save_model(path: Path, version: str) -> Path:
    """A model folder on the deterministic hashing encoder over the demo catalog."""
    config = EngineConfig.model_validate({"version": version})
    Engine(demo_catalog(), HashingEncoder(dim=64), config=config).save(path)
    return path


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# -- the workload ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """What the producer sends, in order, and what each message should become."""

    messages: list[tuple[bytes, bytes]]  # (key, value)
    good: set[str]  # pebble ids: each must get a suggestion
    bad: dict[str, tuple[bytes, str]]  # key -> (value, error_type): each must be dead-lettered

    @property
    def total(self) -> int:
        return len(self.messages)


def make_workload(count: int, bad_fraction: float = 0.0, tag: str = "") -> Workload:
    """``count`` events: demo pebbles under fresh unique ids, every ``1/bad_fraction``-th one
    replaced by a malformed event (cycling through ``malformed_events()``)."""
    pebbles, junk = demo_pebbles(), malformed_events()
    every = round(1 / bad_fraction) if bad_fraction > 0 else 0
    run = tag or uuid.uuid4().hex[:6]
    messages: list[tuple[bytes, bytes]] = []
    good: set[str] = set()
    bad: dict[str, tuple[bytes, str]] = {}
    for i in range(count):
        if every and i % every == every - 1:
            key = f"bad-{run}-{i:05d}"
            bad[key] = junk[len(bad) % len(junk)]
            messages.append((key.encode(), bad[key][0]))
        else:
            base = pebbles[i % len(pebbles)]
            pid = f"{base.id}-{run}-{i:05d}"
            good.add(pid)
            messages.append((pid.encode(), base.model_copy(update={"id": pid})
                             .model_dump_json().encode()))
    return Workload(messages, good, bad)


class SteadyProducer(threading.Thread):
    """Produces a workload at ``rate`` events/s (idempotent, acks=all), then waits for every
    acknowledgement. librdkafka's default message timeout (300 s) rides out a paused broker."""

    def __init__(self, bootstrap: str, topic: str, workload: Workload, rate: float) -> None:
        super().__init__(name="steady-producer", daemon=True)
        self.topic, self.workload, self.rate = topic, workload, rate
        self._producer = Producer({**fast_test_client_config("producer"),
                                   "bootstrap.servers": bootstrap, "enable.idempotence": True,
                                   "acks": "all"})
        self.sent_at: dict[bytes, float] = {}  # key -> monotonic time of produce()
        self.acked = 0
        self.errors: list[str] = []
        self.started_at = 0.0
        self.finished_at = 0.0
        self._exc: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is None:
                self.acked += 1
            else:
                self.errors.append(str(err))

    def run(self) -> None:
        try:
            self.started_at = time.monotonic()
            for i, (key, value) in enumerate(self.workload.messages):
                delay = self.started_at + i / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                while True:
                    try:
                        self._producer.produce(self.topic, value, key,
                                               on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        self._producer.poll(0.1)
                self.sent_at[key] = time.monotonic()
                self._producer.poll(0)
            while len(self._producer) > 0 and time.monotonic() - self.started_at < 600:
                self._producer.flush(0.5)
            self.finished_at = time.monotonic()
        except BaseException as exc:
            self._exc = exc

    def wait_sent(self, fraction: float, timeout: float = 300.0) -> None:
        """Block until ``fraction`` of the workload has been handed to the producer."""
        target = int(fraction * self.workload.total)
        wait_for(lambda: self.sent >= target or not self.is_alive(), timeout,
                 f"{target} events produced")

    def finish(self, timeout: float = 300.0) -> None:
        """Wait until everything is produced and acknowledged; fail on any delivery error."""
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self._exc is not None:
            raise self._exc
        assert not self.errors, f"producer delivery errors: {self.errors[:3]}"
        assert self.acked == self.workload.total, f"{self.acked}/{self.workload.total} acked"


# -- worker processes -----------------------------------------------------------------------
class WorkerProcess:
    """One ``keyblend worker`` process; restartable, with its own metrics port and log."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "KEYBLEND_WORKER_ID": name, "KEYBLEND_METRICS_PORT": str(self.port)}
        self.workdir = workdir
        self.log_path = workdir / f"worker-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"==== start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumer.cli", "worker"], env=self.env, cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.name} did not stop within {timeout:.0f} s; "
                                 f"log tail:\n{self.log_tail()}") from None

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """GET on the worker's metrics port; None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())
        except (OSError, TimeoutError, http.client.HTTPException):  # e.g. killed mid-answer
            return None

    def ready(self) -> bool | None:
        """/readyz: True (200), False (503), None (no answer: starting, dead or stuck)."""
        answer = self.get("/readyz")
        return None if answer is None else answer[0] == 200

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        answer = self.get("/metrics")
        if answer is None or answer[0] != 200:
            return None
        for family in text_string_to_metric_families(answer[1].decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in (labels or {}).items()):
                    return float(sample.value)
        return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Supervisor:
    """Keeps named worker processes running: an exit nobody asked for (``kill9``, a crash)
    is followed by a restart with the same worker id after ``restart_delay_s``."""

    def __init__(self, env: dict[str, str], workdir: Path, restart_delay_s: float = 0.5) -> None:
        self.env, self.workdir, self.restart_delay_s = env, workdir, restart_delay_s
        self.workers: dict[str, WorkerProcess] = {}
        self._retired: set[str] = set()  # removed on purpose: not restarted
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self.kills = 0
        self.kills_mid_batch = 0
        self.restarts = 0
        self.crashes: list[tuple[str, int]] = []  # exits nobody asked for, other than kill -9
        self._killed: set[str] = set()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def add(self, name: str) -> WorkerProcess:
        with self._lock:
            worker = WorkerProcess(name, self.env, self.workdir)
            self.workers[name] = worker
            worker.start()
            return worker

    def wait_busy(self, name: str, within_s: float) -> bool:
        """Wait up to ``within_s`` for a moment when the worker's main thread is on a CPU
        (state R in /proc): in the middle of a batch (decoding, encoding, matching), not
        waiting in poll or on the broker. True if caught so."""
        worker = self.workers[name]
        if worker.proc is None:
            return False
        stat = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/stat")
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:  # "pid (comm) S ...": the state follows the last ')'
                if stat.read_text().rpartition(")")[2].split()[0] == "R":
                    return True
            except (OSError, IndexError):
                return False
            time.sleep(0.001)
        return False

    def kill9(self, name: str, mid_batch_within_s: float = 0.0) -> bool:
        """SIGKILL; the supervisor restarts it. With ``mid_batch_within_s``, first wait up to
        that long for the worker to be in the middle of a batch (``wait_busy``)."""
        worker = self.workers[name]
        busy = mid_batch_within_s > 0 and self.wait_busy(name, mid_batch_within_s)
        with self._lock:
            self._killed.add(name)
            worker.signal(signal.SIGKILL)
            self.kills += 1
            self.kills_mid_batch += busy
        return busy

    def remove(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM and wait (not restarted); returns the exit code."""
        with self._lock:
            self._retired.add(name)
            worker = self.workers[name]
        worker.signal(signal.SIGTERM)
        rc = worker.wait(timeout)
        worker.exits.append(rc)
        return rc

    def active(self) -> list[WorkerProcess]:
        return [w for n, w in self.workers.items() if n not in self._retired]

    def _watch(self) -> None:
        while not self._halt.wait(0.1):
            with self._lock:
                for name, worker in self.workers.items():
                    if name in self._retired or worker.proc is None or worker.alive:
                        continue
                    rc = worker.proc.returncode
                    worker.exits.append(rc)
                    if not (name in self._killed and rc == -signal.SIGKILL):
                        self.crashes.append((name, rc))
                    self._killed.discard(name)
                    time.sleep(self.restart_delay_s)
                    worker.start()
                    self.restarts += 1

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every active worker answers /readyz with 200."""
        wait_for(lambda: all(w.ready() for w in self.active()), timeout,
                 "every worker ready", every=0.25)

    def stop_all(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every active worker; their exit codes (0 = finished, committed, left)."""
        self._halt.set()
        self._thread.join(5)
        with self._lock:
            active = [w for n, w in self.workers.items() if n not in self._retired]
            self._retired.update(w.name for w in active)
        for worker in active:
            worker.signal(signal.SIGTERM)
        codes = {}
        for worker in active:
            codes[worker.name] = worker.wait(timeout) if worker.proc is not None else 0
            worker.exits.append(codes[worker.name])
        return codes

    def kill_all(self) -> None:
        self._halt.set()
        self._thread.join(5)  # no restart may race the kills
        for worker in self.workers.values():
            if worker.alive:
                assert worker.proc is not None
                worker.proc.kill()
                worker.proc.wait()

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {w.name} ---\n{w.log_tail(lines)}" for w in self.workers.values())

    def log_count(self, needle: str) -> int:
        return sum(w.log_text().count(needle) for w in self.workers.values())


class HealthWatch(threading.Thread):
    """Polls every worker's /readyz every ``every`` s: (monotonic time, worker, ready)."""

    def __init__(self, supervisor: Supervisor, every: float = 0.5) -> None:
        super().__init__(name="health-watch", daemon=True)
        self.supervisor, self.every = supervisor, every
        self.samples: list[tuple[float, str, bool | None]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every):
            for worker in self.supervisor.active():
                self.samples.append((time.monotonic(), worker.name, worker.ready()))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def between(self, start: float, end: float) -> dict[str, list[bool | None]]:
        seen: dict[str, list[bool | None]] = defaultdict(list)
        for t, name, ready in self.samples:
            if start <= t <= end:
                seen[name].append(ready)
        return dict(seen)


# -- the verifier ---------------------------------------------------------------------------
@dataclass
class Answer:
    key: bytes | None
    pebble_id: str
    idempotency_key: str
    header_key: str | None
    header_version: str | None
    model_version: str
    at: float  # monotonic arrival time at the verifier


@dataclass
class Letter:
    key: str | None
    source: tuple[str, int, int]  # topic, partition, offset
    error_type: str
    reason: str
    value: bytes


@dataclass
class Counts:
    """The count table of one run."""

    scenario: str
    events_in: int = 0
    good_in: int = 0
    bad_in: int = 0
    suggestions_raw: int = 0
    unique_keys: int = 0  # distinct idempotency keys
    raw_duplicates: int = 0  # suggestions_raw - unique_keys
    gaps: int = 0  # good pebbles with no suggestion
    conflicts: int = 0  # pebbles answered under more than one idempotency key
    strays: int = 0  # answers for no input pebble, unparseable, or key/header mismatches
    dead_letters_raw: int = 0
    dead_letters_unique: int = 0  # by source partition/offset
    dead_letter_duplicates: int = 0
    dead_letter_mismatches: int = 0  # missing, unexpected, or wrong bytes/type/reason
    dead_letter_types: dict[str, int] = field(default_factory=dict)  # unique, by error type
    versions: dict[str, int] = field(default_factory=dict)  # unique keys per model version
    offsets_behind: int = 0  # input offsets not committed by the group at the end
    seconds: float = 0.0
    faults: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = (
    ("scenario", "scenario"), ("events_in", "events in"), ("good_in", "good"),
    ("bad_in", "malformed"), ("suggestions_raw", "suggestions out (raw)"),
    ("unique_keys", "unique keys"), ("raw_duplicates", "raw duplicates"), ("gaps", "gaps"),
    ("conflicts", "conflicts"), ("dead_letters_raw", "dead letters (raw)"),
    ("dead_letters_unique", "dead letters (unique)"),
    ("dead_letter_mismatches", "DLQ mismatches"), ("offsets_behind", "offsets behind"),
    ("versions", "versions"), ("faults", "faults"), ("seconds", "seconds"),
)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(key, "")) for key, _ in COLUMNS) + " |"
              for row in rows]
    return "\n".join(lines)


class Verifier(threading.Thread):
    """Reads the suggestions and dead-letter topics from the beginning (no group: assigned
    partitions, a throwaway group id never committed) for as long as it runs."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        super().__init__(name="verifier", daemon=True)
        self.topics = topics
        self._consumer = Consumer({
            **fast_test_client_config("consumer"), "bootstrap.servers": bootstrap,
            "group.id": f"verifier-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        self.answers: list[Answer] = []
        self.letters: list[Letter] = []
        self.unparsed = 0
        self.answered: set[str] = set()
        self.lettered: set[str] = set()
        self._halt = threading.Event()
        self._ready = threading.Event()

    def run(self) -> None:
        names = [self.topics.suggestions, self.topics.dead_letters]
        metadata = self._consumer.list_topics(timeout=10)
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in names
                               for p in sorted(metadata.topics[t].partitions)])
        self._ready.set()
        try:
            while not self._halt.is_set():
                for message in self._consumer.consume(500, 0.1):
                    if message.error() is None:
                        self._take(message)
        finally:
            self._consumer.close()

    def _take(self, message: Message) -> None:
        value = message.value() or b""
        try:
            if message.topic() == self.topics.suggestions:
                answer = ProductSuggestions.model_validate_json(value)
                headers = {k: v for k, v in message.headers() or []}
                header, version = headers.get("idempotency-key"), headers.get("model-version")
                self.answers.append(Answer(
                    message.key(), answer.pebble_id, answer.idempotency_key,
                    header.decode() if isinstance(header, bytes) else None,
                    version.decode() if isinstance(version, bytes) else None,
                    answer.model_version, time.monotonic()))
                self.answered.add(answer.pebble_id)
            else:
                letter = RejectedEvent.model_validate_json(value)
                self.letters.append(Letter(letter.key, (letter.source_topic, letter.partition,
                                                        letter.offset),
                                           letter.error_type, letter.reason,
                                           original_bytes(letter)))
                if letter.key is not None:
                    self.lettered.add(letter.key)
        except ValidationError:
            self.unparsed += 1

    def wait_complete(self, workload: Workload, timeout: float, settle: float = 2.0) -> None:
        """Until every good pebble is answered and every bad event dead-lettered (or
        ``timeout``), then ``settle`` s more so late duplicates are counted too."""
        self._ready.wait(15)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if workload.good <= self.answered and set(workload.bad) <= self.lettered:
                break
            time.sleep(0.2)
        time.sleep(settle)

    def stop(self) -> None:
        self._halt.set()
        self.join(15)

    def counts(self, scenario: str, workload: Workload, events_in: int) -> Counts:
        c = Counts(scenario, events_in=events_in, good_in=len(workload.good),
                   bad_in=len(workload.bad))
        c.suggestions_raw = len(self.answers)
        keys_of: dict[str, set[str]] = defaultdict(set)
        versions: dict[str, str] = {}
        strays = self.unparsed
        for a in self.answers:
            keys_of[a.pebble_id].add(a.idempotency_key)
            versions[a.idempotency_key] = a.model_version
            if (a.pebble_id not in workload.good or a.key != a.pebble_id.encode()
                    or a.header_key != a.idempotency_key or a.header_version != a.model_version
                    or a.idempotency_key != ProductSuggestions.key_for(a.pebble_id,
                                                                       a.model_version)):
                strays += 1
        c.unique_keys = len(versions)
        c.raw_duplicates = c.suggestions_raw - c.unique_keys
        c.gaps = len(workload.good - keys_of.keys())
        c.conflicts = sum(len(keys) > 1 for keys in keys_of.values())
        c.strays = strays
        c.versions = dict(sorted(Counter(versions.values()).items()))
        c.dead_letters_raw = len(self.letters)
        unique: dict[tuple[str, int, int], Letter] = {}
        for letter in self.letters:
            unique.setdefault(letter.source, letter)
        c.dead_letters_unique = len(unique)
        c.dead_letter_duplicates = c.dead_letters_raw - c.dead_letters_unique
        c.dead_letter_types = dict(sorted(Counter(x.error_type for x in unique.values()).items()))
        mismatches = 0
        by_key: dict[str | None, list[Letter]] = defaultdict(list)
        for letter in unique.values():
            by_key[letter.key].append(letter)
        for key, (value, error_type) in workload.bad.items():
            found = by_key.pop(key, [])
            if len(found) != 1 or found[0].value != value or found[0].error_type != error_type \
                    or not found[0].reason:
                mismatches += 1
        mismatches += sum(len(letters) for letters in by_key.values())  # for no bad event
        c.dead_letter_mismatches = mismatches
        return c


def assert_delivered(c: Counts) -> None:
    """The property every fault test asserts (duplicates are reported, not failed)."""
    problems = []
    if c.gaps:
        problems.append(f"{c.gaps} pebble(s) got no suggestion")
    if c.unique_keys != c.good_in or c.conflicts:
        problems.append(f"{c.unique_keys} idempotency keys for {c.good_in} pebbles "
                        f"({c.conflicts} pebbles under several keys)")
    if c.strays:
        problems.append(f"{c.strays} stray or malformed suggestion(s)")
    if c.dead_letters_unique != c.bad_in or c.dead_letter_mismatches:
        problems.append(f"{c.dead_letters_unique} unique dead letters for {c.bad_in} malformed "
                        f"events, {c.dead_letter_mismatches} mismatched")
    if c.events_in != c.good_in + c.bad_in:
        problems.append(f"{c.events_in} events acknowledged, {c.good_in + c.bad_in} sent")
    if c.offsets_behind:
        problems.append(f"{c.offsets_behind} input offsets left uncommitted")
    assert not problems, f"{c.scenario}: " + "; ".join(problems)


def record(c: Counts, capsys: Any | None = None) -> None:
    """Print the table (to the terminal, past pytest's capture) and merge it into
    ``bench-results/soak.json`` / ``soak.md``, one row per scenario (the latest run)."""
    table = markdown_table([c.row()])
    if capsys is not None:
        with capsys.disabled():
            print(f"\n{table}\n")
    else:
        print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / "soak.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    runs: dict[str, Any] = data.get("runs", {})
    runs[c.scenario] = {**c.row(), "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    data = {"description": "KeyBlend fault tests on tansu (tests/test_faults.py); "
                           "duplicates are raw output events sharing an idempotency key",
            "runs": runs}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    rows = [runs[name] for name in sorted(runs)]
    (RESULTS_DIR / "soak.md").write_text(
        "# KeyBlend fault tests (tansu)\n\n"
        "Written by `make soak` (tests/test_faults.py). One row per scenario, latest run. "
        "raw duplicates = suggestion events whose idempotency key was already seen "
        "(allowed: tansu shows aborted transactions); gaps = pebbles with no suggestion; "
        "offsets behind = input offsets the group had not committed after a clean stop.\n\n"
        + markdown_table(rows) + "\n")


# -- the environment ------------------------------------------------------------------------
class FaultEnv:
    """A private broker (pausing it affects no other test), fresh topics, a group, a work
    folder and the v1 model folder; builds supervisors, producers and verifiers on them."""

    def __init__(self, broker: LocalBroker, workdir: Path, name: str) -> None:
        self.broker = broker
        self.workdir = workdir
        names = unique_topics(broker, name)
        self.topics = Topics(pebbles=names["pebbles.uploaded"],
                             suggestions=names["pebbles.suggestions"],
                             dead_letters=names["pebbles.dlq"], products=names["products"],
                             control=names["keyblend.control"])
        self.group = f"faults-{uuid.uuid4().hex[:8]}"
        self.model_v1 = save_model(workdir / "model-v1", "v1")
        self.started = time.monotonic()
        self._supervisors: list[Supervisor] = []
        self._verifiers: list[Verifier] = []

    def env(self, model_dir: Path | None = None, client: dict[str, object] | None = None,
            **extra: str) -> dict[str, str]:
        """The worker's environment: KEYBLEND_* settings, ``client`` merged over the fast
        test client config, ``extra`` env vars last."""
        t = self.topics
        client = {**fast_test_client_config(), **(client or {})}
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "KEYBLEND_THREADS": "1",
            "KEYBLEND_BROKERS": self.broker.bootstrap, "KEYBLEND_GROUP": self.group,
            "KEYBLEND_TOPIC_PEBBLES": t.pebbles, "KEYBLEND_TOPIC_SUGGESTIONS": t.suggestions,
            "KEYBLEND_TOPIC_DEAD_LETTERS": t.dead_letters, "KEYBLEND_TOPIC_PRODUCTS": t.products,
            "KEYBLEND_TOPIC_CONTROL": t.control,
            "KEYBLEND_MODEL_DIR": str(model_dir or self.model_v1),
            "KEYBLEND_CACHE_DIR": str(self.workdir / "cache"),
            "KEYBLEND_CLIENT_CONFIG": json.dumps(client),
            **extra,
        }

    def supervisor(self, names: Sequence[str], model_dir: Path | None = None,
                   client: dict[str, object] | None = None, **extra: str) -> Supervisor:
        supervisor = Supervisor(self.env(model_dir, client, **extra), self.workdir)
        self._supervisors.append(supervisor)
        for name in names:
            supervisor.add(name)
        return supervisor

    def producer(self, workload: Workload, rate: float) -> SteadyProducer:
        return SteadyProducer(self.broker.bootstrap, self.topics.pebbles, workload, rate)

    def verifier(self) -> Verifier:
        verifier = Verifier(self.broker.bootstrap, self.topics)
        verifier.start()
        self._verifiers.append(verifier)
        return verifier

    def offsets_behind(self) -> int:
        committed, ends = committed_and_ends(self.broker, self.group, self.topics.pebbles)
        return sum(end - max(0, committed.get(p, 0)) for p, end in ends.items())

    def finish(self, scenario: str, workload: Workload, producer: SteadyProducer,
               verifier: Verifier, supervisor: Supervisor, *, drain_s: float = 60.0,
               capsys: Any | None = None, **faults: Any) -> Counts:
        """Wait for the producer and the output, stop the workers (SIGTERM: each must exit
        0), count, record, and assert the delivery property. ``faults`` go into the table;
        a callable one is called after the workers stopped (e.g. a count from their logs)."""
        producer.finish()
        verifier.wait_complete(workload, drain_s)
        codes = supervisor.stop_all()
        verifier.stop()
        counts = verifier.counts(scenario, workload, producer.acked)
        counts.offsets_behind = self.offsets_behind()
        counts.seconds = time.monotonic() - self.started
        counts.faults = {"kills": supervisor.kills, "mid-batch": supervisor.kills_mid_batch,
                         "restarts": supervisor.restarts, "crashes": len(supervisor.crashes),
                         **{k: v() if callable(v) else v for k, v in faults.items()}}
        record(counts, capsys)
        assert all(rc == 0 for rc in codes.values()), (
            f"workers did not stop cleanly: {codes}\n{supervisor.logs()}")
        assert not supervisor.crashes, (
            f"unexpected worker exits {supervisor.crashes}\n{supervisor.logs()}")
        try:
            assert_delivered(counts)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{supervisor.logs()}") from None
        return counts

    def close(self) -> None:
        for supervisor in self._supervisors:
            supervisor.kill_all()
        for verifier in self._verifiers:
            if verifier.is_alive():
                verifier.stop()


@contextmanager
def fault_env(workdir: Path, name: str) -> Iterator[FaultEnv]:
    """A ``FaultEnv`` on its own tansu broker; every worker process is killed on exit."""
    with LocalBroker() as broker:
        env = FaultEnv(broker, workdir, name)
        try:
            yield env
        finally:
            env.close()
            if broker.paused:
                broker.resume()
