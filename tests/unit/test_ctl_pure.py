"""netagent-ctl's pure parts: key splitting, seed aliases, the built-in examples, tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller import ctl_output, ctl_seed, keys
from controller.model import parse_interface

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_split_config_key_round_trips() -> None:
    key = keys.config_key("my-agent", "veth1")
    assert keys.split_config_key(key) == ("my-agent", "veth1")
    for bad in ("/vnf-agent/a/linux/status/v1/interface/x", "/vnf-agent//linux/config/v1/"
                "interface/x", key + "/more", keys.config_prefix("a"), "veth1"):
        assert keys.split_config_key(bad) is None, bad


@pytest.mark.parametrize(("argv", "expanded"), [
    (["-put", "K", "F"], ["put", "K", "F"]),
    (["--label", "x", "-cvth1"], ["--label", "x", "put-example", "veth1"]),
    (["-dvth2", "--etcd", "h:1"], ["del", "veth2", "--etcd", "h:1"]),
    (["status", "--", "-cvth1"], ["status", "--", "-cvth1"]),
])
def test_seed_aliases(argv: list[str], expanded: list[str]) -> None:
    assert ctl_seed.expand_aliases(argv) == expanded


@pytest.mark.parametrize("name", sorted(ctl_seed.EXAMPLES))
def test_examples_are_the_seed_files_and_valid(name: str) -> None:
    assert ctl_seed.EXAMPLES[name] == json.loads((FIXTURES / f"{name}.json").read_text())
    config = parse_interface(keys.config_key("a", name), ctl_seed.example_value(name))
    assert config.namespace.kind == "named" and len(config.addresses) == 2


def test_status_table_shows_live_columns_only_when_present() -> None:
    plain = ctl_output.status_table([{"name": "a", "state": "CONFIGURED", "reason": ""}])
    assert plain.split("\n")[0].split() == ["NAME", "STATE", "REASON"]
    live = ctl_output.status_table([
        {"name": "a", "state": "CONFIGURED", "reason": "", "kernel_name": "a",
         "namespace": {"name": "ns1"}, "ifindex": 7, "oper_state": "UP",
         "statistics": {"rx_packets": 3, "rx_bytes": 300, "tx_packets": 1, "tx_bytes": 98,
                        "rx_dropped": 1}},
        {"name": "b", "state": "PENDING", "reason": "waiting", "warnings": ["w"]},
    ]).splitlines()
    assert live[0].split() == ["NAME", "STATE", "NETNS", "IFINDEX", "OPER", "RX", "TX",
                               "REASON"]
    assert live[1].split() == ["a", "CONFIGURED", "ns1", "7", "UP", "3p/300B/1err", "1p/98B",
                               "-"]
    assert live[2].split(None, 7)[-1] == "waiting [warning: w]"
