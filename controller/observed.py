"""The observed-kernel model after a successful batch: `apply(observed, ops)`.

Pure: no I/O, and no etcd3, docker, grpc or pyroute2 imports. Links are identified by
(name, namespace identity). Deleting one veth end removes its peer too, as in the kernel.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable

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
        return str(ipaddress.ip_interface(text))
    except ValueError:
        return text


def _claimants(link: ObservedLink, links: Iterable[ObservedLink]) -> list[ObservedLink]:
    return [o for o in links if o is not link and o.name == link.peer and o.peer == link.name]


def partner(link: ObservedLink, links: Iterable[ObservedLink]) -> ObservedLink | None:
    """The other end of `link`'s veth pair, when the stamps say so unambiguously.

    Two links claiming the same end (possible only with stale stamps) give None, so
    nobody assumes a deletion removed a link it may not have removed.
    """
    pool = tuple(links)
    found = _claimants(link, pool)
    if len(found) != 1 or len(_claimants(found[0], pool)) != 1:
        return None
    return found[0]


def apply(observed: Iterable[ObservedLink], ops: Iterable[Op]) -> tuple[ObservedLink, ...]:
    """The links the kernel holds once `ops` have all succeeded, in a stable order."""
    links = {link_id(link.name, link.netns): link for link in observed}
    for op in ops:
        _apply_one(links, op)
    return tuple(sorted(links.values(), key=lambda k: link_id(k.name, k.netns)))


def _apply_one(links: dict[LinkId, ObservedLink], op: Op) -> None:
    if isinstance(op, DeleteLink):
        _delete(links, link_id(op.name, op.netns))
    elif isinstance(op, CreateVethPair):
        links[link_id(op.a.name, op.a.netns)] = _created(op.a, op.b.name)
        links[link_id(op.b.name, op.b.netns)] = _created(op.b, op.a.name)
    else:
        key = link_id(op.name, op.netns)
        if key in links:
            links[key] = _changed(links[key], op)


def _delete(links: dict[LinkId, ObservedLink], key: LinkId) -> None:
    link = links.pop(key, None)
    if link is None:
        return
    other = partner(link, (link, *links.values()))
    if other is not None:
        links.pop(link_id(other.name, other.netns), None)


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
    return dataclasses.replace(
        link,
        mac=link.mac if op.mac is None else op.mac,
        mtu=link.mtu if op.mtu is None else op.mtu,
        up=link.up if op.up is None else op.up,
    )
