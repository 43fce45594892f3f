"""What the controller is connected to (etcd, the helper, Docker), told by thin wrappers.

The agent loop stays unaware of it: the helper client, the Docker watcher's `post` and the
etcd watcher report through wrappers made here. The liveness key, `/readyz` and the
metrics read `Health.snapshot()`. Thread-safe; no etcd, gRPC or HTTP code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from controller.events import Event, MicroservicesChanged
from netagent_api import helper_pb2

CONNECTIONS = ("etcd", "helper", "docker")


@dataclass(frozen=True)
class Connection:
    connected: bool | None  # None: not used (Docker off)
    detail: str = ""


class Health:
    """Connection states; `changed` is set at each change (the liveness keeper waits on it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, Connection] = {name: Connection(False, "not yet connected")
                                               for name in CONNECTIONS}
        self.changed = threading.Event()
        self._listeners: list[Callable[[str, Connection], None]] = []

    def listen(self, listener: Callable[[str, Connection], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def set(self, name: str, connected: bool | None, detail: str = "") -> None:
        state = Connection(connected, detail)
        with self._lock:
            if self._states[name].connected == connected:
                self._states[name] = state
                return
            self._states[name] = state
            listeners = list(self._listeners)
        self.changed.set()
        for listener in listeners:
            listener(name, state)

    def snapshot(self) -> Mapping[str, Connection]:
        with self._lock:
            return dict(self._states)

    def ok(self) -> bool:
        """Every connection in use is up."""
        return all(state.connected is not False for state in self.snapshot().values())


class Helper(Protocol):
    def hello(self) -> bytes: ...
    def submit(self, batch: helper_pb2.SignedBatch) -> helper_pb2.BatchReply: ...


class MonitoredHelper:
    """A helper client that reports whether the helper answers; `on_batch` sees each reply."""

    def __init__(self, helper: Helper, health: Health,
                 on_batch: Callable[[helper_pb2.SignedBatch, helper_pb2.BatchReply | None],
                                    None] | None = None) -> None:
        self._helper = helper
        self._health = health
        self._on_batch = on_batch

    def hello(self) -> bytes:
        try:
            instance = self._helper.hello()
        except Exception as err:
            self._health.set("helper", False, str(err))
            raise
        self._health.set("helper", True, instance.hex()[:12])
        return instance

    def submit(self, batch: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        try:
            reply = self._helper.submit(batch)
        except Exception as err:
            self._health.set("helper", False, str(err))
            if self._on_batch is not None:
                self._on_batch(batch, None)
            raise
        self._health.set("helper", True)
        if self._on_batch is not None:
            self._on_batch(batch, reply)
        return reply


def docker_reporting(post: Callable[[Event], None], health: Health) -> Callable[[Event], None]:
    """The Docker watcher's `post`, reporting its connection state on the way."""

    def reporting(event: Event) -> None:
        if isinstance(event, MicroservicesChanged):
            health.set("docker", event.connected, event.reason)
        post(event)

    return reporting
