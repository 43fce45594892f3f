"""The whole stack for `bench/run`: a real etcd, netlinkd in the harness sandbox, the
unprivileged controller, and the northbound keys, plus the `ip` and process probes the
benchmarks need. Nothing here measures; `suite.py` does.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import REPO  # (also puts the repository on sys.path)

from tests.harness import (
    ControllerProcess,
    EtcdServer,
    HelperSandbox,
    ReadySocket,
    make_keys,
    new_label,
    records,
    wait_until,
)
from tests.harness.etcd import CONFIG_PREFIX, STATUS_PREFIX, config_key, status_key

MTU = 1400
TXN_OPS = 128  # etcd's default --max-txn-ops
ADDRESSES_PER_END = 2  # one IPv4, one IPv6


@dataclass(frozen=True)
class End:
    name: str
    netns: str
    mac: str
    v4: str
    v6: str

    def config(self, peer: End) -> bytes:
        return json.dumps({
            "name": self.name, "type": 0, "enabled": True, "mtu": MTU,
            "phys_address": self.mac, "ip_addresses": [self.v4, self.v6],
            "namespace": {"type": 2, "name": self.netns},
            "veth": {"peer_if_name": peer.name},
        }).encode()


def make_pairs(tag: str, count: int, ns_a: str, ns_b: str, serial: int) -> list[tuple[End, End]]:
    """`count` pairs <tag><i>a in ns_a <-> <tag><i>b in ns_b; `serial` keeps MACs and
    addresses of different calls apart."""

    def end(i: int, side: int, netns: str) -> End:
        n = serial * 65536 + i
        mac = f"02:{side:02x}:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:" \
              f"{(n >> 8) & 255:02x}:{n & 255:02x}"
        v4 = f"10.{64 + serial * 24 + i // 256}.{i % 256}.{side}/24"
        return End(f"{tag}{i}{'ab'[side - 1]}", netns, mac, v4, f"fd00:{serial:x}:{i:x}::{side}/64")

    if count > 5120 or serial > 7:
        raise ValueError("at most 5120 pairs per call and serial 0..7 (addresses run out)")
    return [(end(i, 1, ns_a), end(i, 2, ns_b)) for i in range(count)]


class Northbound:
    """Config writes (in transactions of TXN_OPS) and status reads for one label."""

    def __init__(self, etcd: EtcdServer, label: str) -> None:
        self.client: Any = etcd.client()
        self.label = label

    def put_ends(self, ends: Sequence[tuple[End, End]]) -> None:
        puts = []
        for a, b in ends:
            puts.append(self.client.transactions.put(config_key(self.label, a.name),
                                                      a.config(b)))
            puts.append(self.client.transactions.put(config_key(self.label, b.name),
                                                      b.config(a)))
        for i in range(0, len(puts), TXN_OPS):
            self.client.transaction(compare=[], success=puts[i:i + TXN_OPS], failure=[])

    def put_one(self, end: End, peer: End) -> None:
        self.client.put(config_key(self.label, end.name), end.config(peer))

    def delete_prefix(self, name_prefix: str) -> None:
        self.client.delete_prefix(CONFIG_PREFIX.format(label=self.label) + name_prefix)

    def has_status(self, name: str) -> bool:
        value, _meta = self.client.get(status_key(self.label, name))
        return value is not None

    def status_count(self) -> int:
        prefix = STATUS_PREFIX.format(label=self.label)
        return sum(1 for _ in self.client.get_prefix(prefix, keys_only=True))

    def revision(self) -> int:
        return int(self.client.get_response("/").header.revision)

    def published_up(self) -> int:
        """How many statuses say CONFIGURED with the end UP (what a converged pair shows)."""
        prefix = STATUS_PREFIX.format(label=self.label)
        count = 0
        for value, _meta in self.client.get_prefix(prefix):
            document = json.loads(value)
            count += document.get("state") == "CONFIGURED" and document.get("oper_state") == "UP"
        return count

    def statuses(self) -> dict[bytes, int]:
        """Status key -> mod revision (the controller's own liveness key is not counted)."""
        prefix = STATUS_PREFIX.format(label=self.label)
        return {meta.key: meta.mod_revision
                for _v, meta in self.client.get_prefix(prefix, keys_only=True)}

    def configs(self) -> dict[bytes, int]:
        prefix = CONFIG_PREFIX.format(label=self.label)
        return {meta.key: meta.mod_revision
                for _v, meta in self.client.get_prefix(prefix, keys_only=True)}

    def writes_since(self, before: dict[bytes, int], now: dict[bytes, int]) -> int:
        return sum(1 for key in before.keys() | now.keys() if before.get(key) != now.get(key))

    def close(self) -> None:
        self.client.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def smaps_rollup(pid: int) -> dict[str, float]:
    """The kB lines of /proc/<pid>/smaps_rollup, in MiB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _sep, value = line.partition(":")
        if value.strip().endswith("kB"):
            found[key] = int(value.split()[0]) / 1024
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU of this process's waited-for children and their descendants (the `ip` runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Stack:
    """etcd + sandboxed netlinkd + controller; `close()` removes everything."""

    def __init__(self, policy_lines: Sequence[str], controller_args: Sequence[str]) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="netagent-bench-"))
        self.workdir.chmod(0o711)
        self.etcd = EtcdServer()
        self.helper: HelperSandbox | None = None
        self.controller: ControllerProcess | None = None
        self.kv: Northbound | None = None
        self.notify: ReadySocket | None = None
        self._policy_lines = policy_lines
        self._controller_args = tuple(controller_args)

    def start(self) -> None:
        # The controller runs as uid 65534 and cannot write bytecode caches into the
        # checkout: each module changed since root last imported it would be compiled
        # again at every start the suite times. Installed packages ship them compiled.
        for package in ("controller", "netagent_api", "netagent_log"):
            compileall.compile_dir(REPO / package, quiet=1)
        self.etcd.start()
        keys = make_keys(self.workdir)
        policy = self.workdir / "policy.toml"
        policy.write_text("\n".join(['netns_dirs = ["/var/run/netns", "/run/netns"]',
                                     *self._policy_lines]) + "\n")
        self.helper = HelperSandbox(self.workdir, keys.trust_key, policy_file=policy)
        self.helper.start()
        label = new_label()
        self.kv = Northbound(self.etcd, label)
        self.notify = ReadySocket(self.workdir / "notify.sock")
        self.controller = ControllerProcess(
            self.workdir, etcd=self.etcd.endpoint, label=label, socket=self.helper.socket,
            signing_key=keys.signing_key, extra_args=("--no-docker", *self._controller_args),
            extra_env={"NOTIFY_SOCKET": str(self.notify.path)},
            state_dir=self.workdir / "controller-state")

    def close(self) -> None:
        try:
            if self.controller is not None:
                self.controller.stop()
            if self.kv is not None:
                self.kv.close()
            if self.notify is not None:
                self.notify.close()
            if self.helper is not None:
                self.helper.stop()
        finally:
            self.etcd.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- the sandbox --------------------------------------------------------------------

    @property
    def sandbox(self) -> HelperSandbox:
        assert self.helper is not None
        return self.helper

    def ns_path(self, name: str) -> str:
        """The named namespace's file, as this (host-side) process reaches it."""
        return f"/proc/{self.sandbox.pid}/root/run/netns/{name}"

    def add_namespaces(self, *names: str) -> None:
        """`ip netns add` with IPv6 DAD off (links made there later inherit it)."""
        script = " && ".join(
            f"ip netns add {n} && ip netns exec {n} sh -c 'echo 0 > "
            f"/proc/sys/net/ipv6/conf/all/accept_dad && echo 0 > "
            f"/proc/sys/net/ipv6/conf/default/accept_dad'" for n in names)
        self.sandbox.run("sh", "-c", script)

    def del_namespaces(self, names: Sequence[str]) -> None:
        for i in range(0, len(names), 50):
            self.sandbox.run("sh", "-c", " ; ".join(f"ip netns del {n}"
                                                    for n in names[i:i + 50]), check=False)

    def netagent_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by netlinkd, the controller and etcd."""
        found = {"helper": cpu_seconds(self.sandbox.helper_pid),
                 "etcd": cpu_seconds(self.etcd_pid), "controller": 0.0}
        if self.controller is not None and self.controller.alive():
            found["controller"] = cpu_seconds(self.controller.pid)
        return found

    @property
    def etcd_pid(self) -> int:
        proc = self.etcd._proc  # the harness keeps it private; the bench only reads /proc
        assert proc is not None
        return proc.pid

    def audit(self) -> list[dict[str, Any]]:
        return records(self.sandbox.audit_log)

    def first_batch_after(self, start: int, timeout: float) -> tuple[float, float, int]:
        """(intent time, result time, intent count) of the first batch logged after record
        `start`; waits for it."""

        def found() -> tuple[float, float, int] | None:
            fresh = self.audit()[start:]
            intents = {(r["epoch"], r["seq"]): wall(r["ts"]) for r in fresh
                       if r.get("kind") == "intent"}
            for rec in fresh:
                key = (rec.get("epoch"), rec.get("seq"))
                if rec.get("kind") == "result" and key in intents:
                    return intents[key], wall(rec["ts"]), len(intents)
            return None

        result = wait_until(found, timeout=timeout, interval=0.01, what="a helper batch")
        assert result is not None
        return result

    def changing_batches_since(self, start: int) -> int:
        return sum(1 for r in self.audit()[start:] if r.get("kind") == "intent" and r.get("ops"))

    def batches_since(self, start: int) -> int:
        return sum(1 for r in self.audit()[start:] if r.get("kind") == "intent")

    def wait_controller_idle(self, quiet: float = 0.5, timeout: float = 120.0) -> None:
        """Until the audit log has not grown for `quiet` seconds."""
        last = [len(self.audit()), time.monotonic()]

        def idle() -> bool:
            now = len(self.audit())
            if now != last[0]:
                last[0], last[1] = now, time.monotonic()
            return time.monotonic() - float(last[1]) >= quiet

        wait_until(idle, timeout=timeout, interval=0.05, what="the controller to go idle")
