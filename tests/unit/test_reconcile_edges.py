"""controller.reconcile at the edges bench/mutation.py found untested: three-way name
clashes, a pair held behind an unrelated end, an availability without a reason, a clash in
a namespace nobody knows yet, a delete after a link its kept partner keeps, an address the
controller cannot parse, the order of one batch's changes."""

from __future__ import annotations

import dataclasses

from controller.model import NamespaceConfig
from controller.ops import (
    AddAddress,
    DelAddress,
    DeleteLink,
    LinkSpec,
    NsRef,
    SetLink,
    State,
    Status,
)
from controller.reconcile import Availability
from tests.unit.test_reconcile import HOST, NS1, NS2, PAIR, SPEC1, SPEC2, V1, V2, end, run, seen


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


def _docker_unknown(ns: NamespaceConfig) -> Availability:
    if ns.kind == "microservice":
        return Availability(None, "waiting for microservice web; Docker down", hold=True)
    return Availability(NsRef.named(ns.name) if ns.kind == "named" else HOST)


def test_a_clash_in_a_namespace_nobody_knows_yet_is_an_error_for_both() -> None:
    """Neither pair exists: an end whose namespace is not resolved owns no link, so neither
    keeps the name while Docker is down; both are told at once."""
    configs = {"a": end("a", "b", host="eth9", microservice="web"), "b": end("b", "a", "ns1"),
               "c": end("c", "d", host="eth9", microservice="web"), "d": end("d", "c", "ns2")}
    result = run(configs, resolve=_docker_unknown)
    for name, other in (("a", "c"), ("c", "a")):
        assert result.statuses[name] == Status(
            State.ERROR, f"kernel name eth9 is also used by {other} in the same namespace; "
            "give one of them another host_if_name")


def test_a_link_kept_by_its_partner_does_not_stop_the_next_delete() -> None:
    """a's pair is held (b waits on Docker), so a's kernel partner ab stays; the stray pair
    after it in order still goes."""
    a, b = end("a", "b"), end("b", "a", microservice="web")
    observed = (seen(LinkSpec("a", HOST, up=True), "ab"), seen(LinkSpec("ab", NS1, up=True), "a"),
                seen(LinkSpec("stray", NS2, up=True), "stray2"),
                seen(LinkSpec("stray2", NS1, up=True), "stray"))
    assert run({"a": a, "b": b}, observed, resolve=_docker_unknown).ops == (
        DeleteLink("stray", NS2),)


def test_an_address_the_controller_cannot_parse_is_deleted_not_taken_for_link_local() -> None:
    """Only the kernel's own fe80::/10 addresses are left alone when not configured."""
    v1 = dataclasses.replace(V1, addresses=())
    observed = (seen(SPEC1, "veth2", addresses=("fe80::5/64", "not-an-address")), PAIR[1])
    assert run({"veth1": v1, "veth2": V2}, observed).ops == (
        DelAddress("veth1", NS1, "not-an-address"),)


def test_a_batch_changes_links_first_then_deletes_addresses_then_adds_them() -> None:
    """Across links too: every SetLink, then every DelAddress, then every AddAddress (a
    primary address deleted after a new one was added would take it along)."""
    v1 = dataclasses.replace(V1, addresses=("10.0.0.2/24",))
    v2 = dataclasses.replace(V2, mtu=9000, addresses=("10.0.0.1/24",))
    observed = (seen(SPEC1, "veth2", addresses=("10.0.0.9/24",)),
                seen(SPEC2, "veth1", addresses=("10.0.0.8/24",)))
    assert run({"veth1": v1, "veth2": v2}, observed).ops == (
        SetLink("veth2", NS2, mtu=9000),
        DelAddress("veth1", NS1, "10.0.0.9/24"),
        DelAddress("veth2", NS2, "10.0.0.8/24"),
        AddAddress("veth1", NS1, "10.0.0.2/24"),
        AddAddress("veth2", NS2, "10.0.0.1/24"),
    )
