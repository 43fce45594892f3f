"""Publishes interface statuses to etcd as JSON; writes only on change, never fatal.

The etcd3 library gives no types; the client is held as `Any` here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any

from controller import keys
from controller.ops import STATISTICS, Live, NsRef, Status

log = logging.getLogger(__name__)

TXN_OPS = 128
"""etcd's default `--max-txn-ops`: the most operations one transaction may hold."""
MAX_TEXT_CHARS = 1024
"""A reason or warning is cut to this many characters: it is for a person to read, and a
huge bad value must not be copied into etcd (a 100 KB `name` made a 100 KB status)."""


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def encode(status: Status, published: bytes | None = None) -> bytes:
    """`{"state": ..., "reason": ..., "warnings": [...], "config_revision": ...}` and, once
    the end exists in the kernel, `kernel_name`, `namespace`, `ifindex`, `oper_state` and
    `statistics`. Fields with nothing to say (no warnings, counters off) are left out.

    `config_revision` is the etcd mod_revision of the config the status reflects: a config
    put again gets its status rewritten once it is applied (or has failed), so a reader
    (`netagent-ctl status --wait`) can tell an old verdict from one on the new config."""
    document: dict[str, object] = {"state": status.state.value,
                                   "reason": bounded(status.reason)}
    if status.config_revision:
        document["config_revision"] = status.config_revision
    if status.warnings:
        document["warnings"] = [bounded(warning) for warning in status.warnings]
    if status.live is not None:
        document.update(_live(status.live))
        if status.live.statistics is None and published is not None:
            document.update(_statistics_of(published))
    return json.dumps(document, sort_keys=True).encode()


def _statistics_of(published: bytes) -> dict[str, object]:
    """The statistics of a published status (kept until new counters are taken)."""
    try:
        found = json.loads(published).get("statistics")
    except (ValueError, AttributeError):
        return {}
    return {"statistics": found} if isinstance(found, dict) else {}


def _live(live: Live) -> dict[str, object]:
    found: dict[str, object] = {"kernel_name": live.kernel_name,
                                "namespace": namespace_json(live.namespace)}
    if live.ifindex:
        found["ifindex"] = live.ifindex
    if live.oper_state:
        found["oper_state"] = live.oper_state
    if live.statistics:
        found["statistics"] = dict(zip(STATISTICS, live.statistics, strict=True))
    return found


def namespace_json(ref: NsRef) -> dict[str, object]:
    """`{}` (the default namespace), `{"name": ...}`, `{"pid": ...}` or `{"path": ...}`."""
    kind, value = ref.identity()
    return {} if kind == "host" else {kind: value}


class StatusPublisher:
    """Keeps the status prefix equal to the last published statuses.

    `connect` makes a fresh etcd3 client; it is called again after any failure because an
    etcd3 0.13 client refuses a failed endpoint for 300 s.
    """

    def __init__(self, connect: Callable[[], Any], label: str) -> None:
        self._connect = connect
        self._client: Any = None
        self._label = label
        self._written: dict[str, bytes] = {}
        # name -> (status, its live facts, its encoding): most statuses are the same at
        # every publish (2,000 of them: 20 ms a publish to encode again). The encoding is
        # the object in `_written` once published: one copy of each value is kept.
        self._encoded: dict[str, tuple[Status, Live | None, bytes]] = {}
        self._dirty = True  # start: list the prefix and remove stale keys
        self._failures = 0  # failed publishes in a row: an outage is logged once
        self._lock = threading.Lock()  # `listed` may run on another thread

    def publish(self, statuses: Mapping[str, Status],
                held: Collection[str] = frozenset()) -> bool:
        """Write changed statuses and delete statuses of interfaces no longer configured;
        leave `held` ones as they are. False if etcd did not take them (call again).

        A failure is tried once more at once: a new client starts at another etcd member
        when the one in use died, so a failover does not leave statuses stale.
        """
        with self._lock:
            return self._publish(statuses, held)

    def listed(self) -> dict[str, bytes]:
        """The status keys as etcd has them (listed once; the first publish uses them)."""
        with self._lock:
            try:
                if self._client is None:
                    self._client = self._connect()
                if self._dirty:
                    self._load_existing()
            except Exception:
                self._dirty = True
                self.close()
                raise
            return dict(self._written)

    def written(self) -> dict[str, bytes]:
        """The status keys as last published."""
        with self._lock:
            return dict(self._written)

    def _publish(self, statuses: Mapping[str, Status], held: Collection[str]) -> bool:
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._connect()
                if self._dirty:
                    self._load_existing()
                wanted = {name: self._encode(name, status) for name, status in statuses.items()}
                self._encoded = {n: e for n, e in self._encoded.items() if n in wanted}
                self._apply(wanted, held)
                self._succeeded()
                return True
            except Exception as err:  # etcd3 raises many types; a failed write is retried
                self._dirty = True
                self.close()
                if attempt == 2:
                    self._failed(err)
        return False

    def _encode(self, name: str, status: Status) -> bytes:
        """`encode`, or what it gave for an equal status (live facts included) where the
        published value does not matter (counters taken) or is that encoding: the counters
        it took from the value published then are its own, so it encodes to itself."""
        published = self._written.get(name)
        uses_published = status.live is not None and status.live.statistics is None
        known = self._encoded.get(name)
        if (known is not None and known[0] == status and known[1] == status.live
                and (not uses_published or known[2] == published)):
            return known[2]
        value = encode(status, published)
        self._encoded[name] = (status, status.live, value)
        return value

    def _failed(self, err: Exception) -> None:
        self._failures += 1
        prefix = keys.status_prefix(self._label)
        if self._failures == 1:
            log.warning("publishing statuses under %s failed: %s; retrying (logged again "
                        "when they are published)", prefix, err)
        else:
            log.debug("publishing statuses under %s failed again (%d): %s",
                      prefix, self._failures, err)

    def _succeeded(self) -> None:
        if self._failures:
            log.warning("statuses under %s published again after %d failed attempts",
                        keys.status_prefix(self._label), self._failures)
        self._failures = 0

    def _load_existing(self) -> None:
        prefix = keys.status_prefix(self._label)
        existing: dict[str, bytes] = {}
        for value, meta in self._client.get_prefix(prefix):
            name = meta.key.decode(errors="replace")[len(prefix):]
            existing[name] = bytes(value)
        self._written = existing
        self._dirty = False

    def _apply(self, wanted: Mapping[str, bytes], held: Collection[str]) -> None:
        """Send the changes in transactions of at most `TXN_OPS` operations each."""
        txn = self._client.transactions
        changes: list[tuple[str, bytes | None]] = [
            (name, None) for name in sorted(set(self._written) - set(wanted) - set(held))
        ]
        for name, encoded in sorted(wanted.items()):
            written = self._written.get(name)
            if written != encoded:
                changes.append((name, encoded))
            elif written is not encoded:  # listed, or encoded again: keep one of the two
                self._written[name] = encoded
        for start in range(0, len(changes), TXN_OPS):
            chunk = changes[start:start + TXN_OPS]
            self._client.transaction(compare=[], failure=[], success=[
                txn.delete(self._key(name)) if value is None else txn.put(self._key(name), value)
                for name, value in chunk
            ])
            for name, value in chunk:
                if value is None:
                    del self._written[name]
                else:
                    self._written[name] = value

    def _key(self, name: str) -> str:
        return keys.status_prefix(self._label) + name

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as err:  # closing a broken channel must not fail the caller
                log.debug("closing etcd client: %s", err)
