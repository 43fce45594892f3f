"""The pure reconciler: (desired configs, namespace availability, observed links) -> Plan.

Pure: no I/O, and no etcd3, docker, grpc or pyroute2 imports. The same inputs always
give the same plan, with operations in a fixed, sorted order:
all DeleteLinks, then CreateVethPairs, then SetLinks, DelAddresses and AddAddresses.

Lifecycle of one VETH end: invalid/clashing/mismatched -> ERROR; waiting for its peer or
a namespace -> PENDING; otherwise READY, and its pair is realized -> CONFIGURED. A failed
apply (`failures`) turns the status into ERROR while the operations are still planned,
so the next batch retries them.

`blocked` says the helper applies no change at all now (it is down, or it refuses every
batch, e.g. with a full audit disk), and why. Statuses then still say what is true of the
last observed kernel: an end whose pair needs nothing stays CONFIGURED with a warning
naming the block; an end whose pair needs operations is ERROR with the block as reason.
A helper that cannot be reached is only published as a block after `HELPER_DOWN_GRACE_S`
(see `Block` and `published_block`): a routine restart is not news.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from controller.model import InterfaceConfig, InvalidValue, NamespaceConfig
from controller.observed import LinkId, Partners, is_ipv6, link_id, normal_address
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
    State,
    Status,
)


@dataclass(frozen=True)
class Availability:
    """Where a configured namespace is now. `ref` None means not available yet.

    `hold` means nobody knows yet (Docker not listed, or unreachable): the namespace may
    still be there, so the links of its pairs that exist are kept as they are, and nothing
    is created or changed there (`ref` is then the last one seen, or None): a container
    that died meanwhile leaves a stale reference. `reason` says why.
    """

    ref: NsRef | None
    reason: str = ""
    warnings: tuple[str, ...] = ()
    hold: bool = False


Resolver = Callable[[NamespaceConfig], Availability]

HELPER_DOWN_GRACE_S = 10.0
"""How long the helper may be unreachable before statuses name it as a block. systemd
restarts a stopped helper after 2 s (`RestartSec`), its start-up takes a few more under
load, and the controller sees the new one within 0.3 s (the `WatchLinks` stream): a
routine restart must not rewrite every status twice. A refusal of every change by a
running helper (a full audit disk) is published at once."""


@dataclass(frozen=True)
class Block:
    """Why the helper applies no change now, since when (monotonic seconds), and how long
    it must last before statuses say so."""

    reason: str
    since: float
    grace_s: float = 0.0


def published_block(block: Block | None, now: float) -> str:
    """The block `plan` should name at `now`: "" while there is none or it is in grace."""
    if block is None or now - block.since < block.grace_s:
        return ""
    return block.reason


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    statuses: Mapping[str, Status]


# ---- scope: what a change can affect -----------------------------------------------

Bucket = tuple[str, tuple[str, str | int]]
"""A kernel name and where it lives, coarsely: the named namespace, the PID, or "some
file" for every file and microservice namespace (two files may be one namespace), known
without resolving anything. Ends that may clash, and links a config may want, share one."""

_PATHS = ("path", "")
_K = TypeVar("_K")


def config_bucket(config: InterfaceConfig) -> Bucket:
    ns = config.namespace
    if ns.kind == "named":
        return (config.host_if_name, ("name", ns.name))
    if ns.kind == "pid":
        return (config.host_if_name, ("pid", ns.pid))
    if ns.kind in ("file", "microservice"):
        return (config.host_if_name, _PATHS)
    return (config.host_if_name, ("host", ""))


def link_bucket(link: ObservedLink) -> Bucket:
    return ref_bucket(link.name, link.netns)


def ref_bucket(name: str, ref: NsRef) -> Bucket:
    return (name, _PATHS if ref.kind == "path" else ref.identity())


class ConfigIndex:
    """Desired configs by the names of their peers and by bucket, kept up to date one
    change at a time (`put`), so that a `Scope` costs what changed, not every config.

    A key one config holds maps to its name, not to a set of one (216 bytes: 4.3 MiB for
    10,000 configs in the two maps); a namespace's identity is one tuple."""

    def __init__(self, desired: Mapping[str, InterfaceConfig | InvalidValue] | None = None) -> None:
        self._naming: dict[str, str | set[str]] = {}  # peer name -> the configs naming it
        self._bucket: dict[Bucket, str | set[str]] = {}
        self._where: dict[tuple[str, str | int], tuple[str, str | int]] = {}
        for name, value in (desired or {}).items():
            self.put(name, None, value)

    def put(self, name: str, old: InterfaceConfig | InvalidValue | None,
            new: InterfaceConfig | InvalidValue | None) -> None:
        """`name`'s value went from `old` to `new` (None: absent)."""
        if isinstance(old, InterfaceConfig):
            _discard(self._naming, old.peer, name)
            _discard(self._bucket, config_bucket(old), name)
        if isinstance(new, InterfaceConfig):
            _insert(self._naming, new.peer, name)
            host, place = config_bucket(new)
            _insert(self._bucket, (host, self._where.setdefault(place, place)), name)

    def naming(self, name: str) -> Iterable[str]:
        return _names(self._naming.get(name))

    def in_bucket(self, bucket: Bucket) -> Iterable[str]:
        return _names(self._bucket.get(bucket))


def _insert(index: dict[_K, str | set[str]], key: _K, name: str) -> None:
    found = index.setdefault(key, name)
    if isinstance(found, set):
        found.add(name)
    elif found != name:
        index[key] = {found, name}


def _discard(index: dict[_K, str | set[str]], key: _K, name: str) -> None:
    found = index.get(key)
    if found == name:
        del index[key]
    elif isinstance(found, set):
        found.discard(name)
        if len(found) == 1:
            index[key] = next(iter(found))


def _names(found: str | set[str] | None) -> Iterable[str]:
    if found is None:
        return ()
    return (found,) if isinstance(found, str) else found


class LinkIndex:
    """Observed links by bucket and by stamp (name, peer), as positions in `observed`.

    A key held by one link maps to its position, not to a list of one (a list is 88
    bytes: 1.7 MiB for 10,000 links in the two maps), and its namespace's identity is
    one tuple per namespace."""

    def __init__(self, observed: Iterable[ObservedLink]) -> None:
        self.observed = tuple(observed)
        self._bucket: dict[Bucket, int | list[int]] = {}
        self._stamp: dict[tuple[str, str], int | list[int]] = {}
        where: dict[tuple[str, str | int], tuple[str, str | int]] = {}
        for at, link in enumerate(self.observed):
            name, place = link_bucket(link)
            _add(self._bucket, (name, where.setdefault(place, place)), at)
            _add(self._stamp, (link.name, link.peer), at)

    def in_bucket(self, bucket: Bucket) -> list[int]:
        return _positions(self._bucket.get(bucket))

    def related(self, at: int) -> Iterable[ObservedLink]:
        """The links `Partners` looks at to tell this link's partner, or whether it has one."""
        link = self.observed[at]
        return (self.observed[other] for key in ((link.peer, link.name), (link.name, link.peer))
                for other in _positions(self._stamp.get(key)))


def _add(index: dict[_K, int | list[int]], key: _K, at: int) -> None:
    found = index.setdefault(key, at)
    if isinstance(found, list):
        found.append(at)
    elif found != at:
        index[key] = [found, at]


def _positions(found: int | list[int] | None) -> list[int]:
    if found is None:
        return []
    return [found] if isinstance(found, int) else found


@dataclass(frozen=True)
class Scope:
    """What changed since a plan that needed no operation: the config `names` put or
    deleted, with the peers and `buckets` their previous values named. `configs` indexes
    the desired configs passed with it, `links` the observed links."""

    names: frozenset[str]
    buckets: frozenset[Bucket]
    configs: ConfigIndex
    links: LinkIndex


def within(
    scope: Scope, desired: Mapping[str, InterfaceConfig | InvalidValue]
) -> tuple[dict[str, InterfaceConfig | InvalidValue], tuple[ObservedLink, ...]]:
    """The part of the world `scope` can affect: the changed configs, their peers, the
    configs naming them, the configs and links sharing their buckets, the links a
    partner could be among, and so on until nothing is added. Every status and operation
    of `plan` depends only on what is in the same part (its peer, a clash, an existing
    link, a partner), so `plan` of the part is `plan` of everything restricted to the
    part (tests/unit/test_reconcile_scope.py checks this on random worlds)."""
    names: set[str] = set()
    buckets: set[Bucket] = set()
    todo_names = list(scope.names)
    todo_buckets = list(scope.buckets)
    while todo_names or todo_buckets:
        while todo_names:
            name = todo_names.pop()
            if name in names:
                continue
            names.add(name)
            todo_names += scope.configs.naming(name)
            value = desired.get(name)
            if isinstance(value, InterfaceConfig):
                todo_names.append(value.peer)
                todo_buckets.append(config_bucket(value))
        while todo_buckets:
            bucket = todo_buckets.pop()
            if bucket in buckets:
                continue
            buckets.add(bucket)
            todo_names += scope.configs.in_bucket(bucket)
            for at in scope.links.in_bucket(bucket):
                todo_buckets += (link_bucket(other) for other in scope.links.related(at))
    part = {name: desired[name] for name in sorted(names) if name in desired}
    found = sorted(at for bucket in buckets for at in scope.links.in_bucket(bucket))
    return part, tuple(scope.links.observed[at] for at in found)


@dataclass(frozen=True)
class _End:
    """One valid config with its namespace resolved."""

    config: InterfaceConfig
    availability: Availability

    @property
    def ref(self) -> NsRef | None:
        return self.availability.ref

    def link_id(self) -> LinkId | None:
        return None if self.ref is None else link_id(self.config.host_if_name, self.ref)

    def spec(self, ref: NsRef) -> LinkSpec:
        c = self.config
        return LinkSpec(c.host_if_name, ref, c.mac, c.mtu, c.enabled, c.addresses)


@dataclass
class _World:
    """What every lifecycle check may look at."""

    ends: Mapping[str, _End]
    invalid: Mapping[str, InvalidValue]
    clashes: Mapping[str, str]
    statuses: dict[str, Status] = field(default_factory=dict)


def plan(
    desired: Mapping[str, InterfaceConfig | InvalidValue],
    resolve: Resolver,
    observed: Iterable[ObservedLink],
    failures: Mapping[str, str] | None = None,
    blocked: str = "",
    scope: Scope | None = None,
) -> Plan:
    """Compute the minimal operations and every desired key's status; with `scope`, only
    those of the part of the world it can affect (`within`; `observed` is then ignored
    for `scope.links`)."""
    if scope is not None:
        desired, observed = within(scope, desired)
    observed = tuple(observed)
    world, pairs = _world(desired, resolve, observed)
    ops, unapplied, waiting = _operations(pairs, _held(world), observed)
    statuses = _with_waiting(world, waiting)
    statuses = _with_failures(statuses, failures or {})
    if blocked:
        statuses = _with_block(statuses, unapplied, blocked)
    return Plan(ops=ops, statuses=statuses)


# ---- lifecycle ---------------------------------------------------------------------


def _world(
    desired: Mapping[str, InterfaceConfig | InvalidValue],
    resolve: Resolver,
    observed: tuple[ObservedLink, ...],
) -> tuple[_World, list[tuple[_End, _End]]]:
    """Resolve every end and settle its status; return the world and its ready pairs."""
    cache: dict[NamespaceConfig, Availability] = {}
    ends: dict[str, _End] = {}
    invalid: dict[str, InvalidValue] = {}
    for name, value in desired.items():
        if isinstance(value, InvalidValue):
            invalid[name] = value
            continue
        if value.namespace not in cache:
            cache[value.namespace] = resolve(value.namespace)
        ends[name] = _End(value, cache[value.namespace])
    groups = _clash_groups(ends)
    incumbents = _incumbents(groups, ends, observed)
    while True:
        world = _World(ends, invalid, _clash_problems(groups, incumbents))
        pairs = _ready_pairs(world)
        lost = [key for key, name in incumbents.items()
                if world.statuses[name].state != State.CONFIGURED and not _pair_held(world, name)]
        if not lost:
            return world, pairs
        for key in lost:
            del incumbents[key]


_ClashKey = tuple[str, object]


def _clash_groups(ends: Mapping[str, _End]) -> dict[_ClashKey, list[str]]:
    """(kernel name, namespace) -> the configs sharing it, where more than one does."""
    users: dict[_ClashKey, list[str]] = {}
    for name, end in ends.items():
        where: object = end.ref.identity() if end.ref else end.config.namespace
        users.setdefault((end.config.host_if_name, where), []).append(name)
    return {key: sorted(names) for key, names in users.items() if len(names) > 1}


def _incumbents(
    groups: Mapping[_ClashKey, list[str]],
    ends: Mapping[str, _End],
    observed: tuple[ObservedLink, ...],
) -> dict[_ClashKey, str]:
    """Per clash, the config that keeps the name: one whose pair already exists in the
    kernel, chosen pair by pair (by name) so that both ends of one pair win together.

    So a newcomer claiming a name in use cannot take a working pair down, and a pair's
    keys can be renamed by putting the new ones first. `_world` drops an incumbent that
    is not ready for another reason.
    """
    existing = {link_id(link.name, link.netns): link.peer for link in observed}
    group_of = {name: key for key, names in groups.items() for name in names}
    owners = {n for n in group_of if _owns_existing(n, ends, existing)}
    chosen: dict[_ClashKey, str] = {}
    for name in sorted(owners):
        peer = ends[name].config.peer
        claims = {group_of[name]: name}
        if peer in group_of:
            if peer not in owners:
                continue
            claims[group_of[peer]] = peer
        if not claims.keys() & chosen.keys():
            chosen.update(claims)
    return chosen


def _owns_existing(name: str, ends: Mapping[str, _End], existing: Mapping[LinkId, str]) -> bool:
    end = ends[name]
    here = end.link_id()
    peer = ends.get(end.config.peer)
    if here is None or peer is None:
        return False
    return existing.get(here) == peer.config.host_if_name


def _clash_problems(
    groups: Mapping[_ClashKey, list[str]], incumbents: Mapping[_ClashKey, str]
) -> dict[str, str]:
    """Config name -> problem, for configs sharing a kernel name in one namespace."""
    problems: dict[str, str] = {}
    for key, names in groups.items():
        kernel_name = key[0]
        incumbent = incumbents.get(key)
        for name in names:
            if name == incumbent:
                continue
            if incumbent is not None:
                problems[name] = (
                    f"kernel name {kernel_name} is already in use by {incumbent} in the same "
                    f"namespace; give {name} another host_if_name"
                )
                continue
            others = ", ".join(n for n in names if n != name)
            problems[name] = (
                f"kernel name {kernel_name} is also used by {others} in the same namespace; "
                f"give one of them another host_if_name"
            )
    return problems


_Check = Callable[[_World, str, _End], Status | None]


def _own_clash(world: _World, name: str, end: _End) -> Status | None:
    problem = world.clashes.get(name)
    return None if problem is None else Status(State.ERROR, problem)


def _peer_missing(world: _World, name: str, end: _End) -> Status | None:
    peer = end.config.peer
    if peer in world.ends or peer in world.invalid:
        return None
    return Status(State.PENDING, f"waiting for peer {peer} to be configured")


def _peer_invalid(world: _World, name: str, end: _End) -> Status | None:
    peer = end.config.peer
    if peer not in world.invalid:
        return None
    return Status(State.PENDING, f"peer {peer} has an invalid configuration")


def _peer_mismatch(world: _World, name: str, end: _End) -> Status | None:
    peer = end.config.peer
    back = world.ends[peer].config.peer
    if back == name:
        return None
    return Status(
        State.ERROR,
        f"peer mismatch: {name} names {peer} as its peer, but {peer} names {back}; "
        f"make them name each other",
    )


def _peer_clash(world: _World, name: str, end: _End) -> Status | None:
    peer = end.config.peer
    if peer not in world.clashes:
        return None
    return Status(State.PENDING, f"peer {peer} has an error: {world.clashes[peer]}")


def _own_namespace(world: _World, name: str, end: _End) -> Status | None:
    if end.ref is not None:
        return None
    reason = end.availability.reason or f"waiting for {end.config.namespace.describe()}"
    return Status(State.PENDING, reason)


def _peer_namespace(world: _World, name: str, end: _End) -> Status | None:
    peer = world.ends[end.config.peer]
    if peer.ref is not None:
        return None
    reason = peer.availability.reason or f"waiting for {peer.config.namespace.describe()}"
    return Status(State.PENDING, f"peer {end.config.peer}: {reason}")


# Evaluated in order; the first that applies decides the end's status. None applying
# means the end is ready.
_LIFECYCLE: tuple[_Check, ...] = (
    _own_clash,
    _peer_missing,
    _peer_invalid,
    _peer_mismatch,
    _peer_clash,
    _own_namespace,
    _peer_namespace,
)


_CONFIGURED = Status(State.CONFIGURED, "")
"""Every ready end without warnings has this status: statuses are frozen, and a plan of
10,000 ends need not hold 10,000 equal ones."""


def _ready_pairs(world: _World) -> list[tuple[_End, _End]]:
    """Fill `world.statuses`; return the realized pairs, each once, ordered by name."""
    for name, err in world.invalid.items():
        world.statuses[name] = Status(State.ERROR, str(err))
    ready: list[str] = []
    for name, end in world.ends.items():
        status = next((s for c in _LIFECYCLE if (s := c(world, name, end))), None)
        warnings = end.availability.warnings
        if status is None:
            ready.append(name)
            status = _CONFIGURED
        if status.warnings != warnings:
            status = Status(status.state, status.reason, warnings)
        world.statuses[name] = status
    return [
        (world.ends[name], world.ends[world.ends[name].config.peer])
        for name in sorted(ready)
        if name < world.ends[name].config.peer
    ]


def _pair_held(world: _World, name: str) -> bool:
    end = world.ends[name]
    peer = world.ends.get(end.config.peer)
    return end.availability.hold or (peer is not None and peer.availability.hold)


def _held(world: _World) -> set[LinkId]:
    """Links to keep as they are: their pair waits on a namespace nobody knows about yet."""
    held: set[LinkId] = set()
    for end in world.ends.values():
        peer = world.ends.get(end.config.peer)
        if peer is None or peer.config.peer != end.config.name:
            continue
        if end.availability.hold or peer.availability.hold:
            held.update(i for i in (end.link_id(), peer.link_id()) if i is not None)
    return held


def _with_waiting(world: _World, waiting: set[str]) -> dict[str, Status]:
    """Ends of held pairs that need operations wait, with the reason of the hold."""
    result = dict(world.statuses)
    for name in waiting:
        current = result[name]
        end = world.ends[name]
        peer = world.ends[end.config.peer]
        why = end.availability.reason if end.availability.hold else peer.availability.reason
        if current.state == State.CONFIGURED:
            result[name] = Status(State.PENDING, f"not applied: {why}", current.warnings)
    return result


def _with_failures(
    statuses: Mapping[str, Status], failures: Mapping[str, str]
) -> dict[str, Status]:
    result = dict(statuses)
    for name, reason in failures.items():
        current = result.get(name)
        if current is not None and current.state != State.ERROR:
            result[name] = Status(State.ERROR, reason, current.warnings)
    return result


def _with_block(
    statuses: Mapping[str, Status], unapplied: set[str], blocked: str
) -> dict[str, Status]:
    result = dict(statuses)
    for name, current in statuses.items():
        if current.state != State.CONFIGURED:
            continue
        if name in unapplied:
            result[name] = Status(State.ERROR, f"not applied: {blocked}", current.warnings)
        else:
            warning = f"the pair exists as configured, but changes are blocked: {blocked}"
            result[name] = Status(State.CONFIGURED, "", (*current.warnings, warning))
    return result


# ---- operations --------------------------------------------------------------------


def _operations(
    pairs: list[tuple[_End, _End]], held: set[LinkId], observed: tuple[ObservedLink, ...]
) -> tuple[tuple[Op, ...], set[str], set[str]]:
    """The operations, the config names of the ends they create or change, and those of
    the ends of held pairs that would need operations (none are planned for them)."""
    by_id = {link_id(link.name, link.netns): link for link in observed}
    kept: set[LinkId] = set(held)
    creates: list[CreateVethPair] = []
    changes: list[_Change] = []
    unapplied: set[str] = set()
    waiting: set[str] = set()
    for a, b in pairs:
        spec_a, spec_b = _specs(a, b)
        held_pair = a.availability.hold or b.availability.hold
        found_a = by_id.get(link_id(spec_a.name, spec_a.netns))
        found_b = by_id.get(link_id(spec_b.name, spec_b.netns))
        if found_a and found_b and found_a.peer == spec_b.name and found_b.peer == spec_a.name:
            kept.update((link_id(spec_a.name, spec_a.netns), link_id(spec_b.name, spec_b.netns)))
            diff_a, diff_b = _diff(spec_a, found_a), _diff(spec_b, found_b)
            touched = {end.config.name for end, diff in ((a, diff_a), (b, diff_b)) if diff}
            if held_pair:
                waiting |= touched
                continue
            changes += diff_a + diff_b
            unapplied |= touched
        elif held_pair:
            waiting |= {a.config.name, b.config.name}
        else:
            creates.append(CreateVethPair(spec_a, spec_b))
            unapplied |= {a.config.name, b.config.name}
    deletes = _deletes([link for key, link in by_id.items() if key not in kept], kept, observed)
    return (*deletes, *creates, *_ordered(changes)), unapplied, waiting


def _specs(a: _End, b: _End) -> tuple[LinkSpec, LinkSpec]:
    assert a.ref is not None and b.ref is not None, "only ready pairs are realized"
    return a.spec(a.ref), b.spec(b.ref)


def _deletes(
    unwanted: list[ObservedLink], kept: set[LinkId], observed: tuple[ObservedLink, ...]
) -> list[DeleteLink]:
    """One DeleteLink per observed pair: deleting one end removes the other.

    A link whose partner is kept stays too, since deleting it would take the partner along.
    """
    partners = Partners(observed)
    gone: set[LinkId] = set()
    ops: list[DeleteLink] = []
    for link in sorted(unwanted, key=lambda k: link_id(k.name, k.netns)):
        if link_id(link.name, link.netns) in gone:
            continue
        other = partners.of(link)
        if other is not None and link_id(other.name, other.netns) in kept:
            continue
        ops.append(DeleteLink(link.name, link.netns))
        gone.add(link_id(link.name, link.netns))
        if other is not None:
            gone.add(link_id(other.name, other.netns))
    return ops


def _diff(spec: LinkSpec, link: ObservedLink) -> list[_Change]:
    ops: list[_Change] = []
    mac = spec.mac if spec.mac and spec.mac != link.mac.lower() else None
    mtu = spec.mtu if spec.mtu and spec.mtu != link.mtu else None
    up = spec.up if spec.up != link.up else None
    if (mac, mtu, up) != (None, None, None):
        ops.append(SetLink(spec.name, spec.netns, mac=mac, mtu=mtu, up=up))
    wanted = set(spec.addresses)
    present = {normal_address(a) for a in link.addresses}
    present = {a for a in present if a in wanted or not _is_link_local(a)}
    if up is False:  # the kernel drops IPv6 addresses with the link: add them back after
        present = {a for a in present if not is_ipv6(a)}
    ops += [DelAddress(spec.name, spec.netns, a) for a in sorted(present - wanted)]
    ops += [AddAddress(spec.name, spec.netns, a) for a in sorted(wanted - present)]
    return ops


_LINK_LOCAL = ipaddress.ip_network("fe80::/10")


def _is_link_local(address: str) -> bool:
    try:
        return ipaddress.ip_interface(address).ip in _LINK_LOCAL
    except ValueError:
        return False


_Change = SetLink | DelAddress | AddAddress
_KIND_ORDER: dict[type, int] = {SetLink: 0, DelAddress: 1, AddAddress: 2}


def _ordered(changes: list[_Change]) -> list[_Change]:
    def key(op: _Change) -> tuple[int, str, NsRef, str]:
        address = "" if isinstance(op, SetLink) else op.address
        return (_KIND_ORDER[type(op)], op.name, op.netns, address)

    return sorted(changes, key=key)
