"""etcd adapter: initial listing, prefix watch, resume after errors, resync after compaction.

Posts `ConfigSnapshot` after every full listing, then `ConfigPut` / `ConfigDeleted`, or
`ConfigChanges` for a watch response with more than one.
The etcd3 library gives no types; `Any` stays inside this module.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import etcd3.exceptions
import etcd3.utils
import grpc
from etcd3 import etcdrpc

from controller import keys
from controller.backoff import Backoff
from controller.etcd_client import (
    ClientFactory,
    EtcdAuthFailed,
    EtcdUnreachable,
    FailoverClient,
    describe_error,
)
from controller.etcd_options import EtcdOptions, parse_endpoints
from controller.events import ConfigChanges, ConfigDeleted, ConfigPut, ConfigSnapshot, Event

log = logging.getLogger(__name__)

KEEPALIVE_S = 10.0
"""HTTP/2 ping interval of the watch connection; etcd refuses pings more often than 5 s."""
PAGE_SIZE = 1000
"""Keys per Range request of a full listing: one response stays far below gRPC's 4 MiB."""
_DELETE = 1  # mvccpb.Event.EventType.DELETE
_REQUIRE_LEADER = ("hasleader", "true")
"""A member cut off from its cluster ends this watch, instead of keeping it silently idle."""

ConnectionState = Callable[[bool, str], None]
"""Told (connected, detail) when the watch starts or stops reaching etcd."""


class WatchBroken(Exception):
    """The watch stream ended; resume from the last seen revision."""

    def __init__(self, reason: str, token_refused: bool = False) -> None:
        super().__init__(reason)
        self.token_refused = token_refused  # e.g. a restarted member forgot every token


class Compacted(Exception):
    """The revision to resume from was compacted; a full listing is needed."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port), with a message naming the bad value."""
    parsed = parse_endpoints(endpoint, "etcd endpoint")
    return parsed[0].host, parsed[0].port


def plain_factory(endpoints: str) -> ClientFactory:
    """A factory for plaintext, unauthenticated `HOST:PORT[,HOST:PORT...]`."""
    return ClientFactory(EtcdOptions(parse_endpoints(endpoints, "etcd endpoints")))


class EtcdWatcher:
    """Watches the config prefix of one agent label and posts events."""

    def __init__(self, etcd: ClientFactory | str, label: str, post: Callable[[Event], None],
                 keepalive_s: float = KEEPALIVE_S, page_size: int = PAGE_SIZE,
                 on_state: ConnectionState | None = None,
                 backoff: Backoff | None = None,
                 parse: Callable[[str, bytes], object] | None = None,
                 on_listing: Callable[[dict[str, bytes], dict[str, int]], None] | None = None,
                 ) -> None:
        self._factory = plain_factory(etcd) if isinstance(etcd, str) else etcd
        self._grpc_options = _keepalive_options(keepalive_s)
        self._on_listing = on_listing
        self._label = label
        self._prefix = keys.config_prefix(label)
        self._post = post
        self._page_size = page_size
        self._on_state = on_state or (lambda connected, detail: None)
        self._parse = parse
        self._backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
        self.revision = 0  # last revision whose changes were posted
        self.listings = 0  # full listings made (start, compaction)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._down_since: float | None = None  # monotonic start of the current outage
        self._failed_attempts = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.cancel()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        need_snapshot = True
        while not self._stop.is_set():
            client = None
            try:
                client = self._factory.connect(self._grpc_options)
                if need_snapshot:
                    self._snapshot(client)
                    need_snapshot = False
                self._watch(client)
            except Compacted as err:
                log.warning("etcd watch of %s: %s; listing all keys again", self._prefix, err)
                need_snapshot = True
                continue
            except (WatchBroken, EtcdUnreachable, EtcdAuthFailed,
                    etcd3.exceptions.Etcd3Exception, grpc.RpcError) as err:
                self._failed(client, err)
            finally:
                if client is not None:
                    client.close()
            self._stop.wait(self._backoff.next_delay())

    def _failed(self, client: FailoverClient | None, err: Exception) -> None:
        """Logs the first failure of an outage; the rest only at debug level."""
        if isinstance(err, grpc.RpcError) and client is not None:
            client.call_failed(err)
        if isinstance(err, WatchBroken) and err.token_refused and client is not None:
            try:
                client.token_refused()
            except (EtcdUnreachable, EtcdAuthFailed) as auth_err:
                log.debug("etcd login after a refused token: %s", auth_err)
        self._failed_attempts += 1
        where = client.member.url if client is not None else self._factory.describe()
        if self._down_since is not None:
            log.debug("etcd still unreachable (attempt %d, %s): %s",
                      self._failed_attempts, where, describe_error(err))
            return
        self._down_since = time.monotonic()
        log.warning("etcd watch of %s lost (%s: %s); retrying with jittered backoff up to "
                    "%.0fs across %s", self._prefix, where, describe_error(err),
                    self._backoff.cap, self._factory.describe())
        self._on_state(False, f"{where}: {describe_error(err)}")

    def _connected(self, client: FailoverClient) -> None:
        client.call_answered()
        self._backoff.succeeded()
        if self._down_since is not None:
            log.warning("etcd reachable again via %s after %.1fs and %d failed attempts; "
                        "watching %s from revision %d", client.member.url,
                        time.monotonic() - self._down_since, self._failed_attempts,
                        self._prefix, self.revision + 1)
        self._down_since = None
        self._failed_attempts = 0
        self._on_state(True, client.member.url)

    def _snapshot(self, client: FailoverClient) -> None:
        """Lists the prefix in pages of `page_size` keys, all at one revision."""
        values: dict[str, bytes] = {}
        revisions: dict[str, int] = {}
        start = self._prefix.encode()
        end = etcd3.utils.prefix_range_end(start)
        revision = 0
        while True:
            try:
                response = client.get_range_response(start, end, limit=self._page_size,
                                                     revision=revision)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.OUT_OF_RANGE:  # compacted between pages
                    raise Compacted(f"listing revision {revision} compacted") from None
                raise
            revision = revision or int(response.header.revision)
            for kv in response.kvs:
                name = keys.name_from_config_key(self._label, kv.key.decode(errors="replace"))
                if name is not None:
                    values[name] = bytes(kv.value)
                    revisions[name] = int(kv.mod_revision)
            if not response.more or not response.kvs:
                break
            start = bytes(response.kvs[-1].key) + b"\0"
        self.revision = revision
        self.listings += 1
        log.info("etcd: %d config keys under %s at revision %d (via %s)",
                 len(values), self._prefix, self.revision, client.member.url)
        if self._on_listing is not None:
            self._on_listing(values, revisions)
        # Parsed here, while the agent's thread waits for its first observe (a restart).
        parsed = ({} if self._parse is None
                  else {name: self._parse(name, raw) for name, raw in values.items()})
        self._post(ConfigSnapshot(values, revisions, parsed))

    def _watch(self, client: FailoverClient) -> None:
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
            metadata=(*(client.metadata or ()), _REQUIRE_LEADER),
        )
        with self._lock:
            self._stream = stream
        if self._stop.is_set():
            stream.cancel()
        try:
            for response in stream:
                if response.created and not response.canceled:
                    self._connected(client)
                self._handle(response)
        except grpc.RpcError as err:
            if not self._stop.is_set():
                client.call_failed(err)
                raise WatchBroken(describe_error(err)) from None
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
            raise WatchBroken(f"watch cancelled by etcd: {response.cancel_reason}",
                              token_refused="auth token" in response.cancel_reason)
        changes = [change for event in response.events
                   if (change := self._change(event)) is not None]
        if len(changes) > 1:
            self._post(ConfigChanges(tuple(changes)))
        elif changes:
            self._post(changes[0])
        for event in response.events:
            self.revision = max(self.revision, int(event.kv.mod_revision))
        if not response.events and not response.created:
            # A progress notification: every change up to this revision has been sent. A
            # quiet prefix in a busy etcd then resumes from a recent revision after a stream
            # error, instead of one compacted long ago (which costs a full listing).
            self.revision = max(self.revision, int(response.header.revision))

    def _change(self, event: Any) -> ConfigPut | ConfigDeleted | None:
        name = keys.name_from_config_key(self._label, event.kv.key.decode(errors="replace"))
        if name is None:
            return None
        if event.type == _DELETE:
            return ConfigDeleted(name)
        raw = bytes(event.kv.value)
        parsed = None if self._parse is None else self._parse(name, raw)
        return ConfigPut(name, raw, int(event.kv.mod_revision), parsed)


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
