"""End to end: N veth pairs (2N etcd keys) -> unprivileged controller -> netlinkd -> kernel.

Real etcd (tests.harness.EtcdServer), netlinkd in the harness sandbox, the controller as
uid 65534 with no capabilities (tests.harness.ControllerProcess, default flags). Measured:
  create   2N keys put in etcd transactions of 128 (etcd's default --max-txn-ops) until
           (a) the last helper result record that completes the N pairs (audit `ts`) and
           (b) every status is CONFIGURED;
  restart  controller restart with the N pairs applied: time to the first helper result of
           the new controller, then (after a settle) batches, kernel-changing batches and
           etcd writes during the resync (all but the observe batch must be zero);
           a restart with no keys at all is the reference;
  delete   one etcd delete_prefix until the helper deleted all pairs and no status is left.
Baselines in the same sandbox and run: `ip -batch` of the same N pairs (create, delete) and
the helper driven directly with the same ops in signed batches (no etcd, no controller).
Batches per phase come from the helper's audit log ("intent" records), showing coalescing.

Usage (root): .venv/bin/python bench/bench_e2e.py [--pairs 200] [--settle 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import (
    DEFAULT_MAX_OPS,
    MTU,
    NS_A,
    NS_B,
    End,
    SignedClient,
    World,
    count_links,
    create_ops,
    delete_ops,
    ip_batch,
    ip_batch_create_files,
    ip_batch_delete_file,
    ms,
    pairs,
    ratio,
    require_pairs,
    sandboxed_helper,
    timed,
)

from tests.harness import ControllerProcess, EtcdServer, new_label, records, wait_until
from tests.harness.etcd import CONFIG_PREFIX, STATUS_PREFIX, config_key

TXN_OPS = 128
DEADLINE_S = 600.0


def config(end: End, peer: End) -> bytes:
    return json.dumps({
        "name": end.name, "type": 0, "enabled": True, "mtu": MTU,
        "ip_addresses": [end.address], "namespace": {"type": 2, "name": end.netns},
        "veth": {"peer_if_name": peer.name},
    }).encode()


def _wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Audit:
    """The helper's audit log read from record `start` on."""

    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.start = start

    def new(self) -> list[dict[str, Any]]:
        return records(self.path)[self.start:]

    def intents(self) -> list[dict[str, Any]]:
        return [r for r in self.new() if r.get("kind") == "intent"]

    def done_at(self, op_kind: str, count: int) -> float | None:
        """Wall time of the result record by which `count` applied `op_kind` ops were done."""
        ops: dict[tuple[str, int], int] = {}
        done = 0
        for rec in self.new():
            key = (str(rec.get("epoch")), int(rec.get("seq", 0)))
            if rec.get("kind") == "intent":
                ops[key] = sum(1 for op in rec.get("ops", []) if str(op).startswith(op_kind))
            elif rec.get("kind") == "result" and rec.get("verdict") == "applied":
                done += ops.get(key, 0)
                if done >= count:
                    return _wall(str(rec["ts"]))
        return None

    def first_result_at(self) -> float | None:
        """Wall time of the first result of a batch whose intent came after `start`."""
        fresh = self.new()
        intents = {(r.get("epoch"), r.get("seq")) for r in fresh if r.get("kind") == "intent"}
        return next((_wall(str(r["ts"])) for r in fresh if r.get("kind") == "result"
                     and (r.get("epoch"), r.get("seq")) in intents), None)

    def describe(self) -> str:
        intents = self.intents()
        sizes = [len(r.get("ops", [])) for r in intents]
        refused = sum(1 for r in self.new() if r.get("verdict") not in (None, "applied"))
        return (f"{len(intents)} batches ({sum(1 for s in sizes if s)} with ops, "
                f"ops per batch {sizes}, {refused} not applied)")


class Northbound:
    """The etcd side: config writes in transactions, status reads, the revision."""

    def __init__(self, etcd: EtcdServer, label: str) -> None:
        self.client: Any = etcd.client()
        self.label = label

    def put_all(self, ends: list[tuple[End, End]]) -> None:
        puts = []
        for a, b in ends:
            puts.append(self.client.transactions.put(config_key(self.label, a.name), config(a, b)))
            puts.append(self.client.transactions.put(config_key(self.label, b.name), config(b, a)))
        for i in range(0, len(puts), TXN_OPS):
            self.client.transaction(compare=[], success=puts[i:i + TXN_OPS], failure=[])

    def delete_all(self) -> None:
        self.client.delete_prefix(CONFIG_PREFIX.format(label=self.label))

    def states(self) -> list[str]:
        prefix = STATUS_PREFIX.format(label=self.label)
        return [json.loads(value)["state"] for value, _m in self.client.get_prefix(prefix)]

    def revision(self) -> int:
        return int(self.client.get_response("/").header.revision)


def wait_for(what: str, check: Any) -> float:
    """Poll `check()` every 20 ms until it gives a time; return it."""
    found: float = wait_until(check, timeout=DEADLINE_S, interval=0.02, what=what)
    return found


def measure_create(world: World, kv: Northbound, ends: list[tuple[End, End]]) -> dict[str, Any]:
    audit = Audit(world.helper.audit_log, len(records(world.helper.audit_log)))
    count = len(ends)
    start = time.time()
    kv.put_all(ends)
    put_done = time.time()
    kernel = wait_for("all pairs created", lambda: audit.done_at("create_veth_pair", count))
    configured = wait_for("all CONFIGURED", lambda: (
        time.time() if kv.states().count("CONFIGURED") == 2 * count else None))
    require_pairs(world, "e", count)
    return {"put": put_done - start, "kernel": kernel - start,
            "configured": configured - start, "batches": audit.describe()}


def measure_restart(world: World, controller: ControllerProcess, kv: Northbound,
                    settle: float) -> dict[str, Any]:
    audit = Audit(world.helper.audit_log, len(records(world.helper.audit_log)))
    controller.stop()
    revision = kv.revision()
    start = time.time()
    controller.start()
    first = wait_for("the new controller's first batch", audit.first_result_at)
    time.sleep(settle)
    changing = sum(1 for r in audit.intents() if r.get("ops"))
    return {"resync": first - start, "batches": audit.describe(),
            "changing_batches": changing, "etcd_writes": kv.revision() - revision}


def measure_delete(world: World, kv: Northbound, count: int) -> dict[str, Any]:
    audit = Audit(world.helper.audit_log, len(records(world.helper.audit_log)))
    start = time.time()
    kv.delete_all()
    kernel = wait_for("all pairs deleted", lambda: audit.done_at("delete_link", count))
    cleared = wait_for("no status left", lambda: time.time() if not kv.states() else None)
    if count_links(world, NS_A, "e") or count_links(world, NS_B, "e"):
        raise RuntimeError("e* links left behind after deleting the keys")
    return {"kernel": kernel - start, "statuses_gone": cleared - start,
            "batches": audit.describe()}


def baselines(world: World, count: int) -> dict[str, float]:
    ends = pairs("i", count)
    file_a, file_b = ip_batch_create_files(world.workdir, ends)
    found = {"ip_create": ip_batch(world, (NS_A, file_a), (NS_B, file_b))}
    require_pairs(world, "i", count)
    found["ip_delete"] = ip_batch(world, (NS_A, ip_batch_delete_file(world.workdir, ends)))
    client = SignedClient(world)
    try:
        ends = pairs("d", count)
        found["helper_create"] = timed(
            lambda: client.submit_split(create_ops(ends), DEFAULT_MAX_OPS))[0]
        require_pairs(world, "d", count)
        found["helper_delete"] = timed(
            lambda: client.submit_split(delete_ops(ends), DEFAULT_MAX_OPS))[0]
    finally:
        client.close()
    return found


def run(world: World, etcd: EtcdServer, count: int, settle: float) -> dict[str, Any]:
    label = new_label()
    kv = Northbound(etcd, label)
    controller = ControllerProcess(world.workdir, etcd=etcd.endpoint, label=label,
                                   socket=world.helper.socket,
                                   signing_key=world.keys.signing_key)
    try:
        controller.start()
        wait_for("the controller's first batch", Audit(world.helper.audit_log, 0).first_result_at)
        result = {"restart_empty": measure_restart(world, controller, kv, settle)}
        result["create"] = measure_create(world, kv, pairs("e", count))
        result["restart"] = measure_restart(world, controller, kv, settle)
        result["delete"] = measure_delete(world, kv, count)
        result["baseline"] = baselines(world, count)
    except Exception:
        print(controller.log_text()[-4000:], file=sys.stderr)
        raise
    finally:
        controller.stop()
        kv.client.close()
    return result


def report(count: int, r: dict[str, Any]) -> None:
    base = r["baseline"]
    create, delete, restart = r["create"], r["delete"], r["restart"]
    print(f"pairs {count} ({2 * count} keys)")
    print(f"create: etcd puts {ms(create['put'])}, in kernel {ms(create['kernel'])} "
          f"({ms(create['kernel'] / count)}/pair), all CONFIGURED {ms(create['configured'])}; "
          f"{create['batches']}")
    print(f"  baselines: ip -batch {ms(base['ip_create'])}, helper direct "
          f"{ms(base['helper_create'])}")
    print(f"  ratio e2e kernel/ip-batch {ratio(create['kernel'], base['ip_create'])}, "
          f"e2e CONFIGURED/ip-batch {ratio(create['configured'], base['ip_create'])}, "
          f"e2e kernel/helper direct {ratio(create['kernel'], base['helper_create'])}")
    for name in ("restart_empty", "restart"):
        rr = r[name]
        print(f"{name}: first helper result after {ms(rr['resync'])}; {rr['batches']}; "
              f"kernel-changing batches {rr['changing_batches']}, etcd writes {rr['etcd_writes']}")
    print(f"  ratio restart with {count} pairs / with none "
          f"{ratio(restart['resync'], r['restart_empty']['resync'])}")
    print(f"delete: in kernel {ms(delete['kernel'])} ({ms(delete['kernel'] / count)}/pair), "
          f"statuses gone {ms(delete['statuses_gone'])}; {delete['batches']}")
    print(f"  baselines: ip -batch {ms(base['ip_delete'])}, helper direct "
          f"{ms(base['helper_delete'])}")
    print(f"  ratio e2e kernel/ip-batch {ratio(delete['kernel'], base['ip_delete'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds to watch for further batches after a restart resync")
    args = parser.parse_args()
    policy = [f"max_owned_links = {max(1024, 2 * args.pairs + 16)}"]
    etcd = EtcdServer()
    try:
        etcd.start()
        with sandboxed_helper(policy) as world:
            result = run(world, etcd, args.pairs, args.settle)
    finally:
        etcd.stop()
    report(args.pairs, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
