"""Run inside a scratch network and mount namespace (see test_link_monitor.py); prints JSON.

`overrun <rcvbuf>`: a LinkMonitor with the smallest receive buffer, flooded with events.
`settle`: batches (made by hand, as the executor would) and what `settle` says of them.
`unchanged`: an owned link's group set (as a group delete marks it), then its MTU, then
it deleted.
`subscribers`: the watcher slots taken, freed and ended by `stop`.
`idle`: how many rounds (selects) an idle monitor makes in the 2 s after one woken round,
and the descriptors open before it started and after it stopped.
`unstamped`: which links' messages are parsed, among links never stamped and a pair
stamped (one end's stamp then taken away).
`quiet`: what `quiet()` says before and after changes no event reports.
`deleted`: which link messages are parsed when an owned pair the monitor knows is deleted.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

from netagent_api import helper_pb2
from netlinkd import link_monitor
from netlinkd.link_monitor import MAX_SUBSCRIBERS, LinkMonitor
from netlinkd.policy import load_policy


def _subscribed_monitor() -> tuple[LinkMonitor, list[helper_pb2.LinkEvent | None]]:
    """A started monitor, with the list its one subscriber's events go to."""
    monitor = LinkMonitor(load_policy(None), b"i" * 16)
    events: list[helper_pb2.LinkEvent | None] = []
    assert monitor.subscribe(events.append)
    monitor.start()
    time.sleep(0.3)
    return monitor, events

def sh(script: str) -> None:
    subprocess.run(["sh", "-ec", script], check=True)


def drain(events: list[helper_pb2.LinkEvent | None]) -> list[helper_pb2.LinkEvent]:
    found = [event for event in events if event is not None]
    events.clear()
    return found


def overrun(rcvbuf: int) -> dict[str, object]:
    sh("ip link add own1 type veth peer name own2 && ip link set own1 alias netagent:p:own2"
       " && ip link set own2 alias netagent:p:own1 && ip link set own1 up")
    monitor = LinkMonitor(load_policy(None), b"i" * 16, rcvbuf=rcvbuf)
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
    return {
        "overruns": monitor.overruns,
        "overrun_events": sum(e.overrun for e in first),
        "names_after": sorted({c.name for e in second for c in e.changes}),
    }


def pairs(*names: str) -> helper_pb2.Batch:
    """A batch creating veth pairs (a, b) in the helper's own namespace."""
    return helper_pb2.Batch(operations=[helper_pb2.Operation(
        create_veth_pair=helper_pb2.CreateVethPair(a=helper_pb2.LinkSpec(name=a),
                                                   b=helper_pb2.LinkSpec(name=b)))
        for a, b in zip(names[::2], names[1::2], strict=True)])


def made(a: str, b: str, up: bool) -> str:
    script = (f"ip link add {a} type veth peer name {b} && ip link set {a} alias "
              f"netagent:p:{b} && ip link set {b} alias netagent:p:{a}")
    return script + (f" && ip link set {a} up && ip link set {b} up" if up else "")


def settle() -> dict[str, object]:
    monitor, events = _subscribed_monitor()
    # Batch 1: an UP pair with an address, and a pair stamped while down (no event says so).
    since1 = monitor.generation
    sh(f"{made('own5', 'own6', True)} && ip addr add 10.5.0.1/24 dev own5 && "
       f"{made('own9', 'own10', False)}")
    spans1 = monitor.settle(pairs("own5", "own6", "own9", "own10"), since1)
    end1 = monitor.generation
    # Batch 2, while someone else changes own5, a link it does not name.
    since2 = monitor.generation
    sh(f"{made('own7', 'own8', True)} && ip link set own5 mtu 1300")
    spans2 = monitor.settle(pairs("own7", "own8"), since2)
    sh("ip addr add 10.9.0.1/24 dev own9")
    time.sleep(1.0)
    monitor.stop()
    changes = [{"name": c.name, "generation": e.generation, "mtu": c.mtu, "up": c.up,
                "oper_state": c.oper_state, "peer": c.peer, "added": list(c.added_addresses)}
               for e in drain(events) for c in e.changes]
    return {"since1": since1, "end1": end1, "since2": since2, "changes": changes,
            "spans1": [(s.after, s.through, s.netns.WhichOneof("kind")) for s in spans1],
            "spans2": [(s.after, s.through, s.netns.WhichOneof("kind")) for s in spans2]}


def unchanged() -> dict[str, object]:
    monitor, events = _subscribed_monitor()
    sh(f"{made('own11', 'own12', True)} && ip addr add 10.11.0.1/24 dev own11")
    time.sleep(1.0)
    steps: dict[str, object] = {"made": [c.name for e in drain(events) for c in e.changes]}
    for step, script in (("group", "ip link set own11 group 42"),
                         ("mtu", "ip link set own11 mtu 1280"), ("deleted", "ip link del own11")):
        sh(script)
        time.sleep(1.0)
        steps[step] = [(c.name, c.mtu, c.deleted) for e in drain(events) for c in e.changes]
    monitor.stop()
    return steps


def subscribers() -> dict[str, object]:
    monitor = LinkMonitor(load_policy(None), b"i" * 16)
    monitor.start()
    streams: list[list[helper_pb2.LinkEvent | None]] = [[] for _ in range(MAX_SUBSCRIBERS + 1)]
    taken = [monitor.subscribe(stream.append) for stream in streams]
    monitor.unsubscribe(streams[0].append)  # frees a slot
    monitor.unsubscribe(streams[-1].append)  # never subscribed: nothing to do
    retaken = monitor.subscribe(streams[-1].append)
    sh(f"{made('own13', 'own14', True)}")
    time.sleep(1.0)
    monitor.stop()
    return {
        "taken": taken, "retaken": retaken,
        "after_stop": monitor.subscribe(streams[0].append),
        "names": [sorted({c.name for e in s if e is not None for c in e.changes})
                  for s in streams],
        "ended": [bool(s) and s[-1] is None for s in streams],
    }


def idle() -> dict[str, object]:
    selects = 0
    real = select.select

    def counted(*args: Any) -> Any:
        nonlocal selects
        selects += 1
        return real(*args)

    link_monitor.select = SimpleNamespace(select=counted)  # type: ignore[assignment]
    monitor = LinkMonitor(load_policy(None), b"i" * 16)
    before = os.listdir("/proc/self/fd")  # its wake-up pipe is open from here to the end
    monitor.start()
    monitor.quiet()  # a round asked for wakes the monitor: its wake-up must not last
    selects = 0
    time.sleep(2.0)
    monitor.stop()
    return {"selects": selects, "fds": [len(before), len(os.listdir("/proc/self/fd"))]}


def parses_counted() -> list[tuple[str, int]]:
    """(link name, message type) of each link message the monitor parses from now on."""
    parsed: list[tuple[str, int]] = []
    real = link_monitor.rtnl.parse_link

    def counted(message: bytes) -> Any:
        info = real(message)
        parsed.append((info.name, int.from_bytes(message[4:6], sys.byteorder)))
        return info

    link_monitor.rtnl = SimpleNamespace(**{  # type: ignore[assignment]
        **vars(link_monitor.rtnl), "parse_link": counted})
    return parsed


def unstamped() -> dict[str, object]:
    parsed = parses_counted()
    monitor, events = _subscribed_monitor()
    # Links never stamped, changed many ways (each change a link message), then one pair
    # stamped, and one end's stamp taken away.
    sh("; ".join(f"ip link add free{i} type veth peer name freep{i} && ip link set free{i} "
                 f"mtu 1300 && ip link set free{i} up && ip link set freep{i} up"
                 for i in range(5)))
    sh(made("own15", "own16", True))
    time.sleep(1.0)
    sh("ip link set own15 alias ''")
    time.sleep(1.0)
    monitor.stop()
    return {"parsed": sorted({name for name, _kind in parsed}),
            "changes": [(c.name, c.deleted) for e in drain(events) for c in e.changes]}


def deleted() -> dict[str, object]:
    parsed = parses_counted()
    monitor, events = _subscribed_monitor()
    sh(f"{made('own19', 'own20', True)} && ip addr add 10.19.0.1/24 dev own19")
    time.sleep(1.0)
    before = len(drain(events))
    parsed.clear()
    sh("ip link del own19")
    time.sleep(1.0)
    monitor.stop()
    return {"before": before, "parsed": parsed,
            "changes": [(c.name, c.peer, c.owner, c.deleted) for e in drain(events)
                        for c in e.changes]}


def quiet() -> dict[str, object]:
    monitor, events = _subscribed_monitor()

    def asked() -> list[int]:
        found = monitor.quiet()
        (host,) = found.quiet
        assert not host.netns.WhichOneof("kind")
        return [found.generation, host.watched_since, host.last_message]

    steps = {"start": asked()}
    # not owned: no event, yet a message was read
    sh("ip link add foreign0 type veth peer name foreign1")
    steps["foreign"] = asked()
    time.sleep(1.2)  # two idle rounds
    steps["idle"] = asked()
    sh(f"{made('own15', 'own16', True)}")
    time.sleep(0.5)
    steps["made"] = asked()
    sh("ip link set own15 group 7")  # owned, but nothing a change carries: no event
    steps["group"] = asked()
    monitor.stop()
    steps["events"] = [[e.generation, len(e.changes)] for e in drain(events)]
    return steps


modes = {"overrun": lambda: overrun(int(sys.argv[2])), "settle": settle, "unchanged": unchanged,
         "subscribers": subscribers, "idle": idle, "unstamped": unstamped, "quiet": quiet,
         "deleted": deleted}
print(json.dumps(modes[sys.argv[1]]()))
