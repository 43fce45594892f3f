"""The policy's checks one by one, at their boundaries (pure logic; found by bench/mutation.py:
each test fails on a mutant of netlinkd/policy.py that the helper-level tests let through)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from pathlib import Path

import pytest

from netagent_api import helper_pb2
from netlinkd import policy
from netlinkd.errors import Malformed, PolicyRefused, StartupError
from netlinkd.policy import Policy

NS = helper_pb2.NamespaceRef
NAMED = NS(name="ns1")


def _write_policy(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_documented_ones() -> None:
    assert Policy() == Policy(
        max_ops_per_batch=256, max_addresses_per_link=64, max_owned_links=1024,
        allow_pid_refs=False, time_window_seconds=60, max_epochs=64, max_named_namespaces=1024,
        netns_dirs=("/var/run/netns", "/run/netns", "/var/run/docker/netns",
                    "/run/docker/netns"),
        address_prefixes=(),
    )
    assert policy.load_policy(None) == Policy()


def test_a_loaded_policy_cannot_be_changed() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.load_policy(None).allow_pid_refs = True  # type: ignore[misc]


def test_policy_file_values_are_loaded_and_checked(tmp_path: Path) -> None:
    path = _write_policy(tmp_path, (
        'max_ops_per_batch = 1\nallow_pid_refs = false\nnetns_dirs = ["/a", "/b"]\n'
        'address_prefixes = ["10.20.0.0/16", "fd00:20::/48"]\n'
    ))
    assert policy.load_policy(path) == Policy(
        max_ops_per_batch=1, allow_pid_refs=False, netns_dirs=("/a", "/b"),
        address_prefixes=(ipaddress.ip_network("10.20.0.0/16"),
                          ipaddress.ip_network("fd00:20::/48")),
    )


@pytest.mark.parametrize("text", [
    "max_epochs = 0", "max_epochs = -1", 'max_epochs = "3"', "max_epochs = true",
    "allow_pid_refs = 1", "unknown_key = 1", "netns_dirs = \"/a\"", 'netns_dirs = [""]',
    "netns_dirs = [1]", 'address_prefixes = "10.0.0.0/8"', "address_prefixes = [10]",
    'address_prefixes = ["10.0.0.1/8"]', 'address_prefixes = ["nonsense"]', "not toml =",
])
def test_policy_file_errors_are_startup_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(StartupError, match="policy file"):
        policy.load_policy(_write_policy(tmp_path, text + "\n"))


def test_missing_policy_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="cannot load policy file"):
        policy.load_policy(str(tmp_path / "absent.toml"))


@pytest.mark.parametrize("name", ["a", "x" * 15, "eth0", "a.b", "a-b_c", "lo0", "Lo"])
def test_interface_names_accepted(name: str) -> None:
    policy.check_ifname(name, "t")


@pytest.mark.parametrize("name", ["", "x" * 16, ".", "..", "a b", "a/b", "a:b", "é", "lo"])
def test_interface_names_refused(name: str) -> None:
    with pytest.raises(PolicyRefused):
        policy.check_ifname(name, "t")


def test_loopback_refusal_says_so() -> None:
    with pytest.raises(PolicyRefused, match="loopback"):
        policy.check_ifname("lo", "t")


@pytest.mark.parametrize("owner", ["a", "x" * 64, "A-Za-z0-9_.@+=/-"])
def test_owners_accepted(owner: str) -> None:
    policy.check_owner(owner)


@pytest.mark.parametrize("owner", ["", "x" * 65, "a:b", "a b", "a\nb"])
def test_owners_refused(owner: str) -> None:
    with pytest.raises(PolicyRefused):
        policy.check_owner(owner)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b", "x" * 256])
def test_namespace_names_refused(name: str) -> None:
    with pytest.raises(PolicyRefused):
        policy.check_ns_name(name, "t")


def test_namespace_name_of_255_bytes_accepted() -> None:
    policy.check_ns_name("x" * 255, "t")
    policy.check_ns_name("a.b", "t")


def test_namespace_paths_must_sit_directly_in_an_allowed_directory(tmp_path: Path) -> None:
    allowed = tmp_path / "netns"
    (allowed / "sub").mkdir(parents=True)
    (tmp_path / "netnsX").mkdir()
    (allowed / "link").symlink_to(tmp_path / "netnsX" / "y")
    rules = Policy(netns_dirs=(str(tmp_path / "elsewhere"), str(allowed)))
    assert policy.canonical_ns_path(rules, str(allowed / "a"), "t") == str(allowed / "a")
    assert policy.canonical_ns_path(rules, f"{allowed}/sub/../b", "t") == str(allowed / "b")
    for refused in (f"{allowed}/sub/y", f"{tmp_path}/netnsX/y", str(allowed / "link"),
                    "netns/a", f"{allowed}/a\0b", str(allowed)):
        with pytest.raises(PolicyRefused):
            policy.canonical_ns_path(rules, refused, "t")


def test_namespace_references_by_kind(tmp_path: Path) -> None:
    no_pids = Policy(netns_dirs=(str(tmp_path), "/var/run/netns"))
    pids = Policy(allow_pid_refs=True)
    policy.check_ns_ref(no_pids, NAMED, "t")
    policy.check_ns_ref(no_pids, NS(path=str(tmp_path / "a")), "t")
    policy.check_ns_ref(no_pids, NS(), "t")  # the helper's own namespace
    policy.check_ns_ref(pids, NS(pid=2), "t")
    for rules, ref in ((no_pids, NS(pid=2)), (pids, NS(pid=1)), (pids, NS(pid=0)),
                       (no_pids, NS(name="..")), (no_pids, NS(path="/tmp/x/y"))):
        with pytest.raises(PolicyRefused):
            policy.check_ns_ref(rules, ref, "t")
    with pytest.raises(PolicyRefused, match="disabled by policy"):
        policy.check_ns_ref(no_pids, NS(pid=1), "t")


def test_addresses_need_a_prefix_length() -> None:
    assert policy.check_address("10.0.0.1/24", "t") == ipaddress.ip_interface("10.0.0.1/24")
    for bad in ("10.0.0.1", "nonsense/24", "10.0.0.1/33"):
        with pytest.raises(Malformed):
            policy.check_address(bad, "t")


def test_added_addresses_and_their_routes_must_lie_in_an_allowed_prefix() -> None:
    policy.check_address_allowed(Policy(), "192.0.2.1/24", "t")
    rules = Policy(address_prefixes=(ipaddress.ip_network("fd00:20::/48"),
                                     ipaddress.ip_network("10.20.0.0/16")))
    for allowed in ("10.20.1.1/24", "10.20.0.1/16", "fd00:20::1/64"):
        policy.check_address_allowed(rules, allowed, "t")
    listed = re.escape("outside the allowed prefixes fd00:20::/48, 10.20.0.0/16")
    for refused in ("10.21.0.1/24", "10.20.1.1/8", "fd00:21::1/64", "fd00:20::1/32"):
        with pytest.raises(PolicyRefused, match=listed):
            policy.check_address_allowed(rules, refused, "t")
    with pytest.raises(PolicyRefused):
        policy.check_address_allowed(
            Policy(address_prefixes=(ipaddress.ip_network("fd00:20::/48"),)), "10.0.0.1/8", "t")


@pytest.mark.parametrize("mac", ["02:00:00:00:00:01", "00:00:00:00:00:01", "AA:bb:cc:dd:ee:f0"])
def test_unicast_macs_accepted(mac: str) -> None:
    policy.check_mac(mac, "t")


@pytest.mark.parametrize("mac", ["01:00:00:00:00:01", "03:00:00:00:00:00", "00:00:00:00:00:00",
                                 "02:00:00:00:00", "02-00-00-00-00-01", "02:00:00:00:00:0g"])
def test_multicast_zero_and_malformed_macs_refused(mac: str) -> None:
    with pytest.raises(Malformed):
        policy.check_mac(mac, "t")


def test_mtu_bounds() -> None:
    for mtu in (68, 1500, 65535):
        policy.check_mtu(mtu, "t")
    for mtu in (67, 65536):
        with pytest.raises(Malformed):
            policy.check_mtu(mtu, "t")


def _spec(name: str = "v0", **fields: object) -> helper_pb2.LinkSpec:
    return helper_pb2.LinkSpec(name=name, netns=NAMED, **fields)  # type: ignore[arg-type]


def test_link_spec_checks_every_field() -> None:
    rules = Policy(max_addresses_per_link=2, address_prefixes=(ipaddress.ip_network("10.0.0.0/8"),))
    policy.check_link_spec(rules, _spec(mac="02:00:00:00:00:01", mtu=9000,
                                        addresses=["10.0.0.1/24", "10.0.0.2/24"]), "t")
    policy.check_link_spec(rules, _spec(), "t")  # no MAC, no MTU: the kernel's
    for refused in (_spec(name="lo"), helper_pb2.LinkSpec(name="v0", netns=NS(pid=5)),
                    _spec(addresses=["10.0.0.1/24", "10.0.0.2/24", "10.0.0.3/24"]),
                    _spec(addresses=["192.0.2.1/24"])):
        with pytest.raises(PolicyRefused):
            policy.check_link_spec(rules, refused, "t")
    for malformed in (_spec(mac="01:00:00:00:00:01"), _spec(mtu=67)):
        with pytest.raises(Malformed):
            policy.check_link_spec(rules, malformed, "t")


def _pair(a: helper_pb2.LinkSpec, b: helper_pb2.LinkSpec) -> helper_pb2.Operation:
    return helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(a=a, b=b))


def test_operations_check_names_namespaces_and_fields() -> None:
    rules = Policy(address_prefixes=(ipaddress.ip_network("10.0.0.0/8"),))
    accepted = [
        _pair(_spec("a"), _spec("b")),
        _pair(_spec("eth0"), helper_pb2.LinkSpec(name="eth0", netns=NS(name="ns2"))),
        helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(name="a", netns=NAMED)),
        helper_pb2.Operation(set_link=helper_pb2.SetLink(name="a", netns=NAMED, mtu=1500,
                                                         mac="02:00:00:00:00:01")),
        helper_pb2.Operation(add_address=helper_pb2.AddAddress(name="a", netns=NAMED,
                                                               address="10.0.0.1/24")),
        # removing an address outside the allowed prefixes only shrinks what is configured
        helper_pb2.Operation(del_address=helper_pb2.DelAddress(name="a", netns=NAMED,
                                                               address="192.0.2.1/24")),
    ]
    for op in accepted:
        policy.check_operation(rules, op, "t")
    refused = [
        _pair(_spec("a"), _spec("a")),
        _pair(_spec("a"), _spec("lo")),
        _pair(_spec("lo"), _spec("a")),
        helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(name="lo", netns=NAMED)),
        helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(name="a", netns=NS(pid=9))),
        helper_pb2.Operation(add_address=helper_pb2.AddAddress(name="a", netns=NAMED,
                                                               address="192.0.2.1/24")),
    ]
    for op in refused:
        with pytest.raises(PolicyRefused):
            policy.check_operation(rules, op, "t")
    malformed = [
        helper_pb2.Operation(),
        helper_pb2.Operation(set_link=helper_pb2.SetLink(name="a", netns=NAMED, mtu=0)),
        helper_pb2.Operation(set_link=helper_pb2.SetLink(name="a", netns=NAMED, mac="")),
        helper_pb2.Operation(del_address=helper_pb2.DelAddress(name="a", netns=NAMED,
                                                               address="10.0.0.1")),
    ]
    for op in malformed:
        with pytest.raises(Malformed):
            policy.check_operation(rules, op, "t")


def test_same_reference_means_same_kind_and_value() -> None:
    assert policy.same_ref(NS(), NS())
    assert policy.ref_key(NS()) == ("host", 0)
    assert policy.ref_key(NS(pid=5)) == ("pid", 5)
    assert policy.same_ref(NS(name="a"), NS(name="a"))
    assert policy.same_ref(NS(pid=5), NS(pid=5))
    assert not policy.same_ref(NS(name="a"), NS(name="b"))
    assert not policy.same_ref(NS(name="a"), NS(path="a"))
    assert not policy.same_ref(NS(), NS(name="a"))


def _delete(name: str, netns: helper_pb2.NamespaceRef = NAMED) -> helper_pb2.Operation:
    return helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(name=name, netns=netns))


def test_batch_limits_and_the_failing_operation_index() -> None:
    rules = Policy(max_ops_per_batch=3)
    policy.check_batch(rules, helper_pb2.Batch(owner="o", operations=[_delete("a")] * 3))
    with pytest.raises(PolicyRefused, match="above the limit"):
        policy.check_batch(rules, helper_pb2.Batch(owner="o", operations=[_delete("a")] * 4))
    with pytest.raises(PolicyRefused):
        policy.check_batch(rules, helper_pb2.Batch(owner="o:x", operations=[_delete("a")]))
    with pytest.raises(PolicyRefused) as refused:
        policy.check_batch(rules, helper_pb2.Batch(
            owner="o", operations=[_delete("a"), _delete("b"), _delete("lo")]))
    assert refused.value.index == 2
    assert str(refused.value).startswith("operation 2 (delete_link): ")
    observe = helper_pb2.ObserveRequest(netns=[NAMED, NS(path="/etc/passwd")])
    with pytest.raises(PolicyRefused) as refused:
        policy.check_batch(rules, helper_pb2.Batch(owner="o", observe=observe))
    assert "observe" in str(refused.value)


def test_the_links_and_namespace_references_a_batch_names() -> None:
    ops = [_pair(_spec("a"), helper_pb2.LinkSpec(name="b", netns=NS(pid=7))),
           helper_pb2.Operation(), _delete("c", NS(path="/p"))]
    batch = helper_pb2.Batch(operations=ops)
    assert [(index, link.name) for index, link in policy.named_links(batch)] == [
        (0, "a"), (0, "b"), (2, "c")]
    assert list(policy.namespace_refs(batch)) == [(0, NAMED), (0, NS(pid=7)), (2, NS(path="/p"))]


def test_named_namespace_directory_resolves_like_the_policys(tmp_path: Path) -> None:
    # On this system /var/run is /run: a policy listing /run/netns allows named namespaces.
    if os.path.realpath("/var/run/netns") != "/run/netns":
        pytest.skip("/var/run is not a symlink to /run here")
    assert policy.named_ns_path(Policy(netns_dirs=("/run/netns",)), "n", "t") == \
        "/var/run/netns/n"


def _count_realpath(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths policy resolves from now on, in order."""
    calls: list[str] = []
    real = os.path.realpath

    def counted(path: str) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(policy.os.path, "realpath", counted)
    return calls


def test_a_batch_checks_each_namespace_reference_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each check of a reference resolves paths (realpath: an lstat per component); a batch
    of 256 pairs in two namespaces spent 25 ms on them (issue 16). A reference passed once
    passes for the rest of its batch; one refused is refused where it first appears, and
    another batch checks it anew."""
    calls = _count_realpath(monkeypatch)
    other = NS(name="ns2")
    ops = [_pair(_spec(f"a{i}"), helper_pb2.LinkSpec(name=f"b{i}", netns=other))
           for i in range(50)]
    spelled = Policy(netns_dirs=tuple(d.replace("/netns", "/./netns") for d in Policy().netns_dirs))
    policy.check_batch(spelled, helper_pb2.Batch(owner="o", operations=ops))
    once = len(calls)
    assert 0 < once <= 2 * (1 + len(spelled.netns_dirs)), calls
    calls.clear()
    policy.check_batch(spelled, helper_pb2.Batch(owner="o", operations=ops[:1]))
    assert len(calls) == once
    outside = NS(path=str(tmp_path / "ns"))
    with pytest.raises(PolicyRefused) as refused:
        policy.check_batch(spelled, helper_pb2.Batch(owner="o", operations=[
            *ops[:3], _delete("c", outside), _delete("d", outside)]))
    assert refused.value.index == 3


def test_the_named_directory_listed_as_it_is_spelled_is_allowed_without_resolving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The default allow-list names /var/run/netns itself: the same path resolves the same,
    so the realpaths (about 0.1 ms a batch) are skipped; named references are checked."""
    calls = _count_realpath(monkeypatch)
    policy.check_batch(Policy(), helper_pb2.Batch(owner="o", operations=[
        _pair(_spec("a"), helper_pb2.LinkSpec(name="b", netns=NS(name="ns2")))]))
    assert calls == []
    with pytest.raises(PolicyRefused, match="one path component"):
        policy.check_batch(Policy(), helper_pb2.Batch(owner="o", operations=[
            _pair(_spec("a"), helper_pb2.LinkSpec(name="b", netns=NS(name="..")))]))


def test_a_named_reference_after_a_path_or_pid_is_still_checked_against_the_allow_list(
        tmp_path: Path) -> None:
    """Only a named reference that passed marks the named directory as allowed for the rest
    of its batch: a path or PID reference that passed says nothing about it."""
    docker_only = Policy(netns_dirs=("/run/docker/netns",), allow_pid_refs=True)
    for first in (NS(path="/run/docker/netns/c1"), NS(pid=4242)):
        with pytest.raises(PolicyRefused, match="named namespaces") as refused:
            policy.check_batch(docker_only, helper_pb2.Batch(owner="o", operations=[
                _delete("a", first), _delete("b", NAMED)]))
        assert refused.value.index == 1


def test_the_named_directory_is_resolved_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many named namespaces a batch names, the allow-list is resolved for the first."""
    calls = _count_realpath(monkeypatch)
    spelled = Policy(netns_dirs=("/var/run/./netns", "/run/docker/netns"))  # not as named
    policy.check_batch(spelled, helper_pb2.Batch(owner="o", operations=[
        _delete("a", NS(name="ns1")), _delete("b", NS(name="ns2")), _delete("c", NS(name="ns3"))]))
    assert len(calls) == 1 + len(spelled.netns_dirs), calls
