"""The least-privileged etcd role of one agent label, as etcdctl commands or applied.

A controller needs exactly:
- read `/vnf-agent/<label>/linux/config/` (listing and watching its configs);
- read and write `/vnf-agent/<label>/linux/status/` (it lists its own statuses at start to
  remove those of interfaces no longer configured);
- read and write its liveness key `/vnf-agent/<label>/check/status/v1/agent` (a put under a
  lease; revoking the lease needs write permission on the key).
Nothing else: not another label's keys, not the Docker or any cluster-wide key. Granting,
leases and keep-alives need no permission of their own in etcd 3.4.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from controller import keys, liveness

_PERMISSIONS = {"read": 0, "write": 1, "readwrite": 2}  # authpb.Permission.Type


@dataclass(frozen=True)
class Grant:
    key: str
    prefix: bool
    permission: str  # "read", "write" or "readwrite"

    @property
    def range_end(self) -> bytes:
        if not self.prefix:
            return b""
        from etcd3.utils import prefix_range_end

        return bytes(prefix_range_end(self.key.encode()))


def role_name(label: str) -> str:
    keys.config_prefix(label)  # checks the label
    return f"netagent-{label}"


def grants(label: str) -> tuple[Grant, ...]:
    base = f"/vnf-agent/{label}"
    return (
        Grant(f"{base}/linux/config/", True, "read"),
        Grant(f"{base}/linux/status/", True, "readwrite"),
        Grant(liveness.agent_key(label), False, "readwrite"),
    )


def etcdctl_commands(label: str, user: str | None = None) -> list[str]:
    """The etcdctl (3.4) commands that create the role and optionally give it to `user`."""
    role = role_name(label)
    lines = [f"etcdctl role add {shlex.quote(role)}"]
    for grant in grants(label):
        prefix = " --prefix=true" if grant.prefix else ""
        lines.append(f"etcdctl role grant-permission {shlex.quote(role)} {grant.permission} "
                     f"{shlex.quote(grant.key)}{prefix}")
    if user is not None:
        lines.append(f"etcdctl user grant-role {shlex.quote(user)} {shlex.quote(role)}")
    return lines


def apply(client: Any, label: str, user: str | None = None) -> list[str]:
    """Makes the role exactly `grants(label)` (adds it, revokes anything else it holds) and
    gives it to `user`. Needs a client authenticated as an etcd root user. Returns what
    changed, one line each."""
    import grpc
    from etcd3 import etcdrpc
    from etcd3.etcdrpc import auth_pb2

    auth = etcdrpc.AuthStub(client.channel)

    def call(method: str, request: Any) -> Any:
        return getattr(auth, method)(request, client.timeout, credentials=client.call_credentials,
                                     metadata=client.metadata)

    role = role_name(label)
    changed: list[str] = []
    try:
        call("RoleAdd", etcdrpc.AuthRoleAddRequest(name=role))
        changed.append(f"added role {role}")
    except grpc.RpcError as err:
        if "already exists" not in (err.details() or ""):
            raise
    wanted = {(g.key.encode(), g.range_end, _PERMISSIONS[g.permission]) for g in grants(label)}
    held = {(bytes(p.key), bytes(p.range_end), int(p.permType))
            for p in call("RoleGet", etcdrpc.AuthRoleGetRequest(role=role)).perm}
    for key, range_end, _permission in sorted(held - wanted):
        call("RoleRevokePermission", etcdrpc.AuthRoleRevokePermissionRequest(
            role=role, key=key, range_end=range_end))
        changed.append(f"revoked {key.decode(errors='replace')} from {role}")
    for key, range_end, permission in sorted(wanted - held):
        call("RoleGrantPermission", etcdrpc.AuthRoleGrantPermissionRequest(
            name=role, perm=auth_pb2.Permission(permType=permission, key=key,
                                               range_end=range_end)))
        changed.append(f"granted {key.decode()} ({_name(permission)}) to {role}")
    if user is not None:
        call("UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user, role=role))
        changed.append(f"role {role} given to user {user}")
    return changed


def _name(permission: int) -> str:
    return next(name for name, value in _PERMISSIONS.items() if value == permission)
