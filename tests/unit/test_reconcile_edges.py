"""controller.reconcile at the edges bench/mutation.py found untested: three-way name
clashes, a pair held behind an unrelated end, an availability without a reason."""

from __future__ import annotations

import dataclasses

from controller.model import NamespaceConfig
from controller.ops import LinkSpec, NsRef, SetLink, State, Status
from controller.reconcile import Availability
from tests.unit.test_reconcile import HOST, NS1, PAIR, V1, V2, end, run, seen


def test_a_three_way_clash_names_the_other_two() -> None:
    result = run({name: end(name, peer, "ns1", host="eth9")
                  for name, peer in (("a", "b"), ("c", "d"), ("e", "f"))})
    assert result.statuses["a"] == Status(
        State.ERROR, "kernel name eth9 is also used by c, e in the same namespace; "
        "give one of them another host_if_name")
    assert result.ops == ()


def test_every_newcomer_to_a_name_in_use_is_refused() -> None:
    a, b = end("a", "b", "ns1"), end("b", "a", "ns2")
    existing = (seen(LinkSpec("a", NsRef.named("ns1"), up=True), "b"),
                seen(LinkSpec("b", NsRef.named("ns2"), up=True), "a"))
    newcomers = {name: end(name, "zz", "ns1", host="a") for name in ("c", "e")}
    result = run({"a": a, "b": b, **newcomers}, existing)
    for name in newcomers:
        assert result.statuses[name] == Status(
            State.ERROR, f"kernel name a is already in use by a in the same namespace; "
            f"give {name} another host_if_name")


def test_a_held_pair_is_held_whatever_comes_before_it() -> None:
    a, b = end("a", "b"), end("b", "a", microservice="web")
    web = NsRef.of_path("/var/run/docker/netns/abc")
    observed = (seen(LinkSpec("a", HOST, up=True), "b"), seen(LinkSpec("b", web, up=True), "a"))

    def unknown(ns: NamespaceConfig) -> Availability:
        if ns.kind == "microservice":
            return Availability(None, "Docker down", hold=True)
        return Availability(HOST)

    lonely = end("lonely", "nobody", "ns1")  # an end whose peer is not configured, first
    assert run({"lonely": lonely, "a": a, "b": b}, observed, resolve=unknown).ops == ()


def test_an_unavailable_namespace_without_a_reason_says_what_it_waits_for() -> None:
    def unavailable(ns: NamespaceConfig) -> Availability:
        return Availability(None) if ns.kind == "named" else Availability(HOST)

    result = run({"a": end("a", "b", "ns1"), "b": end("b", "a")}, resolve=unavailable)
    assert result.statuses["a"] == Status(State.PENDING, "waiting for namespace named=ns1")


def test_a_block_reaches_every_configured_end_whatever_comes_before_it() -> None:
    block = "helper refuses every batch"
    result = run({"lonely": end("lonely", "nobody", "ns1"), "veth1": V1, "veth2": V2}, PAIR,
                 blocked=block)
    assert result.statuses["veth1"].warnings == (
        f"the pair exists as configured, but changes are blocked: {block}",)


def test_a_held_pair_with_changes_does_not_stop_the_next_pairs_changes() -> None:
    a, b = end("a", "b", mtu=9000), end("b", "a", microservice="web")
    web = NsRef.of_path("/var/run/docker/netns/abc")
    observed = (seen(LinkSpec("a", HOST, up=True), "b"), seen(LinkSpec("b", web, up=True), "a"),
                *PAIR)

    def held_web(ns: NamespaceConfig) -> Availability:
        if ns.kind == "microservice":
            return Availability(web, "Docker down", hold=True)
        return Availability(NsRef.named(ns.name) if ns.kind == "named" else HOST)

    v1 = dataclasses.replace(V1, mtu=9000)
    result = run({"a": a, "b": b, "veth1": v1, "veth2": V2}, observed, resolve=held_web)
    assert result.ops == (SetLink("veth1", NS1, mtu=9000),)  # none for the held pair
