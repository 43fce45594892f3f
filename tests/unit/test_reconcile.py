"""controller.reconcile: statuses and minimal operations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from controller.model import InterfaceConfig, InvalidValue, NamespaceConfig
from controller.observed import apply
from controller.ops import (
    AddAddress,
    CreateVethPair,
    DeleteLink,
    LinkSpec,
    NsRef,
    ObservedLink,
    SetLink,
    State,
    Status,
)
from controller.reconcile import (
    HELPER_DOWN_GRACE_S,
    Availability,
    Block,
    Plan,
    plan,
    published_block,
)

NS1, NS2 = NsRef.named("ns1"), NsRef.named("ns2")
HOST = NsRef.host()


def end(
    name: str,
    peer: str,
    ns: str = "",
    *,
    host: str = "",
    mac: str = "",
    mtu: int = 0,
    addresses: tuple[str, ...] = (),
    enabled: bool = True,
    microservice: str = "",
) -> InterfaceConfig:
    if microservice:
        namespace = NamespaceConfig(kind="microservice", microservice=microservice)
    else:
        namespace = NamespaceConfig(kind="named", name=ns) if ns else NamespaceConfig()
    return InterfaceConfig(
        name=name,
        host_if_name=host or name,
        description="",
        enabled=enabled,
        mac=mac,
        mtu=mtu,
        addresses=addresses,
        namespace=namespace,
        peer=peer,
    )


def resolver(running: Mapping[str, NsRef] | None = None, warnings: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    running = running or {}

    def resolve(ns: NamespaceConfig) -> Availability:
        if ns.kind == "named":
            return Availability(NsRef.named(ns.name))
        if ns.kind == "microservice":
            ref = running.get(ns.microservice)
            if ref is None:
                return Availability(None, f"waiting for microservice {ns.microservice}")
            return Availability(ref, warnings=warnings)
        return Availability(HOST)

    return resolve


def seen(spec: LinkSpec, peer: str, **changes: object) -> ObservedLink:
    link = ObservedLink(
        name=spec.name,
        netns=spec.netns,
        ifindex=7,
        mac=spec.mac,
        mtu=spec.mtu,
        up=spec.up,
        addresses=spec.addresses,
        peer=peer,
    )
    return dataclasses.replace(link, **changes)  # type: ignore[arg-type]


V1 = end(
    "veth1",
    "veth2",
    "ns1",
    mac="d2:74:8c:12:67:d2",
    mtu=1500,
    addresses=("192.168.22.1/24", "2001:db8::ff00:89e3:bb42/48"),
)
V2 = end(
    "veth2",
    "veth1",
    "ns2",
    mac="92:c7:42:67:ab:cd",
    mtu=1500,
    addresses=("192.168.22.2/24", "2001:842::ff00:13c7:1245/48"),
)
SPEC1 = LinkSpec("veth1", NS1, V1.mac, 1500, True, V1.addresses)
SPEC2 = LinkSpec("veth2", NS2, V2.mac, 1500, True, V2.addresses)
PAIR = (seen(SPEC1, "veth2"), seen(SPEC2, "veth1"))


def run(desired: Mapping[str, InterfaceConfig | InvalidValue], observed=(), **kw) -> Plan:  # type: ignore[no-untyped-def]
    return plan(desired, kw.pop("resolve", resolver()), observed, **kw)


def configured() -> Status:
    return Status(State.CONFIGURED, "")


# ---- pairing states ------------------------------------------------------------


def test_both_ends_create_one_pair_in_place() -> None:
    result = run({"veth1": V1, "veth2": V2})
    assert result.ops == (CreateVethPair(SPEC1, SPEC2),)
    assert result.statuses == {"veth1": configured(), "veth2": configured()}


def test_ready_ends_share_one_status() -> None:
    """A plan of 10,000 ready ends (issue 16's controller RSS figure) holds one status for
    them all, not 10,000 equal ones; a warning gives an end its own."""
    desired = {f"v{i}{side}": end(f"v{i}{side}", f"v{i}{'ab'[side == 'a']}", "ns1")
               for i in range(50) for side in "ab"}
    result = run(desired)
    assert len(result.ops) == 50
    assert {id(status) for status in result.statuses.values()} == {
        id(result.statuses["v0a"])}
    assert result.statuses["v0a"] == configured()
    warned = run({"veth1": end("veth1", "veth2", microservice="m"), "veth2": V2},
                 resolve=resolver({"m": NS1}, warnings=("w",)))
    assert warned.statuses["veth1"] == Status(State.CONFIGURED, "", ("w",))
    assert warned.statuses["veth2"] == configured()


def test_single_end_waits_for_its_peer() -> None:
    result = run({"veth1": V1})
    assert result.ops == ()
    assert result.statuses["veth1"] == Status(
        State.PENDING, "waiting for peer veth2 to be configured"
    )


def test_single_end_removes_the_pair_it_had() -> None:
    result = run({"veth1": V1}, PAIR)
    assert result.ops == (DeleteLink("veth1", NS1),)


def test_invalid_value_is_error_and_its_peer_pending() -> None:
    bad = InvalidValue("/k/veth2", "mtu", "too small")
    result = run({"veth1": V1, "veth2": bad}, PAIR)
    assert result.statuses["veth2"] == Status(State.ERROR, str(bad))
    assert result.statuses["veth1"] == Status(
        State.PENDING, "peer veth2 has an invalid configuration"
    )
    assert result.ops == (DeleteLink("veth1", NS1),)


def test_invalid_key_never_blocks_a_valid_pair() -> None:
    a, b = end("a", "b"), end("b", "a", "ns1")
    bad = InvalidValue("/k/x", "<value>", "not valid JSON")
    result = run({"a": a, "b": b, "x": bad, "veth1": V1, "veth2": V2})
    creates = [op for op in result.ops if isinstance(op, CreateVethPair)]
    assert [(op.a.name, op.b.name) for op in creates] == [("a", "b"), ("veth1", "veth2")]
    assert result.statuses["x"].state == State.ERROR
    assert {result.statuses[n].state for n in ("a", "b", "veth1", "veth2")} == {State.CONFIGURED}


def test_asymmetric_peers_error_on_the_end_pointing_at_a_taken_peer() -> None:
    a, b = end("a", "b"), end("b", "c")
    result = run({"a": a, "b": b})
    assert result.statuses["a"].state == State.ERROR
    assert result.statuses["a"].reason.startswith("peer mismatch: a names b")
    assert result.statuses["b"] == Status(State.PENDING, "waiting for peer c to be configured")
    assert result.ops == ()


def test_third_party_pointing_at_a_pair_does_not_break_it() -> None:
    a, b, c = end("a", "b"), end("b", "a", "ns1"), end("c", "a", "ns2")
    result = run({"a": a, "b": b, "c": c})
    assert result.statuses["a"] == configured() == result.statuses["b"]
    assert result.statuses["c"].state == State.ERROR
    assert len(result.ops) == 1


def test_microservice_namespace_pending_until_running() -> None:
    a, b = end("a", "b"), end("b", "a", microservice="web")
    waiting = run({"a": a, "b": b})
    assert waiting.ops == ()
    assert waiting.statuses["b"] == Status(State.PENDING, "waiting for microservice web")
    assert waiting.statuses["a"] == Status(State.PENDING, "peer b: waiting for microservice web")
    web = NsRef.of_path("/var/run/docker/netns/abc")
    running = run({"a": a, "b": b}, resolve=resolver({"web": web}, ("two containers",)))
    assert running.ops == (
        CreateVethPair(LinkSpec("a", HOST, up=True), LinkSpec("b", web, up=True)),
    )
    assert running.statuses["b"] == Status(State.CONFIGURED, "", ("two containers",))


def test_microservice_gone_deletes_the_pair() -> None:
    web = NsRef.of_path("/var/run/docker/netns/abc")
    a, b = end("a", "b"), end("b", "a", microservice="web")
    observed = (seen(LinkSpec("a", HOST, up=True), "b"), seen(LinkSpec("b", web, up=True), "a"))
    result = run({"a": a, "b": b}, observed)
    assert result.ops == (DeleteLink("a", HOST),)
    assert result.statuses["a"].state == State.PENDING


def test_same_kernel_name_in_one_namespace_errors_both() -> None:
    a = end("a", "b", "ns1", host="eth9")
    c = end("c", "d", "ns1", host="eth9")
    result = run({"a": a, "b": end("b", "a"), "c": c, "d": end("d", "c", "ns2")})
    for name in ("a", "c"):
        assert result.statuses[name].state == State.ERROR
        assert "kernel name eth9" in result.statuses[name].reason
    assert result.statuses["b"].state == State.PENDING
    assert result.statuses["b"].reason.startswith("peer a has an error")
    assert result.ops == ()


def test_a_newcomer_cannot_take_the_name_of_an_existing_pair() -> None:
    a, b = end("a", "b", "ns1"), end("b", "a", "ns2")
    existing = apply((), run({"a": a, "b": b}).ops)
    newcomer = end("c", "zz", "ns1", host="a")
    result = run({"a": a, "b": b, "c": newcomer}, existing)
    assert result.ops == ()
    assert result.statuses["a"] == result.statuses["b"] == configured()
    assert result.statuses["c"] == Status(
        State.ERROR, "kernel name a is already in use by a in the same namespace; "
        "give c another host_if_name")


def test_keys_renamed_by_putting_the_new_ones_first_keep_the_pair() -> None:
    a, b = end("a", "b", "ns1"), end("b", "a", "ns2")
    existing = apply((), run({"a": a, "b": b}).ops)
    renamed = {"x": end("x", "y", "ns1", host="a"), "y": end("y", "x", "ns2", host="b")}
    both = run({"a": a, "b": b, **renamed}, existing)
    assert both.ops == ()
    assert both.statuses["a"] == both.statuses["b"] == configured()
    assert both.statuses["x"].reason == (
        "kernel name a is already in use by a in the same namespace; give x another "
        "host_if_name")
    after = run(renamed, existing)  # the old keys are deleted: the same links, no flap
    assert after.ops == ()
    assert after.statuses["x"] == after.statuses["y"] == configured()


@pytest.mark.parametrize(("old", "new"), [("ab", "xy"), ("xy", "ab"), ("ay", "xb")])
def test_renamed_keys_never_flap_whatever_their_names(old: str, new: str) -> None:
    def pair(first: str, second: str) -> dict[str, InterfaceConfig | InvalidValue]:
        return {first: end(first, second, "ns1", host="eth0"),
                second: end(second, first, "ns2", host="eth1")}

    existing = apply((), run(pair(*old)).ops)
    assert run({**pair(*old), **pair(*new)}, existing).ops == ()
    assert run(pair(*new), existing).ops == ()


def test_an_incumbent_that_is_not_ready_shares_the_clash() -> None:
    a, b = end("a", "b", "ns1"), end("b", "a", microservice="web")
    web = NsRef.of_path("/var/run/docker/netns/abc")
    existing = apply((), run({"a": a, "b": b}, resolve=resolver({"web": web})).ops)
    both = {"a": a, "b": b, "c": end("c", "d", "ns1", host="a"), "d": end("d", "c", "ns2")}
    result = run(both, existing)  # web stopped: a's pair goes, so a keeps no claim
    assert result.ops == (DeleteLink("a", NS1),)
    assert result.statuses["a"].state == result.statuses["c"].state == State.ERROR
    assert run(both, apply(existing, result.ops)).statuses == result.statuses


def test_pair_waiting_on_an_unknown_namespace_is_held_as_it_is() -> None:
    a, b = end("a", "b"), end("b", "a", microservice="web")
    web = NsRef.of_path("/var/run/docker/netns/abc")
    observed = (seen(LinkSpec("a", HOST, up=True), "b"), seen(LinkSpec("b", web, up=True), "a"))

    def unknown(ns: NamespaceConfig) -> Availability:
        if ns.kind == "microservice":
            return Availability(None, "waiting for microservice web; Docker down", hold=True)
        return Availability(HOST)

    result = run({"a": a, "b": b}, observed, resolve=unknown)
    assert result.ops == ()
    assert result.statuses["b"] == Status(
        State.PENDING, "waiting for microservice web; Docker down")
    assert run({"a": a}, observed, resolve=unknown).ops == (DeleteLink("a", HOST),)


def test_a_held_last_seen_namespace_gets_no_create_and_no_change() -> None:
    """Docker unreachable: the container last seen may have died, so its SandboxKey may be
    stale. What exists is kept; nothing is created or changed there until Docker answers."""
    a, b = end("a", "b"), end("b", "a", microservice="web", mtu=1400)
    web = NsRef.of_path("/var/run/docker/netns/abc")
    down = "Docker unreachable at unix:///d.sock"

    def last_seen(ns: NamespaceConfig) -> Availability:
        if ns.kind == "microservice":
            return Availability(web, down, ("keeping container c as last seen",), hold=True)
        return Availability(HOST)

    missing = run({"a": a, "b": b}, resolve=last_seen)
    assert missing.ops == ()
    assert missing.statuses["a"] == Status(State.PENDING, f"not applied: {down}")
    assert missing.statuses["b"].reason == f"not applied: {down}"
    assert missing.statuses["b"].warnings == ("keeping container c as last seen",)
    same = (seen(LinkSpec("a", HOST, up=True), "b"),
            seen(LinkSpec("b", web, mtu=1400, up=True), "a"))
    kept = run({"a": a, "b": b}, same, resolve=last_seen)
    assert kept.ops == ()
    assert kept.statuses["a"] == Status(State.CONFIGURED, "")
    changed = run({"a": a, "b": dataclasses.replace(b, mtu=1500)}, same, resolve=last_seen)
    assert changed.ops == ()
    assert changed.statuses["b"].reason == f"not applied: {down}"
    assert changed.statuses["a"].state == State.CONFIGURED
    back = run({"a": a, "b": b}, resolve=resolver({"web": web}))
    assert back.ops == (CreateVethPair(LinkSpec("a", HOST, up=True),
                                       LinkSpec("b", web, mtu=1400, up=True)),)


def test_an_incumbent_on_hold_keeps_its_name() -> None:
    """Controller restart before Docker is listed: the pair that owns the name keeps it."""
    a, b = end("a", "b", "ns1"), end("b", "a", microservice="web")
    web = NsRef.of_path("/var/run/docker/netns/abc")
    existing = apply((), run({"a": a, "b": b}, resolve=resolver({"web": web})).ops)

    def unlisted(ns: NamespaceConfig) -> Availability:
        if ns.kind == "microservice":
            return Availability(None, "waiting for microservice web; Docker not listed yet",
                                hold=True)
        return Availability(NsRef.named(ns.name))

    both = {"a": a, "b": b, "c": end("c", "d", "ns1", host="a"), "d": end("d", "c", "ns2")}
    result = run(both, existing, resolve=unlisted)
    assert result.ops == ()
    assert result.statuses["a"].state == State.PENDING
    assert result.statuses["c"].reason.startswith("kernel name a is already in use by a")


def test_a_helper_failure_never_replaces_a_validation_error() -> None:
    """The operator must fix the key first; what the helper said about an older attempt
    would hide the field at fault."""
    bad = InvalidValue("/k/veth1", "mtu", "too small")
    result = run({"veth1": bad, "veth2": V2}, failures={"veth1": "EEXIST in ns1"})
    assert result.statuses["veth1"].state == State.ERROR
    assert "mtu" in result.statuses["veth1"].reason
    assert "EEXIST" not in result.statuses["veth1"].reason


def test_a_clash_is_not_won_through_a_peer_that_owns_nothing() -> None:
    """a owns the kernel's x, but its peer b claims z, which the working pair e<->f owns:
    a's pair wins nothing, so e keeps z (b may not take it through a)."""
    a, b = end("a", "b", "ns1", host="x"), end("b", "a", "ns2", host="z")
    c, d = end("c", "d", "ns1", host="x"), end("d", "c", "ns2", host="dd")
    e, f = end("e", "f", "ns2", host="z"), end("f", "e", "ns1", host="w")
    observed = (seen(LinkSpec("x", NS1, up=True), "z"), seen(LinkSpec("z", NS2, up=True), "w"),
                seen(LinkSpec("w", NS1, up=True), "z"))
    result = run({"a": a, "b": b, "c": c, "d": d, "e": e, "f": f}, observed)
    assert result.statuses["e"] == result.statuses["f"] == configured()
    assert result.statuses["b"].reason.startswith("kernel name z is already in use by e")


def test_a_held_peer_that_names_another_end_does_not_hold_this_link() -> None:
    """b waits on Docker (hold) but names c as its peer: a's link is not b's pair's, so it
    is not kept; a is a peer mismatch and its link goes."""
    web = NsRef.of_path("/var/run/docker/netns/abc")
    a, b = end("a", "b"), end("b", "c", microservice="web")
    observed = (seen(LinkSpec("a", HOST, up=True), "b"), seen(LinkSpec("b", web, up=True), "a"))

    def unknown(ns: NamespaceConfig) -> Availability:
        if ns.kind == "microservice":
            return Availability(None, "waiting for microservice web; Docker down", hold=True)
        return Availability(HOST)

    result = run({"a": a, "b": b}, observed, resolve=unknown)
    assert result.statuses["a"].reason.startswith("peer mismatch: a names b")
    assert result.ops == (DeleteLink("a", HOST),)


def test_same_kernel_name_in_different_namespaces_is_fine() -> None:
    a, b = end("a", "b", "ns1", host="eth9"), end("b", "a", "ns2", host="eth9")
    result = run({"a": a, "b": b})
    assert result.ops == (
        CreateVethPair(LinkSpec("eth9", NS1, up=True), LinkSpec("eth9", NS2, up=True)),
    )


def test_failure_reports_error_and_still_plans() -> None:
    result = run({"veth1": V1, "veth2": V2}, failures={"veth1": "EEXIST in ns1"})
    assert result.statuses["veth1"] == Status(State.ERROR, "EEXIST in ns1")
    assert result.statuses["veth2"] == configured()
    assert result.ops == (CreateVethPair(SPEC1, SPEC2),)


BLOCK = "netlinkd refuses every change: AUDIT_UNAVAILABLE: disk full"


def test_blocked_pair_that_exists_stays_configured_and_says_why() -> None:
    result = run({"veth1": V1, "veth2": V2}, PAIR, blocked=BLOCK)
    for name in ("veth1", "veth2"):
        status = result.statuses[name]
        assert status.state == State.CONFIGURED
        assert status.warnings == (
            f"the pair exists as configured, but changes are blocked: {BLOCK}",)
    assert result.ops == ()


def test_blocked_changes_are_errors_naming_the_block_and_stay_planned() -> None:
    v1 = dataclasses.replace(V1, mtu=9000)
    result = run({"veth1": v1, "veth2": V2}, PAIR, blocked=BLOCK)
    assert result.statuses["veth1"] == Status(State.ERROR, f"not applied: {BLOCK}")
    assert result.statuses["veth2"].state == State.CONFIGURED  # its end needs nothing
    assert result.ops == (SetLink("veth1", NS1, mtu=9000),)
    created = run({"veth1": V1, "veth2": V2}, blocked=BLOCK)
    assert {s.reason for s in created.statuses.values()} == {f"not applied: {BLOCK}"}
    assert created.ops == (CreateVethPair(SPEC1, SPEC2),)


def test_blocked_leaves_pending_and_invalid_statuses_alone() -> None:
    result = run({"veth1": V1}, blocked=BLOCK)
    assert result.statuses["veth1"] == Status(State.PENDING, "waiting for peer veth2 to be "
                                                             "configured")


def test_unreachable_helper_is_published_only_after_its_grace() -> None:
    down = Block("netlinkd unavailable: connection refused", since=100.0,
                 grace_s=HELPER_DOWN_GRACE_S)
    assert published_block(None, 100.0) == ""
    assert published_block(down, 100.0) == ""
    assert published_block(down, 100.0 + HELPER_DOWN_GRACE_S - 0.01) == ""
    assert published_block(down, 100.0 + HELPER_DOWN_GRACE_S) == down.reason
    assert published_block(down, 500.0) == down.reason


def test_refusal_of_every_change_is_published_at_once() -> None:
    assert published_block(Block(BLOCK, since=100.0), 100.0) == BLOCK


def test_grace_outlasts_a_routine_helper_restart() -> None:
    """systemd restarts the helper after 2 s (RestartSec); start-up adds more under load."""
    assert HELPER_DOWN_GRACE_S > 2.0 * 2


# ---- diff ----------------------------------------------------------------------


def test_unchanged_pair_needs_nothing() -> None:
    assert run({"veth1": V1, "veth2": V2}, PAIR).ops == ()


def test_modify_is_a_diff_without_recreate() -> None:
    v1 = dataclasses.replace(
        V1,
        mac="d2:74:8c:12:67:d3",
        mtu=9000,
        enabled=False,
        addresses=("192.168.22.1/24", "10.9.9.9/8"),
    )
    result = run({"veth1": v1, "veth2": V2}, PAIR)
    assert result.ops == (  # the unwanted IPv6 address goes down with the link
        SetLink("veth1", NS1, mac="d2:74:8c:12:67:d3", mtu=9000, up=False),
        AddAddress("veth1", NS1, "10.9.9.9/8"),
    )


def test_taking_a_link_down_adds_its_ipv6_addresses_back() -> None:
    """With keep_addr_on_down=0 the kernel drops IPv6 addresses when a link goes down."""
    down = dataclasses.replace(V1, enabled=False)
    result = run({"veth1": down, "veth2": V2}, PAIR)
    assert result.ops == (
        SetLink("veth1", NS1, up=False),
        AddAddress("veth1", NS1, "2001:db8::ff00:89e3:bb42/48"),
    )
    after = apply(PAIR, result.ops)
    assert run({"veth1": down, "veth2": V2}, after).ops == ()
    kernel = apply(PAIR, result.ops[:1])  # what the kernel holds after the SetLink alone
    veth1 = next(k for k in kernel if k.name == "veth1")
    assert veth1.addresses == ("192.168.22.1/24",)


def test_setlink_carries_only_changed_fields() -> None:
    observed = (seen(SPEC1, "veth2", up=False), seen(SPEC2, "veth1", mtu=1400))
    assert run({"veth1": V1, "veth2": V2}, observed).ops == (
        SetLink("veth1", NS1, up=True),
        SetLink("veth2", NS2, mtu=1500),
    )


def test_unset_mac_and_mtu_are_left_alone() -> None:
    v1 = dataclasses.replace(V1, mac="", mtu=0)
    observed = (seen(SPEC1, "veth2", mac="aa:aa:aa:aa:aa:aa", mtu=1400), PAIR[1])
    assert run({"veth1": v1, "veth2": V2}, observed).ops == ()


def test_observed_addresses_compare_normalized_and_ignore_link_local() -> None:
    addresses = ("2001:DB8:0:0:0:ff00:89e3:bb42/48", "192.168.22.1/24", "fe80::1/64")
    observed = (seen(SPEC1, "veth2", addresses=addresses), PAIR[1])
    assert run({"veth1": V1, "veth2": V2}, observed).ops == ()


def test_configured_link_local_is_managed() -> None:
    v1 = dataclasses.replace(V1, addresses=(*V1.addresses, "fe80::5/64"))
    result = run({"veth1": v1, "veth2": V2}, PAIR)
    assert result.ops == (AddAddress("veth1", NS1, "fe80::5/64"),)
    observed = (seen(SPEC1, "veth2", addresses=("fe80::5/64",)), PAIR[1])
    dropped = run({"veth1": dataclasses.replace(V1, addresses=()), "veth2": V2}, observed)
    assert dropped.ops == (), "an unconfigured link-local looks like the kernel's own"


# ---- re-create -----------------------------------------------------------------


def test_namespace_change_recreates() -> None:
    v2 = dataclasses.replace(V2, namespace=NamespaceConfig(kind="named", name="ns3"))
    result = run({"veth1": V1, "veth2": v2}, PAIR)
    spec2 = dataclasses.replace(SPEC2, netns=NsRef.named("ns3"))
    assert result.ops == (DeleteLink("veth1", NS1), CreateVethPair(SPEC1, spec2))


def test_host_if_name_change_recreates() -> None:
    v1 = dataclasses.replace(V1, host_if_name="v1-new")
    result = run({"veth1": v1, "veth2": V2}, PAIR)
    spec1 = dataclasses.replace(SPEC1, name="v1-new")
    assert result.ops == (DeleteLink("veth1", NS1), CreateVethPair(spec1, SPEC2))


def test_peer_change_recreates() -> None:
    observed = (seen(SPEC1, "other"), seen(SPEC2, "veth1"))
    result = run({"veth1": V1, "veth2": V2}, observed)
    assert result.ops == (
        DeleteLink("veth1", NS1),
        DeleteLink("veth2", NS2),
        CreateVethPair(SPEC1, SPEC2),
    )


def test_missing_end_recreates() -> None:
    result = run({"veth1": V1, "veth2": V2}, PAIR[:1])
    assert result.ops == (DeleteLink("veth1", NS1), CreateVethPair(SPEC1, SPEC2))


# ---- orphans -------------------------------------------------------------------


def test_orphan_pair_is_deleted_once() -> None:
    result = run({}, PAIR)
    assert result.ops == (DeleteLink("veth1", NS1),)
    assert result.statuses == {}


def test_orphans_with_unknown_peers_are_each_deleted() -> None:
    lonely = (seen(SPEC1, "x"), seen(SPEC2, "y"))
    assert run({}, lonely).ops == (DeleteLink("veth1", NS1), DeleteLink("veth2", NS2))


def test_deletes_come_first_then_creates_then_changes() -> None:
    a, b = end("a", "b"), end("b", "a", "ns1")
    v1 = dataclasses.replace(V1, mtu=9000)
    orphan = (seen(LinkSpec("zz", NS2), "yy"), seen(LinkSpec("yy", HOST), "zz"))
    result = run({"a": a, "b": b, "veth1": v1, "veth2": V2}, (*PAIR, *orphan))
    assert [type(op) for op in result.ops] == [DeleteLink, CreateVethPair, SetLink]
    assert result.ops[0] == DeleteLink("yy", HOST)


def test_plan_is_deterministic_in_input_order() -> None:
    desired = {"veth2": V2, "b": end("b", "a"), "veth1": V1, "a": end("a", "b", "ns1")}
    forward = run(desired, PAIR)
    backward = run(dict(reversed(desired.items())), tuple(reversed(PAIR)))
    assert forward == backward


def test_applying_a_plan_converges() -> None:
    v1 = dataclasses.replace(V1, host_if_name="v1x", mtu=9000)
    desired: dict[str, InterfaceConfig | InvalidValue] = {"veth1": v1, "veth2": V2}
    after = apply(PAIR, run(desired, PAIR).ops)
    assert run(desired, after).ops == ()
