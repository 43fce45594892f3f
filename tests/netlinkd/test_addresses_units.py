"""The address book's pure rules (found by bench/mutation.py): which addresses the kernel
drops with a deleted IPv4 primary, and how addresses compare."""

from __future__ import annotations

from netlinkd import addresses


def test_only_ipv4_addresses_of_one_subnet_go_with_their_primary() -> None:
    assert addresses._same_ipv4_subnet("10.0.0.1/24", "10.0.0.2/24")
    assert not addresses._same_ipv4_subnet("10.0.0.1/24", "10.0.1.1/24")
    assert not addresses._same_ipv4_subnet("10.0.0.1/24", "10.0.0.1/25")
    assert not addresses._same_ipv4_subnet("fd00::1/64", "fd00::2/64")


def test_addresses_compare_in_one_normal_form() -> None:
    assert addresses._normal("10.0.0.1/24") == "10.0.0.1/24"
    assert addresses._normal("fd00:0::1/64") == "fd00::1/64"
