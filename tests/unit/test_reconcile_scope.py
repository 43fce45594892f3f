"""controller.reconcile with a `Scope`: the plan of the part of the world a change can
affect is the full plan restricted to that part, on random worlds."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.model import InterfaceConfig, InvalidValue, NamespaceConfig
from controller.ops import CreateVethPair, NsRef, ObservedLink, Op
from controller.reconcile import (
    Availability,
    Bucket,
    ConfigIndex,
    LinkIndex,
    Scope,
    config_bucket,
    link_bucket,
    plan,
    ref_bucket,
    within,
)

NAMES = ("a", "b", "c", "d", "e", "f", "g")
KERNEL_NAMES = ("a", "b", "c", "x", "y")
NAMESPACES = (
    NamespaceConfig(),
    NamespaceConfig(kind="named", name="n1"),
    NamespaceConfig(kind="named", name="n2"),
    NamespaceConfig(kind="pid", pid=7),
    NamespaceConfig(kind="file", path="/f1"),
    NamespaceConfig(kind="microservice", microservice="m1"),
    NamespaceConfig(kind="microservice", microservice="m2"),
)
REFS = (NsRef.host(), NsRef.named("n1"), NsRef.named("n2"), NsRef.of_pid(7),
        NsRef.of_path("/f1"), NsRef.of_path("/m2"))
ADDRESSES = ("10.0.0.1/24", "10.0.0.2/24", "2001:db8::1/64", "fe80::1/64")
# What a namespace resolves to: m1's container may share /f1 with the file reference.
AVAILABILITIES = (
    Availability(None, "not there"),
    Availability(NsRef.of_path("/f1")),
    Availability(NsRef.of_path("/m2")),
    Availability(NsRef.of_path("/m2"), "Docker unreachable", hold=True),
    Availability(None, "Docker not listed yet", hold=True),
)

configs = st.builds(
    lambda name, host, ns, peer, addresses, up, mtu: InterfaceConfig(
        name=name, host_if_name=host, description="", enabled=up, mac="", mtu=mtu,
        addresses=tuple(sorted(addresses)), namespace=ns, peer=peer),
    st.sampled_from(NAMES), st.sampled_from(KERNEL_NAMES), st.sampled_from(NAMESPACES),
    st.sampled_from((*NAMES, "zz")), st.sets(st.sampled_from(ADDRESSES), max_size=2),
    st.booleans(), st.sampled_from((0, 1400, 1500)))

links = st.builds(
    lambda name, ref, peer, addresses, up, mtu: ObservedLink(
        name=name, netns=ref, ifindex=1, mac="", mtu=mtu, up=up,
        addresses=tuple(addresses), peer=peer),
    st.sampled_from(KERNEL_NAMES), st.sampled_from(REFS), st.sampled_from(KERNEL_NAMES),
    st.lists(st.sampled_from(ADDRESSES), max_size=2, unique=True), st.booleans(),
    st.sampled_from((1400, 1500)))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, InterfaceConfig | InvalidValue], object,
                                     tuple[ObservedLink, ...], dict[str, str], str]:
    desired: dict[str, InterfaceConfig | InvalidValue] = {}
    for name in draw(st.sets(st.sampled_from(NAMES))):
        if draw(st.integers(0, 9)) == 0:
            desired[name] = InvalidValue(name, "mtu", "not a number")
        else:
            config = draw(configs)
            desired[name] = InterfaceConfig(**{**config.__dict__, "name": name})
    places = {ns: draw(st.sampled_from(AVAILABILITIES)) for ns in NAMESPACES
              if ns.kind in ("microservice", "file", "pid")}

    def resolve(ns: NamespaceConfig) -> Availability:
        if ns.kind == "named":
            return Availability(NsRef.named(ns.name))
        if ns.kind == "pid":
            return Availability(NsRef.of_pid(ns.pid)) if places[ns].ref else places[ns]
        return places.get(ns, Availability(NsRef.host()))

    observed = tuple(draw(st.lists(links, max_size=8)))
    failures = {name: "boom" for name in draw(st.sets(st.sampled_from(NAMES), max_size=2))}
    blocked = draw(st.sampled_from(("", "helper down")))
    return desired, resolve, observed, failures, blocked


T = TypeVar("T")

def op_bucket(op: Op) -> Bucket:
    if isinstance(op, CreateVethPair):
        return ref_bucket(op.a.name, op.a.netns)
    return ref_bucket(op.name, op.netns)


@settings(max_examples=400, deadline=None)
@given(worlds(), st.sets(st.sampled_from((*NAMES, "zz")), max_size=3),
       st.sets(st.tuples(st.sampled_from(KERNEL_NAMES), st.sampled_from(
           [ref_bucket("", ref)[1] for ref in REFS])), max_size=2))
def test_the_plan_of_a_scope_is_the_full_plan_restricted_to_it(
        world: tuple, names: set[str], buckets: set[Bucket]) -> None:  # type: ignore[type-arg]
    desired, resolve, observed, failures, blocked = world
    scope = Scope(frozenset(names), frozenset(buckets), ConfigIndex(desired), LinkIndex(observed))
    full = plan(desired, resolve, observed, failures, blocked)
    part = plan(desired, resolve, (), failures, blocked, scope)
    configs, seen = within(scope, desired)
    assert names & set(desired) <= set(configs)
    assert part.statuses == {name: full.statuses[name] for name in configs}
    inside = {link_bucket(link) for link in seen} | {
        config_bucket(c) for c in configs.values() if isinstance(c, InterfaceConfig)}
    assert part.ops == tuple(op for op in full.ops if op_bucket(op) in inside)


values = st.one_of(st.none(), st.just(InvalidValue("v", "mtu", "not a number")), configs)


@settings(max_examples=400, deadline=None)
@given(worlds(), st.dictionaries(st.sampled_from(NAMES), values, min_size=1, max_size=3))
def test_what_a_change_cannot_affect_keeps_its_statuses_and_operations(
        world: tuple, changes: dict[str, InterfaceConfig | InvalidValue | None]) -> None:  # type: ignore[type-arg]
    """The agent's use of a scope: the configs put or deleted, with the peers and buckets
    of their previous values. Outside the part of the world that scope reaches, the full
    plan after the change is the full plan before it."""
    before, resolve, observed, failures, blocked = world
    after = dict(before)
    index = ConfigIndex(before)
    names: set[str] = set()
    buckets: set[Bucket] = set()
    for name, new in changes.items():
        if isinstance(new, InterfaceConfig):
            new = InterfaceConfig(**{**new.__dict__, "name": name})
        old = after.pop(name, None)
        if new is not None:
            after[name] = new
        index.put(name, old, new)
        names.add(name)
        if isinstance(old, InterfaceConfig):
            names.add(old.peer)
            buckets.add(config_bucket(old))
    assert_same_index(index, ConfigIndex(after), after)
    scope = Scope(frozenset(names), frozenset(buckets), index, LinkIndex(observed))
    configs, seen = within(scope, after)
    inside = buckets | {link_bucket(link) for link in seen} | {
        config_bucket(c) for c in configs.values() if isinstance(c, InterfaceConfig)}
    was, now = (plan(d, resolve, observed, failures, blocked) for d in (before, after))
    outside = set(after) - set(configs)
    assert {n: now.statuses[n] for n in outside} == {n: was.statuses[n] for n in outside}
    assert [op for op in now.ops if op_bucket(op) not in inside] == [
        op for op in was.ops if op_bucket(op) not in inside]


def assert_same_index(kept: ConfigIndex, built: ConfigIndex,
                      desired: dict[str, InterfaceConfig | InvalidValue]) -> None:
    for name in (*NAMES, "zz"):
        assert set(kept.naming(name)) == set(built.naming(name))
    for value in desired.values():
        if isinstance(value, InterfaceConfig):
            bucket = config_bucket(value)
            assert set(kept.in_bucket(bucket)) == set(built.in_bucket(bucket))


def test_an_index_kept_up_to_date_equals_one_built_at_once() -> None:
    first = InterfaceConfig("a", "x", "", True, "", 0, (), NAMESPACES[1], "b")
    moved = InterfaceConfig("a", "y", "", True, "", 0, (), NAMESPACES[2], "c")
    kept = ConfigIndex({"a": first})
    kept.put("a", first, moved)
    built = ConfigIndex({"a": moved})
    for index in (kept, built):
        assert set(index.naming("c")) == {"a"} and not set(index.naming("b"))
        assert set(index.in_bucket(config_bucket(moved))) == {"a"}
        assert not set(index.in_bucket(config_bucket(first)))


def _traced(build: Callable[[], T]) -> tuple[T, int]:
    """What `build` makes, and the bytes still allocated after it (tracemalloc)."""
    tracemalloc.start()
    try:
        made = build()
        return made, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_the_link_index_costs_little_per_link() -> None:
    """It lives between bursts (10,000 links in issue 16's controller RSS figure): a key
    one link holds keeps a position, not a list of one."""
    ref = NsRef.named("ns1")
    observed = [ObservedLink(name=f"v{i}{side}", netns=ref, ifindex=i, mac="", mtu=1500,
                             up=True, addresses=(), peer=f"v{i}{'ab'[side == 'a']}")
                for i in range(1000) for side in "ab"]
    index, kept = _traced(lambda: LinkIndex(observed))
    assert index.in_bucket(("v7a", ("name", "ns1"))) == [14]
    assert [link.name for link in index.related(14)] == ["v7b", "v7a"]
    assert kept < 250 * len(observed), kept  # 445 bytes a link with lists of one


def test_the_config_index_costs_little_per_config() -> None:
    """It lives as long as the configs (10,000 in issue 16's controller RSS figure): a key
    one config holds keeps its name, not a set of one."""
    ns = NamespaceConfig(kind="named", name="ns1")
    desired: dict[str, InterfaceConfig | InvalidValue] = {
        f"v{i}{side}": InterfaceConfig(f"v{i}{side}", f"v{i}{side}", "", True, "", 0, (), ns,
                                       f"v{i}{'ab'[side == 'a']}")
        for i in range(1000) for side in "ab"}
    index, kept = _traced(lambda: ConfigIndex(desired))
    assert set(index.naming("v7a")) == {"v7b"}
    assert set(index.in_bucket(("v7a", ("name", "ns1")))) == {"v7a"}
    assert kept < 200 * len(desired), kept  # 604 bytes a config with sets of one
