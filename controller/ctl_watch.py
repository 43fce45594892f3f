"""`netagent-ctl watch`: config, status and controller-liveness changes of one label, as
they happen (like `etcdctl watch --prefix` or `ip monitor`), until interrupted.

Text lines: `config veth1 put {...}`, `status veth1 CONFIGURED [reason]`, `<kind> NAME
deleted`, `controller put {...}`. `-o json`: one object per line with kind, name, event,
revision and value. After a lost connection the watch resumes from the next revision.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from controller import keys
from controller.etcd_client import describe_error

RECONNECT_S = 1.0
_DELETE = 1  # mvccpb.Event.DELETE


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


class _Resume(Exception):
    """The stream ended; resume at `revision` (0: now) after saying `why` on stderr."""

    def __init__(self, why: str, revision: int = 0) -> None:
        super().__init__(why)
        self.revision = revision


def _until_none(requests: queue.Queue[Any]) -> Iterator[Any]:
    while (request := requests.get()) is not None:
        yield request


def _changes(client: Any, label: str, start: int | None) -> Iterator[Change]:
    """The Watch RPC itself: etcd3 0.13's watch thread dies on a stream error (a NameError
    on `six`), so its iterator would hang for good when etcd goes away."""
    import etcd3.utils
    from etcd3 import etcdrpc

    prefix = f"/vnf-agent/{label}/".encode()
    requests: queue.Queue[Any] = queue.Queue()
    requests.put(etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
        key=prefix, range_end=etcd3.utils.prefix_range_end(prefix), start_revision=start or 0)))
    stream = etcdrpc.WatchStub(client.channel).Watch(
        _until_none(requests), credentials=client.call_credentials, metadata=client.metadata)
    try:
        for response in stream:
            if response.compact_revision:
                raise _Resume(f"revisions before {response.compact_revision} are compacted",
                              int(response.compact_revision))
            if response.canceled:
                raise _Resume(f"etcd cancelled the watch: {response.cancel_reason}")
            for event in response.events:
                found = classify(label, event.kv.key.decode(errors="replace"))
                if found is not None:
                    deleted = event.type == _DELETE
                    yield Change(found[0], found[1], "delete" if deleted else "put",
                                 int(event.kv.mod_revision),
                                 b"" if deleted else bytes(event.kv.value))
    finally:
        requests.put(None)
        stream.cancel()
    raise _Resume("etcd closed the watch")


def run(client: Any, label: str, output: str, out: Callable[[str], None],
        start_revision: int | None = None) -> int:
    keys.config_prefix(label)
    render = json_line if output == "json" else text_line
    next_revision = start_revision
    reported = False  # the current outage has been reported
    while True:
        try:
            for change in _changes(client, label, next_revision):
                out(render(change) + "\n")
                next_revision = change.revision + 1
                reported = False
        except BrokenPipeError:
            return 0
        except _Resume as why:
            next_revision = why.revision or next_revision
            print(f"netagent-ctl: {why}; resuming", file=sys.stderr)
        except Exception as err:  # grpc and etcd3 errors while etcd is away
            if isinstance(err, grpc.RpcError):
                client.call_failed(err)
            if not reported:
                print(f"netagent-ctl: watch interrupted ({describe_error(err)}); resuming at "
                      f"revision {next_revision or 'now'} when etcd answers", file=sys.stderr)
                reported = True
            time.sleep(RECONNECT_S)
