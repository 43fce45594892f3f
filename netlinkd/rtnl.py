"""A small rtnetlink client: the few requests the helper sends, the link and address
messages it reads, and pipelining.

Pipelining: `transact` writes many requests with one sendmsg and reads the replies after.
The kernel runs the requests of one sendmsg in order, each to the end, before sendmsg
returns, and answers every one (NLM_F_ACK), so each request gets exactly one verdict.
A failed request does not stop the ones after it: callers pipeline only requests that
are safe to run whatever the fate of the others, and check every verdict.

Only what the helper uses is here, on purpose: veth creation in place (both ends born in
their namespace, with name, MAC, MTU, group), link changes (alias, up/down, MTU, MAC,
group), deletion by ifindex or group, address add/delete, link and address reads.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ACK attributes follow
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO = 1, 3, 4, 18
IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD, IFLA_EXT_MASK = 20, 27, 28, 29
IFLA_OPERSTATE, IFLA_STATS64 = 16, 23
OPER_STATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP = 0x1
NLA_F_NESTED = 1 << 15
SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 10, 11, 12
SO_RCVBUFFORCE = 33
RCVBUF = 4 << 20
WINDOW = 256  # requests per sendmsg: their answers must fit the receive buffer
RECV = 64 << 10  # a datagram: a dump's are at most 32 KiB, other answers are one message

_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
STATISTICS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes",
              "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")
_STATS = struct.Struct(f"={len(STATISTICS)}Q")  # the first counters of rtnl_link_stats64
_ERR = struct.Struct("=i")
LINK_ATTRS = frozenset({IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_IFALIAS, IFLA_GROUP,
                        IFLA_OPERSTATE})
STATS_ATTRS = LINK_ATTRS | {IFLA_STATS64}  # and the counters
GROUP_ATTRS = frozenset({IFLA_IFNAME, IFLA_GROUP})  # all a group delete's check reads
T = TypeVar("T")


class NetlinkError(Exception):
    """The kernel refused a request: `code` is the errno, the text its reason."""

    def __init__(self, code: int, text: str = "") -> None:
        super().__init__(f"{errno.errorcode.get(code, code)}: {text or os.strerror(code)}")
        self.code = code


class DumpInterrupted(Exception):
    """The dump changed under us (NLM_F_DUMP_INTR); read it again."""


# ---- encoding ------------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))


def _text(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _nested(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _mac(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


@dataclass(frozen=True)
class Request:
    kind: int
    flags: int
    body: bytes

    def encode(self, seq: int) -> bytes:
        return _HDR.pack(_HDR.size + len(self.body), self.kind, self.flags, seq, 0) + self.body


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


@dataclass(frozen=True)
class EndSpec:
    """One end of a veth pair as it is born: name, namespace fd, MAC, MTU, link group."""

    name: str
    netns_fd: int
    mac: str = ""
    mtu: int = 0
    group: int = 0

    def attrs(self) -> bytes:
        parts = [_text(IFLA_IFNAME, self.name), _u32(IFLA_NET_NS_FD, self.netns_fd),
                 _u32(IFLA_GROUP, self.group)]
        if self.mac:
            parts.append(_attr(IFLA_ADDRESS, _mac(self.mac)))
        if self.mtu:
            parts.append(_u32(IFLA_MTU, self.mtu))
        return b"".join(parts)


def create_veth(a: EndSpec, b: EndSpec) -> Request:
    """Both ends in one RTM_NEWLINK, each born in its own namespace."""
    info = _nested(IFLA_LINKINFO, _text(IFLA_INFO_KIND, "veth"),
                   _nested(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, _ifinfo() + b.attrs())))
    return Request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                   _ifinfo() + a.attrs() + info)


def set_link(index: int, *, alias: str | None = None, up: bool | None = None,
             mtu: int | None = None, mac: str | None = None,
             group: int | None = None) -> Request:
    parts = []
    if alias is not None:
        parts.append(_text(IFLA_IFALIAS, alias))
    if mtu is not None:
        parts.append(_u32(IFLA_MTU, mtu))
    if mac is not None:
        parts.append(_attr(IFLA_ADDRESS, _mac(mac)))
    if group is not None:
        parts.append(_u32(IFLA_GROUP, group))
    flags = IFF_UP if up else 0
    change = 0 if up is None else IFF_UP
    return Request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                   _ifinfo(index, flags, change) + b"".join(parts))


def delete_link(index: int) -> Request:
    return Request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, _ifinfo(index))


def delete_group(group: int) -> Request:
    """Every link of the group, after one RCU grace period for all of them."""
    return Request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, _ifinfo() + _u32(IFLA_GROUP, group))


def get_link(*, name: str = "", index: int = 0) -> Request:
    attrs = _u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS)
    if name:
        attrs += _text(IFLA_IFNAME, name)
    return Request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, _ifinfo(index) + attrs)


def dump_links(statistics: bool = False) -> Request:
    """Every link; without counters (cheaper) unless `statistics`."""
    mask = 0 if statistics else RTEXT_FILTER_SKIP_STATS
    return Request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, _ifinfo() + _u32(IFLA_EXT_MASK, mask))


def _address(kind: int, flags: int, index: int, address: str) -> Request:
    iface = (ipaddress.IPv6Interface if ":" in address else ipaddress.IPv4Interface)(address)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    raw = iface.ip.packed
    body = _IFADDR.pack(family, iface.network.prefixlen, 0, 0, index)
    return Request(kind, flags, body + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw))


def add_address(index: int, address: str) -> Request:
    """`address` is "ip/prefix"."""
    return _address(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                    index, address)


def del_address(index: int, address: str) -> Request:
    return _address(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, index, address)


def dump_addresses(index: int = 0) -> Request:
    """All addresses, or (strict checking is on) only those of ifindex `index`."""
    return Request(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, _IFADDR.pack(0, 0, 0, 0, index))


# ---- decoding ------------------------------------------------------------------------------


def _attrs(data: bytes, offset: int, wanted: frozenset[int]) -> dict[int, bytes]:
    """The `wanted` attributes from `offset` on; the others are skipped, not copied, and
    the walk stops once every wanted one is found."""
    found: dict[int, bytes] = {}
    end = len(data)
    while offset + _ATTR.size <= end and len(found) < len(wanted):
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size or offset + size > end:
            break
        if kind & 0x3FFF in wanted:
            found[kind & 0x3FFF] = data[offset + _ATTR.size:offset + size]
        offset += (size + 3) & ~3
    return found


def _cstr(raw: bytes | None) -> str:
    return "" if raw is None else raw.split(b"\0", 1)[0].decode(errors="replace")


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x (1,000s a batch)
class LinkInfo:
    index: int
    name: str
    alias: str
    mac: str
    mtu: int
    up: bool
    group: int
    oper_state: str = ""
    statistics: tuple[int, ...] = ()  # in STATISTICS order


@dataclass(slots=True)
class AddressInfo:
    index: int
    family: int
    raw: bytes
    prefixlen: int

    @property
    def address(self) -> str:
        return socket.inet_ntop(self.family, self.raw)

    @property
    def kernel_link_local(self) -> bool:
        """fe80::/10, which the kernel gives every IPv6 link by itself."""
        return self.family == socket.AF_INET6 and self.raw[0] == 0xFE and self.raw[1] >> 6 == 2


def parse_link(message: bytes, wanted: frozenset[int] = LINK_ATTRS) -> LinkInfo:
    """The link's fields the helper uses (those of `wanted`; add IFLA_STATS64 for its
    counters)."""
    _family, _type, index, flags, _change = _IFINFO.unpack_from(message, _HDR.size)
    attrs = _attrs(message, _HDR.size + _IFINFO.size, wanted)
    return LinkInfo(
        index=index,
        name=_cstr(attrs.get(IFLA_IFNAME)),
        alias=_cstr(attrs.get(IFLA_IFALIAS)),
        mac=attrs.get(IFLA_ADDRESS, b"").hex(":"),
        mtu=_U32.unpack(attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0,
        up=bool(flags & IFF_UP),
        group=_U32.unpack(attrs[IFLA_GROUP])[0] if IFLA_GROUP in attrs else 0,
        oper_state=_oper_state(attrs.get(IFLA_OPERSTATE)),
        statistics=_STATS.unpack_from(attrs[IFLA_STATS64])
        if len(attrs.get(IFLA_STATS64, b"")) >= _STATS.size else (),
    )


def link_index(message: bytes) -> int:
    return int(_IFINFO.unpack_from(message, _HDR.size)[2])


def _oper_state(raw: bytes | None) -> str:
    if not raw:
        return ""
    return OPER_STATES[raw[0]] if raw[0] < len(OPER_STATES) else str(raw[0])


def parse_address(message: bytes) -> AddressInfo | None:
    family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(message, _HDR.size)
    attrs = _attrs(message, _HDR.size + _IFADDR.size, frozenset({IFA_ADDRESS, IFA_LOCAL}))
    raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
    if raw is None:
        return None
    return AddressInfo(index, family, raw, prefixlen)


def _messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, whole message) for each message of a datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        size, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if size < _HDR.size:
            return
        yield kind, flags, seq, data[offset:offset + size]
        offset += (size + 3) & ~3


def _error(message: bytes, flags: int) -> NetlinkError | None:
    (code,) = _ERR.unpack_from(message, _HDR.size)
    if code == 0:
        return None
    text = ""
    if flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the echoed request is only its header.
        text = _cstr(_attrs(message, _HDR.size + _ERR.size + _HDR.size,
                            frozenset({NLMSGERR_ATTR_MSG})).get(NLMSGERR_ATTR_MSG))
    return NetlinkError(-code, text)


# ---- the socket ----------------------------------------------------------------------------


@dataclass
class Reply:
    """What the kernel answered one request: the links it sent (parsed as they came), then
    its verdict."""

    links: list[LinkInfo] = field(default_factory=list)
    error: NetlinkError | None = None

    def check(self) -> list[LinkInfo]:
        if self.error is not None:
            raise self.error
        return self.links


class Rtnl:
    """A NETLINK_ROUTE socket (already bound to its namespace) used one request at a time
    or pipelined. Not thread-safe: one owner thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)  # dumps filter in the kernel
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind((0, 0))
        self._seq = 0

    @classmethod
    def here(cls) -> Rtnl:
        """A socket in the calling thread's namespace."""
        return cls(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def transact(self, requests: Sequence[Request]) -> list[Reply]:
        """Every request's reply, in order; WINDOW requests per sendmsg."""
        replies = [Reply() for _ in requests]
        for start in range(0, len(requests), WINDOW):
            for slot, kind, flags, message in self._answers(requests[start:start + WINDOW]):
                if kind == NLMSG_ERROR:
                    replies[start + slot].error = _error(message, flags)
                elif kind == RTM_NEWLINK:
                    replies[start + slot].links.append(parse_link(message))
        return replies

    def request(self, request: Request) -> list[LinkInfo]:
        """One request; the links it answered, or its NetlinkError."""
        return self.transact([request])[0].check()

    def dump(self, request: Request, parse: Callable[[bytes], T | None]) -> list[T]:
        """A dump's records: each message is parsed as it arrives and only what `parse`
        returns is kept (None: nothing), never the messages."""
        found: list[T] = []
        interrupted = False
        for _slot, kind, flags, message in self._answers([request]):
            interrupted |= bool(flags & NLM_F_DUMP_INTR)
            if kind == NLMSG_ERROR and (error := _error(message, flags)) is not None:
                raise error
            if kind not in (NLMSG_ERROR, NLMSG_DONE) and (record := parse(message)) is not None:
                found.append(record)
        if interrupted:
            raise DumpInterrupted("the kernel's table changed during the dump")
        return found

    def links(self, wanted: frozenset[int] = LINK_ATTRS,
              keep: Callable[[LinkInfo], bool] = lambda _link: True) -> list[LinkInfo]:
        return self.dump(dump_links(IFLA_STATS64 in wanted), lambda message: link if keep(
            link := parse_link(message, wanted)) else None)

    def addresses(self, index: int = 0) -> list[AddressInfo]:
        return self.dump(dump_addresses(index), parse_address)

    def _answers(self, requests: Sequence[Request]) -> Iterator[tuple[int, int, int, bytes]]:
        """One sendmsg; then (request's slot, type, flags, message) of each answer as it is
        read. Every request ends with its NLMSG_ERROR (an ACK, code 0, or the refusal) or,
        for a dump, its NLMSG_DONE."""
        first = self._seq + 1
        self._seq = (self._seq + len(requests)) % (1 << 31)
        self.sock.sendmsg([r.encode(first + i) for i, r in enumerate(requests)])
        done = [False] * len(requests)
        pending = len(requests)
        while pending:
            for kind, flags, seq, message in _messages(self.sock.recv(RECV)):
                slot = seq - first
                if not 0 <= slot < len(requests) or done[slot]:
                    continue  # a stray answer to an earlier, abandoned request
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    done[slot] = True
                    pending -= 1
                yield slot, kind, flags, message
