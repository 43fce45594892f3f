"""controller.model: parsing and validation of the northbound JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.model import (
    InterfaceConfig,
    InvalidValue,
    NamespaceConfig,
    parse_interface,
    validate_pairing,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PREFIX = "/vnf-agent/vpp1/linux/config/v1/interface/"


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / "veth1.json").read_text())
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def _parse(doc: dict[str, Any], name: str = "veth1") -> InterfaceConfig:
    return parse_interface(PREFIX + name, json.dumps(doc))


def _error(doc: dict[str, Any] | str, name: str = "veth1") -> InvalidValue:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(InvalidValue) as caught:
        parse_interface(PREFIX + name, text)
    return caught.value


def test_seed_veth1_parses_unchanged() -> None:
    config = parse_interface(PREFIX + "veth1", (FIXTURES / "veth1.json").read_bytes())
    assert config == InterfaceConfig(
        name="veth1",
        host_if_name="veth1",
        description="",
        enabled=True,
        mac="d2:74:8c:12:67:d2",
        mtu=1500,
        addresses=("192.168.22.1/24", "2001:db8::ff00:89e3:bb42/48"),
        namespace=NamespaceConfig(kind="named", name="ns1"),
        peer="veth2",
    )


def test_seed_veth2_parses_unchanged() -> None:
    config = parse_interface(PREFIX + "veth2", (FIXTURES / "veth2.json").read_bytes())
    assert config.peer == "veth1"
    assert config.namespace == NamespaceConfig(kind="named", name="ns2")
    assert config.mac == "92:c7:42:67:ab:cd"
    assert config.addresses == ("192.168.22.2/24", "2001:842::ff00:13c7:1245/48")


def test_camel_case_and_enum_names_are_accepted() -> None:
    doc = {
        "name": "veth1",
        "type": "VETH",
        "physAddress": "D2:74:8C:12:67:D2",
        "hostIfName": "v1",
        "ipAddresses": ["10.0.0.1/8"],
        "namespace": {"type": "NAMED_NS", "name": "ns1"},
        "veth": {"peerIfName": "veth2"},
    }
    config = _parse(doc)
    assert (config.host_if_name, config.mac) == ("v1", "d2:74:8c:12:67:d2")
    assert config.addresses == ("10.0.0.1/8",)


def test_unknown_field_is_an_error_naming_it() -> None:
    doc = _doc(namespace=None)
    doc["linux_namespace"] = {"name": "ns1", "type": 2}
    err = _error(doc)
    assert (err.key, err.field) == (PREFIX + "veth1", "linux_namespace")
    assert "unknown field" in err.problem
    assert str(err) == f"{PREFIX}veth1: field 'linux_namespace': {err.problem}"


def test_unknown_nested_field_names_the_path() -> None:
    assert _error(_doc(namespace={"type": 2, "nmae": "ns1"})).field == "namespace.nmae"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("not json", "<value>"),
        ("[1, 2]", "<value>"),
        ('{"name": "veth1", "name": "veth1"}', "<value>"),
        ('{"name": "veth1", "phys_address": "02:00:00:00:00:01", "physAddress": "x"}',
         "phys_address"),
        ('{"name": "veth1", "veth": {"peerIfName": "a", "peer_if_name": "b"}}',
         "veth.peer_if_name"),
        ('{"name": "veth1", "mtu": "big"}', "mtu"),
        ('{"name": "veth1", "mtu": -1}', "mtu"),
        ('{"name": "veth1", "enabled": "yes"}', "enabled"),
        ('{"name": "veth1", "type": "DUMMY"}', "type"),
        ('{"name": "veth1", "namespace": {"pid": -4}}', "namespace.pid"),
        ('{"name": "veth1", "veth": {"peer_if_name": 3}}', "veth.peer_if_name"),
    ],
)
def test_protobuf_errors_name_the_field(text: str, field: str) -> None:
    assert _error(text).field == field


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('{"name": "veth1", "mtu": "abc"}', "mtu", "'abc' is not an integer"),
        ('{"name": "veth1", "mtu": 1.5}', "mtu", "1.5 is not an integer"),
        ('{"name": "veth1", "mtu": "1 2"}', "mtu", "'1 2' is not an integer"),
        ('{"name": "veth1", "mtu": true}', "mtu", "true is not an integer"),
        ('{"name": "veth1", "namespace": {"pid": "x"}}', "namespace.pid",
         "'x' is not an integer"),
        ('{"name": "veth1", "type": "TAP"}', "type", "'TAP' is not one of VETH (0)"),
        ('{"name": "veth1", "namespace": {"type": "FOO"}}', "namespace.type",
         "'FOO' is not one of PID_REF_NS (0), MICROSERVICE_REF_NS (1), NAMED_NS (2), "
         "FILE_REF_NS (3)"),
    ],
)
def test_protobuf_type_errors_are_plain(text: str, field: str, problem: str) -> None:
    """No 'invalid literal for int()' or protobuf enum type names reach the user."""
    error = _error(text)
    assert (error.field, error.problem) == (field, problem)
    assert str(error) == f"{PREFIX}veth1: field '{field}': {problem}"


def test_non_utf8_bytes_are_an_error() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_interface(PREFIX + "veth1", b'{"name": "\xff"}')
    assert caught.value.field == "<value>"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "veth9"}, "name"),
        ({"name": None}, "name"),
        ({"type": 7}, "type"),
        ({"veth": None}, "veth.peer_if_name"),
        ({"veth": {"peer_if_name": "veth1"}}, "veth.peer_if_name"),
        ({"veth": {"peer_if_name": "a/b"}}, "veth.peer_if_name"),
        ({"host_if_name": "sixteen-bytes-xx"}, "host_if_name"),
        ({"host_if_name": "a/b"}, "host_if_name"),
        ({"host_if_name": "a b"}, "host_if_name"),
        ({"host_if_name": "a:b"}, "host_if_name"),
        ({"host_if_name": ".."}, "host_if_name"),
        ({"phys_address": "d2:74:8c:12:67"}, "phys_address"),
        ({"phys_address": "d2-74-8c-12-67-d2"}, "phys_address"),
        ({"phys_address": "01:00:5e:00:00:01"}, "phys_address"),
        ({"phys_address": "00:00:00:00:00:00"}, "phys_address"),
        ({"mtu": 67}, "mtu"),
        ({"mtu": 65536}, "mtu"),
        ({"ip_addresses": ["10.0.0.1"]}, "ip_addresses[0]"),
        ({"ip_addresses": ["10.0.0.1/8", "10.0.0.300/8"]}, "ip_addresses[1]"),
        ({"ip_addresses": ["10.0.0.1/33"]}, "ip_addresses[0]"),
        ({"ip_addresses": ["2001:db8::1/64", "2001:db8:0::1/64"]}, "ip_addresses[1]"),
        ({"namespace": {"type": 2, "name": "ns1", "pid": 5}}, "namespace.pid"),
        ({"namespace": {"type": 0, "pid": 5, "name": "ns1"}}, "namespace.name"),
        ({"namespace": {"type": 1, "microservice": "web", "filepath": "/x"}}, "namespace.filepath"),
        (
            {"namespace": {"type": 3, "filepath": "/x", "microservice": "w"}},
            "namespace.microservice",
        ),
        ({"namespace": {"type": 2, "name": "a/b"}}, "namespace.name"),
        ({"namespace": {"type": 2, "name": ".."}}, "namespace.name"),
        ({"namespace": {"type": 2, "name": "n" * 256}}, "namespace.name"),
        ({"namespace": {"type": 3, "filepath": "relative/ns"}}, "namespace.filepath"),
        ({"namespace": {"type": 1}}, "namespace.microservice"),
        ({"namespace": {"type": 9}}, "namespace.type"),
    ],
)
def test_validation_rules_name_the_field(changes: dict[str, Any], field: str) -> None:
    err = _error(_doc(**changes))
    assert err.field == field, str(err)


def test_name_is_checked_as_kernel_name_when_host_if_name_is_unset() -> None:
    name = "sixteen-bytes-xx"
    assert _error(_doc(name=name), name=name).field == "name"


def test_long_name_is_fine_with_a_short_host_if_name() -> None:
    name = "a-rather-long-config-name"
    assert _parse(_doc(name=name, host_if_name="short"), name=name).host_if_name == "short"


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        (None, NamespaceConfig()),
        ({}, NamespaceConfig()),
        ({"type": 0, "pid": 0}, NamespaceConfig()),
        ({"type": "PID_REF_NS", "pid": 42}, NamespaceConfig(kind="pid", pid=42)),
        ({"type": 2, "name": ""}, NamespaceConfig()),
        ({"type": 2, "name": "ns1"}, NamespaceConfig(kind="named", name="ns1")),
        ({"type": 3, "filepath": ""}, NamespaceConfig()),
        ({"type": 3, "filepath": "/run/x"}, NamespaceConfig(kind="file", path="/run/x")),
        (
            {"type": 1, "microservice": "web"},
            NamespaceConfig(kind="microservice", microservice="web"),
        ),
    ],
)
def test_namespace_union(namespace: dict[str, Any] | None, expected: NamespaceConfig) -> None:
    assert _parse(_doc(namespace=namespace)).namespace == expected


def test_addresses_are_normalized_and_mtu_zero_is_unset() -> None:
    config = _parse(_doc(mtu=0, ip_addresses=["2001:DB8:0:0:0:0:0:1/64", "10.1.2.3/16"]))
    assert config.addresses == ("2001:db8::1/64", "10.1.2.3/16")
    assert config.mtu == 0


def test_an_mtu_below_1280_cannot_carry_ipv6_addresses() -> None:
    """The kernel removes IPv6 addresses below 1280 and refuses to add them (EINVAL)."""
    err = _error(_doc(mtu=1279, ip_addresses=["10.0.0.1/24", "2001:db8::1/64"]))
    assert err.field == "mtu" and "below 1280" in str(err)
    assert _parse(_doc(mtu=1279, ip_addresses=["10.0.0.1/24"])).mtu == 1279
    assert _parse(_doc(mtu=1280, ip_addresses=["2001:db8::1/64"])).mtu == 1280


def test_validate_pairing_reports_the_end_whose_peer_points_elsewhere() -> None:
    a = _parse(_doc(name="a", veth={"peer_if_name": "b"}), name="a")
    b = _parse(_doc(name="b", veth={"peer_if_name": "c"}), name="b")
    problems = validate_pairing({"a": a, "b": b})
    assert list(problems) == ["a"]
    assert problems["a"].startswith("peer mismatch: a names b")


def test_validate_pairing_accepts_symmetric_and_half_configured_pairs() -> None:
    a = _parse(_doc(name="a", veth={"peer_if_name": "b"}), name="a")
    b = _parse(_doc(name="b", veth={"peer_if_name": "a"}), name="b")
    c = _parse(_doc(name="c", veth={"peer_if_name": "d"}), name="c")
    assert validate_pairing({"a": a, "b": b, "c": c}) == {}


_PLAIN_DOCUMENTS = [
    {"name": "a", "type": 0, "enabled": True, "mtu": 1500, "phys_address": "02:00:00:00:00:01",
     "ip_addresses": ["10.0.0.1/24", "2001:db8::1/64"], "namespace": {"type": 2, "name": "n"},
     "veth": {"peer_if_name": "b"}},
    {"name": "a", "type": "VETH", "enabled": False, "physAddress": "", "ipAddresses": [],
     "hostIfName": "h", "namespace": {"type": "MICROSERVICE_REF_NS", "microservice": "web"},
     "veth": {"peerIfName": "b"}, "description": "zwölf \u2603"},
    {"name": "a", "namespace": {}, "veth": {}, "mtu": 0, "ip_addresses": ["x"]},
    {"name": "a", "namespace": {"type": 0, "pid": 4294967295}},
    {},
]


@pytest.mark.parametrize("document", _PLAIN_DOCUMENTS)
def test_the_plain_fill_makes_what_json_format_makes(document: dict[str, object]) -> None:
    from google.protobuf import json_format

    from controller import model
    from netagent_api import interface_pb2

    fast = interface_pb2.Interface()
    assert model._plain_fill(document, fast)
    slow = json_format.ParseDict(document, interface_pb2.Interface())
    assert fast == slow
    assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(deterministic=True)
    assert [fast.HasField(f) for f in ("namespace", "veth")] == [
        slow.HasField(f) for f in ("namespace", "veth")]


@pytest.mark.parametrize("document", [
    {"nmae": "a"}, {"veth": {"peer": "b"}}, {"mtu": "1500"}, {"mtu": 1.5}, {"mtu": -1},
    {"mtu": 1 << 32}, {"mtu": True}, {"type": 7}, {"type": "NOPE"}, {"enabled": 1},
    {"name": None}, {"veth": None}, {"ip_addresses": "10.0.0.1/24"}, {"ip_addresses": [1]},
    {"namespace": {"pid": -1}}, {"namespace": []}, {"name": "\ud800"},
])
def test_anything_else_is_left_to_json_format(document: dict[str, object]) -> None:
    from controller import model
    from netagent_api import interface_pb2

    assert not model._plain_fill(document, interface_pb2.Interface())


def test_configs_naming_one_namespace_share_it() -> None:
    """10,000 configs in a few namespaces (issue 16's controller RSS figure)."""
    first = _parse(_doc(namespace={"type": 2, "name": "ns1"}))
    second = _parse(_doc(namespace={"type": 2, "name": "ns1"}))
    other = _parse(_doc(namespace={"type": 2, "name": "ns2"}))
    assert first.namespace is second.namespace
    assert other.namespace == NamespaceConfig(kind="named", name="ns2")
