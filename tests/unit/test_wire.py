"""wire: Op / NsRef / ObservedLink round trips through protobuf."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import wire
from controller.ops import (
    AddAddress,
    CreateVethPair,
    DelAddress,
    DeleteLink,
    LinkSpec,
    NsRef,
    ObservedLink,
    Op,
    SetLink,
)
from netagent_api import helper_pb2

_names = st.text("abcdefgh0123456789-", min_size=1, max_size=15)
_refs = st.one_of(
    st.just(NsRef.host()),
    st.builds(NsRef.named, _names),
    st.builds(NsRef.of_pid, st.integers(1, 2**31), st.integers(0, 2**63)),
    st.builds(NsRef.of_path, st.text(min_size=1, max_size=40), st.integers(0, 2**63)),
)
_specs = st.builds(LinkSpec, _names, _refs, st.just("aa:bb:cc:dd:ee:ff"),
                   st.integers(0, 65535), st.booleans(),
                   st.lists(st.just("10.0.0.1/24"), max_size=2).map(tuple))
_ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(CreateVethPair, _specs, _specs),
    st.builds(DeleteLink, _names, _refs),
    st.builds(SetLink, _names, _refs, st.none() | st.just("02:00:00:00:00:01"),
              st.none() | st.integers(0, 65535), st.none() | st.booleans()),
    st.builds(AddAddress, _names, _refs, st.just("10.1.1.1/32")),
    st.builds(DelAddress, _names, _refs, st.just("fd00::1/64")),
)


@given(_ops)
def test_op_round_trip(op: Op) -> None:
    message = wire.op_to_proto(op)
    again = helper_pb2.Operation.FromString(message.SerializeToString())
    assert wire.op_from_proto(again) == op


def test_set_link_sends_only_given_fields() -> None:
    message = wire.op_to_proto(SetLink("a", NsRef.host(), up=False))
    assert message.set_link.HasField("up") and not message.set_link.HasField("mtu")


def test_host_ref_has_no_kind() -> None:
    assert wire.ns_to_proto(NsRef.host()).WhichOneof("kind") is None


def test_observed_round_trip() -> None:
    link = ObservedLink("veth1", NsRef.named("ns1"), 7, "aa:bb:cc:dd:ee:ff", 1500, True,
                        ("10.0.0.1/24",), "veth2", netns_inode=4026531840)
    assert wire.observed_from_proto(wire.observed_to_proto(link)) == link


def test_empty_operation_is_rejected() -> None:
    with pytest.raises(wire.WireError):
        wire.op_from_proto(helper_pb2.Operation())
