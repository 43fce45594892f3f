"""The helper sandbox sees the namespace files the private dockerd mounts after it started."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from private_dockerd import DockerDaemon

from tests.harness.keys import make_keys
from tests.harness.sandbox import HelperSandbox

pytestmark = [pytest.mark.root, pytest.mark.docker]


def test_sandbox_key_is_visible_inside_a_helper_sandbox(
    dockerd: DockerDaemon, microservice: Callable[[str], Any], label: str
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="na-prop-", dir="/tmp"))
    os.chmod(workdir, 0o711)
    sandbox = HelperSandbox(workdir / "helper", make_keys(workdir).trust_key)
    try:
        sandbox.start()
        container = microservice(label)
        key = container.attrs["NetworkSettings"]["SandboxKey"]
        pid = container.attrs["State"]["Pid"]
        inside = sandbox.run("stat", "-L", "-f", "-c", "%T", key).stdout.strip()
        assert inside == "nsfs"
        inode = sandbox.run("stat", "-L", "-c", "%i", key).stdout.strip()
        assert int(inode) == os.stat(f"/proc/{pid}/ns/net").st_ino
    finally:
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
