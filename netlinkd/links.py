"""Narrow driver over pyroute2 for the few link and address calls the helper makes.

Every function takes an `IPRoute` already bound to the right namespace and translates
netlink errors into the helper's typed errors, naming the object.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

from netlinkd.errors import Conflict, KernelError, LinkNotFound

ALIAS_PREFIX = "netagent:"
DEFAULT_GROUP = 0
IFF_UP = 0x1
DUMP_ATTEMPTS = 5
T = TypeVar("T")


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    alias: str
    mac: str
    mtu: int
    up: bool
    group: int = 0


def batch_group(epoch: bytes, sequence: int) -> int:
    """The link group of one batch: 2^31 and up, derived from (epoch, sequence), so the
    fsync'd intent record names it. Links the batch creates are born in it and links it
    deletes are marked with it; nothing of netagent's stays in it after the batch."""
    digest = hashlib.sha256(b"netagent-batch-group\0" + epoch + sequence.to_bytes(8, "big"))
    return (1 << 31) | (int.from_bytes(digest.digest()[:4], "big") & 0x7FFFFFFF)


def owner_prefix(owner: str) -> str:
    return f"{ALIAS_PREFIX}{owner}:"


def owner_alias(owner: str, peer: str) -> str:
    return f"{owner_prefix(owner)}{peer}"


def peer_from_alias(alias: str) -> str:
    return alias.split(":", 2)[2] if alias.count(":") >= 2 else ""


@contextmanager
def netlink_errors(what: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            raise LinkNotFound(f"{what}: no such link") from exc
        if exc.code == errno.EEXIST:
            raise Conflict(f"{what}: already exists") from exc
        raise KernelError(f"{what}: {errno.errorcode.get(exc.code, exc.code)} {exc}") from exc


def retry_dump(dump: Callable[[], T], what: str) -> T:
    for _ in range(DUMP_ATTEMPTS - 1):
        try:
            return dump()
        except NetlinkDumpInterrupted:
            continue
    try:
        return dump()
    except NetlinkDumpInterrupted as exc:
        raise KernelError(f"{what}: dump interrupted {DUMP_ATTEMPTS} times; retry") from exc


def to_link(msg: Any) -> Link:
    return Link(
        index=int(msg["index"]),
        name=str(msg.get("IFLA_IFNAME")),
        alias=str(msg.get("IFLA_IFALIAS") or ""),
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        mtu=int(msg.get("IFLA_MTU") or 0),
        up=bool(msg["flags"] & IFF_UP),
        group=int(msg.get("IFLA_GROUP") or 0),
    )


def find_link(ipr: IPRoute, name: str, where: str) -> Link | None:
    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise KernelError(f"look up {name} in {where}: {exc}") from exc
    return to_link(found[0])


def dump_links(ipr: IPRoute, where: str) -> list[Link]:
    with netlink_errors(f"list links in {where}"):
        return [to_link(m) for m in retry_dump(lambda: tuple(ipr.get_links()), where)]


def _is_kernel_link_local(family: int, address: str) -> bool:
    return family == 10 and ipaddress.ip_address(address) in ipaddress.ip_network("fe80::/10")


def _addresses(msgs: tuple[Any, ...]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for msg in msgs:
        address = msg.get("IFA_ADDRESS") or msg.get("IFA_LOCAL")
        if address and not _is_kernel_link_local(int(msg["family"]), str(address)):
            found.setdefault(int(msg["index"]), []).append(f"{address}/{msg['prefixlen']}")
    return found


def link_addresses(ipr: IPRoute, index: int, where: str) -> list[str]:
    with netlink_errors(f"list addresses in {where}"):
        msgs = retry_dump(lambda: tuple(ipr.get_addr(index=index)), where)
    return _addresses(msgs).get(index, [])


def addresses_by_index(ipr: IPRoute, where: str) -> dict[int, list[str]]:
    """Every address of the namespace in one dump (pyroute2 filters `index=` client-side,
    so one dump per link would cost O(links x addresses))."""
    with netlink_errors(f"list addresses in {where}"):
        return _addresses(retry_dump(lambda: tuple(ipr.get_addr()), where))


def _spec_attrs(name: str, ns_fd: int, mac: str, mtu: int, group: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {"ifname": name, "net_ns_fd": ns_fd, "group": group}
    if mac:
        attrs["address"] = mac
    if mtu:
        attrs["mtu"] = mtu
    return attrs


def create_veth(
    ipr: IPRoute, a: tuple[str, int, str, int], b: tuple[str, int, str, int], group: int,
    what: str,
) -> None:
    """One RTM_NEWLINK creating both ends in place, (name, netns fd, mac, mtu) each, both
    born in link group `group` (the kernel takes IFLA_GROUP, IFLA_MTU and IFLA_ADDRESS at
    creation, also inside VETH_INFO_PEER, but not IFLA_IFALIAS)."""
    attrs = _spec_attrs(*a, group)
    attrs["peer"] = _spec_attrs(*b, group)
    with netlink_errors(what):
        ipr.link("add", kind="veth", **attrs)


def set_link(ipr: IPRoute, index: int, what: str, **attrs: Any) -> None:
    with netlink_errors(what):
        ipr.link("set", index=index, **attrs)


def delete_link(ipr: IPRoute, index: int, what: str) -> None:
    with netlink_errors(what):
        ipr.link("del", index=index)


def _split_address(address: str) -> tuple[str, int]:
    iface = ipaddress.ip_interface(address)
    return str(iface.ip), iface.network.prefixlen


def has_address(ipr: IPRoute, index: int, address: str, where: str) -> bool:
    ip, prefix = _split_address(address)
    wanted = f"{ipaddress.ip_address(ip)}/{prefix}"
    return any(
        _normal(a) == wanted for a in link_addresses(ipr, index, where)
    )


def _normal(address: str) -> str:
    ip, prefix = _split_address(address)
    return f"{ip}/{prefix}"


def add_address(ipr: IPRoute, index: int, address: str, what: str) -> None:
    ip, prefix = _split_address(address)
    with netlink_errors(what):
        ipr.addr("add", index=index, address=ip, prefixlen=prefix)


def del_address(ipr: IPRoute, index: int, address: str, what: str) -> None:
    ip, prefix = _split_address(address)
    with netlink_errors(what):
        ipr.addr("del", index=index, address=ip, prefixlen=prefix)
