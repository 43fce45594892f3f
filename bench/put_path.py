"""The controller's own time for one put: from the second end's `ConfigPut` reaching the
agent loop until its batch is handed to the helper's client, with N pairs configured.

In process, no root: the agent of `controller/agent.py` with `tests/unit`'s fake helper
(which reports namespace inodes here, as netlinkd does). Each sample is a new pair in two
new named namespaces, as in bench/run's latency phase: the first end is put and applied,
then the second end's put is timed until `submit`. The parse is done before, as the etcd
watcher's thread does it. Prints the median and minimum per N.

Usage: .venv/bin/python bench/put_path.py [--pairs 30 300 1000] [--samples 30]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.agent import Agent
from controller.events import ConfigPut, ConfigSnapshot
from controller.signer import Signer
from netagent_api import helper_pb2
from tests.unit.test_agent import FakeHelper, Statuses, veth


def _config(i: int, side: str) -> bytes:
    peer = "b" if side == "a" else "a"
    return veth(f"l{i}{side}", f"l{i}{peer}", f"l{side}{i}",
                f"10.{i // 200}.{i % 200}.{1 if side == 'a' else 2}/24")


class _Helper(FakeHelper):
    """Stamps the first submit after `arm()`, and gives each namespace an inode."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted = 0
        self._inodes: dict[str, int] = {}
        self._ifindex: dict[tuple[str, str], int] = {}

    def arm(self) -> None:
        self.submitted = 0

    def submit(self, signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        self.submitted = self.submitted or time.perf_counter_ns()
        reply = super().submit(signed)
        for link in reply.observed:
            link.netns_inode = self._inodes.setdefault(link.netns.name, 4096 + len(self._inodes))
            link.ifindex = self._ifindex.setdefault((link.netns.name, link.name),
                                                    1 + len(self._ifindex))
        return reply


def measure(pairs: int, samples: int) -> list[float]:
    helper = _Helper()
    agent = Agent("bench", helper, Signer(Ed25519PrivateKey.generate()), Statuses(),
                  config_prefix="/vnf-agent/bench/linux/config/v1/interface/")
    agent.process([ConfigSnapshot({f"l{i}{s}": _config(i, s)
                                   for i in range(pairs) for s in "ab"})])
    took: list[float] = []
    for i in range(pairs, pairs + samples):
        agent.process([ConfigPut(f"l{i}a", _config(i, "a"))])
        raw = _config(i, "b")
        put = ConfigPut(f"l{i}b", raw, parsed=agent.parse_config(f"l{i}b", raw))
        gc.collect()
        helper.arm()
        start = time.perf_counter_ns()
        agent.process([put])
        took.append((helper.submitted - start) / 1e3)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[30, 300, 1000])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    print(f"{'pairs':>6} {'p50 us':>8} {'min us':>8}")
    for pairs in args.pairs:
        took = measure(pairs, args.samples)
        print(f"{pairs:>6} {statistics.median(took):>8.0f} {min(took):>8.0f}")


if __name__ == "__main__":
    main()
