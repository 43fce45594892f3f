"""netlinkd.link_monitor against the real kernel, in a scratch namespace of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("monitor_probe.py")
REPO = Path(__file__).resolve().parents[2]


def probe(rcvbuf: int) -> dict[str, object]:
    script = (f"mkdir -p /run/netns && mount -t tmpfs probe /run/netns && "
              f"exec {sys.executable} {PROBE} {rcvbuf}")
    result = subprocess.run(["unshare", "--net", "--mount", "sh", "-c", script],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return found


@pytest.mark.root
def test_an_overrun_is_reported_and_the_namespace_listed_again() -> None:
    found = probe(rcvbuf=1)  # the kernel's minimum: a burst of events overflows it
    assert found["overruns"], found
    assert found["overrun_events"], found
    # own3 was made during the overrun, while its events were lost: the re-dump knows it.
    assert found["names_after"] == ["own3"], found
