"""The controller in a real container (non-root, read-only, no capabilities) drives the
helper on the host (in the harness's scratch sandbox) through the seed's VETH example.

The image is the local stand-in of packaging/container/Containerfile (see `pkg_image`),
run by a private dockerd."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import pkg_image
import pytest
from pkg_common import REPO, Packages

from tests.docker.private_dockerd import DockerDaemon
from tests.harness import (
    TEST_GID,
    UNPRIVILEGED_UID,
    EtcdKV,
    EtcdServer,
    HelperSandbox,
    KeyPair,
    proc_status,
    wait_until,
)

pytestmark = [pytest.mark.root, pytest.mark.docker]
TAG = "netagent-controller:pkg-test"
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def private_dockerd() -> Iterator[DockerDaemon]:
    daemon = DockerDaemon()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.destroy()


@pytest.fixture(scope="module")
def image(private_dockerd: DockerDaemon, packages: Packages,
          tmp_path_factory: pytest.TempPathFactory) -> str:
    rootfs = tmp_path_factory.mktemp("image") / "rootfs"
    pkg_image.build_rootfs(rootfs, packages.deb)
    pkg_image.import_image(rootfs, private_dockerd.url, TAG)
    return TAG


def _run_controller(client: Any, etcd: EtcdServer, label: str, helper: HelperSandbox,
                    keys: KeyPair) -> Any:
    return client.containers.run(
        TAG,
        ["--etcd", etcd.endpoint, "--label", label, "--no-docker",
         "--socket", f"/run/netagent/{helper.socket.name}",
         "--signing-key", "/etc/netagent/controller.key"],
        user=f"{UNPRIVILEGED_UID}:{TEST_GID}", network_mode="host", read_only=True,
        cap_drop=["ALL"], security_opt=["no-new-privileges"], detach=True,
        volumes={str(helper.socket.parent): {"bind": "/run/netagent", "mode": "rw"},
                 str(keys.signing_key): {"bind": "/etc/netagent/controller.key", "mode": "ro"}},
    )


def test_containerized_controller_applies_the_seed(
    private_dockerd: DockerDaemon, image: str, helper: HelperSandbox, etcd: EtcdServer,
    kv: EtcdKV, label: str, keys: KeyPair,
) -> None:
    with private_dockerd.client() as client:
        container = _run_controller(client, etcd, label, helper, keys)
        try:
            def logs() -> str:
                return str(container.logs().decode(errors="replace"))

            for name in ("veth1", "veth2"):
                kv.put(name, json.loads((FIXTURES / f"{name}.json").read_text()))
            wait_until(lambda: kv.state("veth1") == kv.state("veth2") == "CONFIGURED",
                       timeout=90, what="veth1 and veth2 CONFIGURED", describe=logs)
            assert "veth1" in helper.ip("link", "show", "veth1", netns="ns1")
            container.reload()
            status = proc_status(int(container.attrs["State"]["Pid"]))
            caps = {key: int(status[key], 16) for key in ("CapEff", "CapPrm", "CapBnd")}
            assert caps == {"CapEff": 0, "CapPrm": 0, "CapBnd": 0}, status
            assert status["Uid"].split()[0] == str(UNPRIVILEGED_UID), status
            assert status["NoNewPrivs"] == "1", status
        finally:
            container.remove(force=True)


def test_image_runs_as_the_unprivileged_user() -> None:
    assert pkg_image.containerfile_setting("USER") == f"{pkg_image.CONTAINER_UID}:" \
        f"{pkg_image.CONTAINER_UID}"
    assert pkg_image.entrypoint()[0] == "/opt/netagent/venv/bin/python3"



def test_containerfile_copies_the_sources_and_pins_versions() -> None:
    """`docker build` is not run here (no registry): at least its inputs must exist."""
    text = pkg_image.CONTAINERFILE.read_text()
    copied = {source for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
              for source in line.split()[:-1]}
    assert all((REPO / source).exists() for source in copied), copied
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*")
                for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"the image would lack {packages - copied}"
    assert "-c /src/constraints.txt" in text


def test_readme_documents_building_and_running_the_image() -> None:
    readme = (REPO / "README.md").read_text()
    assert "docker build -f packaging/container/Containerfile" in readme
    for needed in ("--cap-drop ALL", "--read-only", "--user", "-v /run/netagent:/run/netagent",
                   "/etc/netagent/controller.key:ro", "/var/run/docker.sock"):
        assert needed in readme, needed
