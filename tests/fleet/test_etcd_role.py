"""`netagent-ctl etcd-role`: with auth on, one agent's user reaches its own keys only."""

from __future__ import annotations

import secrets
import subprocess
from typing import Any

import etcd3.exceptions
import grpc
import pytest

from controller import etcd_role, keys, liveness
from controller.etcd_client import ClientFactory, EtcdAuthFailed
from tests.fleet.cluster import TlsCluster
from tests.harness import new_label, venv_tool


def ctl(cluster: TlsCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([venv_tool("netagent-ctl"), *cluster.root_args(), *args],
                          capture_output=True, text=True, check=False, timeout=60)


def agent_client(cluster: TlsCluster, label: str) -> tuple[str, Any]:
    """A user for `label` holding only its role, and a client logged in as it."""
    user, password = f"agent-{label}", secrets.token_hex(8)
    cluster.add_user(user, password)
    applied = ctl(cluster, "etcd-role", label, "--apply", "--grant-user", user)
    assert applied.returncode == 0, applied.stderr
    assert f"role netagent-{label} given to user {user}" in applied.stdout
    cert = cluster.ca.issue(user, server=False)
    return user, ClientFactory(cluster.options(user, password, cert)).connect()


def denied(call: Any) -> bool:
    try:
        call()
    except grpc.RpcError as err:
        return err.code() == grpc.StatusCode.PERMISSION_DENIED
    except etcd3.exceptions.Etcd3Exception:
        return False
    return False


def test_an_agent_reaches_its_own_keys_and_no_others(cluster: TlsCluster) -> None:
    a, b = new_label(), new_label()
    root = cluster.root_client()
    root.put(keys.config_key(a, "x"), b"{}")
    root.put(keys.config_key(b, "x"), b"{}")
    user, agent = agent_client(cluster, a)
    assert agent.get(keys.config_key(a, "x"))[0] == b"{}"
    agent.put(keys.status_key(a, "x"), b"{}")
    lease = agent.lease(5)
    agent.put(liveness.agent_key(a), b"{}", lease=lease.id)
    agent.revoke_lease(lease.id)
    assert denied(lambda: agent.get(keys.config_key(b, "x")))
    assert denied(lambda: agent.put(keys.status_key(b, "x"), b"{}"))
    assert denied(lambda: agent.put(liveness.agent_key(b), b"{}"))
    assert denied(lambda: agent.put(keys.config_key(a, "x"), b"{}"))
    assert denied(lambda: agent.get("/vnf-agent/", range_end="/vnf-agent0"))
    assert root.get(keys.status_key(b, "x"))[0] is None
    # The same user known by its client certificate alone (CN), without a password.
    by_cert = ClientFactory(cluster.options(cert=cluster.ca.issue(user, server=False))).connect()
    assert by_cert.get(keys.config_key(a, "x"))[0] == b"{}"
    assert denied(lambda: by_cert.get(keys.config_key(b, "x")))
    root.close()


def test_apply_is_idempotent_and_removes_extra_permissions(cluster: TlsCluster) -> None:
    label = new_label()
    assert ctl(cluster, "etcd-role", label, "--apply").returncode == 0
    from etcd3 import etcdrpc
    from etcd3.etcdrpc import auth_pb2

    root = cluster.root_client()
    etcdrpc.AuthStub(root.channel).RoleGrantPermission(
        etcdrpc.AuthRoleGrantPermissionRequest(
            name=etcd_role.role_name(label),
            perm=auth_pb2.Permission(permType=2, key=b"/vnf-agent/", range_end=b"/vnf-agent0")),
        10, credentials=root.call_credentials, metadata=root.metadata)
    again = ctl(cluster, "etcd-role", label, "--apply")
    assert again.stdout.splitlines() == [f"revoked /vnf-agent/ from netagent-{label}"]
    assert ctl(cluster, "etcd-role", label, "--apply").stdout.splitlines() == ["unchanged"]
    root.close()


def test_wrong_password_and_unreachable_cluster_are_one_line(cluster: TlsCluster) -> None:
    with pytest.raises(EtcdAuthFailed, match="refused user 'root'"):
        ClientFactory(cluster.options("root", "wrong")).connect()
    args = cluster.root_args()
    args[args.index("--endpoints") + 1] = "https://127.0.0.1:1,https://127.0.0.1:2"
    result = subprocess.run([venv_tool("netagent-ctl"), *args, "list"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "cannot reach etcd (tried https://127.0.0.1:" in result.stderr


def test_one_password_check_per_process_and_a_refused_token_is_renewed(
    cluster: TlsCluster,
) -> None:
    """A password login is a bcrypt check in etcd (the costliest request of a restart):
    the clients of one process share one token, and a token etcd refuses is replaced."""
    import threading

    factory = ClientFactory(cluster.options("root", cluster.root_password))
    clients: list[Any] = []
    threads = [threading.Thread(target=lambda: clients.append(factory.connect()))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(clients) == 3 and factory.authentications == 1
    factory.token = "simple-token.that.etcd.never.issued"
    client = factory.connect()
    with pytest.raises(grpc.RpcError):
        client.get("/netagent-test/x")  # refused once: "invalid auth token"
    assert client.get("/netagent-test/x") == (None, None)
    assert factory.authentications == 2
    for each in [*clients, client]:
        each.close()
