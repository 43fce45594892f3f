"""End to end: VETH pairs follow Docker containers (etcd + controller + netlinkd + dockerd).

The helper runs in a HelperSandbox (scratch mount+net namespace, propagation slave), so it
sees the namespace files Docker mounts under the private dockerd's `<exec-root>/netns`.
Its own namespace plays the seed's "default" namespace.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import (
    ControllerProcess,
    EtcdKV,
    HelperSandbox,
    LinkView,
    changing_intents,
    link,
    links_of_pid,
    records,
    run_ctl,
    wait_until,
)
from private_dockerd import DockerDaemon

from controller.docker_watch import parse_started_at

pytestmark = [pytest.mark.root, pytest.mark.docker]

DEADLINE = 60.0
MS_ADDR, HOST_ADDR = "10.77.0.2", "10.77.0.1"


def ms_end(name: str, peer: str, ms_label: str, address: str = MS_ADDR) -> dict[str, Any]:
    return {
        "name": name,
        "type": 0,
        "enabled": True,
        "ip_addresses": [f"{address}/24"],
        "namespace": {"type": 1, "microservice": ms_label},
        "veth": {"peer_if_name": peer},
    }


def host_end(name: str, peer: str, address: str = HOST_ADDR) -> dict[str, Any]:
    return {
        "name": name,
        "type": 0,
        "enabled": True,
        "ip_addresses": [f"{address}/24"],
        "veth": {"peer_if_name": peer},
    }


@dataclass
class World:
    dockerd: DockerDaemon
    sandbox: HelperSandbox
    controller: ControllerProcess
    kv: EtcdKV

    def put_pair(self, ms_label: str, ms_name: str = "ms0", host_name: str = "hs0") -> None:
        self.kv.put(ms_name, ms_end(ms_name, host_name, ms_label))
        self.kv.put(host_name, host_end(host_name, ms_name))

    def container_link(self, container: Any, name: str) -> LinkView | None:
        container.reload()
        pid = container.attrs["State"]["Pid"]
        if not container.attrs["State"]["Running"] or not pid:
            return None
        return links_of_pid(self.sandbox, pid).get(name)

    def host_link(self, name: str) -> LinkView | None:
        return link(self.sandbox, name)

    def wait_status(self, name: str, state: str, reason: str = "") -> dict[str, Any]:
        def matches() -> dict[str, Any] | None:
            status = self.kv.status(name)
            ok = status.get("state") == state and reason in str(status.get("reason", ""))
            return status if ok else None

        found: dict[str, Any] | None = wait_until(
            matches,
            timeout=DEADLINE,
            what=f"status {state} {reason!r} of {name}",
            describe=lambda: (self.kv.status(name), self.controller.log_text()[-2000:]),
        )
        assert found is not None
        return found

    def wait_pair(self, container: Any, ms_name: str = "ms0", host_name: str = "hs0") -> float:
        """Wait until both ends exist and are up; return when that was first seen."""

        def both_up() -> bool:
            inside, outside = self.container_link(container, ms_name), self.host_link(host_name)
            return bool(inside and outside and inside.up and outside.up)

        wait_until(
            both_up,
            timeout=DEADLINE,
            what=f"pair {ms_name}/{host_name} in container {container.short_id}",
            describe=self.describe,
        )
        return time.time()

    def ping_from_container(self, container: Any, address: str = HOST_ADDR) -> bool:
        code, _ = container.exec_run(["ping", "-c1", "-W2", address])
        return bool(code == 0)

    def ping_from_default(self, address: str = MS_ADDR) -> bool:
        done = self.sandbox.run("busybox", "ping", "-c1", "-W2", address, check=False)
        return done.returncode == 0

    def describe(self) -> str:
        return (
            f"statuses={self.kv.statuses()}\ncontroller log:\n{self.controller.log_text()[-2000:]}"
            f"\nnetlinkd log:\n{self.sandbox.log_tail()}"
        )


@pytest.fixture
def world(
    dockerd: DockerDaemon, helper: HelperSandbox, docker_controller: ControllerProcess, kv: EtcdKV
) -> World:
    return World(dockerd, helper, docker_controller, kv)


def _latency_ms(container: Any, seen_at: float) -> float:
    container.reload()
    return (seen_at - parse_started_at(container.attrs["State"]["StartedAt"]) / 1e9) * 1000


def _applied_ms(helper: HelperSandbox, container: Any, interface: str) -> float | None:
    """From the container's StartedAt to the helper's audit record of the applied create."""
    started_ns = parse_started_at(container.attrs["State"]["StartedAt"])
    found = records(helper.audit_log)
    creating = {
        (r["epoch"], r["seq"])
        for r in found
        if r.get("kind") == "intent" and interface in r.get("interfaces", []) and r.get("ops")
    }
    for record in found:
        key = (record.get("epoch"), record.get("seq"))
        if record.get("kind") == "result" and key in creating and record["verdict"] == "applied":
            applied_ns = parse_started_at(record["ts"])
            if applied_ns >= started_ns:
                return (applied_ns - started_ns) / 1e6
    return None


def test_config_first_then_container_start(
    world: World, microservice: Callable[..., Any], ms_label: str
) -> None:
    world.put_pair(ms_label)
    world.wait_status("ms0", "PENDING", f"waiting for microservice {ms_label}")
    container = microservice(ms_label)
    seen = world.wait_pair(container)
    print(
        f"\npair applied {_applied_ms(world.sandbox, container, 'ms0')} ms after StartedAt"
        f" (audit, ms resolution); seen by polling within {_latency_ms(container, seen):.0f} ms"
    )
    wait_until(lambda: world.ping_from_container(container), timeout=DEADLINE, what="ping")
    world.wait_status("ms0", "CONFIGURED")
    world.wait_status("hs0", "CONFIGURED")


def test_container_restart_recreates_pair_in_new_namespace(
    world: World, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    world.put_pair(ms_label)
    world.wait_pair(container)
    first_key = container.attrs["NetworkSettings"]["SandboxKey"]
    first_host_end = world.host_link("hs0")
    assert first_host_end is not None
    container.restart(timeout=0)
    container.reload()
    # Namespace inode numbers are recycled at once, so compare the sandbox, not the inode.
    assert container.attrs["NetworkSettings"]["SandboxKey"] != first_key
    seen = world.wait_pair(container)
    print(f"\npair re-created at most {_latency_ms(container, seen):.0f} ms after StartedAt")
    again = world.host_link("hs0")
    assert again is not None and again.ifindex != first_host_end.ifindex
    wait_until(lambda: world.ping_from_container(container), timeout=DEADLINE, what="ping")


def test_container_stop_removes_pair_and_config_waits(
    world: World, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    world.put_pair(ms_label)
    world.wait_pair(container)
    container.stop(timeout=0)
    wait_until(
        lambda: world.host_link("hs0") is None,
        timeout=DEADLINE,
        what="hs0 gone",
        describe=world.describe,
    )
    world.wait_status("ms0", "PENDING", f"waiting for microservice {ms_label}")
    world.wait_status("hs0", "PENDING")


def test_two_containers_newest_wins_then_other_takes_over(
    world: World, microservice: Callable[..., Any], ms_label: str
) -> None:
    older = microservice(ms_label)
    world.put_pair(ms_label)
    world.wait_pair(older)
    newer = microservice(ms_label)
    world.wait_pair(newer)
    wait_until(
        lambda: world.container_link(older, "ms0") is None,
        timeout=DEADLINE,
        what="ms0 gone from the older container",
        describe=world.describe,
    )
    status = world.wait_status("ms0", "CONFIGURED")
    expected = (
        f"microservice {ms_label} runs in 2 containers: {newer.id[:12]} (used),"
        f" {older.id[:12]} (ignored)"
    )
    wait_until(
        lambda: expected in world.kv.status("ms0").get("warnings", []),
        timeout=DEADLINE,
        what="duplicate warning",
        describe=lambda: status,
    )
    newer.stop(timeout=0)
    world.wait_pair(older)
    wait_until(lambda: world.ping_from_container(older), timeout=DEADLINE, what="ping")
    wait_until(
        lambda: not world.kv.status("ms0").get("warnings"),
        timeout=DEADLINE,
        what="warning cleared",
        describe=world.describe,
    )


def test_dockerd_restart_tears_nothing_down_and_follows_new_events(
    world: World, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    world.put_pair(ms_label)
    world.wait_pair(container)
    inside, outside = world.container_link(container, "ms0"), world.host_link("hs0")
    pid = container.attrs["State"]["Pid"]
    world.dockerd.stop()
    try:  # no Docker API calls here: the daemon is down, its containers keep running
        unreachable = f"Docker unreachable at {world.dockerd.url}"
        wait_until(
            lambda: any(unreachable in w for w in world.kv.status("ms0").get("warnings", [])),
            timeout=DEADLINE,
            what="the status of ms0 to say that Docker is unreachable",
            describe=world.describe,
        )
        assert world.kv.status("ms0")["state"] == "CONFIGURED"
        assert unreachable in world.controller.log_text()
        assert links_of_pid(world.sandbox, pid).get("ms0") == inside
        assert world.host_link("hs0") == outside
    finally:
        world.dockerd.start()
    wait_until(
        lambda: not world.kv.status("ms0").get("warnings"),
        timeout=DEADLINE,
        what="the outage warning to clear once Docker is back",
        describe=world.describe,
    )
    late_label = f"{ms_label}-late"
    world.kv.put("ms1", ms_end("ms1", "hs1", late_label, "10.78.0.2"))
    world.kv.put("hs1", host_end("hs1", "ms1", "10.78.0.1"))
    late = microservice(late_label)
    world.wait_pair(late, "ms1", "hs1")
    assert world.container_link(container, "ms0") == inside
    assert world.host_link("hs0") == outside
    assert world.ping_from_container(container)


def test_seed_example_default_namespace_to_microservice(
    world: World, microservice: Callable[..., Any], ms_label: str, tmp_path: Path
) -> None:
    """The seed's usage example, written through netagent-ctl: default ns <-> microservice."""
    # Docker disables IPv6 in containers without an IPv6 network; the seed uses IPv6 too.
    ipv6_on = {"net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0"}
    container = microservice(ms_label, sysctls=ipv6_on)
    ends = {
        "veth1": {
            "name": "veth1", "type": 0, "enabled": True, "mtu": 1500,
            "phys_address": "d2:74:8c:12:67:d2",
            "ip_addresses": ["192.168.22.1/24", "2001:db8::1/64"],
            "veth": {"peer_if_name": "veth2"},
        },
        "veth2": {
            "name": "veth2", "type": 0, "enabled": True, "mtu": 1500,
            "phys_address": "92:c7:42:67:ab:cd",
            "ip_addresses": ["192.168.22.2/24", "2001:db8::2/64"],
            "namespace": {"type": 1, "microservice": ms_label},
            "veth": {"peer_if_name": "veth1"},
        },
    }  # fmt: skip
    for name, body in ends.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(body))
        run_ctl(world.kv.server.endpoint, world.kv.label, "put", name, str(path))
    world.wait_pair(container, "veth2", "veth1")
    inside = world.container_link(container, "veth2")
    assert inside is not None and inside.mac == "92:c7:42:67:ab:cd" and inside.mtu == 1500
    assert {"192.168.22.2/24", "2001:db8::2/64"} <= inside.addresses
    wait_until(
        lambda: world.ping_from_container(container, "192.168.22.1"),
        timeout=DEADLINE,
        what="ping from the microservice to the default namespace",
    )
    wait_until(
        lambda: world.ping_from_default("192.168.22.2"),
        timeout=DEADLINE,
        what="ping from the default namespace to the microservice",
    )
    world.wait_status("veth1", "CONFIGURED")
    world.wait_status("veth2", "CONFIGURED")


def test_controller_restart_changes_nothing_even_while_docker_is_down(
    world: World, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    world.put_pair(ms_label)
    world.wait_pair(container)
    world.wait_status("ms0", "CONFIGURED")
    inside, outside = world.container_link(container, "ms0"), world.host_link("hs0")
    pid = container.attrs["State"]["Pid"]
    changes = changing_intents(world.sandbox.audit_log)

    def unchanged() -> None:  # no Docker API calls: this also runs while dockerd is down
        assert changing_intents(world.sandbox.audit_log) == changes, world.describe()
        assert links_of_pid(world.sandbox, pid).get("ms0") == inside
        assert world.host_link("hs0") == outside

    mark = len(records(world.sandbox.audit_log))
    world.controller.restart()
    wait_until(lambda: len(records(world.sandbox.audit_log)) > mark, timeout=DEADLINE,
               what="the restarted controller's first observe", describe=world.describe)
    time.sleep(2)  # room for a wrongful delete to show up in the audit log
    unchanged()
    world.dockerd.stop()
    try:  # no Docker API calls here: the daemon is down, its containers keep running
        world.controller.restart()
        world.wait_status("ms0", "PENDING", f"Docker unreachable at {world.dockerd.url}")
        time.sleep(2)
        unchanged()
    finally:
        world.dockerd.start()
    world.wait_status("ms0", "CONFIGURED")
    world.wait_status("hs0", "CONFIGURED")
    unchanged()
