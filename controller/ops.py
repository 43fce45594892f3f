"""Plain data shared by the controller's pure core and its adapters.

Nothing here does I/O. The reconciler produces `Op`s; `controller.wire` turns them
into the helper's protobuf messages; the helper's replies come back as `ObservedLink`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

NsKind = Literal["host", "name", "pid", "path"]


@dataclass(frozen=True, order=True)
class NsRef:
    """A namespace as the helper resolves it. `host` is the helper's own namespace."""

    kind: NsKind = "host"
    name: str = ""
    pid: int = 0
    path: str = ""
    expect_inode: int = 0

    @staticmethod
    def host() -> NsRef:
        return NsRef()

    @staticmethod
    def named(name: str) -> NsRef:
        return NsRef(kind="name", name=name)

    @staticmethod
    def of_pid(pid: int, expect_inode: int = 0) -> NsRef:
        return NsRef(kind="pid", pid=pid, expect_inode=expect_inode)

    @staticmethod
    def of_path(path: str, expect_inode: int = 0) -> NsRef:
        return NsRef(kind="path", path=path, expect_inode=expect_inode)

    def identity(self) -> tuple[str, str | int]:
        """What makes two refs the same namespace, ignoring the inode guard."""
        if self.kind == "name":
            return ("name", self.name)
        if self.kind == "pid":
            return ("pid", self.pid)
        if self.kind == "path":
            return ("path", self.path)
        return ("host", "")

    def describe(self) -> str:
        kind, value = self.identity()
        return "the default namespace" if kind == "host" else f"namespace {kind}={value}"


@dataclass(frozen=True)
class LinkSpec:
    name: str
    netns: NsRef
    mac: str = ""
    mtu: int = 0
    up: bool = False
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateVethPair:
    a: LinkSpec
    b: LinkSpec


@dataclass(frozen=True)
class DeleteLink:
    name: str
    netns: NsRef


@dataclass(frozen=True)
class SetLink:
    name: str
    netns: NsRef
    mac: str | None = None
    mtu: int | None = None
    up: bool | None = None


@dataclass(frozen=True)
class AddAddress:
    name: str
    netns: NsRef
    address: str


@dataclass(frozen=True)
class DelAddress:
    name: str
    netns: NsRef
    address: str


Op = CreateVethPair | DeleteLink | SetLink | AddAddress | DelAddress


@dataclass(frozen=True)
class ObservedLink:
    """An owned link as the helper reported it."""

    name: str
    netns: NsRef
    ifindex: int
    mac: str
    mtu: int
    up: bool
    addresses: tuple[str, ...]
    peer: str
    netns_inode: int = 0
    oper_state: str = ""  # as the kernel says (IFLA_OPERSTATE); "" = not observed yet
    statistics: tuple[int, ...] = ()  # in `STATISTICS` order; () = not observed yet


STATISTICS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes",
              "rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


@dataclass(frozen=True)
class Live:
    """What the kernel says about a configured end: published with its status."""

    kernel_name: str
    namespace: NsRef
    ifindex: int = 0
    oper_state: str = ""
    # () = counters off; None = not taken yet: keep the ones published (a restart
    # rewrites nothing; new counters come at the statistics interval)
    statistics: tuple[int, ...] | None = ()


class State(str, Enum):  # noqa: UP042 -- keep str(State.X) == "State.X" semantics
    PENDING = "PENDING"
    CONFIGURED = "CONFIGURED"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Status:
    state: State
    reason: str
    warnings: tuple[str, ...] = field(default=())
    live: Live | None = field(default=None, compare=False)  # facts, not part of the verdict
    config_revision: int = 0  # mod_revision of the config this status reflects; 0 = unknown
