"""`bench/run`: the whole performance suite in one command, against baselines measured in
the same run on the same machine (issue 16). Ratios are netagent / baseline.

  latency    the second end's etcd put until both ends are UP with their addresses, per
             pair in fresh named namespaces, vs one CNI `ptp` ADD (IPv4 only)
  create N   one burst of 2N keys (etcd transactions of 128) until all ends are UP with
             addresses, vs `ip -batch` creating the same pairs in place
  delete N   one etcd delete_prefix until all ends are gone, vs `ip link del group`
  resync     controller restart with the pairs converged (until its READY=1; batches,
             kernel-changing batches, etcd writes), and helper restart (when the
             controller notices)
  rss        helper idle and with pairs; controller with 10k interfaces

"Done" is always what the kernel announces (bench/kernel_watch.py), for netagent and the
baselines alike. Everything root-side runs in the test harness sandbox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import baselines
import cni
from kernel_watch import KernelWatch
from stack import (
    ADDRESSES_PER_END,
    End,
    Stack,
    children_cpu_seconds,
    make_pairs,
    rss_mib,
    smaps_rollup,
)

from tests.harness import wait_until

NS_A, NS_B = "bench-a", "bench-b"
IP_A, IP_B = "ip-a", "ip-b"
TIMEOUT = 600.0
TRIM_WAIT_S = 1.5  # the helper returns free memory 1 s after its last batch: RSS after that


@dataclass(frozen=True)
class Config:
    latency_samples: int
    sizes: tuple[int, ...]
    resync_size: int
    rss_interfaces: int
    resync_interval: float | None
    settle: float


FULL = Config(latency_samples=100, sizes=(100, 1000, 3000), resync_size=1000,
              rss_interfaces=10000, resync_interval=None, settle=3.0)
SMOKE = Config(latency_samples=3, sizes=(5, 10), resync_size=10, rss_interfaces=40,
               resync_interval=2.0, settle=0.5)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


def ready_map(ends: Sequence[tuple[End, End]], a: str, b: str) -> dict[tuple[str, str], int]:
    wanted: dict[tuple[str, str], int] = {}
    for x, y in ends:
        wanted[(a, x.name)] = ADDRESSES_PER_END
        wanted[(b, y.name)] = ADDRESSES_PER_END
    return wanted


def gone_set(ends: Sequence[tuple[End, End]], a: str, b: str) -> set[tuple[str, str]]:
    return {(a, x.name) for x, _ in ends} | {(b, y.name) for _, y in ends}


class Suite:
    def __init__(self, stack: Stack, config: Config) -> None:
        self.stack = stack
        self.config = config
        self.results: dict[str, Any] = {}
        self._serial = 0

    @property
    def kv(self) -> Any:
        return self.stack.kv

    def _pairs(self, tag: str, count: int, a: str, b: str) -> list[tuple[End, End]]:
        self._serial = (self._serial + 1) % 8
        return make_pairs(tag, count, a, b, self._serial)

    def _timed_until(self, watch: KernelWatch, act: Callable[[], object],
                     ready: dict[tuple[str, str], int] | None = None,
                     gone: set[tuple[str, str]] | None = None,
                     cpu: dict[str, Any] | None = None, key: str = "") -> float:
        """Seconds from `act()` until the kernel announced the expected state. With `cpu`,
        also the CPU seconds spent meanwhile: `key`_cpu_s by netagent (helper, controller,
        etcd) or, for the baselines, by the commands this process ran."""
        waiter = watch.expect(ready or {}, gone or set())
        ours, theirs = self.stack.netagent_cpu(), children_cpu_seconds()
        start = time.perf_counter()
        act()
        done = watch.wait(waiter, TIMEOUT) - start
        if cpu is not None:
            if key.startswith("ip_"):
                cpu[f"{key}_cpu_s"] = children_cpu_seconds() - theirs
            else:
                self.stack.wait_controller_idle()
                now = self.stack.netagent_cpu()
                spent = {name: now[name] - ours[name] for name in now}
                cpu[f"{key}_cpu_s"] = sum(spent.values())
                cpu[f"{key}_cpu_by_process_s"] = spent
        return done

    # ---- phases ---------------------------------------------------------------------

    def start_controller(self) -> None:
        assert self.stack.controller is not None
        assert self.stack.notify is not None
        readies = self.stack.notify.count()
        started = time.time()
        self.stack.controller.start()
        ready = self.stack.notify.wait(readies, 60)
        self.stack.wait_controller_idle()
        self.results["controller_start_empty_s"] = ready - started
        time.sleep(TRIM_WAIT_S)
        self.results["helper_rss_idle_mib"] = rss_mib(self.stack.sandbox.helper_pid)
        self.results["helper_smaps_idle_mib"] = smaps_rollup(self.stack.sandbox.helper_pid)

    def latency(self) -> None:
        samples = self.config.latency_samples
        ptp = cni.PtpPlugin(self.stack.ns_path("ptp-host"), self.stack.workdir, 1400) \
            if cni.available() else None
        ours: list[float] = []
        theirs: list[float] = []
        made: list[str] = []
        ends: list[tuple[End, End]] = []
        try:
            for i in range(samples):
                a_ns, b_ns = f"la{i}", f"lb{i}"
                self.stack.add_namespaces(a_ns, b_ns)
                made += [a_ns, b_ns]
                (a, b), = make_pairs(f"l{i}x", 1, a_ns, b_ns, 0)
                ends.append((a, b))
                with KernelWatch({a_ns: self.stack.ns_path(a_ns),
                                  b_ns: self.stack.ns_path(b_ns)}) as watch:
                    self.kv.put_one(a, b)
                    first = a.name
                    wait_until(lambda: self.kv.has_status(first), timeout=60,  # noqa: B023
                               interval=0.005, what=f"status of {first}")
                    ours.append(self._timed_until(
                        watch, lambda: self.kv.put_one(b, a),  # noqa: B023 (called at once)
                        ready_map([(a, b)], a_ns, b_ns)))
                if ptp is not None:
                    c_ns = f"pc{i}"
                    self.stack.add_namespaces(c_ns)
                    made.append(c_ns)
                    theirs.append(ptp.add(f"bench{i}", self.stack.ns_path(c_ns)))
            self.stack.wait_controller_idle()
        finally:
            if ptp is not None:
                ptp.close()
        self._delete_latency_pairs(ends)
        self.stack.del_namespaces(made)
        self.results["latency"] = {"samples": samples, "netagent_s": ours, "ptp_s": theirs}

    def _delete_latency_pairs(self, ends: list[tuple[End, End]]) -> None:
        self.kv.delete_prefix("l")
        wait_until(lambda: self.kv.status_count() == 0, timeout=TIMEOUT, interval=0.05,
                   what="the latency pairs' statuses to go")
        self.stack.wait_controller_idle()

    def throughput(self, count: int) -> None:
        tag = f"t{count}_"
        ends = self._pairs(tag, count, NS_A, NS_B)
        ip_ends = self._pairs(f"i{count}_", count, IP_A, IP_B)
        figures: dict[str, Any] = {}
        paths = {n: self.stack.ns_path(n) for n in (NS_A, NS_B, IP_A, IP_B)}
        with KernelWatch(paths) as watch:
            start_records = len(self.stack.audit())
            figures["create_s"] = self._timed_until(
                watch, lambda: self.kv.put_ends(ends), ready=ready_map(ends, NS_A, NS_B),
                cpu=figures, key="create")
            self.stack.wait_controller_idle()
            figures["create_batches"] = self.stack.batches_since(start_records)
            if count == self.config.resync_size:
                self._converged(figures, count)
            if count == max(self.config.sizes):
                self._controller_rss(watch, present=count)
            figures["ip_batch_create_s"] = self._timed_until(
                watch, lambda: baselines.ip_create(self.stack, ip_ends),
                ready=ready_map(ip_ends, IP_A, IP_B), cpu=figures, key="ip_batch_create")
            figures["ip_del_group_s"] = self._timed_until(
                watch, lambda: baselines.ip_delete_group(self.stack, IP_A),
                gone=gone_set(ip_ends, IP_A, IP_B), cpu=figures, key="ip_del_group")
            start_records = len(self.stack.audit())
            figures["delete_s"] = self._timed_until(
                watch, lambda: self.kv.delete_prefix(tag), gone=gone_set(ends, NS_A, NS_B),
                cpu=figures, key="delete")
            self.stack.wait_controller_idle()
            figures["delete_batches"] = self.stack.batches_since(start_records)
        self.results[f"pairs_{count}"] = figures

    def _converged(self, figures: dict[str, Any], count: int) -> None:
        time.sleep(TRIM_WAIT_S)
        helper_pid = self.stack.sandbox.helper_pid
        figures["helper_rss_mib"] = rss_mib(helper_pid)
        figures["helper_smaps_mib"] = smaps_rollup(helper_pid)
        figures["controller_rss_mib"] = rss_mib(self._controller_pid())
        figures["controller_restart"] = self._controller_restart(count)
        figures["helper_restart"] = self._helper_restart()
        self.results["resync_pairs"] = count

    def _controller_pid(self) -> int:
        assert self.stack.controller is not None
        return self.stack.controller.pid

    def _controller_restart(self, count: int) -> dict[str, Any]:
        controller = self.stack.controller
        assert controller is not None
        # Converged means published too. The kernel watch's "ready" is IFF_UP with the
        # addresses; at 1,000 pairs the kernel's carriers (oper_state) follow seconds later,
        # and a new end's status is held while it settles (live_status.SETTLE_S). Stopped
        # before that, the new controller rightly published what the old one had not yet
        # (0 to 702 status writes, oper_state DOWN -> UP and statuses not yet written).
        ready = time.time()
        wait_until(lambda: self.kv.published_up() == 2 * count, timeout=TIMEOUT,
                   interval=0.2, what="every status to say CONFIGURED and UP")
        statuses_converged_s = time.time() - ready
        controller.stop()
        start_records = len(self.stack.audit())
        statuses, configs = self.kv.statuses(), self.kv.configs()
        assert self.stack.notify is not None
        readies = self.stack.notify.count()
        started = time.time()
        controller.start()
        # Done when the controller says so (READY=1: its first listing planned against the
        # kernel and its statuses published), not at its first batch's result: it may
        # observe before it has read etcd.
        ready = self.stack.notify.wait(readies, TIMEOUT)
        intent, result, _n = self.stack.first_batch_after(start_records, TIMEOUT)
        time.sleep(self.config.settle)
        self.stack.wait_controller_idle()
        return {"statuses_converged_after_idle_s": statuses_converged_s,
                "first_batch_s": intent - started, "first_batch_result_s": result - started,
                "resync_s": ready - started,
                "batches": self.stack.batches_since(start_records),
                "changing_batches": self.stack.changing_batches_since(start_records),
                "etcd_writes": self.kv.writes_since(statuses, self.kv.statuses())
                + self.kv.writes_since(configs, self.kv.configs())}

    def _helper_restart(self) -> dict[str, Any]:
        interval = self.config.resync_interval or 30.0
        self.stack.sandbox.stop_helper()
        start_records = len(self.stack.audit())
        # From the launch: the controller may notice the new helper (its link stream comes
        # back) before start_helper has seen it ready.
        launched = time.time()
        self.stack.sandbox.start_helper()
        intent, result, _n = self.stack.first_batch_after(start_records, interval + 30)
        time.sleep(self.config.settle)
        self.stack.wait_controller_idle()
        return {"noticed_s": intent - launched, "resync_s": result - intent,
                "changing_batches": self.stack.changing_batches_since(start_records),
                "helper_rss_idle_after_restart_mib": rss_mib(self.stack.sandbox.helper_pid)}

    def _controller_rss(self, watch: KernelWatch, present: int) -> None:
        """Top the `present` pairs up to rss_interfaces / 2 pairs; RSS of both processes;
        remove the extra pairs again."""
        pairs = max(0, self.config.rss_interfaces // 2 - present)
        ends = self._pairs("r", pairs, NS_A, NS_B)
        if ends:
            self._timed_until(watch, lambda: self.kv.put_ends(ends),
                              ready=ready_map(ends, NS_A, NS_B))
        self.stack.wait_controller_idle()
        # Converged: every status published. Read at the first quiet moment instead, the
        # RSS missed the statuses' publish (2 s after the ends settle: 7 to 12 MiB more
        # at load 10 to 16, and kept; bench/RESULTS.md, "Controller RSS ... read when").
        wait_until(lambda: self.kv.published_up() == 2 * (pairs + present), timeout=TIMEOUT,
                   interval=0.5, what="every status to say CONFIGURED and UP")
        self.stack.wait_controller_idle()
        self.results["rss_interfaces"] = {
            "interfaces": 2 * (pairs + present),
            "controller_rss_mib": rss_mib(self._controller_pid()),
            "helper_rss_mib": rss_mib(self.stack.sandbox.helper_pid),
        }
        if ends:
            self._timed_until(watch, lambda: self.kv.delete_prefix("r"),
                              gone=gone_set(ends, NS_A, NS_B))
        self.stack.wait_controller_idle()

    def run(self, progress: Callable[[str, dict[str, Any]], None]) -> None:
        self.stack.add_namespaces(NS_A, NS_B, IP_A, IP_B, "ptp-host")
        phases: list[tuple[str, Callable[[], None]]] = [
            ("controller start", self.start_controller), ("latency", self.latency),
            *((f"{n} pairs", lambda n=n: self.throughput(n)) for n in self.config.sizes)]
        for name, phase in phases:
            started = time.monotonic()
            phase()
            progress(f"{name}: {time.monotonic() - started:.1f} s", self.results)


# ---- reporting ---------------------------------------------------------------------------


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 else float("nan")


def summarize(results: dict[str, Any], config: Config) -> list[dict[str, Any]]:
    """Rows: measurement, netagent, baseline, ratio, target."""
    rows: list[dict[str, Any]] = []

    def row(what: str, value: float, unit: str, base: float | None = None,
            base_what: str = "", target: str = "") -> None:
        rows.append({"measurement": what, "netagent": value, "unit": unit,
                     "baseline": base, "baseline_what": base_what,
                     "ratio": None if base is None else _ratio(value, base), "target": target})

    lat = results["latency"]
    ours, theirs = lat["netagent_s"], lat["ptp_s"]
    if theirs:
        row("latency p50", statistics.median(ours), "s", statistics.median(theirs),
            "ptp ADD p50, IPv4 only", "<= 0.5x")
        row("latency p99", percentile(ours, 0.99), "s", percentile(theirs, 0.99),
            "ptp ADD p99", "<= 1.0x")
    else:
        row("latency p50", statistics.median(ours), "s")
    for count in config.sizes:
        fig = results[f"pairs_{count}"]
        target = {100: "<= 2x", 1000: "<= 1.3x"}.get(count, "")
        row(f"create {count} pairs", fig["create_s"], "s", fig["ip_batch_create_s"],
            "ip -batch in place", target)
        row(f"  create {count}: CPU (helper + controller + etcd)", fig["create_cpu_s"], "s",
            fig["ip_batch_create_cpu_s"], "ip -batch CPU")
        row(f"delete {count} pairs", fig["delete_s"], "s", fig["ip_del_group_s"],
            "ip link del group", "<= 2x" if count == 1000 else "")
        row(f"  delete {count}: CPU (helper + controller + etcd)", fig["delete_cpu_s"], "s",
            fig["ip_del_group_cpu_s"], "ip link del group CPU")
    size = results.get("resync_pairs")
    if size:
        fig = results[f"pairs_{size}"]
        restart, helper = fig["controller_restart"], fig["helper_restart"]
        row(f"controller restart, {size} pairs converged: resync", restart["resync_s"], "s",
            fig["create_s"], f"create {size}", "<= 0.1x, 0 writes (until READY=1)")
        row("  of which until its first batch", restart["first_batch_s"], "s",
            results["controller_start_empty_s"], "start with no keys (until READY=1)")
        row("  kernel-changing batches / etcd writes",
            restart["changing_batches"] + restart["etcd_writes"], "count", None, "", "0")
        row("helper restart noticed after (from its launch)", helper["noticed_s"], "s", None,
            "", "<= 2 s")
        row(f"helper restart resync, {size} pairs", helper["resync_s"], "s", fig["create_s"],
            f"create {size}", "<= 0.1x")
        row(f"helper RSS with {size} pairs", fig["helper_rss_mib"], "MiB", None, "",
            "<= 40 MiB")
    row("helper RSS idle", results["helper_rss_idle_mib"], "MiB")
    rss = results["rss_interfaces"]
    row(f"controller RSS with {rss['interfaces']} interfaces", rss["controller_rss_mib"], "MiB",
        None, "", "<= 100 MiB")
    return rows


def show(rows: list[dict[str, Any]]) -> None:
    def value(v: float, unit: str) -> str:
        if unit == "s":
            return f"{v * 1000:.1f} ms"
        if unit == "MiB":
            return f"{v:.1f} MiB"
        return f"{v:g}"

    for r in rows:
        base = "" if r["baseline"] is None else \
            f" | {r['baseline_what']} {value(r['baseline'], r['unit'])} | {r['ratio']:.2f}x"
        target = f" | target {r['target']}" if r["target"] else ""
        print(f"{r['measurement']}: {value(r['netagent'], r['unit'])}{base}{target}")


def machine() -> dict[str, Any]:
    def out(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False,
                                  cwd=os.path.dirname(__file__)).stdout.strip()
        except OSError:
            return ""

    return {"commit": out("git", "rev-parse", "HEAD"), "dirty": bool(out("git", "status",
            "--porcelain", "--untracked-files=no")), "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "cpu_model": next((line.split(":", 1)[1].strip() for line in
                               open("/proc/cpuinfo") if line.startswith("model name")), ""),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="netagent's performance suite (issue 16)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it runs")
    parser.add_argument("--json", default="bench-run.json", help="where to write the figures")
    parser.add_argument("--latency-samples", type=int)
    parser.add_argument("--sizes", help="comma-separated pair counts, e.g. 100,1000,3000")
    parser.add_argument("--resync-size", type=int, help="pairs for the restart figures")
    parser.add_argument("--rss-interfaces", type=int, help="interfaces for the controller RSS")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    if args.latency_samples is not None:
        config = Config(**{**config.__dict__, "latency_samples": args.latency_samples})
    if args.sizes:
        sizes = tuple(int(s) for s in args.sizes.split(","))
        config = Config(**{**config.__dict__, "sizes": sizes,
                           "resync_size": args.resync_size or sizes[len(sizes) // 2]})
    elif args.resync_size:
        config = Config(**{**config.__dict__, "resync_size": args.resync_size})
    if args.rss_interfaces:
        config = Config(**{**config.__dict__, "rss_interfaces": args.rss_interfaces})
    links = 2 * max(*config.sizes, config.latency_samples, config.rss_interfaces // 2, 1) + 64
    policy = [f"max_owned_links = {links}", "max_named_namespaces = 4096"]
    controller_args = ([] if config.resync_interval is None
                       else ["--resync-interval", str(config.resync_interval)])
    stack = Stack(policy, controller_args)
    started = time.monotonic()

    def progress(line: str, results: dict[str, Any]) -> None:
        print(f"[bench] {line}", file=sys.stderr, flush=True)
        with open(args.json + ".partial", "w") as handle:
            json.dump({"machine": machine(), "config": config.__dict__, "raw": results},
                      handle, indent=1, sort_keys=True)

    try:
        stack.start()
        suite = Suite(stack, config)
        suite.run(progress)
    except BaseException:
        if stack.controller is not None:
            print(stack.controller.log_text()[-3000:], file=sys.stderr)
        if stack.helper is not None:
            print(stack.helper.log_tail(), file=sys.stderr)
        raise
    finally:
        stack.close()
    rows = summarize(suite.results, config)
    show(rows)
    document = {"machine": machine(), "config": config.__dict__,
                "wall_s": time.monotonic() - started, "rows": rows, "raw": suite.results}
    with open(args.json, "w") as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
    os.unlink(args.json + ".partial")
    print(f"figures written to {args.json} ({document['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
