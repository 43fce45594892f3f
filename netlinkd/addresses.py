"""A batch's view of the addresses of each link it adds or deletes addresses on.

The first address operation of a batch on a link reads that link's addresses (one dump the
kernel filters by ifindex); the batch's own changes are then applied to the view, including
the kernel's silent one: deleting a subnet's *primary* IPv4 address drops every secondary
address of that subnet with it (`promote_secondaries` is 0 in a new namespace). What was
dropped is added back at once, so a DelAddress removes exactly the address it names. At
the end of the batch each such link is read once more and compared with the view: a side
effect no rule here knows of fails the batch (and rolls it back) instead of being reported
as applied, so no status says CONFIGURED on a wrong prediction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from netlinkd import links, rtnl
from netlinkd.errors import KernelError
from netlinkd.rtnl import Rtnl


def _normal(address: str) -> str:
    iface = ipaddress.ip_interface(address)
    return f"{iface.ip}/{iface.network.prefixlen}"


def _same_ipv4_subnet(one: str, other: str) -> bool:
    a, b = ipaddress.ip_interface(one), ipaddress.ip_interface(other)
    return a.version == b.version == 4 and a.network == b.network


@dataclass
class LinkAddresses:
    """The addresses of one link as this batch has left them."""

    nl: Rtnl
    index: int
    where: str
    first_op: int
    expected: list[str] = field(default_factory=list)

    def has(self, address: str) -> bool:
        return _normal(address) in self.expected

    def add(self, address: str, what: str) -> None:
        links.send(self.nl, rtnl.add_address(self.index, address), what)
        self.expected.append(_normal(address))

    def delete(self, address: str, what: str) -> list[str]:
        """Delete `address`; returns what the kernel dropped with it (added back)."""
        links.send(self.nl, rtnl.del_address(self.index, address), what)
        self.expected.remove(_normal(address))
        siblings = [a for a in self.expected if _same_ipv4_subnet(a, address)]
        if not siblings:
            return []
        left = {_normal(a) for a in links.link_addresses(self.nl, self.index, self.where)}
        dropped = [a for a in siblings if a not in left]
        for sibling in dropped:
            links.send(self.nl, rtnl.add_address(self.index, sibling),
                       f"re-add {sibling} (dropped with {address}) in {self.where}")
        return dropped

    def difference(self) -> str:
        """What the kernel has now unlike the view ("" when nothing)."""
        actual = {_normal(a) for a in links.link_addresses(self.nl, self.index, self.where)}
        if actual == set(self.expected):
            return ""
        return (f"after the batch, ifindex {self.index} in {self.where} has addresses "
                f"{sorted(actual)}, not {sorted(self.expected)}: a kernel side effect; "
                f"rolled back")


class AddressBook:
    """One `LinkAddresses` per link a batch changes addresses on."""

    def __init__(self) -> None:
        self._links: dict[tuple[int, int, int], LinkAddresses] = {}

    def of(self, ns_key: tuple[int, int], nl: Rtnl, index: int, where: str,
           op_index: int) -> LinkAddresses:
        key = (*ns_key, index)
        found = self._links.get(key)
        if found is None:
            present = [_normal(a) for a in links.link_addresses(nl, index, where)]
            found = LinkAddresses(nl, index, where, op_index, present)
            self._links[key] = found
        return found

    def check(self) -> None:
        """Raise KernelError (`index`: the link's first address op) if the kernel differs."""
        for view in self._links.values():
            problem = view.difference()
            if problem:
                error = KernelError(problem)
                error.index = view.first_op
                raise error
