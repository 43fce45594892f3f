"""Faults of Docker: dockerd restarted while its microservice container died (the daemon
restarts it), and a microservice container restarted by Docker.

The pair follows the container into its new namespace; no operation ever names the
container's old namespace (its SandboxKey), which a later container could not take over
but which would point at nothing. The private dockerd and busybox image are the ones of
tests/docker/ (private_dockerd.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from controller import wire
from controller.ops import CreateVethPair, NsRef
from netagent_api import helper_pb2
from tests.conftest import attach_log
from tests.docker.private_dockerd import IMAGE, DockerDaemon
from tests.faults.faultlib import Desired, audit_mark, intents_since, named_key
from tests.harness import (
    TEST_GID,
    ControllerProcess,
    EtcdKV,
    HelperSandbox,
    KeyPair,
    LinkView,
    StartController,
    links_of_pid,
    wait_until,
)

pytestmark = [pytest.mark.root, pytest.mark.docker]


@pytest.fixture(scope="module")
def dockerd() -> Iterator[DockerDaemon]:
    daemon = DockerDaemon()
    try:
        daemon.start()
        daemon.import_busybox_image()
        yield daemon
    finally:
        daemon.destroy()


@pytest.fixture
def helper(request: pytest.FixtureRequest, dockerd: DockerDaemon, workdir: Path,
           keys: KeyPair) -> Iterator[HelperSandbox]:
    policy = workdir / "policy.toml"
    dirs = ["/var/run/netns", "/run/netns", dockerd.netns_dir]
    policy.write_text(f"netns_dirs = {json.dumps(dirs)}\n")
    sandbox = HelperSandbox(workdir, keys.trust_key, policy_file=policy)
    attach_log(request, "netlinkd log", sandbox.log_path)
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def docker_controller(dockerd: DockerDaemon, start_controller: StartController,
                      workdir: Path) -> ControllerProcess:
    dockerd.grant_socket(TEST_GID)
    config = workdir / "controller.toml"
    config.write_text("[controller]\n")
    config.chmod(0o644)
    return start_controller("--config", str(config), "--docker", dockerd.url)


@pytest.fixture
def container(dockerd: DockerDaemon, kv: EtcdKV) -> Iterator[Any]:
    """A busybox container labelled for this test, restarted by Docker when it dies."""
    with dockerd.client() as client:
        started = client.containers.run(
            IMAGE, ["sleep", "3600"], detach=True, network_mode="none",
            environment={"MICROSERVICE_LABEL": f"ms-{kv.label}"}, stop_signal="SIGKILL",
            restart_policy={"Name": "always"}, labels={"netagent-test": "1"},
        )
        try:
            yield started
        finally:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                started.remove(force=True)


class Microservice:
    """Where the test container's namespace is now (asks Docker, so only while it runs)."""

    def __init__(self, container: Any) -> None:
        self.container = container

    def state(self) -> tuple[int, str]:
        self.container.reload()
        state = self.container.attrs["State"]
        pid = state["Pid"] if state["Running"] else 0
        return pid, self.container.attrs["NetworkSettings"]["SandboxKey"]

    def links(self, helper: HelperSandbox) -> Mapping[str, LinkView]:
        pid, _key = self.state()
        return links_of_pid(helper, pid) if pid else {}


def ms_desired(helper: HelperSandbox, kv: EtcdKV, ms: Microservice) -> Desired:
    def locate(config: Mapping[str, Any]) -> str:
        if (config.get("namespace") or {}).get("type") == 1:
            return "ms"
        return named_key(config)

    desired = Desired(helper, kv, locate=locate)
    desired.extra_views["ms"] = lambda: ms.links(helper)
    ms_ns = {"type": 1, "microservice": f"ms-{kv.label}"}
    desired.put_pair("ms0", "hs0", 0, netns_a=None, netns_b=None)
    desired.put("ms0", {**desired.configs["ms0"], "namespace": ms_ns})
    desired.put_pair("na0", "nb0", 1, netns_a="ns1", netns_b=None)
    return desired


def paths_named_in(intent: Mapping[str, Any]) -> set[str]:
    """Every namespace path an operation of an intent record names."""
    paths: set[str] = set()
    batch = helper_pb2.Batch.FromString(base64.b64decode(intent["batch"]))
    for proto in batch.operations:
        op = wire.op_from_proto(proto)
        refs: tuple[NsRef, ...] = (
            (op.a.netns, op.b.netns) if isinstance(op, CreateVethPair) else (op.netns,))
        paths |= {ref.path for ref in refs if ref.path}
    return paths


def paths_named(helper: HelperSandbox, mark: int) -> set[str]:
    """Every namespace path a changing operation since `mark` named."""
    return {path for record in intents_since(helper, mark) for path in paths_named_in(record)}


def follow(desired: Desired, ms: Microservice, old: tuple[int, str], mark: int,
           since: float) -> float:
    """Wait for a new container namespace and the pair in it; check the old one is unused."""
    wait_until(lambda: ms.state()[0] not in (0, old[0]), timeout=60,
               what="the container to run again")
    _pid, new_key = ms.state()
    assert new_key != old[1], "Docker reused the sandbox"
    desired.wait_converged()
    recovery = time.monotonic() - since
    stale = [f"{record['seq']}: {record.get('ops')}"
             for record in intents_since(desired.helper, mark)
             if old[1] in paths_named_in(record)]
    assert not stale, f"operations named the stale namespace {old[1]}: {stale}"
    assert new_key in paths_named(desired.helper, mark)
    return recovery


def test_dockerd_restart_while_its_container_died_moves_the_pair_to_the_new_namespace(
    dockerd: DockerDaemon, helper: HelperSandbox, kv: EtcdKV,
    docker_controller: ControllerProcess, container: Any,
) -> None:
    ms = Microservice(container)
    desired = ms_desired(helper, kv, ms)
    desired.wait_converged()
    old = ms.state()
    unchanged = {k: v for k, v in desired.ifindexes().items() if k[1] in ("na0", "nb0")}
    mark = audit_mark(helper)

    dockerd.stop()
    try:
        os.kill(old[0], signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{old[0]}"), timeout=30,
                   what="the container's process to die")
        wait_until(lambda: "Docker unreachable" in str(kv.status("ms0").get("warnings")),
                   timeout=60, what="ms0's status to say Docker is unreachable",
                   describe=lambda: kv.status("ms0"))
    finally:
        dockerd.start()
    back = time.monotonic()
    recovery = follow(desired, ms, old, mark, back)
    now = desired.ifindexes()
    assert {k: now.get(k) for k in unchanged} == unchanged
    print(f"RECOVERY dockerd-restart-container-died pair-in-new-namespace {recovery:.2f}s")


def test_container_restart_moves_the_pair_and_never_uses_the_old_namespace(
    helper: HelperSandbox, kv: EtcdKV, docker_controller: ControllerProcess, container: Any,
) -> None:
    ms = Microservice(container)
    desired = ms_desired(helper, kv, ms)
    desired.wait_converged()
    old = ms.state()
    mark = audit_mark(helper)
    started = time.monotonic()
    container.restart(timeout=0)
    recovery = follow(desired, ms, old, mark, started)
    print(f"RECOVERY container-restart pair-in-new-namespace {recovery:.2f}s")
