"""Optional `/healthz`, `/readyz` and Prometheus `/metrics` on a loopback address.

Off unless `--metrics-address HOST:PORT` is given. Like `controller.health`, the numbers
come from thin wrappers (the helper client, the status sink, the etcd watcher's `post`);
the agent loop knows nothing of them.

- `netagent_batches_total{result}`: batches sent to the helper: applied, refused (by
  error kind) or unavailable (no answer);
- `netagent_operations_total{kind}`: operations of applied batches, by kind;
- `netagent_interfaces{state}`: interfaces by published state;
- `netagent_etcd_to_kernel_seconds`: from an etcd change's arrival to the first published
  status of that interface that is settled (CONFIGURED or ERROR, or gone after a delete),
  which comes after the batch that applied it;
- `netagent_connected{peer}`: 1 when etcd, the helper or Docker is connected, 0 when not
  (Docker absent when it is not watched).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controller.events import ConfigChanges, ConfigDeleted, ConfigPut, ConfigSnapshot, Event
from controller.health import CONNECTIONS, Connection, Health
from controller.ops import State, Status
from netagent_api import helper_pb2

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SETTLED = (State.CONFIGURED, State.ERROR)


def parse_address(value: str) -> tuple[str, int]:
    """`HOST:PORT` on a loopback address (the endpoints say what the host runs)."""
    host, colon, port = value.rpartition(":")
    host = host.strip("[]")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics-address: {value!r} must be HOST:PORT, e.g. 127.0.0.1:9435")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--metrics-address: {host!r} is not a loopback address; serve on "
                         "127.0.0.1 or ::1 and let a local proxy or agent scrape it")
    return host, int(port)


class Metrics:
    """The controller's Prometheus metrics, in a registry of their own."""

    def __init__(self, health: Health, clock: Callable[[], float] = time.monotonic) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._changed_at: dict[str, float] = {}  # config name -> when its change arrived
        self.batches = Counter("netagent_batches", "Batches sent to the helper, by result",
                               ["result"], registry=self.registry)
        self.operations = Counter("netagent_operations", "Operations of applied batches",
                                  ["kind"], registry=self.registry)
        self.interfaces = Gauge("netagent_interfaces", "Interfaces by published state",
                                ["state"], registry=self.registry)
        self.latency = Histogram("netagent_etcd_to_kernel_seconds",
                                 "From an etcd change to its interface's settled status",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.connected = Gauge("netagent_connected", "1 when connected, 0 when not",
                               ["peer"], registry=self.registry)
        for state in State:
            self.interfaces.labels(state.value)
        for name, connection in health.snapshot().items():
            self._connection(name, connection)
        health.listen(self._connection)

    def _connection(self, name: str, connection: Connection) -> None:
        if connection.connected is None:
            with contextlib.suppress(KeyError):  # was never connected
                self.connected.remove(name)
        else:
            self.connected.labels(name).set(1 if connection.connected else 0)

    def batch(self, signed: helper_pb2.SignedBatch, reply: helper_pb2.BatchReply | None) -> None:
        if reply is None:
            self.batches.labels("unavailable").inc()
            return
        if not reply.ok:
            self.batches.labels(f"refused_{helper_pb2.ErrorKind.Name(reply.error_kind)}").inc()
            return
        self.batches.labels("applied").inc()
        batch = helper_pb2.Batch.FromString(signed.batch)
        for operation in batch.operations:
            self.operations.labels(operation.WhichOneof("op") or "unknown").inc()

    def event(self, event: Event) -> None:
        now = self._clock()
        with self._lock:
            if isinstance(event, ConfigPut | ConfigDeleted):
                self._changed_at.setdefault(event.name, now)
            elif isinstance(event, ConfigChanges):
                for change in event.changes:
                    self._changed_at.setdefault(change.name, now)
            elif isinstance(event, ConfigSnapshot):
                for name in event.values:
                    self._changed_at.setdefault(name, now)

    def statuses(self, statuses: Mapping[str, Status]) -> None:
        counts = dict.fromkeys(State, 0)
        for status in statuses.values():
            counts[State(status.state)] += 1
        for state, count in counts.items():
            self.interfaces.labels(state.value).set(count)
        now = self._clock()
        with self._lock:
            for name, since in list(self._changed_at.items()):
                published = statuses.get(name)
                if published is None or published.state in _SETTLED:
                    self.latency.observe(now - since)
                    del self._changed_at[name]

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class StatusSink:
    """The agent's status sink, counting what it publishes."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def publish(self, statuses: Mapping[str, Status],
                held: Collection[str] = frozenset()) -> bool | None:
        self._metrics.statuses(statuses)
        published: bool | None = self._inner.publish(statuses, held)
        return published

    def written(self) -> dict[str, bytes]:
        found: dict[str, bytes] = self._inner.written()
        return found


def timing(post: Callable[[Event], None], metrics: Metrics) -> Callable[[Event], None]:
    """The etcd watcher's `post`, noting when each change arrived."""

    def timed(event: Event) -> None:
        metrics.event(event)
        post(event)

    return timed


class Endpoints:
    """`/healthz` (the process answers), `/readyz` (every connection in use is up) and
    `/metrics`, served by a daemon thread."""

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Health) -> None:
        server = _Server6 if ":" in address[0] else _Server
        self._server = server(address, _handler(metrics, health))
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler(metrics: Metrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                self._reply(200, metrics.exposition(),
                            "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                self._reply(200, b"ok\n")
            elif path == "/readyz":
                down = {name: state.detail for name, state in health.snapshot().items()
                        if state.connected is False and name in CONNECTIONS}
                body = "".join(f"{name} not connected: {why}\n" for name, why in down.items())
                self._reply(503 if down else 200, (body or "ready\n").encode())
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _reply(self, code: int, body: bytes, kind: str = "text/plain; charset=utf-8",
                   ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics endpoint: " + format, *args)

    return Handler
