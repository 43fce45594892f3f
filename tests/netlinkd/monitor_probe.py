"""Run inside a scratch network and mount namespace (see test_link_monitor.py): a
LinkMonitor with the smallest receive buffer, flooded with events; prints JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from netagent_api import helper_pb2
from netlinkd.link_monitor import LinkMonitor
from netlinkd.policy import load_policy


def sh(script: str) -> None:
    subprocess.run(["sh", "-ec", script], check=True)


def drain(events: list[helper_pb2.LinkEvent | None]) -> list[helper_pb2.LinkEvent]:
    found = [event for event in events if event is not None]
    events.clear()
    return found


def main() -> None:
    sh("ip link add own1 type veth peer name own2 && ip link set own1 alias netagent:p:own2"
       " && ip link set own2 alias netagent:p:own1 && ip link set own1 up")
    monitor = LinkMonitor(load_policy(None), b"i" * 16, rcvbuf=int(sys.argv[1]))
    events: list[helper_pb2.LinkEvent | None] = []
    assert monitor.subscribe(events.append)
    monitor.start()
    time.sleep(0.5)
    # An owned link no event announces (it is down when stamped), then a burst of events
    # far beyond the buffer.
    sh("ip link add own3 type veth peer name own4 && ip link set own3 alias netagent:p:own4")
    batch = "".join(f"addr add 10.{i // 250}.{i % 250}.1/32 dev own1\n" for i in range(300))
    with monitor._lock:  # the monitor stalls at its first event: the kernel must drop some
        subprocess.run(["ip", "-batch", "-"], input=batch.encode(), check=True)
    time.sleep(1.0)
    first = drain(events)
    # own3 is down, so no event told its stamp, and an address event names only an
    # ifindex: reported only if the re-dump after the overrun found own3.
    sh("ip addr add 10.99.0.1/32 dev own3")
    time.sleep(1.0)
    second = drain(events)
    monitor.stop()
    print(json.dumps({
        "overruns": monitor.overruns,
        "overrun_events": sum(e.overrun for e in first),
        "names_after": sorted({c.name for e in second for c in e.changes}),
    }))


main()
