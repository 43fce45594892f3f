"""Seed configurations and expectations shared by the end-to-end tests."""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

from tests.harness import FIXTURES, EtcdKV, HelperSandbox, LinkView, link, wait_until

RESYNC = ("--resync-interval", "1")
"""Controller flags for tests that rely on the periodic drift check."""


def seed(name: str) -> dict[str, Any]:
    """tests/fixtures/<name>.json as a dict (a fresh copy each call)."""
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return copy.deepcopy(loaded)


def veth_config(
    name: str, peer: str, *, netns: dict[str, Any] | None, mac: str, addresses: list[str],
    mtu: int = 1500,
) -> dict[str, Any]:
    """A VETH end in the seed's JSON shape; `netns=None` means the default namespace."""
    config: dict[str, Any] = {
        "name": name, "type": 0, "enabled": True, "mtu": mtu, "phys_address": mac,
        "ip_addresses": addresses, "veth": {"peer_if_name": peer},
    }
    if netns is not None:
        config["namespace"] = netns
    return config


def named_ns(name: str) -> dict[str, Any]:
    return {"type": 2, "name": name}


def _normalized(addresses: list[str]) -> frozenset[str]:
    return frozenset(str(ipaddress.ip_interface(a)) for a in addresses)


def matches(view: LinkView | None, config: dict[str, Any]) -> bool:
    """The kernel link carries exactly the configured MAC, MTU, addresses and admin state."""
    return (
        view is not None
        and view.mac == config["phys_address"].lower()
        and view.mtu == config["mtu"]
        and view.up == bool(config.get("enabled"))
        and view.addresses == _normalized(config.get("ip_addresses", []))
    )


def kernel_name(config: dict[str, Any]) -> str:
    return str(config.get("host_if_name") or config["name"])


def expect_link(
    helper: HelperSandbox, config: dict[str, Any], netns: str | None, timeout: float = 30
) -> LinkView:
    """Wait until the end of `config` exists in `netns` exactly as configured."""
    name = kernel_name(config)
    view = wait_until(
        lambda: (lambda v: v if matches(v, config) else None)(link(helper, name, netns)),
        timeout=timeout, what=f"{name} in {netns or 'the sandbox namespace'} as configured",
        describe=lambda: link(helper, name, netns),
    )
    assert view is not None
    return view


def expect_gone(helper: HelperSandbox, name: str, netns: str | None) -> None:
    wait_until(lambda: link(helper, name, netns) is None, timeout=30,
               what=f"{name} to be gone from {netns or 'the sandbox namespace'}",
               describe=lambda: link(helper, name, netns))


def expect_state(kv: EtcdKV, name: str, state: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the published status of `name` has `state`; return the status."""
    found = wait_until(
        lambda: (lambda s: s if s.get("state") == state else None)(kv.status(name)),
        timeout=timeout, what=f"status of {name} to be {state}",
        describe=lambda: kv.status(name),
    )
    assert found is not None
    return found


def veth_anywhere(helper: HelperSandbox, name: str) -> list[str]:
    """Every namespace of the sandbox (own + named) holding a link called `name`."""
    places = [None, *helper.netns_list()]
    return [str(ns) for ns in places if link(helper, name, ns) is not None]
