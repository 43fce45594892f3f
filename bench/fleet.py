"""Many agents' etcd-facing part against one 3-member etcd cluster (TLS + auth).

Each simulated agent is what a controller does to etcd, with the controller's own classes:
`EtcdWatcher` (paged listing + one prefix watch with progress notifications),
`StatusPublisher` (status transactions after each change) and `LivenessKeeper` (the agent
key under a 10 s lease). Only the kernel side is left out: every config is CONFIGURED.
Each agent has its own `ClientFactory`, etcd user and least-privileged role, like a host.

Phases, with etcd's own counters (Prometheus, summed over the members) before and after:
1. start: every agent starts at once, from nothing;
2. steady: `--steady` seconds while a northbound writer changes `--change-rate` configs
   per second across the fleet;
3. storm: every agent process is SIGKILLed (leases are left to expire) and all restart at
   once: the resync storm.

    .venv/bin/python bench/fleet.py --agents 200
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from controller import etcd_role, keys  # noqa: E402
from controller.etcd_client import ClientFactory  # noqa: E402
from controller.etcd_options import EtcdOptions  # noqa: E402
from controller.etcd_watch import EtcdWatcher  # noqa: E402
from controller.events import (  # noqa: E402
    ConfigChanges,
    ConfigDeleted,
    ConfigPut,
    ConfigSnapshot,
    Event,
)
from controller.health import Health  # noqa: E402
from controller.liveness import LivenessKeeper  # noqa: E402
from controller.ops import State, Status  # noqa: E402
from controller.status import StatusPublisher  # noqa: E402
from tests.fleet.cluster import TlsCluster  # noqa: E402

CONFIG = json.dumps({"name": "x", "type": 0, "enabled": True, "mtu": 1500,
                     "phys_address": "02:00:00:00:00:01", "ip_addresses": ["10.0.0.1/24"],
                     "namespace": {"type": 2, "name": "na"},
                     "veth": {"peer_if_name": "y"}})


class SimAgent:
    """One host's etcd traffic: watch, statuses, liveness."""

    def __init__(self, label: str, options: EtcdOptions) -> None:
        self.factory = ClientFactory(options)
        self.health = Health()
        self.health.set("helper", True)
        self.health.set("docker", None, "not watched")
        self.desired: set[str] = set()
        self.listed = threading.Event()
        self.publisher = StatusPublisher(self.factory.connect, label)
        self.watcher = EtcdWatcher(self.factory, label, self.post,
                                   on_state=lambda up, why: self.health.set("etcd", up, why))
        self.keeper = LivenessKeeper(self.factory, label, self.health)

    def post(self, event: Event) -> None:
        if isinstance(event, ConfigSnapshot):
            self.desired = set(event.values)
        for change in event.changes if isinstance(event, ConfigChanges) else (event,):
            if isinstance(change, ConfigPut):
                self.desired.add(change.name)
            elif isinstance(change, ConfigDeleted):
                self.desired.discard(change.name)
        self.publisher.publish({name: Status(State.CONFIGURED, "") for name in self.desired})
        self.listed.set()

    def start(self) -> None:
        self.watcher.start()
        self.keeper.start()

    def ready(self) -> bool:
        return self.listed.is_set() and self.keeper.leases_granted > 0

    def stop(self) -> None:
        self.keeper.stop()
        self.watcher.stop()
        self.publisher.close()


def run_agents(labels: list[str], options: dict[str, EtcdOptions], ready: Any,
               stop: MpEvent, crash: MpEvent) -> None:
    """A process of agents: reports each one ready, then waits to be stopped or crashed."""
    agents = {label: SimAgent(label, options[label]) for label in labels}
    for agent in agents.values():
        agent.start()
    waiting = set(agents)
    while not stop.is_set():
        for label in [label for label in waiting if agents[label].ready()]:
            waiting.discard(label)
            ready.put((label, time.monotonic()))
        if crash.is_set():
            os._exit(0)  # no lease revoked, nothing closed: a SIGKILL
        stop.wait(0.05)
    for agent in agents.values():
        agent.stop()


class Fleet:
    def __init__(self, cluster: TlsCluster, options: dict[str, EtcdOptions],
                 processes: int) -> None:
        self.cluster = cluster
        self.options = options
        self.processes = processes
        self.context = multiprocessing.get_context("fork")
        self.ready = self.context.Queue()
        self.stop = self.context.Event()
        self.crash = self.context.Event()
        self.workers: list[Any] = []

    def start(self) -> float:
        """Start every agent at once; seconds until all are listed and alive."""
        self.stop, self.crash = self.context.Event(), self.context.Event()
        labels = sorted(self.options)
        started = time.monotonic()
        self.workers = [
            self.context.Process(target=run_agents, args=(
                labels[i::self.processes], self.options, self.ready, self.stop, self.crash))
            for i in range(self.processes)]
        for worker in self.workers:
            worker.start()
        for _ in labels:
            self.ready.get(timeout=600)
        return time.monotonic() - started

    def kill(self) -> None:
        self.crash.set()
        for worker in self.workers:
            worker.join(timeout=30)

    def shutdown(self) -> None:
        """Ends every agent process at once (nothing is measured after the storm)."""
        self.crash.set()
        for worker in self.workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()


def requests(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Requests etcd received between two samples, by gRPC method: unary calls plus the
    messages clients sent on streams (watch creations, lease keep-alives)."""
    counted: dict[str, float] = {}
    for name, value in after.items():
        unary = name.startswith("grpc_server_handled_total{") and 'grpc_type="unary"' in name
        streamed = name.startswith("grpc_server_msg_received_total{") and "stream" in name
        if not (unary or streamed):
            continue
        method = name.split('grpc_method="')[1].split('"')[0]
        counted[method] = counted.get(method, 0.0) + value - before.get(name, 0.0)
    return {method: n for method, n in sorted(counted.items()) if n}


def gauge(sample: Mapping[str, float], name: str) -> float:
    return sum(v for k, v in sample.items() if k == name or k.startswith(name + "{"))


def report(phase: str, seconds: float, agents: int, before: Mapping[str, float],
           after: Mapping[str, float], members: int) -> dict[str, Any]:
    counted = requests(before, after)
    total = sum(counted.values())
    result = {
        "phase": phase, "seconds": round(seconds, 2), "requests": int(total),
        "requests_per_s": round(total / seconds, 1),
        "requests_per_agent": round(total / agents, 2),
        "by_method": {m: int(n) for m, n in counted.items()},
        # etcd's own CPU (all members): what the phase cost the cluster, whatever the
        # speed of the simulated agents on the same machine.
        "etcd_cpu_s": round(gauge(after, "process_cpu_seconds_total")
                            - gauge(before, "process_cpu_seconds_total"), 2),
        "etcd_cpu_ms_per_agent": round(1000 * (gauge(after, "process_cpu_seconds_total")
                                               - gauge(before, "process_cpu_seconds_total"))
                                       / agents, 2),
        "watchers_per_agent": round(gauge(after, "etcd_debugging_mvcc_watcher_total") / agents,
                                    2),
        "watch_streams": int(gauge(after, "etcd_debugging_mvcc_watch_stream_total")),
        # Lease counters are replicated: every member counts every grant.
        "leader_changes": int((gauge(after, "etcd_server_leader_changes_seen_total")
                               - gauge(before, "etcd_server_leader_changes_seen_total")) / members),
        "leases_granted": int((gauge(after, "etcd_debugging_lease_granted_total")
                               - gauge(before, "etcd_debugging_lease_granted_total")) / members),
    }
    print(json.dumps(result), flush=True)
    return result


def retried(call: Any, attempts: int = 5) -> Any:
    """Set-up requests, retried: on a loaded machine etcd sometimes times out."""
    for _attempt in range(attempts - 1):
        try:
            return call()
        except Exception as err:
            if "already exists" in str(getattr(err, "details", lambda: "")()):
                return None
            time.sleep(1)
    return call()


def prepare(cluster: TlsCluster, agents: int, interfaces: int) -> dict[str, EtcdOptions]:
    """Users, roles and config keys for `agents` labels; each agent known by its certificate
    (CN = user) unless --password."""
    root = cluster.root_client()
    options: dict[str, EtcdOptions] = {}
    try:
        for index in range(agents):
            label = f"fleet{index:05d}"
            user = f"agent-{label}"
            retried(lambda u=user: cluster.add_user(u, secrets.token_hex(8), client=root))
            retried(lambda lb=label, u=user: etcd_role.apply(root, lb, u))
            retried(lambda lb=label: root.transaction(compare=[], failure=[], success=[
                root.transactions.put(keys.config_key(lb, f"veth{i}"), CONFIG)
                for i in range(interfaces)]))
            options[label] = cluster.options(cert=cluster.ca.issue(user, server=False))
    finally:
        root.close()
    return options


def with_passwords(cluster: TlsCluster, options: dict[str, EtcdOptions]) -> None:
    """Switch every agent to password auth (one bcrypt check per process start)."""
    from etcd3 import etcdrpc

    root = cluster.root_client()
    try:
        for label in options:
            password = secrets.token_hex(8)
            etcdrpc.AuthStub(root.channel).UserChangePassword(
                etcdrpc.AuthUserChangePasswordRequest(name=f"agent-{label}", password=password),
                30, credentials=root.call_credentials, metadata=root.metadata)
            cert = options[label]
            options[label] = EtcdOptions(cert.endpoints, cert.cacert, cert.cert, cert.key,
                                         user=f"agent-{label}", password=password)
    finally:
        root.close()


def steady(cluster: TlsCluster, options: Mapping[str, EtcdOptions], seconds: float,
           rate: float, interfaces: int) -> None:
    """Northbound changes at `rate` per second, spread over random labels."""
    root = cluster.root_client()
    rng = random.Random(1)
    labels = sorted(options)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            label = rng.choice(labels)
            config = json.loads(CONFIG)
            config["mtu"] = rng.randrange(1280, 9000)
            try:
                root.put(keys.config_key(label, f"veth{rng.randrange(interfaces)}"),
                         json.dumps(config))
            except Exception as err:  # a leader election on this loaded box: keep going
                print(f"northbound put failed ({err}); going on", flush=True)
            time.sleep(1 / rate if rate else seconds)
    finally:
        root.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4,
                        help="agent processes (the agents are split between them)")
    parser.add_argument("--interfaces", type=int, default=10, help="config keys per agent")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of steady state")
    parser.add_argument("--change-rate", type=float, default=2.0,
                        help="northbound config changes per second, fleet-wide")
    parser.add_argument("--password", action="store_true",
                        help="agents log in with a password instead of their certificate")
    parser.add_argument("--election-ms", type=int, default=1000,
                        help="etcd --election-timeout (heartbeat a tenth of it); raise it on "
                             "a loaded machine, where a starved member misses heartbeats")
    parser.add_argument("--progress-notify", default="10m",
                        help="etcd --experimental-watch-progress-notify-interval (etcd 3.4's "
                             "default 10m)")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()

    cluster = TlsCluster(heartbeat_ms=args.election_ms // 10, election_ms=args.election_ms,
                         progress_notify=args.progress_notify).start()
    results: list[dict[str, Any]] = []
    fleet: Fleet | None = None
    try:
        began = time.monotonic()
        options = prepare(cluster, args.agents, args.interfaces)
        if args.password:
            with_passwords(cluster, options)
        print(f"prepared {args.agents} users, roles and {args.interfaces} keys each in "
              f"{time.monotonic() - began:.1f}s", flush=True)
        fleet = Fleet(cluster, options, args.processes)

        before = cluster.metrics()
        time.sleep(10)  # the cluster alone: the baseline the phases' CPU is compared with
        results.append(report("idle", 10.0, args.agents, before, cluster.metrics(), 3))

        before = cluster.metrics()
        seconds = fleet.start()
        results.append(report("start", seconds, args.agents, before, cluster.metrics(), 3))

        time.sleep(5)  # let the start settle
        before = cluster.metrics()
        began = time.monotonic()
        steady(cluster, options, args.steady, args.change_rate, args.interfaces)
        results.append(report("steady", time.monotonic() - began, args.agents, before,
                              cluster.metrics(), 3))

        before = cluster.metrics()
        fleet.kill()
        seconds = fleet.start()
        results.append(report("storm", seconds, args.agents, before, cluster.metrics(), 3))
    finally:
        if fleet is not None:
            fleet.shutdown()
        cluster.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
