"""Soak: a steady stream of config changes against many pairs; the kernel must end equal
to etcd, and the controller's and the helper's memory must stay flat.

Real etcd (tests.harness.EtcdServer), netlinkd in the harness sandbox, the controller as
uid 65534 with no capabilities, default flags. N pairs across the named namespaces
soak-a and soak-b (each end: MAC, MTU, one IPv4 /24 and one IPv6 /64, up) are put and
applied first. Then, for S seconds, R changes per second are written to etcd in
transactions of T keys (distinct keys per transaction). A change is one of: a new MTU
(1280-9000), the admin state toggled, a new MAC, a new IPv4 address, or the key deleted
and put back (with a new value) half a second later. At the end every deleted key is put
back, and the run waits until the kernel and every status equal the final etcd state
(tests/faults/faultlib.py `Desired.problems()`: pairs, MAC, MTU, addresses, state, no
leaked or unowned link, every status CONFIGURED).

Reported: changes written and the achieved rate, seconds from the last write to
convergence, batches and operations the helper ran (audit log), and the resident memory
(VmRSS) of the controller and the helper after the initial pairs applied, then every 10 s
and after each convergence. `--rounds K` repeats the churn and the convergence K times:
memory that keeps growing from round to round is a leak; a step in the first is warm-up.

Usage (root): .venv/bin/python bench/soak.py [--pairs 500] [--seconds 60] [--rate 1000]
              [--txn 10] [--seed 1] [--rounds 1] [--converge-timeout 1800]
tests/faults/test_fault_soak.py runs a short version (50 pairs, 10 s) in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.faults.faultlib import Desired, audit_mark, intents_since, veth_end  # noqa: E402
from tests.harness import (  # noqa: E402
    ControllerProcess,
    EtcdKV,
    EtcdServer,
    HelperSandbox,
    make_keys,
    new_label,
)
from tests.harness.etcd import config_key  # noqa: E402

NAMESPACES = ("soak-a", "soak-b")
REPUT_AFTER_S = 0.5
RSS_EVERY_S = 10.0
CONVERGE_TIMEOUT_S = 1800.0
INITIAL_TXN = 128  # etcd's default --max-txn-ops


@dataclass
class Soak:
    pairs: int
    seconds: float
    rate: float
    txn: int = 10
    seed: int = 1
    rounds: int = 1
    converge_timeout: float = CONVERGE_TIMEOUT_S


@dataclass
class SoakResult:
    pairs: int
    seconds: float
    target_rate: float
    changes: int = 0
    write_seconds: float = 0.0
    initial_s: float = 0.0
    converge_s: list[float] = field(default_factory=list)
    batches: int = 0
    operations: int = 0
    rss_kib: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.changes / self.write_seconds if self.write_seconds else 0.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def end_name(pair: int, side: int) -> str:
    return f"s{pair}{'ab'[side]}"


def initial_config(pair: int, side: int) -> dict[str, Any]:
    index = 2 * pair + side
    return veth_end(end_name(pair, side), end_name(pair, 1 - side), index,
                    netns=NAMESPACES[side],
                    addresses=(f"10.{pair >> 8}.{pair & 255}.{side + 1}/24",
                               f"fd00:{pair:x}::{side + 1}/64"))


class Churn:
    """Random changes to the ends' configs; `configs` always holds the last value put."""

    def __init__(self, configs: dict[str, dict[str, Any]], seed: int) -> None:
        self.configs = configs
        self.names = sorted(configs)
        self.rng = random.Random(seed)
        self.absent: dict[str, float] = {}  # deleted key -> when it is put back

    def changes(self, count: int, now: float) -> list[tuple[str, dict[str, Any] | None]]:
        picked: dict[str, dict[str, Any] | None] = {}
        for name, due in sorted(self.absent.items(), key=lambda item: item[1]):
            if due > now or len(picked) >= count:
                break
            del self.absent[name]
            picked[name] = self._mutated(name)
        while len(picked) < count:
            name = self.rng.choice(self.names)
            if name in picked or name in self.absent:
                continue
            if self.rng.random() < 0.1:
                self.absent[name] = now + REPUT_AFTER_S
                picked[name] = None
            else:
                picked[name] = self._mutated(name)
        for name, value in picked.items():
            if value is not None:
                self.configs[name] = value
        return list(picked.items())

    def flush(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Put every deleted key back."""
        names, self.absent = list(self.absent), {}
        values = [(name, self._mutated(name)) for name in names]
        for name, value in values:
            self.configs[name] = value
        return list(values)

    def _mutated(self, name: str) -> dict[str, Any]:
        config = dict(self.configs[name])
        rng = self.rng
        what = rng.choice(("mtu", "mtu", "enabled", "mac", "address", "address"))
        if what == "mtu":
            config["mtu"] = rng.randint(1280, 9000)
        elif what == "enabled":
            config["enabled"] = not config["enabled"]
        elif what == "mac":
            config["phys_address"] = "02:" + ":".join(f"{rng.randrange(256):02x}"
                                                      for _ in range(5))
        else:
            v4 = f"10.{128 + rng.randrange(64)}.{rng.randrange(256)}.{rng.randrange(1, 255)}/24"
            config["ip_addresses"] = [v4, config["ip_addresses"][-1]]
        return config


def write(client: Any, label: str, changes: list[tuple[str, dict[str, Any] | None]]) -> None:
    txn = client.transactions
    client.transaction(compare=[], failure=[], success=[
        txn.delete(config_key(label, name)) if value is None
        else txn.put(config_key(label, name), json.dumps(value))
        for name, value in changes
    ])


def run(soak: Soak, desired: Desired, controller: ControllerProcess,
        helper: HelperSandbox) -> SoakResult:
    """Put the pairs, churn, converge; `desired` must hold no configs yet."""
    result = SoakResult(soak.pairs, soak.seconds, soak.rate)
    pids = {"controller": controller.pid, "helper": helper.helper_pid}
    result.rss_kib = {name: [] for name in pids}
    client = desired.kv.server.client()
    label = desired.kv.label
    try:
        initial = [(end_name(p, s), initial_config(p, s))
                   for p in range(soak.pairs) for s in (0, 1)]
        started = time.monotonic()
        for at in range(0, len(initial), INITIAL_TXN):
            chunk = initial[at:at + INITIAL_TXN]
            write(client, label, list(chunk))
            desired.configs.update(chunk)
        desired.wait_converged(timeout=CONVERGE_TIMEOUT_S)
        result.initial_s = time.monotonic() - started
        mark = audit_mark(helper)
        sample = _sampler(result, pids)
        begin = time.monotonic()
        sample(0.0)
        churn = Churn(desired.configs, soak.seed)
        for _round in range(soak.rounds):
            _churn(soak, churn, client, label, result, lambda: sample(time.monotonic() - begin))
            written = time.monotonic()
            try:
                desired.wait_converged(timeout=soak.converge_timeout)
            except AssertionError:
                result.problems = desired.problems()
            result.converge_s.append(time.monotonic() - written)
            sample(time.monotonic() - begin)
            if result.problems:
                break
        intents = intents_since(helper, mark)
        result.batches = len(intents)
        result.operations = sum(len(record.get("ops", [])) for record in intents)
        return result
    finally:
        client.close()


def _churn(soak: Soak, churn: Churn, client: Any, label: str, result: SoakResult,
           sample: Callable[[], None]) -> None:
    """`soak.rate` changes per second for `soak.seconds`, then every deleted key put back."""
    interval = soak.txn / soak.rate
    begin = time.monotonic()
    next_write, next_sample = begin, begin + RSS_EVERY_S
    while (now := time.monotonic()) < begin + soak.seconds:
        if now >= next_sample:
            sample()
            next_sample += RSS_EVERY_S
        changes = churn.changes(soak.txn, now)
        write(client, label, changes)
        result.changes += len(changes)
        next_write += interval
        time.sleep(max(0.0, next_write - time.monotonic()))
    last = churn.flush()
    if last:
        write(client, label, last)
        result.changes += len(last)
    result.write_seconds += time.monotonic() - begin


def _sampler(result: SoakResult, pids: dict[str, int]) -> Callable[[float], None]:
    def sample(at: float) -> None:
        for name, pid in pids.items():
            result.rss_kib[name].append((round(at, 1), rss_kib(pid)))

    return sample


def report(soak: Soak, result: SoakResult) -> None:
    print(f"soak: {soak.pairs} pairs, {soak.seconds:g} s at {soak.rate:g} changes/s "
          f"(transactions of {soak.txn}, seed {soak.seed})")
    print(f"  initial {2 * soak.pairs} keys applied in {result.initial_s:.1f} s")
    print(f"  changes written: {result.changes} in {result.write_seconds:.1f} s "
          f"= {result.achieved_rate:.0f}/s")
    rounds = ", ".join(f"{seconds:.1f}" for seconds in result.converge_s)
    print(f"  converged after the last write of each of {len(result.converge_s)} round(s) "
          f"in {rounds} s: {'yes' if not result.problems else 'NO'}")
    print(f"  helper: {result.batches} batches, {result.operations} operations")
    for name, samples in result.rss_kib.items():
        series = ", ".join(f"{at:g}s {kib / 1024:.1f}" for at, kib in samples)
        start, end = samples[0][1], samples[-1][1]
        print(f"  {name} RSS MiB: {series}  (end/start {end / start:.3f})")
    for problem in result.problems[:20]:
        print(f"  PROBLEM {problem}")


@contextmanager
def harness(pairs: int) -> Iterator[tuple[Desired, ControllerProcess, HelperSandbox]]:
    workdir = Path(tempfile.mkdtemp(prefix="netagent-soak-"))
    workdir.chmod(0o711)
    etcd = EtcdServer()
    helper: HelperSandbox | None = None
    controller: ControllerProcess | None = None
    try:
        etcd.start()
        keys = make_keys(workdir)
        policy = workdir / "policy.toml"
        policy.write_text('netns_dirs = ["/var/run/netns", "/run/netns"]\n'
                          f"max_owned_links = {max(1024, 4 * pairs + 16)}\n")
        helper = HelperSandbox(workdir, keys.trust_key, policy_file=policy)
        helper.start()  # stop() undoes a half-made start too
        label = new_label()
        controller = ControllerProcess(workdir, etcd=etcd.endpoint, label=label,
                                       socket=helper.socket, signing_key=keys.signing_key)
        controller.start()
        yield Desired(helper, EtcdKV(etcd, label)), controller, helper
    finally:
        if controller is not None:
            controller.stop()
        if helper is not None:
            helper.stop()
        etcd.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="changes per second")
    parser.add_argument("--txn", type=int, default=10, help="changes per etcd transaction")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1,
                        help="churn and converge this many times (memory after each)")
    parser.add_argument("--converge-timeout", type=float, default=CONVERGE_TIMEOUT_S)
    args = parser.parse_args()
    soak = Soak(args.pairs, args.seconds, args.rate, args.txn, args.seed, args.rounds,
                args.converge_timeout)
    with harness(args.pairs) as (desired, controller, helper):
        result = run(soak, desired, controller, helper)
    report(soak, result)
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
