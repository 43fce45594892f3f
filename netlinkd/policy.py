"""What the helper agrees to do: limits, names, namespace allow-list. Safe defaults.

Policy file (TOML, optional), top-level keys:
  max_ops_per_batch = 256, max_addresses_per_link = 64, max_owned_links = 1024,
  allow_pid_refs = false,     # true brings CAP_SYS_PTRACE back (docs/SECURITY.md §1)
  time_window_seconds = 60,
  max_epochs = 64             # live epochs per trusted key in replay.json (see replay.py)
  max_named_namespaces = 1024 # entries in /var/run/netns before creating one is refused
  netns_dirs = ["/var/run/netns", "/run/netns", "/var/run/docker/netns", "/run/docker/netns"]
  address_prefixes = []   # e.g. ["10.20.0.0/16", "fd00:20::/48"]; empty: any address
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from netagent_api import helper_pb2
from netlinkd.errors import HelperError, Malformed, PolicyRefused, StartupError

IFNAMSIZ_MAX = 15
OWNER_MAX = 64
NAMED_NETNS_DIR = "/var/run/netns"
NAMED_DIR = ("dir", NAMED_NETNS_DIR)  # in a batch's checked references: resolved, allowed
DEFAULT_NETNS_DIRS = (NAMED_NETNS_DIR, "/run/netns", "/var/run/docker/netns", "/run/docker/netns")
MTU_MIN, MTU_MAX = 68, 65535
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_OWNER_RE = re.compile(r"[A-Za-z0-9_.@+=/-]+")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


@dataclass(frozen=True)
class Policy:
    max_ops_per_batch: int = 256
    max_addresses_per_link: int = 64
    max_owned_links: int = 1024
    allow_pid_refs: bool = False
    time_window_seconds: int = 60
    # A controller uses one epoch per start; an epoch stays live for 2 x the time window
    # after its last batch (120 s by default). The packaged unit restarts the controller
    # at most every 5 s, so even a crash loop keeps about 24 live: 64 leaves headroom and
    # bounds replay.json (rewritten and fsync'd on every batch) to 64 entries per key.
    max_epochs: int = 64
    # Named namespaces are never removed by the helper: bound how many it will create.
    max_named_namespaces: int = 1024
    netns_dirs: tuple[str, ...] = DEFAULT_NETNS_DIRS
    address_prefixes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def load_policy(path: str | None) -> Policy:
    if path is None:
        return Policy()
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StartupError(f"cannot load policy file {path}: {exc}") from exc
    known = {f.name: f.type for f in fields(Policy)}
    values: dict[str, object] = {}
    for key, value in table.items():
        if key not in known:
            raise StartupError(f"policy file {path}: unknown key {key!r}; known: {sorted(known)}")
        values[key] = _checked_value(path, key, value)
    return Policy(**values)  # type: ignore[arg-type]


def _checked_value(path: str, key: str, value: object) -> object:
    default = getattr(Policy(), key)
    if isinstance(default, tuple):  # netns_dirs, address_prefixes: lists of strings
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise StartupError(f"policy file {path}: {key} must be a list of strings")
        if key == "netns_dirs":
            return tuple(value)
        try:
            return tuple(ipaddress.ip_network(v, strict=True) for v in value)
        except ValueError as exc:
            raise StartupError(f"policy file {path}: {key}: {exc}") from exc
    if type(value) is not type(default):
        raise StartupError(f"policy file {path}: {key} must be {type(default).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
        raise StartupError(f"policy file {path}: {key} must be positive")
    return value


def check_ifname(name: str, where: str) -> None:
    size = len(name.encode())
    if not 1 <= size <= IFNAMSIZ_MAX:
        raise PolicyRefused(f"{where}: interface name {name!r} must be 1..15 bytes")
    if name in (".", "..") or not _IFNAME_RE.fullmatch(name):
        raise PolicyRefused(f"{where}: interface name {name!r} has forbidden characters")
    if name == "lo":
        raise PolicyRefused(f"{where}: the loopback interface 'lo' is never managed")


def check_owner(owner: str) -> None:
    if not 1 <= len(owner) <= OWNER_MAX or not _OWNER_RE.fullmatch(owner):
        raise PolicyRefused(f"batch owner {owner!r} must be 1..{OWNER_MAX} of [A-Za-z0-9_.@+=/-]")


def check_ns_name(name: str, where: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise PolicyRefused(f"{where}: namespace name {name!r} must be one path component")


def named_ns_path(policy: Policy, name: str, where: str, dir_checked: bool = False) -> str:
    """`NAMED_NETNS_DIR/<name>`, only while that directory is on the allow-list (resolved
    here unless `dir_checked`: by this batch's `check_batch`, on the same thread)."""
    check_ns_name(name, where)
    if not dir_checked and NAMED_NETNS_DIR not in policy.netns_dirs and os.path.realpath(
            NAMED_NETNS_DIR) not in {os.path.realpath(a) for a in policy.netns_dirs}:
        raise PolicyRefused(
            f"{where}: named namespaces ({NAMED_NETNS_DIR}) are not in the allowed "
            f"directories {list(policy.netns_dirs)}"
        )
    return os.path.join(NAMED_NETNS_DIR, name)


def canonical_ns_path(policy: Policy, path: str, where: str) -> str:
    """Resolve symlinks and `..`, then require the result inside an allowed directory."""
    if not os.path.isabs(path) or "\0" in path:
        raise PolicyRefused(f"{where}: namespace path {path!r} must be absolute")
    real = os.path.realpath(path)
    for allowed in policy.netns_dirs:
        base = os.path.realpath(allowed)
        if os.path.dirname(real) == base:
            return real
    raise PolicyRefused(
        f"{where}: namespace path {path!r} (resolves to {real!r}) is outside the allowed "
        f"directories {list(policy.netns_dirs)}"
    )


def check_ns_ref(policy: Policy, ref: helper_pb2.NamespaceRef, where: str,
                 passed: set[tuple[str, str | int]] | None = None) -> None:
    """`passed`: the references of this batch checked already (each costs realpaths), and
    `NAMED_DIR` once the named directory was found on the allow-list."""
    kind = ref.WhichOneof("kind")
    if passed is not None and ref_key(ref) in passed:
        return
    if kind == "name":
        named_ns_path(policy, ref.name, where, NAMED_DIR in (passed or ()))
    elif kind == "pid":
        if not policy.allow_pid_refs:
            raise PolicyRefused(f"{where}: PID namespace references are disabled by policy")
        if ref.pid <= 1:
            raise PolicyRefused(f"{where}: PID {ref.pid} cannot be a namespace reference")
    elif kind == "path":
        canonical_ns_path(policy, ref.path, where)
    if passed is not None:
        passed.update((ref_key(ref), NAMED_DIR) if kind == "name" else (ref_key(ref),))


def check_address(address: str, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in address:
        raise Malformed(f"{where}: address {address!r} must be 'addr/prefix'")
    try:
        # by its kind: ip_interface tries IPv4 first (an IPv6 address: 29 against 10 us)
        return (ipaddress.IPv6Interface if ":" in address else ipaddress.IPv4Interface)(address)
    except ValueError as exc:
        raise Malformed(f"{where}: address {address!r} is invalid: {exc}") from exc


def check_address_allowed(policy: Policy, address: str, where: str) -> None:
    """An added address (and the route its prefix implies) must lie in an allowed prefix."""
    interface = check_address(address, where)
    if not policy.address_prefixes:
        return
    network = interface.network
    if any(network.version == allowed.version and network.subnet_of(allowed)  # type: ignore[arg-type]
           for allowed in policy.address_prefixes):
        return
    allowed_text = ", ".join(str(p) for p in policy.address_prefixes)
    raise PolicyRefused(
        f"{where}: address {address} ({network}) is outside the allowed prefixes {allowed_text}"
    )


def check_mac(mac: str, where: str) -> None:
    if not _MAC_RE.fullmatch(mac):
        raise Malformed(f"{where}: mac {mac!r} must be six hex pairs separated by ':'")
    if int(mac[:2], 16) & 1 or mac.replace(":", "").strip("0") == "":
        raise Malformed(f"{where}: mac {mac!r} must be a unicast, non-zero address")


def check_mtu(mtu: int, where: str) -> None:
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise Malformed(f"{where}: mtu {mtu} is outside {MTU_MIN}..{MTU_MAX}")


def check_link_spec(policy: Policy, spec: helper_pb2.LinkSpec, where: str,
                    passed: set[tuple[str, str | int]] | None = None) -> None:
    check_ifname(spec.name, where)
    check_ns_ref(policy, spec.netns, where, passed)
    if spec.mac:
        check_mac(spec.mac, where)
    if spec.mtu:
        check_mtu(spec.mtu, where)
    if len(spec.addresses) > policy.max_addresses_per_link:
        raise PolicyRefused(
            f"{where}: {len(spec.addresses)} addresses exceed the limit of "
            f"{policy.max_addresses_per_link} per link"
        )
    for address in spec.addresses:
        check_address_allowed(policy, address, where)


def check_operation(policy: Policy, op: helper_pb2.Operation, where: str,
                    passed: set[tuple[str, str | int]] | None = None) -> None:
    kind = op.WhichOneof("op")
    if kind is None:
        raise Malformed(f"{where}: operation has no type")
    if kind == "create_veth_pair":
        pair = op.create_veth_pair
        check_link_spec(policy, pair.a, f"{where} end a", passed)
        check_link_spec(policy, pair.b, f"{where} end b", passed)
        if pair.a.name == pair.b.name and same_ref(pair.a.netns, pair.b.netns):
            raise PolicyRefused(f"{where}: both ends are named {pair.a.name!r} in one namespace")
        return
    target = getattr(op, kind)
    check_ifname(target.name, where)
    check_ns_ref(policy, target.netns, where, passed)
    if kind == "set_link" and target.HasField("mac"):
        check_mac(target.mac, where)
    if kind == "set_link" and target.HasField("mtu"):
        check_mtu(target.mtu, where)
    if kind == "add_address":
        check_address_allowed(policy, target.address, where)
    elif kind == "del_address":
        check_address(target.address, where)


def same_ref(a: helper_pb2.NamespaceRef, b: helper_pb2.NamespaceRef) -> bool:
    """The same reference (kind and value). Two ends may share a name in two namespaces,
    like eth0 in a container and eth0 on the host; the kernel refuses it in one."""
    return ref_key(a) == ref_key(b)


def ref_key(ref: helper_pb2.NamespaceRef) -> tuple[str, str | int]:
    """A reference as a dict key: its kind and value."""
    kind = ref.WhichOneof("kind")
    return ("host", 0) if kind is None else (kind, getattr(ref, kind))


def check_batch(policy: Policy, batch: helper_pb2.Batch) -> None:
    check_owner(batch.owner)
    if len(batch.operations) > policy.max_ops_per_batch:
        raise PolicyRefused(
            f"batch has {len(batch.operations)} operations, above the limit of "
            f"{policy.max_ops_per_batch}; split it"
        )
    passed: set[tuple[str, str | int]] = set()
    for index, op in enumerate(batch.operations):
        try:
            check_operation(policy, op, f"operation {index} ({op.WhichOneof('op')})", passed)
        except HelperError as exc:
            exc.index = index
            raise
    for ref in batch.observe.netns:
        check_ns_ref(policy, ref, "observe", passed)


def named_links(batch: helper_pb2.Batch) -> Iterator[tuple[int, Any]]:
    """(operation index, a message with the `name` and `netns` of a link it names), for
    every link of the operations (both ends of a pair)."""
    for index, op in enumerate(batch.operations):
        kind = op.WhichOneof("op")
        if kind == "create_veth_pair":
            yield index, op.create_veth_pair.a
            yield index, op.create_veth_pair.b
        elif kind is not None:
            yield index, getattr(op, kind)


def namespace_refs(batch: helper_pb2.Batch) -> Iterator[tuple[int, helper_pb2.NamespaceRef]]:
    """(operation index, reference) for every namespace reference of the operations."""
    return ((index, link.netns) for index, link in named_links(batch))
