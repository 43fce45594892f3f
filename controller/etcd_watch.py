"""etcd adapter: initial listing, prefix watch, resume after errors, resync after compaction.

Posts `ConfigSnapshot` after every full listing, then `ConfigPut` / `ConfigDeleted`.
The etcd3 library gives no types; `Any` stays inside this module.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import etcd3
import etcd3.exceptions
import etcd3.utils
import grpc
from etcd3 import etcdrpc

from controller import keys
from controller.events import ConfigDeleted, ConfigPut, ConfigSnapshot, Event

log = logging.getLogger(__name__)

_BACKOFF_START = 0.2
_BACKOFF_MAX = 5.0
KEEPALIVE_S = 10.0
"""HTTP/2 ping interval of the watch connection; etcd refuses pings more often than 5 s."""
_DELETE = 1  # mvccpb.Event.EventType.DELETE


class WatchBroken(Exception):
    """The watch stream ended; resume from the last seen revision."""


class Compacted(Exception):
    """The revision to resume from was compacted; a full listing is needed."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port), with a message naming the bad value."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint {endpoint!r} must be HOST:PORT, e.g. 127.0.0.1:2379")
    return host, int(port)


class EtcdWatcher:
    """Watches the config prefix of one agent label and posts events."""

    def __init__(self, endpoint: str, label: str, post: Callable[[Event], None],
                 keepalive_s: float = KEEPALIVE_S) -> None:
        self._host, self._port = parse_endpoint(endpoint)
        self._grpc_options = _keepalive_options(keepalive_s)
        self._label = label
        self._prefix = keys.config_prefix(label)
        self._post = post
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
        self.revision = 0  # last revision whose changes were posted
        self._lock = threading.Lock()
        self._stream: Any = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.cancel()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        delay = _BACKOFF_START
        need_snapshot = True
        while not self._stop.is_set():
            client = etcd3.client(host=self._host, port=self._port, timeout=10,
                                  grpc_options=self._grpc_options)
            try:
                if need_snapshot:
                    self._snapshot(client)
                    need_snapshot = False
                delay = _BACKOFF_START
                self._watch(client)
            except Compacted as err:
                log.warning("etcd watch of %s: %s; listing all keys again", self._prefix, err)
                need_snapshot = True
                continue
            except (WatchBroken, etcd3.exceptions.Etcd3Exception, grpc.RpcError) as err:
                log.warning("etcd at %s:%d: %s; retrying in %.1fs",
                            self._host, self._port, _describe(err), delay)
            finally:
                client.close()
            self._stop.wait(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def _snapshot(self, client: Any) -> None:
        response = client.get_prefix_response(self._prefix)
        values: dict[str, bytes] = {}
        for kv in response.kvs:
            name = keys.name_from_config_key(self._label, kv.key.decode(errors="replace"))
            if name is not None:
                values[name] = bytes(kv.value)
        self.revision = int(response.header.revision)
        log.info("etcd: %d config keys under %s at revision %d",
                 len(values), self._prefix, self.revision)
        self._post(ConfigSnapshot(values))

    def _watch(self, client: Any) -> None:
        """Stream changes from `revision + 1` until an error or `stop()`.

        Uses the Watch RPC directly: the etcd3 0.13 watch thread swallows stream errors
        (it fails with a NameError on `six`), so a dead stream would go unnoticed.
        """
        requests: queue.Queue[Any] = queue.Queue()
        requests.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=self._prefix.encode(),
            range_end=etcd3.utils.prefix_range_end(self._prefix.encode()),
            start_revision=self.revision + 1,
            progress_notify=True,
        )))
        stream = etcdrpc.WatchStub(client.channel).Watch(
            _until_none(requests), credentials=client.call_credentials,
            metadata=client.metadata,
        )
        with self._lock:
            self._stream = stream
        if self._stop.is_set():
            stream.cancel()
        try:
            for response in stream:
                self._handle(response)
        except grpc.RpcError as err:
            if not self._stop.is_set():
                raise WatchBroken(_describe(err)) from None
        finally:
            requests.put(None)
            with self._lock:
                self._stream = None
        if not self._stop.is_set():
            raise WatchBroken("watch stream closed by etcd")

    def _handle(self, response: Any) -> None:
        if response.compact_revision:
            raise Compacted(f"revision {self.revision + 1} compacted "
                            f"(compacted up to {response.compact_revision})")
        if response.canceled:
            raise WatchBroken(f"watch cancelled by etcd: {response.cancel_reason}")
        for event in response.events:
            self._post_event(event)
            self.revision = max(self.revision, int(event.kv.mod_revision))
        if not response.events and not response.created:
            # A progress notification: every change up to this revision has been sent. A
            # quiet prefix in a busy etcd then resumes from a recent revision after a stream
            # error, instead of one compacted long ago (which costs a full listing).
            self.revision = max(self.revision, int(response.header.revision))

    def _post_event(self, event: Any) -> None:
        name = keys.name_from_config_key(self._label, event.kv.key.decode(errors="replace"))
        if name is None:
            return
        if event.type == _DELETE:
            self._post(ConfigDeleted(name))
        else:
            self._post(ConfigPut(name, bytes(event.kv.value)))


def _keepalive_options(interval_s: float) -> list[tuple[str, int]]:
    """A watch that waits for changes sends no data of its own. Without pings a connection
    that died silently (no FIN, no RST) would keep it waiting forever: with them, gRPC
    fails the stream after `interval_s` plus half of it without an answer."""
    return [
        ("grpc.keepalive_time_ms", int(interval_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(interval_s * 500)),
        ("grpc.http2.ping_timeout_ms", int(interval_s * 500)),  # without it: > 40 s here
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def _until_none(requests: queue.Queue[Any]) -> Iterator[Any]:
    while (request := requests.get()) is not None:
        yield request


def _describe(err: object) -> str:
    if isinstance(err, grpc.Call):
        return f"{err.code()}: {err.details()}"
    return str(err) or type(err).__name__
