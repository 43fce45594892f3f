"""`netagent-ctl watch`: config, status and controller-liveness changes of one label, as
they happen (like `etcdctl watch --prefix` or `ip monitor`), until interrupted.

Text lines: `config veth1 put {...}`, `status veth1 CONFIGURED [reason]`, `<kind> NAME
deleted`, `controller put {...}`. `-o json`: one object per line with kind, name, event,
revision and value. After a lost connection the watch resumes from the next revision.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from controller import keys

RECONNECT_S = 1.0


@dataclass(frozen=True)
class Change:
    kind: str  # "config", "status" or "controller"
    name: str
    event: str  # "put" or "delete"
    revision: int
    raw: bytes

    def value(self) -> Any:
        if self.event == "delete":
            return None
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw.decode(errors="replace")


def classify(label: str, key: str) -> tuple[str, str] | None:
    """(kind, name) of a key under the label's prefix, or None for keys netagent-ctl does
    not show."""
    for kind, prefix in (("config", keys.config_prefix(label)),
                         ("status", keys.status_prefix(label))):
        if key.startswith(prefix) and "/" not in key[len(prefix):]:
            return kind, key[len(prefix):]
    if key == f"/vnf-agent/{label}/check/status/v1/agent":
        return "controller", label
    return None


def text_line(change: Change) -> str:
    if change.event == "delete":
        return f"{change.kind} {change.name} deleted"
    value = change.value()
    if change.kind == "status" and isinstance(value, dict):
        reason = str(value.get("reason", ""))
        extra = f" oper={value['oper_state']}" if "oper_state" in value else ""
        return f"status {change.name} {value.get('state', '?')}{extra} {reason}".rstrip()
    shown = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return f"{change.kind} {change.name} put {shown}"


def json_line(change: Change) -> str:
    return json.dumps({"kind": change.kind, "name": change.name, "event": change.event,
                       "revision": change.revision, "value": change.value()}, sort_keys=True)


def _changes(client: Any, label: str, start: int | None) -> Iterator[Change]:
    import etcd3.events

    prefix = f"/vnf-agent/{label}/"
    kwargs = {"start_revision": start} if start else {}
    events, cancel = client.watch_prefix(prefix, **kwargs)
    try:
        for event in events:
            key = event.key.decode(errors="replace")
            found = classify(label, key)
            if found is None:
                continue
            deleted = isinstance(event, etcd3.events.DeleteEvent)
            yield Change(found[0], found[1], "delete" if deleted else "put",
                         int(event.mod_revision), b"" if deleted else bytes(event.value))
    finally:
        cancel()


def run(client: Any, label: str, output: str, out: Callable[[str], None],
        start_revision: int | None = None) -> int:
    keys.config_prefix(label)
    render = json_line if output == "json" else text_line
    next_revision = start_revision
    while True:
        try:
            for change in _changes(client, label, next_revision):
                out(render(change) + "\n")
                next_revision = change.revision + 1
        except BrokenPipeError:
            return 0
        except Exception as err:  # etcd3 raises untyped errors when the member goes away
            print(f"netagent-ctl: watch interrupted ({type(err).__name__}: {err}); "
                  "resuming", file=sys.stderr)
            time.sleep(RECONNECT_S)
