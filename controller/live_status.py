"""The kernel's live facts in each status, the debounce that keeps creation flaps out,
and following the helper's link events without an observe.

Pure: no I/O, no clock of its own (`now` is passed in).

A veth end the agent just created or changed passes through states on its way (no
ifindex known yet, then LOWERLAYERDOWN until the kernel's link watch sees the carrier).
For up to `SETTLE_S` after the agent created it, such a CONFIGURED end's status is left
as it is published (not written, not deleted), so one creation publishes one final
state. Any other change (by hand, and its repair) is published as it is seen.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

from controller.events import OwnedLinkChange
from controller.observed import LinkId, link_id, normal_address
from controller.ops import Live, NsRef, ObservedLink, State, Status

SETTLE_S = 2.0


def with_live(
    statuses: Mapping[str, Status],
    kernel_links: Mapping[str, tuple[str, NsRef]],
    observed: Iterable[ObservedLink],
    counters: Mapping[LinkId, tuple[int, ...]] | None,
    revisions: Mapping[str, int] | None = None,
    previous: Mapping[str, Status] | None = None,
) -> dict[str, Status]:
    """`statuses` with `live` set for every end found in `observed`, and each one's
    `config_revision` from `revisions` (if given).

    `kernel_links`: config name -> (kernel name, namespace) where its end belongs.
    `counters`: the statistics to publish, None when they are off. They are taken at the
    statistics interval only, so an observe made for another reason does not rewrite a
    status; an end without counters yet keeps the published ones.
    `previous`: what this gave last time; a status equal in every field, live facts
    included, is that object again (the publisher keeps one copy, not one per publish).
    """
    by_link = {link_id(link.name, link.netns): link for link in observed}
    previous = previous or {}
    result: dict[str, Status] = {}
    for name, status in statuses.items():
        revision = status.config_revision if revisions is None else revisions.get(name, 0)
        where = kernel_links.get(name)
        last = previous.get(name)
        if where is None or (link := by_link.get(key := link_id(*where))) is None:
            if (last is not None and last.live is None and status.live is None
                    and _same(last, status, revision)):
                result[name] = last
            elif revisions is None or status.config_revision == revision:
                result[name] = status
            else:
                result[name] = Status(status.state, status.reason, status.warnings,
                                      status.live, revision)
            continue
        statistics = () if counters is None else counters.get(key)
        known = last.live if last is not None else None
        if (last is not None and known is not None and _same(last, status, revision)
                and known.kernel_name == link.name and known.namespace == where[1]
                and known.ifindex == link.ifindex and known.oper_state == link.oper_state
                and known.statistics == statistics):
            result[name] = last
            continue
        live = Live(kernel_name=link.name, namespace=where[1], ifindex=link.ifindex,
                    oper_state=link.oper_state, statistics=statistics)
        result[name] = Status(status.state, status.reason, status.warnings, live, revision)
    return result


def _same(last: Status, status: Status, revision: int) -> bool:
    return (last.state == status.state and last.reason == status.reason
            and last.warnings == status.warnings and last.config_revision == revision)


def follow(observed: Iterable[ObservedLink],
           changes: Iterable[OwnedLinkChange]) -> tuple[ObservedLink, ...]:
    """`observed` with the live state each change reports: oper state, ifindex, and the MAC
    and MTU the kernel chose where the agent left them to it. Whoever made a change (the
    agent's own batches too), these are the kernel's word."""
    by_link = {link_id(link.name, link.netns): link for link in observed}
    for change in changes:
        key = link_id(change.name, change.netns)
        link = by_link.get(key)
        if link is not None and not change.deleted:
            by_link[key] = dataclasses.replace(
                link, ifindex=change.ifindex, oper_state=change.oper_state,
                mac=link.mac or change.mac, mtu=link.mtu or change.mtu)
    return tuple(by_link.values())


def explained(observed: Iterable[ObservedLink], changes: Iterable[OwnedLinkChange]) -> bool:
    """Whether `observed` (with `follow`'s live state) already says what the changes say;
    if not (a link deleted, unknown, with other admin state, MAC, MTU or peer, an address
    added or removed), an observe is needed."""
    changes = tuple(changes)
    if not changes:
        return True
    by_link = {link_id(link.name, link.netns): link for link in observed}
    for change in changes:
        link = by_link.get(link_id(change.name, change.netns))
        known = {normal_address(a) for a in link.addresses} if link is not None else set()
        if (link is None or change.deleted
                or not known.issuperset(map(normal_address, change.added_addresses))
                or known.intersection(map(normal_address, change.removed_addresses))
                or (link.up, link.peer, link.mac, link.mtu)
                != (change.up, change.peer, change.mac, change.mtu)):
            return False
    return True


def unsettled(status: Status, expect_up: bool) -> bool:
    """A CONFIGURED end whose kernel state is not known, or not yet what it will be."""
    if status.state != State.CONFIGURED:
        return False
    live = status.live
    if live is None or not live.ifindex or not live.oper_state:
        return True
    return expect_up and live.oper_state != "UP"


class Debounce:
    """Remembers when the agent last created each end."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self._settle_s = settle_s
        self._touched: dict[str, float] = {}

    def touched(self, names: Iterable[str], now: float) -> None:
        for name in names:
            self._touched[name] = now

    def settle(
        self, statuses: Mapping[str, Status], expect_up: Mapping[str, bool], now: float
    ) -> tuple[dict[str, Status], set[str], float | None]:
        """(what to publish now, what to leave as it is published, when to look again)."""
        result: dict[str, Status] = {}
        held: set[str] = set()
        wake = math.inf
        for name, status in statuses.items():
            since = self._touched.get(name)
            if since is not None and now - since < self._settle_s \
                    and unsettled(status, expect_up.get(name, False)):
                wake = min(wake, since + self._settle_s)
                held.add(name)
                continue
            self._touched.pop(name, None)
            result[name] = status
        self._touched = {n: t for n, t in self._touched.items() if n in statuses}
        return result, held, None if wake == math.inf else wake
