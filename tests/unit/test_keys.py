"""controller.keys: builders and parsers round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import keys

_segment = st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s)


def test_prefixes_follow_the_seed_layout() -> None:
    assert keys.config_prefix("vpp1") == "/vnf-agent/vpp1/linux/config/v1/interface/"
    assert keys.status_prefix("vpp1") == "/vnf-agent/vpp1/linux/status/v1/interface/"
    assert keys.config_key("vpp1", "veth1") == "/vnf-agent/vpp1/linux/config/v1/interface/veth1"
    assert keys.status_key("vpp1", "veth1") == "/vnf-agent/vpp1/linux/status/v1/interface/veth1"


@given(_segment, _segment)
def test_config_key_round_trips(label: str, name: str) -> None:
    assert keys.name_from_config_key(label, keys.config_key(label, name)) == name


@pytest.mark.parametrize(
    "key",
    [
        "/vnf-agent/vpp1/linux/config/v1/interface/",
        "/vnf-agent/vpp1/linux/config/v1/interface/a/b",
        "/vnf-agent/vpp2/linux/config/v1/interface/veth1",
        "/vnf-agent/vpp1/linux/status/v1/interface/veth1",
        "veth1",
    ],
)
def test_keys_not_directly_under_the_prefix_have_no_name(key: str) -> None:
    assert keys.name_from_config_key("vpp1", key) is None


@pytest.mark.parametrize(
    ("label", "name"), [("a/b", "veth1"), ("vpp1", "a/b"), ("", "veth1"), ("vpp1", "")]
)
def test_builders_reject_slashes_and_empty_segments(label: str, name: str) -> None:
    with pytest.raises(ValueError, match="'/'"):
        keys.config_key(label, name)
    with pytest.raises(ValueError, match="'/'"):
        keys.status_key(label, name)
