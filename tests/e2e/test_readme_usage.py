"""The README's Usage block runs as written (extracted from README.md, so they cannot drift).

It runs as root in a scratch world: its own network, PID and mount namespaces, a fresh
/run, and /etc, /var/lib and /var/log overlaid with throwaway upper layers, so the user,
group, keys and logs it creates vanish with it. An etcd listens on 127.0.0.1:2379 inside,
as the block assumes; when the block ends, the PID namespace takes every daemon with it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.root

WORLD = r"""
set -euo pipefail
work=$1
for dir in etc var-lib var-log; do
    mkdir -p "$work/$dir-upper" "$work/$dir-work"
done
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$work/etc-upper,workdir=$work/etc-work" /etc
mount -t overlay overlay \
    -o "lowerdir=/var/lib,upperdir=$work/var-lib-upper,workdir=$work/var-lib-work" /var/lib
mount -t overlay overlay \
    -o "lowerdir=/var/log,upperdir=$work/var-log-upper,workdir=$work/var-log-work" /var/log
mount -t tmpfs -o mode=0755 netagent-readme /run
rm -rf /etc/netagent /var/lib/netagent /var/log/netagent  # a host install stays unseen
ip link set lo up
/usr/bin/etcd --name readme --data-dir "$work/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster readme=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
until (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null; do sleep 0.1; done
echo "== README Usage"
source "$work/usage.sh"
echo "== README Usage done"
"""


def usage_block() -> str:
    """The first ```sh block of the README's Usage section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0] + "\n"


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="netagent-readme-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_readme_usage_runs_as_written(work: Path) -> None:
    block = usage_block()
    assert "netagent-ctl put veth1" in block and "netlinkd serve" in block
    (work / "usage.sh").write_text(block)
    done = subprocess.run(
        ["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc",
         "--propagation", "private", "bash", "-c", WORLD, "world", str(work)],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    out = done.stdout.split("== README Usage\n", 1)[1]
    assert "== README Usage done" in out, report
    assert re.search(r"^veth1\S*\s+UP\s+192\.168\.22\.1/24 2001:db8::ff00:89e3:bb42/48",
                     out, re.MULTILINE), report
    assert '"name": "veth2"' in out and re.search(r"^veth2\s+CONFIGURED", out, re.M), report
    _both_daemons_log_alike(done.stderr)


def _both_daemons_log_alike(log: str) -> None:
    """One format for both: every line is key=value fields; a batch has the same seq and
    interfaces in the controller's line and the helper's."""
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines and all(line.startswith("time=") and " level=" in line for line in lines), log
    batches: dict[str, set[str]] = {}
    for line in lines:
        fields = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
        if "interface" in fields and "seq" in fields:
            batches.setdefault(fields["seq"], set()).add(
                f"{fields['logger']} {fields['interface']} {fields['outcome']}")
    assert {"controller.agent veth1,veth2 ok", "netlinkd.server veth1,veth2 applied"} in list(
        batches.values()), log
