"""The agent key: `/vnf-agent/<label>/check/status/v1/agent`, kept under an etcd lease.

While the controller runs, the key holds its state (OK or ERROR), start time, version and
connections; it vanishes when the controller stops (lease revoked) or dies (lease expired,
`TTL` seconds after the last renewal). The key and its JSON are ligato's agent status
(`state`, `build_version`, `start_time`, `last_change`) plus `connections`.

`encode`/`interpret` are pure; `LivenessKeeper` is the thread that holds the lease;
`read` is what `netagent-ctl status` asks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller import __version__
from controller.backoff import Backoff
from controller.health import Connection, Health

log = logging.getLogger(__name__)

TTL_S = 10
_KEY = "/vnf-agent/{label}/check/status/v1/agent"


def agent_key(label: str) -> str:
    from controller import keys

    keys.config_prefix(label)  # checks the label
    return _KEY.format(label=label)


def version() -> str:
    return __version__


def encode(connections: Mapping[str, Connection], start_time: float, last_change: float,
           build_version: str, endpoint: str = "", stopping: bool = False) -> bytes:
    ok = all(state.connected is not False for state in connections.values())
    document: dict[str, object] = {
        "state": "STOPPING" if stopping else ("OK" if ok else "ERROR"),
        "build_version": build_version,
        "start_time": int(start_time),
        "last_change": int(last_change),
        "connections": {name: state.connected for name, state in sorted(connections.items())},
    }
    reasons = {name: state.detail for name, state in connections.items()
               if state.connected is False and state.detail}
    if reasons:
        document["errors"] = {name: reason[:300] for name, reason in sorted(reasons.items())}
    if endpoint:
        document["etcd_endpoint"] = endpoint
    return json.dumps(document, sort_keys=True).encode()


@dataclass(frozen=True)
class Liveness:
    """What etcd says about the controller of one label."""

    alive: bool
    value: Mapping[str, Any]  # the current value, or the last one before the key vanished
    gone_revision: int = 0  # revision at which the key vanished (0: alive, or unknown)

    def describe(self, label: str) -> str:
        """One line for an operator."""
        started = _when(self.value.get("start_time"))
        if self.alive:
            state = self.value.get("state", "?")
            down = [name for name, up in dict(self.value.get("connections", {})).items()
                    if up is False]
            extra = f"; not connected: {', '.join(down)}" if down else ""
            return (f"controller for {label}: {state}, version "
                    f"{self.value.get('build_version', '?')}, up since {started}{extra}")
        if not self.value:
            return (f"no live controller serves {label}: no liveness key, and none in etcd's "
                    "history; statuses may be stale")
        if self.value.get("state") == "STOPPING":
            since = f"since {_when(self.value.get('last_change'))} (stopped)"
        else:
            last = _when(self.value.get("last_change"))
            since = (f"since etcd revision {self.gone_revision} (its lease expired: the "
                     f"controller died or lost etcd; its last change of state was {last})")
        return (f"no live controller serves {label} {since}; it had started {started}; "
                "statuses may be stale")


def interpret(current: bytes | None, last: bytes | None = None, gone_revision: int = 0,
              ) -> Liveness:
    """`current`: the key's value now (None: absent); `last`: its last value in history."""
    if current is not None:
        return Liveness(True, _parse(current))
    return Liveness(False, _parse(last) if last is not None else {}, gone_revision)


def _parse(raw: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"state": "UNREADABLE", "raw": raw[:200].decode(errors="replace")}
    return value if isinstance(value, dict) else {"state": "UNREADABLE"}


def _when(epoch: object) -> str:
    if not isinstance(epoch, int | float) or epoch <= 0:
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def read(client: Any, label: str, history_wait_s: float = 1.0) -> Liveness:
    """The agent key of `label`; when absent, its last value from etcd's history."""
    key = agent_key(label)
    value, _meta = client.get(key)
    if value is not None:
        return interpret(bytes(value))
    last, gone = _last_in_history(client, key, history_wait_s)
    return interpret(None, last, gone)


def _last_in_history(client: Any, key: str, wait_s: float) -> tuple[bytes | None, int]:
    """(last value put, revision of its deletion) from a watch of the key's whole history.

    History arrives right after the watch starts; `wait_s` of silence ends it. History is
    a courtesy: any failure (compacted, no permission) gives (None, 0).
    """
    start = 1
    for _attempt in range(2):
        try:
            replies = _watch_replies(client, key, start, wait_s)
        except Exception as err:
            log.debug("reading the history of %s: %s", key, err)
            return None, 0
        last: bytes | None = None
        gone = 0
        for reply in replies:
            if reply.compact_revision:
                start = int(reply.compact_revision)
                break
            for event in reply.events:
                if event.type == 1:  # DELETE
                    gone = int(event.kv.mod_revision)
                else:
                    last, gone = bytes(event.kv.value), 0
        else:
            return last, gone
    return None, 0


def _watch_replies(client: Any, key: str, start: int, wait_s: float) -> list[Any]:
    """Watch replies for `key` from revision `start` until `wait_s` passes without one."""
    import queue

    from etcd3 import etcdrpc

    requests: queue.Queue[Any] = queue.Queue()
    requests.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
        key=key.encode(), start_revision=start)))

    def until_none() -> Any:
        while (request := requests.get()) is not None:
            yield request

    stream = etcdrpc.WatchStub(client.channel).Watch(
        until_none(), credentials=client.call_credentials, metadata=client.metadata)
    replies: queue.Queue[Any] = queue.Queue()

    def pump() -> None:
        try:
            for reply in stream:
                replies.put(reply)
        except Exception as err:  # cancelled below, or the stream failed
            replies.put(err)

    threading.Thread(target=pump, name="liveness-history", daemon=True).start()
    got: list[Any] = []
    try:
        while True:
            try:
                item = replies.get(timeout=wait_s)
            except queue.Empty:
                return got
            if isinstance(item, Exception):
                raise item
            if item.canceled and not item.compact_revision:
                raise RuntimeError(f"watch refused: {item.cancel_reason}")
            got.append(item)
            if item.compact_revision:
                return got
    finally:
        requests.put(None)
        stream.cancel()


class LivenessKeeper:
    """Keeps the agent key under a lease, renewed every TTL/3, rewritten on each change."""

    def __init__(self, factory: Any, label: str, health: Health, ttl: int = TTL_S,
                 build_version: str | None = None) -> None:
        self._factory = factory
        self._key = agent_key(label)
        self._health = health
        self._ttl = ttl
        self._version = build_version or version()
        self._start_time = time.time()
        self._last_change = self._start_time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)
        self._lock = threading.Lock()
        self._client: Any = None
        self._lease: Any = None
        self._keepalive: KeepAliveStream | None = None
        self._backoff = Backoff(cap=5.0)
        self.leases_granted = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Revokes the lease, so the key vanishes now rather than TTL seconds later."""
        self._stop.set()
        self._health.changed.set()
        self._thread.join(timeout=10)
        with self._lock:
            client, lease = self._client, self._lease
        if client is None or lease is None:
            return
        try:
            client.put(self._key, self._value(stopping=True), lease=lease.id)
            client.revoke_lease(lease.id)
        except Exception as err:  # the lease expires anyway
            log.warning("could not remove %s at stop (%s); it expires in %ds",
                        self._key, err, self._ttl)
        finally:
            if self._keepalive is not None:
                self._keepalive.close()
            client.close()

    def _value(self, stopping: bool = False) -> bytes:
        endpoint = self._client.member.url if self._client is not None else ""
        if stopping:
            self._last_change = time.time()
        return encode(self._health.snapshot(), self._start_time, self._last_change,
                      self._version, endpoint, stopping=stopping)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._hold()
                return
            except Exception as err:  # etcd3 raises many types; retried with backoff
                self._drop_client(err)
                delay = self._backoff.next_delay()
                log.debug("liveness key %s: %s; retrying in %.1fs", self._key, err, delay)
                self._stop.wait(delay)

    def _hold(self) -> None:
        """Grant a lease, put the key, renew until stop; raises on any etcd failure."""
        with self._lock:
            self._client = self._factory.connect()
        if self._lease is None or not self._renew():  # a reconnect keeps a live lease
            self._lease = self._client.lease(self._ttl)
            self.leases_granted += 1
        self._settle(first=True)
        written = self._put()
        self._backoff.succeeded()
        renewed = time.monotonic()
        while not self._stop.is_set():
            self._health.changed.wait(max(0.0, renewed + self._ttl / 3 - time.monotonic()))
            if self._stop.is_set():
                return
            if self._health.changed.is_set():
                self._settle()
                if self._value() != written:
                    self._last_change = time.time()
                    written = self._put()
            if time.monotonic() - renewed < self._ttl / 3:
                continue
            if not self._renew():
                log.warning("liveness lease of %s expired (etcd unreachable for over %ds); "
                            "granting a new one", self._key, self._ttl)
                with self._lock:
                    self._lease = self._client.lease(self._ttl)
                self.leases_granted += 1
                written = self._put()
            renewed = time.monotonic()

    def _settle(self, first: bool = False, quiet_s: float = 0.3, most_s: float = 1.5) -> None:
        """Waits for a burst of connection changes to end (at most `most_s`), so a start
        (etcd, then the helper, connecting) costs one put, not one per change. `first`:
        also wait for the first change."""
        deadline = time.monotonic() + most_s
        if first:
            self._health.changed.wait(most_s)
        while not self._stop.is_set():
            self._health.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0 or not self._health.changed.wait(min(quiet_s, left)):
                return

    def _put(self) -> bytes:
        value = self._value()
        self._client.put(self._key, value, lease=self._lease.id)
        return value

    def _renew(self) -> bool:
        """False when the lease is gone (expired while etcd was unreachable)."""
        if self._keepalive is None:
            self._keepalive = KeepAliveStream(self._client, timeout_s=self._ttl / 3)
        return self._keepalive.renew(self._lease.id) > 0

    def _drop_client(self, err: Exception | None = None) -> None:
        import grpc

        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.close()
        with self._lock:
            client, self._client = self._client, None
        if client is None:
            return
        if isinstance(err, grpc.RpcError):
            client.call_failed(err)  # the next client starts at another member
        client.close()


class KeepAliveStream:
    """One LeaseKeepAlive stream per client: a renewal is one message on it (etcd3's
    `refresh_lease` opens a stream for each)."""

    def __init__(self, client: Any, timeout_s: float) -> None:
        import queue

        from etcd3 import etcdrpc

        self._requests: queue.Queue[Any] = queue.Queue()
        self._replies: queue.Queue[Any] = queue.Queue()
        self._timeout_s = timeout_s
        self._request = etcdrpc.LeaseKeepAliveRequest

        def requests() -> Any:
            while (request := self._requests.get()) is not None:
                yield request

        self._stream = etcdrpc.LeaseStub(client.channel).LeaseKeepAlive(
            requests(), credentials=client.call_credentials, metadata=client.metadata)
        threading.Thread(target=self._read, name="lease-keepalive", daemon=True).start()

    def _read(self) -> None:
        try:
            for reply in self._stream:
                self._replies.put(reply)
        except Exception as err:  # the stream failed or was cancelled: the renewal raises it
            self._replies.put(err)
        else:
            self._replies.put(EOFError("etcd closed the lease keep-alive stream"))

    def renew(self, lease_id: int) -> int:
        """The lease's TTL after this renewal; 0 when it is gone."""
        import queue

        self._requests.put(self._request(ID=lease_id))
        try:
            reply = self._replies.get(timeout=self._timeout_s)
        except queue.Empty:
            raise TimeoutError(f"no lease keep-alive reply in {self._timeout_s:.1f}s") from None
        if isinstance(reply, Exception):
            raise reply
        return int(reply.TTL)

    def close(self) -> None:
        self._requests.put(None)
        self._stream.cancel()
