"""Narrow driver over `netlinkd.rtnl` for the few link and address calls the helper makes.

Every function takes an `Rtnl` socket already bound to the right namespace and translates
netlink errors into the helper's typed errors, naming the object.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from netlinkd import rtnl
from netlinkd.errors import Conflict, HelperError, KernelError, LinkNotFound
from netlinkd.rtnl import DumpInterrupted, LinkInfo, NetlinkError, Rtnl

ALIAS_PREFIX = "netagent:"
DEFAULT_GROUP = 0
DUMP_ATTEMPTS = 5
T = TypeVar("T")


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
        raise KernelError(f"{what}: {exc}") from exc
    except OSError as exc:  # the socket itself (ENOBUFS: answers lost); it is dropped
        raise KernelError(f"{what}: {exc}; retry") from exc


def retry_dump(dump: Callable[[], T], what: str) -> T:
    for _ in range(DUMP_ATTEMPTS - 1):
        try:
            return dump()
        except DumpInterrupted:
            continue
    try:
        return dump()
    except DumpInterrupted as exc:
        raise KernelError(f"{what}: dump interrupted {DUMP_ATTEMPTS} times; retry") from exc


def _get(nl: Rtnl, request: rtnl.Request, what: str) -> LinkInfo | None:
    try:
        with netlink_errors(what):
            return nl.request(request)[0]
    except LinkNotFound:
        return None


def find_link(nl: Rtnl, name: str, where: str) -> LinkInfo | None:
    return _get(nl, rtnl.get_link(name=name), f"look up {name} in {where}")


def find_links(nl: Rtnl, names: list[str], where: str) -> dict[str, LinkInfo | None]:
    """`find_link` for many names of one namespace, in one sendmsg."""
    with netlink_errors(f"look up {len(names)} links in {where}"):
        replies = nl.transact([rtnl.get_link(name=name) for name in names])
    found: dict[str, LinkInfo | None] = {}
    for name, reply in zip(names, replies, strict=True):
        if reply.error is not None and reply.error.code == errno.ENODEV:
            found[name] = None
        elif reply.error is not None:
            raise KernelError(f"look up {name} in {where}: {reply.error}")
        else:
            found[name] = reply.links[0]
    return found


def link_by_index(nl: Rtnl, index: int, where: str) -> LinkInfo | None:
    return _get(nl, rtnl.get_link(index=index), f"look up ifindex {index} in {where}")


def dump_links(nl: Rtnl, where: str, wanted: frozenset[int] = rtnl.LINK_ATTRS,
               keep: Callable[[LinkInfo], bool] = lambda _link: True) -> list[LinkInfo]:
    """Every link `keep` accepts (the others are not kept even during the dump), with the
    attributes of `wanted` (rtnl.STATS_ATTRS: with its counters)."""
    with netlink_errors(f"list links in {where}"):
        return retry_dump(lambda: nl.links(wanted, keep), where)


def addresses_by_index(nl: Rtnl, where: str, index: int = 0) -> dict[int, list[str]]:
    """Every address of the namespace (or, the kernel filtering the dump, of ifindex
    `index`) in one dump, by ifindex; kernel link-local addresses left out."""
    with netlink_errors(f"list addresses in {where}"):
        infos = retry_dump(lambda: nl.addresses(index), where)
    found: dict[int, list[str]] = {}
    for info in infos:
        if not info.kernel_link_local:
            found.setdefault(info.index, []).append(f"{info.address}/{info.prefixlen}")
    return found


def link_addresses(nl: Rtnl, index: int, where: str) -> list[str]:
    return addresses_by_index(nl, where, index).get(index, [])


def create_veths(nl: Rtnl, pairs: list[tuple[rtnl.EndSpec, rtnl.EndSpec]],
                 what: str) -> list[NetlinkError | None]:
    """One RTM_NEWLINK per pair, all in one sendmsg, each creating both ends in place
    (the kernel takes IFLA_GROUP, IFLA_MTU and IFLA_ADDRESS at creation, also inside
    VETH_INFO_PEER, but not IFLA_IFALIAS); per pair, the kernel's refusal or None. A
    socket error raises (the creates' fate is then unknown)."""
    with netlink_errors(what):
        replies = nl.transact([rtnl.create_veth(a, b) for a, b in pairs])
    return [reply.error for reply in replies]


def send(nl: Rtnl, request: rtnl.Request, what: str) -> None:
    """One change (set, delete, address), its netlink error as the helper's typed error."""
    with netlink_errors(what):
        nl.request(request)


@dataclass(frozen=True)
class NewEnd:
    """A link this batch created, to configure: its addresses, then owner alias, group 0
    and (if wanted) UP in one request. Addresses go first, as `ip` does: added to a link
    that is already UP, IPv6 addresses cost the kernel about a third more
    (docs/PERFORMANCE.md)."""

    index: int
    alias: str
    up: bool
    addresses: list[str]
    where: str

    def requests(self) -> list[tuple[str, rtnl.Request]]:
        steps = [(f"add {address} to {self.where}", rtnl.add_address(self.index, address))
                 for address in self.addresses]
        steps.append((f"stamp owner alias{' and up' if self.up else ''} of {self.where}",
                      rtnl.set_link(self.index, alias=self.alias, group=DEFAULT_GROUP,
                                    up=True if self.up else None)))
        return steps


def configure_created(nl: Rtnl, ends: list[NewEnd], where: str) -> list[HelperError | None]:
    """Every end's requests in one sendmsg (one namespace); per end, its first failure.
    The kernel runs them all, in order; whatever failed, the caller's undo deletes the
    whole pairs. A socket error fails every end."""
    steps = [(end, step, request) for end in ends for step, request in end.requests()]
    try:
        with netlink_errors(f"configure {len(ends)} new links in {where}"):
            replies = nl.transact([request for _end, _step, request in steps])
    except HelperError as exc:
        return [exc for _ in ends]
    failed: dict[int, HelperError] = {}
    for (end, step, _request), reply in zip(steps, replies, strict=True):
        try:
            with netlink_errors(step):
                reply.check()
        except HelperError as exc:
            failed.setdefault(id(end), exc)
    return [failed.get(id(end)) for end in ends]
