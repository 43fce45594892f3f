"""Publishes interface statuses to etcd as JSON; writes only on change, never fatal.

The etcd3 library gives no types; the client is held as `Any` here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from controller import keys
from controller.ops import Status

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


def encode(status: Status) -> bytes:
    """`{"state": ..., "reason": ..., "warnings": [...]}`; `warnings` omitted when empty."""
    document: dict[str, object] = {"state": status.state.value,
                                   "reason": bounded(status.reason)}
    if status.warnings:
        document["warnings"] = [bounded(warning) for warning in status.warnings]
    return json.dumps(document, sort_keys=True).encode()


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
        self._dirty = True  # start: list the prefix and remove stale keys

    def publish(self, statuses: Mapping[str, Status]) -> None:
        """Write changed statuses and delete statuses of interfaces no longer configured.

        A failure is tried once more at once: a new client starts at another etcd member
        when the one in use died, so a failover does not leave statuses stale.
        """
        wanted = {name: encode(status) for name, status in statuses.items()}
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._connect()
                if self._dirty:
                    self._load_existing()
                self._apply(wanted)
                return
            except Exception as err:  # etcd3 raises many types; a failed write is retried
                self._dirty = True
                self.close()
                if attempt == 2:
                    log.warning("publishing statuses under %s failed: %s; will retry on next "
                                "change", keys.status_prefix(self._label), err)

    def _load_existing(self) -> None:
        prefix = keys.status_prefix(self._label)
        existing: dict[str, bytes] = {}
        for value, meta in self._client.get_prefix(prefix):
            name = meta.key.decode(errors="replace")[len(prefix):]
            existing[name] = bytes(value)
        self._written = existing
        self._dirty = False

    def _apply(self, wanted: Mapping[str, bytes]) -> None:
        """Send the changes in transactions of at most `TXN_OPS` operations each."""
        txn = self._client.transactions
        changes: list[tuple[str, bytes | None]] = [
            (name, None) for name in sorted(set(self._written) - set(wanted))
        ]
        changes += [(name, value) for name, value in sorted(wanted.items())
                    if self._written.get(name) != value]
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
