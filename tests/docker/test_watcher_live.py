"""MicroserviceWatcher against a real, private dockerd."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from private_dockerd import DockerDaemon
from socket_proxy import UnixProxy

from controller.docker_watch import MicroserviceWatcher, parse_started_at
from controller.events import Event, MicroservicesChanged

pytestmark = [pytest.mark.root, pytest.mark.docker]

DEADLINE = 30.0


class Posted:
    """The events a watcher posted, with the time each arrived."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[float, Event]] = queue.Queue()
        self.last: MicroservicesChanged | None = None
        self.arrived_at = 0.0

    def post(self, event: Event) -> None:
        self.queue.put((time.time(), event))

    def wait_for(
        self, predicate: Callable[[MicroservicesChanged], bool], what: str
    ) -> MicroservicesChanged:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                arrived, event = self.queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            assert isinstance(event, MicroservicesChanged)
            self.last, self.arrived_at = event, arrived
            if predicate(event):
                return event
        pytest.fail(f"no event with {what} within {DEADLINE} s; last: {self.last}")


@pytest.fixture
def posted(dockerd: DockerDaemon) -> Iterator[Posted]:
    sink = Posted()
    watcher = MicroserviceWatcher(dockerd.url, sink.post, backoff_max=1.0)
    watcher.start()
    try:
        sink.wait_for(lambda event: event.connected, "connected=True")
        yield sink
    finally:
        watcher.stop()


def _is_nsfs(path: str) -> bool:
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        return any(line.split()[4] == path and " - nsfs " in line for line in mountinfo.readlines())


def test_started_container_appears_with_its_sandbox(
    posted: Posted, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    event = posted.wait_for(lambda e: ms_label in e.running, f"microservice {ms_label}")
    found = event.running[ms_label]
    assert found.container_id == container.id
    assert found.pid == container.attrs["State"]["Pid"]
    assert found.sandbox_key == container.attrs["NetworkSettings"]["SandboxKey"]
    assert _is_nsfs(found.sandbox_key)
    assert os.stat(found.sandbox_key).st_ino == os.stat(f"/proc/{found.pid}/ns/net").st_ino
    latency = posted.arrived_at - parse_started_at(found.started_at) / 1e9
    print(f"posted {latency * 1000:.1f} ms after the container's StartedAt")


def test_restart_gives_new_sandbox_and_stop_removes(
    posted: Posted, microservice: Callable[..., Any], ms_label: str
) -> None:
    container = microservice(ms_label)
    first = posted.wait_for(lambda e: ms_label in e.running, f"microservice {ms_label}").running[
        ms_label
    ]
    container.restart(timeout=0)
    second = posted.wait_for(
        lambda e: ms_label in e.running and e.running[ms_label].started_at != first.started_at,
        f"restarted microservice {ms_label}",
    ).running[ms_label]
    assert second.container_id == first.container_id
    assert second.sandbox_key != first.sandbox_key
    container.stop(timeout=0)
    posted.wait_for(lambda e: ms_label not in e.running, f"{ms_label} gone")


def test_newest_of_two_wins_and_other_takes_over(
    posted: Posted, microservice: Callable[..., Any], ms_label: str
) -> None:
    older = microservice(ms_label)
    posted.wait_for(lambda e: ms_label in e.running, f"microservice {ms_label}")
    newer = microservice(ms_label)
    winner = posted.wait_for(
        lambda e: ms_label in e.running and e.running[ms_label].container_id == newer.id,
        "the newer container winning",
    ).running[ms_label]
    assert winner.warnings == (
        f"microservice {ms_label} runs in 2 containers: {newer.id[:12]} (used),"
        f" {older.id[:12]} (ignored)",
    )
    newer.stop(timeout=0)
    survivor = posted.wait_for(
        lambda e: ms_label in e.running and e.running[ms_label].container_id == older.id,
        "the older container taking over",
    ).running[ms_label]
    assert survivor.warnings == ()


def test_dockerd_restart_keeps_map_and_follows_new_events(
    posted: Posted, microservice: Callable[..., Any], dockerd: DockerDaemon, ms_label: str
) -> None:
    survivor = microservice(ms_label)
    before = posted.wait_for(lambda e: ms_label in e.running, f"microservice {ms_label}")
    dockerd.stop()
    down = posted.wait_for(lambda e: not e.connected, "connected=False")
    assert down.reason.startswith(f"Docker unreachable at {dockerd.url}: ")
    assert down.running == before.running, "a Docker outage must not drop running microservices"
    dockerd.start()
    posted.wait_for(lambda e: e.connected, "connected=True again")
    assert posted.last is not None and posted.last.running[ms_label].container_id == survivor.id
    late = f"{ms_label}-late"
    microservice(late)
    posted.wait_for(lambda e: late in e.running, f"microservice {late} after the restart")


def test_changes_while_disconnected_are_found_by_listing_again(
    microservice: Callable[..., Any], dockerd: DockerDaemon, ms_label: str, tmp_path: Path
) -> None:
    """Docker keeps running while the watcher cannot reach it; events of that time are lost."""
    proxy = UnixProxy(str(tmp_path / "docker.sock"), dockerd.socket).start()
    sink = Posted()
    watcher = MicroserviceWatcher(proxy.url, sink.post, backoff_max=1.0)
    watcher.start()
    try:
        leaving = microservice(ms_label)
        sink.wait_for(lambda e: e.connected and ms_label in e.running, f"microservice {ms_label}")
        proxy.cut()
        down = sink.wait_for(lambda e: not e.connected, "connected=False")
        assert down.reason.startswith(f"Docker unreachable at {proxy.url}: ")
        leaving.stop(timeout=0)
        arrived = f"{ms_label}-new"
        newcomer = microservice(arrived)
        assert sink.queue.empty(), "the watcher must not see Docker while the proxy is cut"
        proxy.start()
        back = sink.wait_for(lambda e: e.connected, "connected=True again")
        assert ms_label not in back.running, "a container stopped during the outage stays mapped"
        assert back.running[arrived].container_id == newcomer.id
    finally:
        watcher.stop()
        proxy.close()
