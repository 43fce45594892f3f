"""Fixtures for tests against a real, private Docker engine (tests/docker/private_dockerd.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from harness import TEST_GID, ControllerProcess, HelperSandbox, KeyPair, StartController
from private_dockerd import DockerDaemon

HOST_INTERFACES_TO_GUARD = ("lo", "eth0", "ifb0", "ifb1")


@dataclass(frozen=True)
class HostNetworkSnapshot:
    """What a Docker engine could change on the host and must not."""

    iptables: str
    nftables: str
    ip_forward: str
    ip6_forward: str
    links: dict[str, str]

    @staticmethod
    def take() -> HostNetworkSnapshot:
        return HostNetworkSnapshot(
            iptables=_without_comments(_output(["iptables-save"])),
            nftables=_output(["nft", "list", "ruleset"]),
            ip_forward=_read("/proc/sys/net/ipv4/ip_forward"),
            ip6_forward=_read("/proc/sys/net/ipv6/conf/all/forwarding"),
            links=_host_links(),
        )


def _output(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return f"({command[0]} not installed)"
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


def _read(path: str) -> str:
    with open(path, encoding="ascii") as file:
        return file.read().strip()


def _host_links() -> dict[str, str]:
    """Flags and addresses of the host's own interfaces, plus any docker0 bridge."""
    links = {}
    for name in (*HOST_INTERFACES_TO_GUARD, "docker0"):
        done = subprocess.run(
            ["ip", "-o", "link", "show", "dev", name], capture_output=True, text=True, check=False
        )
        links[name] = done.stdout.split("\\", 1)[0] if done.returncode == 0 else "(absent)"
    return links


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A private dockerd for the whole session; the host network must be unchanged after."""
    before = HostNetworkSnapshot.take()
    daemon = DockerDaemon()
    try:
        daemon.start()
        daemon.import_busybox_image()
        yield daemon
    finally:
        daemon.destroy()
    after = HostNetworkSnapshot.take()
    assert after == before, "the test dockerd changed the host's network configuration"
    assert not os.path.exists(daemon.root), f"{daemon.root} left behind"
    assert daemon.global_leftovers() == [], "dockerd's files outside its roots left behind"


@pytest.fixture
def docker_client(dockerd: DockerDaemon) -> Iterator[Any]:
    with dockerd.client() as client:
        yield client


@pytest.fixture
def ms_label() -> str:
    """A microservice label unique to the test (the agent's own label is `label`)."""
    return f"ms-{uuid.uuid4().hex[:8]}"


def write_policy(workdir: Path, dockerd: DockerDaemon) -> Path:
    """A helper policy that also allows the private dockerd's namespace directory."""
    dirs = ["/var/run/netns", "/run/netns", dockerd.netns_dir]
    path = workdir / "policy.toml"
    path.write_text(f"netns_dirs = {json.dumps(dirs)}\n")
    return path


@pytest.fixture
def helper(dockerd: DockerDaemon, workdir: Path, keys: KeyPair) -> Iterator[HelperSandbox]:
    """The shared `helper` fixture, with Docker's namespace directory in its policy."""
    sandbox = HelperSandbox(workdir, keys.trust_key, policy_file=write_policy(workdir, dockerd))
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def docker_controller(
    dockerd: DockerDaemon, start_controller: StartController, workdir: Path
) -> ControllerProcess:
    """The unprivileged controller, allowed to use the private Docker API socket.

    An empty config file keeps a host /etc/netagent/netagent.toml out of the test.
    """
    dockerd.grant_socket(TEST_GID)
    config = workdir / "controller.toml"
    config.write_text("[controller]\n")
    config.chmod(0o644)
    return start_controller("--config", str(config), "--docker", dockerd.url)


@pytest.fixture
def microservice(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Factory: run a busybox container carrying MICROSERVICE_LABEL; removed after the test.

    Keyword arguments go to `containers.run` (e.g. `sysctls=`).
    """
    started: list[Any] = []

    def run(label: str, **options: Any) -> Any:
        container = docker_client.containers.run(
            "netagent-test-busybox",
            ["sleep", "3600"],
            detach=True,
            network_mode="none",
            environment={"MICROSERVICE_LABEL": label},
            stop_signal="SIGKILL",
            labels={"netagent-test": "1"},
            **options,
        )
        started.append(container)
        container.reload()
        return container

    try:
        yield run
    finally:
        for container in started:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
