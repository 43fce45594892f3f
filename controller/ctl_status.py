"""`netagent-ctl status [NAME...] [--wait [--timeout S]] [-o table|json|yaml]`.

`--wait` waits until each shown interface is settled: CONFIGURED or ERROR on the config
stored now (its status's `config_revision` is the config key's mod_revision), and a
deleted config's status gone.

Exit status 1 when any shown interface is ERROR, when no live controller serves the label
(its liveness key is gone: the statuses may be stale), when `--wait` gives up, or when the
label has nothing at all (a mistyped label is the usual cause).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller import ctl_output, keys, liveness
from controller.liveness import agent_key

POLL_S = 0.25
SETTLED = ("CONFIGURED", "ERROR")


class StatusError(Exception):
    """Nothing to show; the message says why and what to check."""


@dataclass(frozen=True)
class View:
    """One reading of a label: what is configured, and the status of each name shown."""

    label: str
    configured: frozenset[str]
    documents: tuple[dict[str, Any], ...]
    unsettled: tuple[str, ...]  # "name: why", for --wait
    controller_alive: bool = True

    @property
    def errors(self) -> list[str]:
        return [str(doc["name"]) for doc in self.documents if doc.get("state") == "ERROR"]


def names_under(client: Any, prefix: str) -> dict[str, bytes]:
    """name -> value of the keys directly under `prefix`."""
    return {name: bytes(value) for name, value, _ in _entries_under(client, prefix)}


def revisions_under(client: Any, prefix: str) -> dict[str, int]:
    """name -> mod_revision of the keys directly under `prefix`."""
    return {name: int(meta.mod_revision) for name, _, meta in _entries_under(client, prefix)}


def _entries_under(client: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    found = []
    for value, meta in client.get_prefix(prefix):
        name = meta.key.decode(errors="replace")[len(prefix):]
        if name and "/" not in name:
            found.append((name, value, meta))
    return found


def status_document(name: str, raw: bytes | None, label: str) -> dict[str, Any]:
    if raw is None:
        return {"name": name, "state": "UNKNOWN",
                "reason": f"no status yet; is a controller for label {label} running?"}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        return {"name": name, "state": "UNKNOWN", "reason": f"unreadable status {raw!r}"}
    return {"name": name, **value}


def read_view(client: Any, label: str, names: Sequence[str]) -> View:
    """Statuses of `names` (default: every configured or published name)."""
    alive = client.get(agent_key(label))[0] is not None
    configs = revisions_under(client, keys.config_prefix(label))
    statuses = names_under(client, keys.status_prefix(label))
    if not configs and not statuses:
        raise StatusError(f"label {label} has no interface configs and no statuses; check "
                          "--label (default $MICROSERVICE_LABEL or vpp1)")
    shown = list(names) or sorted(set(configs) | set(statuses))
    unknown = [name for name in shown if name not in configs and name not in statuses]
    if unknown:
        raise StatusError(f"interface {', '.join(unknown)} is not configured for label "
                          f"{label} (netagent-ctl list shows what is)")
    documents = tuple(status_document(name, statuses.get(name), label) for name in shown)
    unsettled = _unsettled(documents, configs)
    if not alive:
        unsettled = (f"no live controller serves {label}", *unsettled)
    return View(label, frozenset(configs), documents, unsettled, alive)


def _unsettled(documents: Sequence[Mapping[str, Any]], configs: Mapping[str, int],
               ) -> tuple[str, ...]:
    """Why each shown interface is not settled: its config deleted but its status not yet,
    a status not CONFIGURED or ERROR, or one that reflects another version of the config
    (`configs`: name -> the config key's mod_revision; the controller publishes the one it
    applied as `config_revision`)."""
    waiting = []
    for doc in documents:
        name = str(doc["name"])
        state = doc.get("state")
        if name not in configs:
            waiting.append(f"{name}: its config is deleted, its status not yet")
        elif state not in SETTLED:
            waiting.append(f"{name}: {state} {doc.get('reason', '')}".rstrip())
        elif doc.get("config_revision") != configs[name]:
            waiting.append(f"{name}: {state} is of config revision "
                           f"{doc.get('config_revision', 'unknown')}; revision "
                           f"{configs[name]} is not applied yet")
    return tuple(waiting)


def wait_for_settled(read: Callable[[], View], timeout: float,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> tuple[View, bool]:
    """Read until nothing is unsettled or `timeout` passes: (last view, settled?)."""
    deadline = clock() + timeout
    while True:
        try:
            view = read()
        except StatusError:
            if clock() >= deadline:
                raise
        else:
            if not view.unsettled:
                return view, True
            if clock() >= deadline:
                return view, False
        sleep(POLL_S)


def run(client: Any, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    """Print the statuses; the exit status. Raises StatusError when there is nothing."""

    def read() -> View:
        return read_view(client, args.label, args.names)

    if args.wait:
        view, settled = wait_for_settled(read, args.timeout)
    else:
        view, settled = read(), True
    code = 0
    if not view.controller_alive:  # said first, so stale statuses are never read as current
        controller = liveness.read(client, args.label)
        if not controller.alive:
            print(f"netagent-ctl: {controller.describe(args.label)}", file=sys.stderr)
            code = 1
    out(ctl_output.render(view.documents, args.output, ctl_output.status_table))
    if not settled:
        print(f"netagent-ctl: not settled after {args.timeout:g} s: "
              f"{'; '.join(view.unsettled)}", file=sys.stderr)
        code = 1
    if view.errors:
        print(f"netagent-ctl: in ERROR: {', '.join(view.errors)}", file=sys.stderr)
        code = 1
    return code
