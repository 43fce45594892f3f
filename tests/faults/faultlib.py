"""What every fault test asserts after recovery, and the faults that need a tool.

`Desired` is the config a test has put into etcd, kept beside etcd so the kernel can be
checked against it exactly (`problems()`): every configured pair exists in its namespace
with the configured MAC, MTU, addresses and state, stamped with this agent's owner; no
other link carries this agent's stamp (leaked); no veth in the sandbox lacks a netagent
stamp (unowned); every status key is CONFIGURED with no reason and no warnings, and no
status is left without its config.

`RestartableEtcd` stops and starts etcd on the same ports and data; `tests.harness.tcp_proxy`
puts a proxy between the controller and etcd that can cut and refuse connections.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.harness import EtcdKV, EtcdServer, HelperSandbox, LinkView, links, records, wait_until
from tests.harness.etcd import _clients

OWNER_PREFIX = "netagent:"
Views = Mapping[str, Callable[[], Mapping[str, LinkView]]]
"""Namespace key -> its links now. "" is the sandbox's own namespace, "name:X" a named one."""


def veth_end(name: str, peer: str, index: int, *, netns: str | None, mtu: int = 1500,
             enabled: bool = True, addresses: tuple[str, ...] | None = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A seed-shaped VETH end with a MAC and address derived from `index` (unique per end)."""
    config: dict[str, Any] = {
        "name": name, "type": 0, "enabled": enabled, "mtu": mtu,
        "phys_address": f"02:fa:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:"
                        f"{index & 255:02x}:01",
        "ip_addresses": list(addresses if addresses is not None
                             else (f"10.{64 + (index >> 16 & 63)}.{index >> 8 & 255}."
                                   f"{index & 255 or 1}/8",)),
        "veth": {"peer_if_name": peer},
    }
    if netns is not None:
        config["namespace"] = {"type": 2, "name": netns}
    config.update(extra or {})
    return config


def kernel_name(config: Mapping[str, Any]) -> str:
    return str(config.get("host_if_name") or config["name"])


def named_key(config: Mapping[str, Any]) -> str:
    """The `Views` key of the namespace a config with a named or default namespace wants."""
    namespace = config.get("namespace") or {}
    if namespace.get("type") == 2:
        return f"name:{namespace['name']}"
    if not namespace:
        return ""
    raise ValueError(f"{config['name']}: give Desired a `locate` for namespace {namespace}")


def _verdict(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A status without the kernel's live facts (ifindex, oper_state, statistics, ...)."""
    if status is None:
        return None
    return {k: v for k, v in status.items() if k in ("state", "reason", "warnings")}


def _addresses(config: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(ipaddress.ip_interface(a)) for a in config.get("ip_addresses", []))


@dataclass
class Desired:
    """The configs a test put, mirrored into etcd through `kv`."""

    helper: HelperSandbox
    kv: EtcdKV
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locate: Callable[[Mapping[str, Any]], str] = named_key
    extra_views: dict[str, Callable[[], Mapping[str, LinkView]]] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.kv.label

    def put(self, name: str, config: dict[str, Any]) -> None:
        self.configs[name] = config
        self.kv.put(name, config)

    def delete(self, name: str) -> None:
        self.configs.pop(name, None)
        self.kv.delete(name)

    def put_pair(self, a: str, b: str, index: int, *, netns_a: str | None,
                 netns_b: str | None, **options: Any) -> None:
        self.put(a, veth_end(a, b, 2 * index, netns=netns_a, **options))
        self.put(b, veth_end(b, a, 2 * index + 1, netns=netns_b, **options))

    # -- what the kernel must look like ------------------------------------------------

    def views(self) -> Views:
        found: dict[str, Callable[[], Mapping[str, LinkView]]] = {
            "": lambda: links(self.helper)}
        for netns in self.helper.netns_list():
            found[f"name:{netns}"] = lambda netns=netns: links(self.helper, netns)  # type: ignore[misc]
        found.update(self.extra_views)
        return found

    def expected(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(namespace key, kernel name) -> config, for every end of a complete pair."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for name, config in self.configs.items():
            peer = self.configs.get(config["veth"]["peer_if_name"])
            if peer is not None and peer["veth"]["peer_if_name"] == name:
                wanted[(self.locate(config), kernel_name(config))] = config
        return wanted

    def kernel_problems(self) -> list[str]:
        wanted = self.expected()
        seen: dict[tuple[str, str], LinkView] = {}
        problems: list[str] = []
        for key, view in self.views().items():
            try:
                current = view()
            except Exception as err:  # a namespace vanishing while listed: try again
                problems.append(f"listing {key or 'the sandbox namespace'}: {err}")
                continue
            for link in current.values():
                if link.kind == "veth" and not link.alias.startswith(OWNER_PREFIX):
                    problems.append(f"unowned veth {link.name} in {key or 'sandbox'} "
                                    f"(alias {link.alias!r})")
                if link.alias.startswith(f"{OWNER_PREFIX}{self.owner}:"):
                    seen[(key, link.name)] = link
        for where, config in sorted(wanted.items()):
            problems += self._link_problems(where, config, seen.get(where))
        problems += [f"leaked owned link {name} in {key or 'sandbox'}"
                     for key, name in sorted(set(seen) - set(wanted))]
        return problems

    def _link_problems(self, where: tuple[str, str], config: Mapping[str, Any],
                       link: LinkView | None) -> list[str]:
        place = f"{where[1]} in {where[0] or 'sandbox'}"
        if link is None:
            return [f"missing {place}"]
        peer = kernel_name(self.configs[config["veth"]["peer_if_name"]])
        checks = {
            "alias": (link.alias, f"{OWNER_PREFIX}{self.owner}:{peer}"),
            "kind": (link.kind, "veth"),
            "mac": (link.mac, str(config.get("phys_address", link.mac)).lower()),
            "mtu": (link.mtu, config.get("mtu") or link.mtu),
            "up": (link.up, bool(config.get("enabled"))),
            "addresses": (link.addresses, _addresses(config)),
        }
        return [f"{place}: {what} is {have!r}, want {want!r}"
                for what, (have, want) in checks.items() if have != want]

    def status_problems(self) -> list[str]:
        statuses = self.kv.statuses()
        problems = [f"status of {name} is {statuses.get(name)}, want CONFIGURED"
                    for name in sorted(self.configs)
                    if _verdict(statuses.get(name)) != {"state": "CONFIGURED", "reason": ""}]
        problems += [f"status {name} left without a config"
                     for name in sorted(set(statuses) - set(self.configs))]
        return problems

    def problems(self) -> list[str]:
        return self.kernel_problems() + self.status_problems()

    def wait_converged(self, timeout: float = 60.0) -> float:
        """Wait until `problems()` is empty; return the seconds it took."""
        start = time.monotonic()
        wait_until(lambda: not self.problems(), timeout=timeout, interval=0.1,
                   what="the kernel and the statuses to equal the config",
                   describe=self.problems)
        return time.monotonic() - start

    def ifindexes(self) -> dict[tuple[str, str], int]:
        """Kernel identity of every owned link: a re-created link gets a new ifindex."""
        found: dict[tuple[str, str], int] = {}
        for key, view in self.views().items():
            for link in view().values():
                if link.alias.startswith(f"{OWNER_PREFIX}{self.owner}:"):
                    found[(key, link.name)] = link.ifindex
        return found


# -- the audit log -----------------------------------------------------------------------


def audit_mark(helper: HelperSandbox) -> int:
    """The number of audit records now; pass it to the readers below."""
    return len(records(helper.audit_log))


def intents_since(helper: HelperSandbox, mark: int) -> list[dict[str, Any]]:
    return [r for r in records(helper.audit_log)[mark:] if r.get("kind") == "intent"]


def ops_since(helper: HelperSandbox, mark: int) -> list[str]:
    """Summaries ("set_link veth1", ...) of every operation the helper was asked to run."""
    return [op for record in intents_since(helper, mark) for op in record.get("ops", [])]


# -- etcd faults -------------------------------------------------------------------------


class RestartableEtcd(EtcdServer):
    """An etcd this test may stop and start again on the same ports and data."""

    def halt(self) -> None:
        """SIGKILL etcd; its data stays for `start()`."""
        client = _clients.pop(self.endpoint, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def compact(self) -> int:
        """Compact (physically) up to the current revision; return it."""
        client = self.client()
        try:
            revision = int(client.get_prefix_response("/netagent-none/").header.revision)
            client.compact(revision, physical=True)
            return revision
        finally:
            client.close()
