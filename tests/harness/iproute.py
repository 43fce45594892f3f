"""Reading links as `ip -j` reports them inside a `HelperSandbox`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .sandbox import HelperSandbox, SandboxError


@dataclass(frozen=True)
class LinkView:
    """One link as `ip -j -d addr show` reports it."""

    name: str
    ifindex: int
    mac: str
    mtu: int
    up: bool
    addresses: frozenset[str]
    """"addr/prefix", kernel IPv6 link-local addresses excluded."""
    alias: str
    kind: str

    @staticmethod
    def parse(entry: dict[str, Any]) -> LinkView:
        addresses = frozenset(
            f"{info['local']}/{info['prefixlen']}"
            for info in entry.get("addr_info", [])
            if not (info.get("family") == "inet6" and info.get("scope") == "link")
        )
        return LinkView(
            name=entry["ifname"], ifindex=int(entry["ifindex"]),
            mac=entry.get("address", ""), mtu=int(entry.get("mtu", 0)),
            up="UP" in entry.get("flags", []), addresses=addresses,
            alias=entry.get("ifalias", ""),
            kind=entry.get("linkinfo", {}).get("info_kind", ""),
        )


def links(sandbox: HelperSandbox, netns: str | None = None) -> dict[str, LinkView]:
    """All links of a namespace: a named one, or the sandbox's own when `netns` is None."""
    return {
        view.name: view
        for view in map(LinkView.parse, sandbox.ip_json("-d", "addr", "show", netns=netns))
    }


def link(sandbox: HelperSandbox, name: str, netns: str | None = None) -> LinkView | None:
    """The link `name`, or None when it (or its named namespace) does not exist."""
    if netns is not None and netns not in sandbox.netns_list():
        return None
    try:
        return links(sandbox, netns).get(name)
    except SandboxError:
        return None  # the namespace vanished between the listing and the query


def links_of_pid(sandbox: HelperSandbox, pid: int) -> dict[str, LinkView]:
    """Links in the network namespace of process `pid` (any namespace the sandbox sees)."""
    return _links_via(sandbox, "-t", str(pid), "-n")


def links_in_file(sandbox: HelperSandbox, path: str) -> dict[str, LinkView]:
    """Links in the network namespace bound at `path` (a file the sandbox sees)."""
    return _links_via(sandbox, f"--net={path}")


def _links_via(sandbox: HelperSandbox, *nsenter_args: str) -> dict[str, LinkView]:
    result = sandbox.run("nsenter", *nsenter_args, "ip", "-j", "-d", "addr", "show")
    text = result.stdout.strip()
    return {view.name: view for view in map(LinkView.parse, json.loads(text) if text else [])}
