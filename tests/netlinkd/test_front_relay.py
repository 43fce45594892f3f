"""The socket front in one process: its relay over real Unix sockets (a client that hangs up
while the front is still connecting to gRPC's inner socket leaves no inner connection open),
and its connection counts."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import ClassVar

from netlinkd import front

CLIENTS = 20


class _Inner(asyncio.Protocol):
    """gRPC's inner socket stood in for by a server that only counts its open connections."""

    open: ClassVar[set[_Inner]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Inner.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _Inner.open.discard(self)


async def _hang_up_at_once(directory: Path) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    inner_path, outer_path = str(directory / "inner.sock"), str(directory / "outer.sock")
    inner = await loop.create_unix_server(_Inner, inner_path)
    relay = front.Front(service=None, inner=inner_path)  # type: ignore[arg-type]
    outer = await loop.create_unix_server(lambda: front._Client(relay), outer_path)
    try:
        for _ in range(CLIENTS):  # each hangs up before the loop has accepted it
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(outer_path)
            client.close()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not _Inner.open and not sum(relay.connections.values()):
                break
        return len(_Inner.open), sum(relay.connections.values())
    finally:
        outer.close()
        inner.close()
        relay.close()


def test_a_client_that_hangs_up_while_the_front_connects_leaves_no_inner_connection(
    tmp_path: Path,
) -> None:
    assert asyncio.run(_hang_up_at_once(tmp_path)) == (0, 0)


async def _descriptors_per_relayed_connection(directory: Path) -> float:
    """The process's descriptors per connection held open through the front, not counting
    the client's own: the accepted one, the relay's to gRPC and gRPC's accepted one (the
    inner server stands in for gRPC in this process, as it is in the helper's)."""
    loop = asyncio.get_running_loop()
    inner_path, outer_path = str(directory / "inner.sock"), str(directory / "outer.sock")
    inner = await loop.create_unix_server(_Inner, inner_path)
    relay = front.Front(service=None, inner=inner_path)  # type: ignore[arg-type]
    outer = await loop.create_unix_server(lambda: front._Client(relay), outer_path)
    clients: list[socket.socket] = []
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(CLIENTS):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(outer_path)
            clients.append(client)
        for _ in range(250):
            await asyncio.sleep(0.02)
            if len(_Inner.open) == CLIENTS:
                break
        return (len(os.listdir("/proc/self/fd")) - before - CLIENTS) / CLIENTS
    finally:
        for client in clients:
            client.close()
        outer.close()
        inner.close()
        relay.close()


def test_the_shared_pool_counts_what_a_relayed_connection_costs_in_descriptors(
    tmp_path: Path,
) -> None:
    cost = asyncio.run(_descriptors_per_relayed_connection(tmp_path))
    assert cost == front.FDS_PER_CONNECTION


def test_connections_that_close_give_their_uids_and_the_shared_pool_their_slots_back() -> None:
    relay = front.Front(service=None)  # type: ignore[arg-type]
    try:
        relay.max_shared = 2
        for _ in range(3):
            assert relay.admit(1000) and relay.admit(1001) and relay.admit(0)
            for uid in (1000, 1001, 0):
                relay.release(uid)
        assert relay.admit(1000) and relay.admit(1001)
        assert not relay.admit(1002), "the pool of the uids not reserved is full"
        assert relay.admit(0), "root's connections are not counted in it"
    finally:
        relay.close()


def test_uids_whose_connections_all_closed_are_forgotten() -> None:
    relay = front.Front(service=None)  # type: ignore[arg-type]
    try:
        for uid in range(1000, 1100):
            assert relay.admit(uid)
            relay.release(uid)
        assert relay.admit(2000)
        assert dict(relay.connections) == {2000: 1}
    finally:
        relay.close()


async def _connect_with_no_inner_socket(directory: Path) -> tuple[bytes, int]:
    loop = asyncio.get_running_loop()
    outer_path = str(directory / "outer.sock")
    relay = front.Front(service=None, inner=str(directory / "no-inner.sock"))  # type: ignore[arg-type]
    outer = await loop.create_unix_server(lambda: front._Client(relay), outer_path)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(outer_path)
        client.setblocking(False)
        read = await asyncio.wait_for(loop.sock_recv(client, 100), 10)
        for _ in range(100):
            if not sum(relay.connections.values()):
                break
            await asyncio.sleep(0.02)
        return read, sum(relay.connections.values())
    finally:
        client.close()
        outer.close()
        relay.close()


def test_a_client_is_hung_up_on_when_grpcs_inner_socket_cannot_be_reached(
    tmp_path: Path,
) -> None:
    assert asyncio.run(_connect_with_no_inner_socket(tmp_path)) == (b"", 0)
