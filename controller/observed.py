"""The observed-kernel model after a successful batch: `apply(observed, ops)`.

Pure: no I/O, and no etcd3, docker, grpc or pyroute2 imports. Links are identified by
(name, namespace identity). Deleting one veth end removes its peer too, as in the kernel.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from collections.abc import Collection, Iterable

from controller.ops import (
    AddAddress,
    CreateVethPair,
    DelAddress,
    DeleteLink,
    LinkSpec,
    NsRef,
    ObservedLink,
    Op,
    SetLink,
)

LinkId = tuple[str, tuple[str, str | int]]


def link_id(name: str, netns: NsRef) -> LinkId:
    return (name, netns.identity())


def normal_address(text: str) -> str:
    """'2001:db8:0::1/48' -> '2001:db8::1/48'; text that is no address is kept as is."""
    try:
        return canonical_interface(text)
    except ValueError:
        return text


@functools.lru_cache(maxsize=1 << 16)
def canonical_interface(text: str) -> str:
    """`ipaddress.ip_interface(text)` as text (ValueError as it raises it). Cached: every
    plan compares every observed address with the configured ones."""
    try:
        return str(ipaddress.IPv6Interface(text) if ":" in text else ipaddress.IPv4Interface(text))
    except ValueError:
        return str(ipaddress.ip_interface(text))  # raises, with ip_interface's message


class Partners:
    """Finds the other end of a veth pair among a changing set of links, without a scan.

    The ends are matched by their stamps: each names its peer. Two links claiming the
    same end (possible only with stale stamps) give no partner, so nobody assumes a
    deletion removed a link it may not have removed.
    """

    def __init__(self, links: Iterable[ObservedLink] = ()) -> None:
        self._by_stamp: dict[tuple[str, str], list[ObservedLink]] = {}
        for link in links:
            self.add(link)

    def add(self, link: ObservedLink) -> None:
        self._by_stamp.setdefault((link.name, link.peer), []).append(link)

    def discard(self, link: ObservedLink) -> None:
        same = self._by_stamp.get((link.name, link.peer), [])
        same[:] = [o for o in same if o is not link]

    def of(self, link: ObservedLink) -> ObservedLink | None:
        found = self._claimants(link)
        if len(found) != 1 or len(self._claimants(found[0])) != 1:
            return None
        return found[0]

    def _claimants(self, link: ObservedLink) -> list[ObservedLink]:
        return [o for o in self._by_stamp.get((link.peer, link.name), []) if o is not link]


def partner(link: ObservedLink, links: Iterable[ObservedLink]) -> ObservedLink | None:
    """The other end of `link`'s veth pair among `links` (see `Partners`)."""
    return Partners(links).of(link)


def one_per_link(
    links: Iterable[ObservedLink], wanted: Collection[LinkId]
) -> tuple[ObservedLink, ...]:
    """One report per kernel link, under the reference a config uses for it.

    The helper reports a link once for every reference that reaches its namespace (a
    `--network host` container's SandboxKey is the host namespace; `ns1` is also the file
    `/var/run/netns/ns1`). Links are the same when namespace inode and ifindex are.
    """
    chosen: dict[tuple[int, int], ObservedLink] = {}
    alone: list[ObservedLink] = []
    for link in links:
        if not link.netns_inode:
            alone.append(link)
            continue
        key = (link.netns_inode, link.ifindex)
        current = chosen.get(key)
        if current is None or (
            link_id(current.name, current.netns) not in wanted
            and link_id(link.name, link.netns) in wanted
        ):
            chosen[key] = link
    return (*chosen.values(), *alone)


def apply(observed: Iterable[ObservedLink], ops: Iterable[Op]) -> tuple[ObservedLink, ...]:
    """The links the kernel holds once `ops` have all succeeded, in a stable order."""
    kernel = _Kernel(observed)
    for op in ops:
        kernel.apply(op)
    return tuple(sorted(kernel.links.values(), key=lambda k: link_id(k.name, k.netns)))


class _Kernel:
    def __init__(self, observed: Iterable[ObservedLink]) -> None:
        self.links = {link_id(link.name, link.netns): link for link in observed}
        self._partners = Partners(self.links.values())

    def apply(self, op: Op) -> None:
        if isinstance(op, DeleteLink):
            self._delete(link_id(op.name, op.netns))
        elif isinstance(op, CreateVethPair):
            self._put(_created(op.a, op.b.name))
            self._put(_created(op.b, op.a.name))
        else:
            link = self.links.get(link_id(op.name, op.netns))
            if link is not None:
                self._put(_changed(link, op))

    def _put(self, link: ObservedLink) -> None:
        key = link_id(link.name, link.netns)
        old = self.links.get(key)
        if old is not None:
            self._partners.discard(old)
        self.links[key] = link
        self._partners.add(link)

    def _delete(self, key: LinkId) -> None:
        link = self.links.get(key)
        if link is None:
            return
        other = self._partners.of(link)
        for gone in (link, other) if other is not None else (link,):
            self._partners.discard(gone)
            self.links.pop(link_id(gone.name, gone.netns), None)


def _created(spec: LinkSpec, peer: str) -> ObservedLink:
    return ObservedLink(
        name=spec.name,
        netns=spec.netns,
        ifindex=0,
        mac=spec.mac,
        mtu=spec.mtu,
        up=spec.up,
        addresses=spec.addresses,
        peer=peer,
    )


def _changed(link: ObservedLink, op: SetLink | AddAddress | DelAddress) -> ObservedLink:
    if isinstance(op, AddAddress):
        return dataclasses.replace(link, addresses=(*link.addresses, op.address))
    if isinstance(op, DelAddress):
        gone = normal_address(op.address)
        kept = tuple(a for a in link.addresses if normal_address(a) != gone)
        return dataclasses.replace(link, addresses=kept)
    addresses = link.addresses
    if link.up and op.up is False:
        addresses = tuple(a for a in addresses if not is_ipv6(a))
    return dataclasses.replace(
        link,
        mac=link.mac if op.mac is None else op.mac,
        mtu=link.mtu if op.mtu is None else op.mtu,
        up=link.up if op.up is None else op.up,
        addresses=addresses,
    )


def is_ipv6(address: str) -> bool:
    """Taking a link down drops its IPv6 addresses (net.ipv6.conf.*.keep_addr_on_down=0)."""
    return ":" in address
