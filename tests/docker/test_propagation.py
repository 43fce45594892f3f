"""The helper sandbox sees the namespace files the private dockerd mounts after it started."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from harness import HelperSandbox

pytestmark = [pytest.mark.root, pytest.mark.docker]


def test_sandbox_key_is_visible_inside_the_helper_sandbox(
    helper: HelperSandbox, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    key = container.attrs["NetworkSettings"]["SandboxKey"]
    pid = container.attrs["State"]["Pid"]
    assert helper.run("stat", "-L", "-f", "-c", "%T", key).stdout.strip() == "nsfs"
    inode = helper.run("stat", "-L", "-c", "%i", key).stdout.strip()
    assert int(inode) == os.stat(f"/proc/{pid}/ns/net").st_ino
