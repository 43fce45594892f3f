"""Events the adapters post to the agent loop. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.ops import NsRef


@dataclass(frozen=True)
class ConfigPut:
    """An etcd config key was written. `raw` is the value exactly as stored; `revision` is
    the key's mod_revision (0: not known), published with its status. `parsed`: the value
    parsed (`Agent.parse_config`) by the watcher's thread, or None."""

    name: str
    raw: bytes
    revision: int = 0
    parsed: object = field(default=None, compare=False)


@dataclass(frozen=True)
class ConfigDeleted:
    name: str


@dataclass(frozen=True)
class ConfigChanges:
    """The changes of one etcd watch response (a transaction, a delete of a prefix),
    posted together: the agent takes them in one pass, not in as many as it happened to
    wake up for while the watcher posted them one by one."""

    changes: tuple[ConfigPut | ConfigDeleted, ...]


@dataclass(frozen=True)
class ConfigSnapshot:
    """A full listing (start, compaction, reconnect): replaces the whole desired state.
    `revisions`: name -> the key's mod_revision (a name missing: not known). `parsed`:
    name -> the value parsed (`Agent.parse_config`) by the watcher's thread, for some or
    all names."""

    values: Mapping[str, bytes]
    revisions: Mapping[str, int] = field(default_factory=dict)
    parsed: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Microservice:
    label: str
    container_id: str
    sandbox_key: str
    pid: int
    started_at: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class MicroservicesChanged:
    """The complete map of running microservices, label -> winning container."""

    running: Mapping[str, Microservice]
    connected: bool = True
    reason: str = ""


@dataclass(frozen=True)
class HelperReconnected:
    """The helper answered Hello with an instance id we have not synced with."""

    instance: bytes
    generation: int = 0  # the link monitor's, when the stream began (0: not known)


@dataclass(frozen=True, slots=True)
class OwnedLinkChange:
    """One of this agent's links as the helper saw it after a change (helper.proto
    LinkChange). `watched_as`: the helper's reference to its namespace, serialized, as
    batch replies name it; `generation`: of the helper's event (see `OwnChanges`)."""

    name: str
    netns: NsRef
    watched_as: bytes
    generation: int
    ifindex: int = 0
    mac: str = ""
    mtu: int = 0
    up: bool = False
    oper_state: str = ""
    peer: str = ""
    deleted: bool = False
    added_addresses: tuple[str, ...] = ()
    removed_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LinksChanged:
    """The helper saw this agent's links change (or lost track: `overrun`), or a namespace
    a batch named lose its name or file; from helper `instance`."""

    changes: tuple[OwnedLinkChange, ...] = ()
    overrun: bool = False
    namespaces_gone: tuple[str, ...] = ()
    instance: bytes = b""

    @property
    def links(self) -> tuple[str, ...]:
        return tuple(sorted({change.name for change in self.changes}))


@dataclass(frozen=True)
class LiveTick:
    """Time to refresh statistics, or to publish a status held back while it settled."""


@dataclass(frozen=True)
class ResyncTick:
    """Periodic drift check: observe the kernel again and reconcile."""


@dataclass(frozen=True)
class Stop:
    reason: str = field(default="stop requested")


Event = (
    ConfigPut
    | ConfigDeleted
    | ConfigChanges
    | ConfigSnapshot
    | MicroservicesChanged
    | HelperReconnected
    | LinksChanged
    | LiveTick
    | ResyncTick
    | Stop
)
