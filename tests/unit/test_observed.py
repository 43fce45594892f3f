"""controller.observed: the kernel model after a batch, and convergence of plan+apply."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.model import InterfaceConfig, InvalidValue, NamespaceConfig
from controller.observed import apply, link_id, one_per_link, partner
from controller.ops import (
    AddAddress,
    CreateVethPair,
    DelAddress,
    DeleteLink,
    LinkSpec,
    NsRef,
    ObservedLink,
    SetLink,
    State,
)
from controller.reconcile import Availability, plan

NS1, NS2 = NsRef.named("ns1"), NsRef.named("ns2")


def link(name: str, netns: NsRef, peer: str, *addresses: str) -> ObservedLink:
    return ObservedLink(name, netns, 3, "02:00:00:00:00:01", 1500, True, addresses, peer)


def test_create_adds_both_ends_with_ifindex_zero() -> None:
    a = LinkSpec("a", NS1, "02:00:00:00:00:0a", 9000, True, ("10.0.0.1/8",))
    b = LinkSpec("b", NS2)
    after = apply((), (CreateVethPair(a, b),))
    assert after == (
        ObservedLink("a", NS1, 0, "02:00:00:00:00:0a", 9000, True, ("10.0.0.1/8",), "b"),
        ObservedLink("b", NS2, 0, "", 0, False, (), "a"),
    )


def test_deleting_one_end_removes_its_peer_only() -> None:
    kept = link("a", NS2, "x")
    after = apply((link("a", NS1, "b"), link("b", NS2, "a"), kept), (DeleteLink("a", NS1),))
    assert after == (kept,)


def test_deleting_a_missing_link_changes_nothing() -> None:
    before = (link("a", NS1, "b"),)
    assert apply(before, (DeleteLink("a", NS2),)) == before


def test_set_and_addresses_change_one_link() -> None:
    before = (link("a", NS1, "b", "10.0.0.1/8", "2001:db8::1/64"),)
    ops = (
        SetLink("a", NS1, mtu=9000, up=False),
        DelAddress("a", NS1, "2001:db8:0::1/64"),
        AddAddress("a", NS1, "10.0.0.2/8"),
    )
    (after,) = apply(before, ops)
    assert (after.mtu, after.up, after.mac) == (9000, False, "02:00:00:00:00:01")
    assert after.addresses == ("10.0.0.1/8", "10.0.0.2/8")


def test_one_report_per_link_under_the_configured_reference() -> None:
    """A `--network host` container: its SandboxKey reaches the host namespace too."""
    default = NsRef.of_path("/run/docker/netns/default")
    m_host = ObservedLink("m1", NsRef.host(), 5, "", 1500, True, (), "h1", netns_inode=4026531840)
    h_host = dataclasses.replace(m_host, name="h1", ifindex=6, peer="m1")
    m_path, h_path = (dataclasses.replace(k, netns=default) for k in (m_host, h_host))
    wanted = {link_id("m1", default), link_id("h1", NsRef.host())}
    assert set(one_per_link([m_host, h_host, m_path, h_path], wanted)) == {m_path, h_host}
    assert set(one_per_link([m_path, h_path, m_host, h_host], wanted)) == {m_path, h_host}
    assert set(one_per_link([m_host, m_path], set())) == {m_host}
    no_inode = dataclasses.replace(m_host, netns_inode=0)
    assert one_per_link([no_inode, dataclasses.replace(no_inode, netns=default)], wanted) == (
        no_inode, dataclasses.replace(no_inode, netns=default))
    a = InterfaceConfig("m1", "m1", "", True, "", 1500, (),
                        NamespaceConfig("microservice", microservice="web"), "h1")
    b = dataclasses.replace(a, name="h1", host_if_name="h1", namespace=NamespaceConfig(),
                            peer="m1")

    def resolve(ns: NamespaceConfig) -> Availability:
        return Availability(default if ns.kind == "microservice" else NsRef.host())

    seen = one_per_link([m_host, h_host, m_path, h_path], wanted)
    assert plan({"m1": a, "h1": b}, resolve, seen).ops == ()


def test_partner_needs_both_directions() -> None:
    a, b, c = link("a", NS1, "b"), link("b", NS2, "a"), link("b", NS1, "z")
    assert partner(a, (a, b, c)) == b
    assert partner(c, (a, b, c)) is None


def test_ambiguous_partner_is_none_and_delete_removes_only_the_link() -> None:
    a, b1, b2 = link("a", NS1, "b"), link("b", NS2, "a"), link("b", NS1, "a")
    assert partner(b1, (a, b1, b2)) is None
    assert apply((a, b1, b2), (DeleteLink("b", NS2),)) == (a, b2)


# ---- property: one successful batch reaches the desired state ------------------

_NAMES = ("a", "b", "c", "d", "e")
_NAMESPACES = st.sampled_from(
    [
        NamespaceConfig(),
        NamespaceConfig(kind="named", name="ns1"),
        NamespaceConfig(kind="named", name="ns2"),
        NamespaceConfig(kind="microservice", microservice="web"),
        NamespaceConfig(kind="microservice", microservice="db"),
    ]
)
_ADDRESSES = st.lists(
    st.sampled_from(["10.0.0.1/8", "10.0.0.2/8", "2001:db8::1/64", "fe80::7/64"]),
    unique=True,
    max_size=3,
).map(tuple)


@st.composite
def _config(draw: st.DrawFn, name: str, peer: str) -> InterfaceConfig | InvalidValue:
    if draw(st.integers(0, 9)) == 0:
        return InvalidValue(f"/k/{name}", "mtu", "drawn invalid")
    if draw(st.integers(0, 9)) == 0:
        peer = draw(st.sampled_from([n for n in _NAMES if n != name]))
    return InterfaceConfig(
        name=name,
        host_if_name=draw(st.sampled_from([name, name, "eth0", "eth1"])),
        description="",
        enabled=draw(st.booleans()),
        mac=draw(st.sampled_from(["", "02:00:00:00:00:01", "02:00:00:00:00:02"])),
        mtu=draw(st.sampled_from([0, 1500, 9000])),
        addresses=draw(_ADDRESSES),
        namespace=draw(_NAMESPACES),
        peer=peer,
    )


@st.composite
def _desired(draw: st.DrawFn) -> dict[str, InterfaceConfig | InvalidValue]:
    """Mostly well-paired ends (a-b, c-d, ...), with some missing, invalid or mismatched."""
    order = draw(st.permutations(_NAMES))
    partner = {order[i]: order[i ^ 1] for i in range(len(order) - 1)}
    partner[order[-1]] = order[0]
    present = [n for n in order if draw(st.integers(0, 6)) > 0]
    return {name: draw(_config(name, partner[name])) for name in present}


@st.composite
def _evolved(
    draw: st.DrawFn, previous: dict[str, InterfaceConfig | InvalidValue]
) -> dict[str, InterfaceConfig | InvalidValue]:
    """The previous configuration with some ends edited, removed or replaced."""
    result: dict[str, InterfaceConfig | InvalidValue] = {}
    for name, config in previous.items():
        choice = draw(st.integers(0, 9))
        if choice == 0 or isinstance(config, InvalidValue):
            continue
        if choice == 1:
            result[name] = draw(_config(name, config.peer))
            continue
        result[name] = dataclasses.replace(
            config,
            enabled=draw(st.sampled_from([config.enabled, not config.enabled])),
            mtu=draw(st.sampled_from([config.mtu, 0, 9000])),
            mac=draw(st.sampled_from([config.mac, "", "02:00:00:00:00:09"])),
            addresses=draw(st.sampled_from([config.addresses, ("10.0.0.2/8", "fe80::7/64")])),
        )
    return result


_REFS = st.sampled_from([NsRef.host(), NS1, NS2, NsRef.of_path("/run/docker/netns/w")])
_OBSERVED = st.lists(
    st.builds(
        ObservedLink,
        name=st.sampled_from(["a", "b", "c", "eth0", "eth1", "zz"]),
        netns=_REFS,
        ifindex=st.integers(1, 50),
        mac=st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:03"]),
        mtu=st.sampled_from([1500, 9000]),
        up=st.booleans(),
        addresses=_ADDRESSES,
        peer=st.sampled_from(["a", "b", "c", "eth0", "eth1", "zz"]),
    ),
    max_size=6,
    unique_by=lambda k: (k.name, k.netns.identity()),
)


def _resolver(web_running: bool):  # type: ignore[no-untyped-def]
    def resolve(ns: NamespaceConfig) -> Availability:
        if ns.kind == "named":
            return Availability(NsRef.named(ns.name))
        if ns.kind == "microservice":
            if ns.microservice == "web" and web_running:
                return Availability(NsRef.of_path("/run/docker/netns/w"))
            return Availability(None, f"waiting for microservice {ns.microservice}")
        return Availability(NsRef.host())

    return resolve


@st.composite
def _drifted(draw: st.DrawFn, links: tuple[ObservedLink, ...]) -> list[ObservedLink]:
    """Links as a previous configuration left them, then changed behind our back."""
    result = []
    for found in links:
        if draw(st.integers(0, 5)) == 0:
            continue
        result.append(
            dataclasses.replace(
                found,
                ifindex=draw(st.integers(1, 50)),
                up=draw(st.sampled_from([found.up, not found.up])),
                mtu=draw(st.sampled_from([found.mtu, 1400])),
                addresses=draw(st.sampled_from([found.addresses, ("10.9.9.9/8",)])),
            )
        )
    return result


@settings(max_examples=500, deadline=None)
@given(_desired(), _OBSERVED, st.booleans(), st.data())
def test_plan_after_apply_is_empty(
    previous: dict[str, InterfaceConfig | InvalidValue],
    noise: list[ObservedLink],
    web_running: bool,
    data: st.DataObject,
) -> None:
    resolve = _resolver(web_running)
    desired = data.draw(_evolved(previous))
    observed = [
        *noise,
        *data.draw(_drifted(apply((), plan(previous, _resolver(True), ()).ops))),
    ]
    observed = list({(k.name, k.netns.identity()): k for k in observed}.values())
    first = plan(desired, resolve, observed)
    after = apply(observed, first.ops)
    assert plan(desired, resolve, after).ops == ()
    assert plan(desired, resolve, after).statuses == first.statuses
    _assert_realized(desired, resolve, first.statuses, after)


def _assert_realized(  # type: ignore[no-untyped-def]
    desired: dict[str, InterfaceConfig | InvalidValue], resolve, statuses, after
) -> None:
    """Independently of the planner: the kernel holds exactly the configured ends."""
    by_id = {(k.name, k.netns.identity()): k for k in after}
    expected = set()
    for name, config in desired.items():
        if statuses[name].state != State.CONFIGURED:
            continue
        assert isinstance(config, InterfaceConfig)
        ref = resolve(config.namespace).ref
        found = by_id[(config.host_if_name, ref.identity())]
        expected.add((found.name, found.netns.identity()))
        peer = desired[config.peer]
        assert isinstance(peer, InterfaceConfig)
        assert found.peer == peer.host_if_name
        assert found.up == config.enabled
        assert config.mac in ("", found.mac)
        assert config.mtu in (0, found.mtu)
        kept = {a for a in found.addresses if a in config.addresses or not a.startswith("fe80")}
        assert kept == set(config.addresses)
    assert set(by_id) == expected
