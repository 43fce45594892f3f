"""The per-pair latency baseline: one CNI `ptp` ADD (IPv4 only, host-local IPAM), the way a
container runtime calls it: exec the plugin with the network config on stdin.

ptp puts the host end in the namespace it runs in, so it runs inside a scratch namespace
of the benchmark's sandbox (`host_ns`), never in the real host's. The container namespace
is made fresh for each ADD before the clock starts, as a runtime does.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

CNI_PATH = "/usr/lib/cni"
PTP = f"{CNI_PATH}/ptp"
NSENTER = "/usr/bin/nsenter"
TRUE = "/bin/true"


def available() -> bool:
    return os.access(PTP, os.X_OK) and os.access(f"{CNI_PATH}/host-local", os.X_OK)


def _timed_run(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stdout.decode()} {result.stderr.decode()}")
    return seconds


class PtpPlugin:
    """Runs `ptp` ADDs inside the namespace file `host_ns` (the plugin's "host").

    The plugin is started through `nsenter --net=host_ns` (a fork with a namespace switch
    would run gRPC's fork handlers in this process's child). What nsenter adds over a
    runtime's own fork+exec is measured (`nsenter ... true` minus `true`) and taken off.
    """

    def __init__(self, host_ns: str, workdir: Path, mtu: int) -> None:
        self._enter = [NSENTER, f"--net={host_ns}"]
        self._config = json.dumps({
            "cniVersion": "1.0.0", "name": "netagent-bench", "type": "ptp", "ipMasq": False,
            "mtu": mtu,
            "ipam": {"type": "host-local", "subnet": "10.250.0.0/16",
                     "dataDir": str(workdir / "cni-ipam")},
        }).encode()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        with_nsenter = [_timed_run([*self._enter, TRUE], b"", env) for _ in range(20)]
        plain = [_timed_run([TRUE], b"", env) for _ in range(20)]
        self.nsenter_overhead = max(0.0, statistics.median(with_nsenter)
                                    - statistics.median(plain))

    def add(self, container_id: str, netns_path: str) -> float:
        """Seconds for one ADD, from fork to exit (nsenter's share taken off)."""
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id,
               "CNI_NETNS": netns_path, "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH,
               "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        return _timed_run([*self._enter, PTP], self._config, env) - self.nsenter_overhead

    def close(self) -> None:
        pass
