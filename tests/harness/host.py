"""A snapshot of the host's network state, to prove tests left it untouched."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def _ip_json(*args: str) -> Any:
    text = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(text) if text.strip() else []


def host_snapshot() -> dict[str, Any]:
    """Host namespace links (index, MTU, MAC, flags, addresses) and `ip netns list`."""
    links = {
        entry["ifname"]: (
            entry["ifindex"], entry.get("mtu"), entry.get("address"),
            tuple(sorted(entry.get("flags", []))),
            tuple(sorted(f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", []))),
        )
        for entry in _ip_json("addr", "show")
    }
    namespaces = sorted(entry["name"] for entry in _ip_json("netns", "list"))
    return {"links": links, "netns": namespaces}


def host_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences between two snapshots; [] when identical."""
    problems: list[str] = []
    if before["netns"] != after["netns"]:
        problems.append(f"host `ip netns list` changed: {before['netns']} -> {after['netns']}")
    for name in sorted(set(before["links"]) | set(after["links"])):
        old, new = before["links"].get(name), after["links"].get(name)
        if old != new:
            problems.append(f"host link {name} changed: {old} -> {new}")
    return problems
