"""Fixtures for the systemd-as-PID-1 tests: the .deb, a private dockerd, the installed image.

Set NETAGENT_DIST to a directory holding netagent_*.deb to reuse a build; otherwise
packaging/build runs once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import system_machine
import system_root
from system_root import InstalledImage

from tests.docker.private_dockerd import DockerDaemon

REPO = Path(__file__).resolve().parents[2]
IMAGE = "netagent-system-test:installed"


@pytest.fixture(scope="session")
def system_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("NETAGENT_DIST")
    directory = Path(given) if given else tmp_path_factory.mktemp("dist")
    if not given:
        result = subprocess.run([str(REPO / "packaging" / "build"), str(directory)],
                                capture_output=True, text=True, check=False,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"packaging/build failed:\n{result.stdout}{result.stderr}"
    [deb] = sorted(directory.glob("netagent_*.deb"))
    return deb


@pytest.fixture(scope="module")
def system_dockerd() -> Iterator[DockerDaemon]:
    daemon = DockerDaemon()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.destroy()
        _wait_no_cgroups()


def _wait_no_cgroups() -> None:
    end = time.monotonic() + 10.0
    while system_machine.leftover_cgroups() and time.monotonic() < end:
        time.sleep(0.2)
    assert not system_machine.leftover_cgroups(), system_machine.leftover_cgroups()


@pytest.fixture(scope="module")
def installed_image(system_dockerd: DockerDaemon, system_deb: Path) -> Iterator[InstalledImage]:
    """The cached bookworm root with the .deb installed by `apt-get install`, not booted."""
    base = system_root.base_root()
    work = Path(tempfile.mkdtemp(prefix="netagent-systest-"))
    try:
        tar = work / "installed.tar"
        seconds = system_root.build_image_tar(base, system_deb, work / "overlay", tar)
        shutil.rmtree(work / "overlay")
        machine = system_machine.Machine(system_dockerd, IMAGE, "")
        machine.docker("import", "--change", 'CMD ["/sbin/init"]', str(tar), IMAGE)
        yield InstalledImage(IMAGE, system_deb.name, tar, seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
