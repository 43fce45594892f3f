"""Conversion between `controller.ops` data and the helper's protobuf messages. Pure."""

from __future__ import annotations

from controller.ops import (
    STATISTICS,
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


class WireError(ValueError):
    """A protobuf message the controller cannot represent."""


def ns_to_proto(ref: NsRef) -> helper_pb2.NamespaceRef:
    message = helper_pb2.NamespaceRef(expect_inode=ref.expect_inode)
    if ref.kind == "name":
        message.name = ref.name
    elif ref.kind == "pid":
        message.pid = ref.pid
    elif ref.kind == "path":
        message.path = ref.path
    return message


def ns_from_proto(message: helper_pb2.NamespaceRef) -> NsRef:
    which = message.WhichOneof("kind")
    inode = message.expect_inode
    if which == "name":
        return NsRef(kind="name", name=message.name, expect_inode=inode)
    if which == "pid":
        return NsRef.of_pid(message.pid, inode)
    if which == "path":
        return NsRef.of_path(message.path, inode)
    return NsRef(expect_inode=inode)


def _spec_to_proto(spec: LinkSpec) -> helper_pb2.LinkSpec:
    return helper_pb2.LinkSpec(
        name=spec.name, netns=ns_to_proto(spec.netns), mac=spec.mac, mtu=spec.mtu,
        up=spec.up, addresses=list(spec.addresses),
    )


def _spec_from_proto(message: helper_pb2.LinkSpec) -> LinkSpec:
    return LinkSpec(
        name=message.name, netns=ns_from_proto(message.netns), mac=message.mac,
        mtu=message.mtu, up=message.up, addresses=tuple(message.addresses),
    )


def _set_link_to_proto(op: SetLink) -> helper_pb2.SetLink:
    message = helper_pb2.SetLink(name=op.name, netns=ns_to_proto(op.netns))
    if op.mac is not None:
        message.mac = op.mac
    if op.mtu is not None:
        message.mtu = op.mtu
    if op.up is not None:
        message.up = op.up
    return message


def op_to_proto(op: Op) -> helper_pb2.Operation:
    if isinstance(op, CreateVethPair):
        return helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(
            a=_spec_to_proto(op.a), b=_spec_to_proto(op.b)))
    if isinstance(op, DeleteLink):
        return helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(
            name=op.name, netns=ns_to_proto(op.netns)))
    if isinstance(op, SetLink):
        return helper_pb2.Operation(set_link=_set_link_to_proto(op))
    if isinstance(op, AddAddress):
        return helper_pb2.Operation(add_address=helper_pb2.AddAddress(
            name=op.name, netns=ns_to_proto(op.netns), address=op.address))
    return helper_pb2.Operation(del_address=helper_pb2.DelAddress(
        name=op.name, netns=ns_to_proto(op.netns), address=op.address))


def op_from_proto(message: helper_pb2.Operation) -> Op:
    which = message.WhichOneof("op")
    if which == "create_veth_pair":
        pair = message.create_veth_pair
        return CreateVethPair(a=_spec_from_proto(pair.a), b=_spec_from_proto(pair.b))
    if which == "delete_link":
        return DeleteLink(message.delete_link.name, ns_from_proto(message.delete_link.netns))
    if which == "set_link":
        s = message.set_link
        return SetLink(
            name=s.name, netns=ns_from_proto(s.netns),
            mac=s.mac if s.HasField("mac") else None,
            mtu=s.mtu if s.HasField("mtu") else None,
            up=s.up if s.HasField("up") else None,
        )
    if which == "add_address":
        a = message.add_address
        return AddAddress(a.name, ns_from_proto(a.netns), a.address)
    if which == "del_address":
        d = message.del_address
        return DelAddress(d.name, ns_from_proto(d.netns), d.address)
    raise WireError("operation has no op set")


def observed_from_proto(message: helper_pb2.ObservedLink) -> ObservedLink:
    return ObservedLink(
        name=message.name, netns=ns_from_proto(message.netns), ifindex=message.ifindex,
        mac=message.mac, mtu=message.mtu, up=message.up,
        addresses=tuple(message.addresses), peer=message.peer,
        netns_inode=message.netns_inode, oper_state=message.oper_state,
        statistics=tuple(getattr(message.statistics, name) for name in STATISTICS)
        if message.HasField("statistics") else (),
    )


def observed_to_proto(link: ObservedLink) -> helper_pb2.ObservedLink:
    return helper_pb2.ObservedLink(
        name=link.name, netns=ns_to_proto(link.netns), netns_inode=link.netns_inode,
        ifindex=link.ifindex, mac=link.mac, mtu=link.mtu, up=link.up,
        addresses=list(link.addresses), peer=link.peer, oper_state=link.oper_state,
        statistics=helper_pb2.LinkStatistics(**dict(zip(STATISTICS, link.statistics,
                                                        strict=True)))
        if link.statistics else None,
    )


def describe_op(op: Op) -> str:
    """A short human name for an operation, for status reasons and logs."""
    if isinstance(op, CreateVethPair):
        return f"create veth {op.a.name}<->{op.b.name}"
    if isinstance(op, DeleteLink):
        return f"delete {op.name} in {op.netns.describe()}"
    if isinstance(op, SetLink):
        return f"set {op.name} in {op.netns.describe()}"
    if isinstance(op, AddAddress):
        return f"add address {op.address} to {op.name}"
    return f"remove address {op.address} from {op.name}"


def op_links(op: Op) -> tuple[str, ...]:
    """Kernel link names an operation touches."""
    if isinstance(op, CreateVethPair):
        return (op.a.name, op.b.name)
    return (op.name,)
