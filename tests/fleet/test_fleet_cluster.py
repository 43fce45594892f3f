"""Several agents on one 3-member etcd cluster with TLS and auth: members die, work goes on.

Each label has its own helper sandbox, its own controller (uid 65534, client certificate,
a user holding only `netagent-ctl etcd-role LABEL`) and its own pairs. The member each
controller talks to is killed, then the leader; changes are made after each kill. Every
label converges, the audit logs show each change applied exactly once, and liveness keys
come and go with their controllers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import keys, liveness
from tests.conftest import attach_log
from tests.e2e.e2e_common import expect_link, named_ns, veth_config
from tests.fleet.cluster import Member, TlsCluster
from tests.harness import (
    ControllerProcess,
    HelperSandbox,
    make_keys,
    new_label,
    records,
    venv_tool,
    wait_until,
)

LABELS = 3


class FleetAgent:
    """One host: a helper sandbox and a controller for one label, with its own etcd user."""

    def __init__(self, cluster: TlsCluster) -> None:
        self.cluster = cluster
        self.label = new_label()
        self.workdir = Path(tempfile.mkdtemp(prefix="netagent-fleet-agent-"))
        self.workdir.chmod(0o711)
        keys_ = make_keys(self.workdir)
        policy = self.workdir / "policy.toml"
        policy.write_text('netns_dirs = ["/var/run/netns", "/run/netns"]\n')
        self.helper = HelperSandbox(self.workdir, keys_.trust_key, policy_file=policy)
        user, password = f"agent-{self.label}", secrets.token_hex(8)
        cluster.add_user(user, password)
        granted = subprocess.run(
            [venv_tool("netagent-ctl"), *cluster.root_args(), "etcd-role", self.label,
             "--apply", "--grant-user", user], capture_output=True, text=True, check=False)
        assert granted.returncode == 0, granted.stderr
        cert = cluster.ca.issue(user, server=False)
        password_file = self.workdir / "etcd.password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o644)
        self.controller = ControllerProcess(
            self.workdir, etcd=cluster.endpoints, label=self.label, socket=self.helper.socket,
            signing_key=keys_.signing_key,
            extra_args=("--cacert", str(cluster.ca.ca_file), "--cert", str(cert.cert),
                        "--key", str(cert.key), "--user", user,
                        "--password-file", str(password_file), "--no-docker"))
        self.configs: dict[str, dict[str, Any]] = {}
        self.mtu_changes = 0

    def start(self) -> None:
        self.helper.start()
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
        self.helper.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def put_pair(self, root: Any, index: int) -> None:
        for name, peer, ns, host in ((f"a{index}", f"b{index}", "na", 1),
                                     (f"b{index}", f"a{index}", "nb", 2)):
            config = veth_config(name, peer, netns=named_ns(ns),
                                 mac=f"02:00:00:00:{index:02x}:{host:02x}",
                                 addresses=[f"10.{index}.0.{host}/24"])
            self.put(root, config)

    def change_mtu(self, root: Any, index: int, mtu: int) -> None:
        for name in (f"a{index}", f"b{index}"):
            self.put(root, dict(self.configs[name], mtu=mtu))
        self.mtu_changes += 2

    def put(self, root: Any, config: dict[str, Any]) -> None:
        self.configs[config["name"]] = config
        root.put(keys.config_key(self.label, config["name"]), json.dumps(config))

    def converged(self, root: Any) -> bool:
        for name in self.configs:
            value, _meta = root.get(keys.status_key(self.label, name))
            if value is None or json.loads(value).get("state") != "CONFIGURED":
                return False
        for config in self.configs.values():
            expect_link(self.helper, config, config["namespace"]["name"], timeout=1)
        return True

    def member_url(self, root: Any) -> str:
        value, _meta = root.get(liveness.agent_key(self.label))
        return str(json.loads(value)["etcd_endpoint"]) if value is not None else ""

    def statuses(self, root: Any) -> dict[str, Any]:
        prefix = keys.status_prefix(self.label)
        return {meta.key.decode()[len(prefix):]: json.loads(value)
                for value, meta in root.get_prefix(prefix)}


@pytest.fixture
def agents(cluster: TlsCluster, request: pytest.FixtureRequest) -> Iterator[list[FleetAgent]]:
    fleet = [FleetAgent(cluster) for _ in range(LABELS)]
    try:
        for agent in fleet:
            attach_log(request, f"controller {agent.label}", agent.controller.log_path)
            agent.start()
        yield fleet
    finally:
        for agent in fleet:
            agent.stop()


def _converge(agents: list[FleetAgent], root: Any, what: str) -> None:
    def all_converged() -> bool:
        try:
            return all(agent.converged(root) for agent in agents)
        except AssertionError:
            return False

    wait_until(all_converged, timeout=60, interval=0.1, what=what,
               describe=lambda: {a.label: a.statuses(root) for a in agents})


def _kill_and_change(cluster: TlsCluster, agents: list[FleetAgent], victim: Member,
                     step: int) -> float:
    """Kill `victim`, put pair `step` and change pair `step - 1`'s MTU on every label;
    the seconds until every label converged again."""
    killed_at = time.monotonic()
    victim.kill()
    root = cluster.root_client()
    try:
        for agent in agents:
            put_with_retry(lambda a=agent: a.put_pair(root, step))
            put_with_retry(lambda a=agent: a.change_mtu(root, step - 1, 1400 + step))
        _converge(agents, root, f"every label after killing {victim.name}")
    finally:
        root.close()
    return time.monotonic() - killed_at


def put_with_retry(put: Any) -> None:
    """The test's own writes also fail over (a call to the dead member fails once)."""
    for _attempt in range(5):
        try:
            put()
            return
        except Exception:
            time.sleep(0.2)
    put()


def _restart(cluster: TlsCluster, member: Member) -> None:
    member.start()
    wait_until(lambda: member.alive() and cluster.healthy(), timeout=60,
               what=f"{member.name} to rejoin", describe=cluster.log_tails)


def _applied_ops(agent: FleetAgent) -> Counter[str]:
    """Operation summaries of every batch the helper applied, counted."""
    log = records(agent.helper.audit_log)
    applied = {(r.get("epoch"), r.get("seq")) for r in log
               if r.get("kind") == "result" and r.get("verdict") == "applied"}
    counted: Counter[str] = Counter()
    for record in log:
        if record.get("kind") == "intent" and (record.get("epoch"), record.get("seq")) in applied:
            counted.update(str(op) for op in record.get("ops", []))
    return counted


def test_members_and_the_leader_die_and_every_label_converges_once(
    cluster: TlsCluster, agents: list[FleetAgent]
) -> None:
    root = cluster.root_client()
    for agent in agents:
        agent.put_pair(root, 0)
    _converge(agents, root, "every label's first pair")
    wait_until(lambda: all(a.member_url(root) for a in agents), timeout=30,
               what="every liveness key")
    root.close()

    timings: list[tuple[str, float]] = []
    untested = list(agents)
    step = 1
    while untested:
        root = cluster.root_client()
        victim = cluster.member_at(untested[0].member_url(root))
        on_victim = [a for a in untested if a.member_url(root) == victim.url]
        root.close()
        timings.append((f"member {victim.name} ({len(on_victim)} controllers on it)",
                        _kill_and_change(cluster, agents, victim, step)))
        untested = [a for a in untested if a not in on_victim]
        _restart(cluster, victim)
        step += 1
    leader = cluster.leader()
    timings.append((f"leader {leader.name}", _kill_and_change(cluster, agents, leader, step)))
    _restart(cluster, leader)
    print("fleet failover, kill to every label converged:",
          ", ".join(f"{what} {seconds:.1f}s" for what, seconds in timings))

    for agent in agents:
        # Each pair created once, each MTU change one set_link per end, and nothing else:
        # no change lost, none applied twice, no link re-created after a failover.
        expected = Counter({f"create_veth_pair a{i}<->b{i}": 1 for i in range(step + 1)})
        expected.update({f"set_link {end}{i}": 1 for i in range(step) for end in "ab"})
        assert _applied_ops(agent) == expected
        assert agent.mtu_changes == 2 * step
        recovered = re.findall(r"etcd reachable again via \S+ after ([\d.]+)s",
                               agent.controller.log_text())
        lost = re.findall(r"etcd watch of \S+ lost \(([^)]*)\)", agent.controller.log_text())
        print(f"{agent.label}: watch failovers {recovered}; lost: {lost}")
        # A restarted member has forgotten every login: the controller logs in again
        # instead of retrying a refused token (it looped here, once per backoff).
        assert not [reason for reason in lost if "auth token" in reason], lost
        assert len(lost) <= 2 * len(timings), lost


def test_liveness_keys_come_and_go_with_their_controllers(
    cluster: TlsCluster, agents: list[FleetAgent]
) -> None:
    root = cluster.root_client()
    for agent in agents:
        agent.put_pair(root, 0)
    _converge(agents, root, "every label's pair")
    wait_until(lambda: all(a.member_url(root) for a in agents), timeout=30,
               what="every liveness key")
    killed, stopped, kept = agents
    value = json.loads(root.get(liveness.agent_key(kept.label))[0])
    assert value["state"] == "OK", value
    assert value["connections"] == {"docker": None, "etcd": True, "helper": True}

    stopped.controller.stop()  # SIGTERM: the lease is revoked at once
    assert root.get(liveness.agent_key(stopped.label))[0] is None
    assert killed.controller.alive()
    os.killpg(killed.controller.pid, signal.SIGKILL)
    died_at = time.monotonic()
    wait_until(lambda: root.get(liveness.agent_key(killed.label))[0] is None, timeout=30,
               what="the killed controller's lease to expire")
    expired_after = time.monotonic() - died_at
    assert root.get(liveness.agent_key(kept.label))[0] is not None
    status = subprocess.run(
        [venv_tool("netagent-ctl"), *cluster.root_args(), "--label", killed.label, "status"],
        capture_output=True, text=True, check=False)
    assert status.returncode == 1, status.stderr  # stale statuses are not a success
    assert f"no live controller serves {killed.label} since etcd revision" in status.stderr
    assert "its lease expired" in status.stderr
    print(f"liveness key gone {expired_after:.1f}s after SIGKILL (TTL {liveness.TTL_S}s)")

    killed.controller.start()
    wait_until(lambda: killed.member_url(root), timeout=30, what="the restarted controller's key")
    root.close()
