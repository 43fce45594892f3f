"""A socket-group member without the key cannot stall the helper (issue 15, part 1).

Stalled request bodies and idle HTTP/2 connections hold no thread of the helper: a signed
batch sent after 100 stalled streams and 1,000 idle connections is applied within 1 s.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator

import grpc
from nlkd_lib import SUBMIT, Sandbox, create, own_sandbox, spec

from netagent_api import helper_pb2
from netlinkd import front

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
STALLED_STREAMS = 100
IDLE_CONNECTIONS = 1000
STREAMS_PER_CHANNEL = 4  # below the helper's per-connection cap, so every stream starts


def _stalled_body(release: threading.Event) -> Iterator[bytes]:
    release.wait()
    return
    yield b""  # a generator that never yields before `release`


def _open_stalled_streams(
    helper: Sandbox, release: threading.Event
) -> tuple[list[grpc.Channel], list[grpc.Future]]:  # type: ignore[type-arg]
    channels: list[grpc.Channel] = []
    calls: list[grpc.Future] = []  # type: ignore[type-arg]
    for _ in range(STALLED_STREAMS // STREAMS_PER_CHANNEL):
        # a connection of its own each (channels to one target share one by default)
        channel = grpc.insecure_channel(
            f"unix:{helper.socket}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        channels.append(channel)
        submit = channel.stream_unary(
            SUBMIT, request_serializer=lambda b: b,
            response_deserializer=helper_pb2.BatchReply.FromString,
        )
        calls += [submit.future(_stalled_body(release)) for _ in range(STREAMS_PER_CHANNEL)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    return channels, calls


def _open_idle_connections(path: str, count: int) -> list[socket.socket]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    sockets = []
    for _ in range(count):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        conn.sendall(HTTP2_PREFACE)
        sockets.append(conn)
    return sockets


def _still_open(sockets: list[socket.socket]) -> int:
    """Connections the helper has not closed (a closed one reads EOF or errors)."""
    alive = 0
    for conn in sockets:
        conn.setblocking(False)
        try:
            while conn.recv(65536):
                pass
            continue  # EOF: closed by the helper
        except BlockingIOError:
            alive += 1
        except OSError:
            continue
    return alive


def test_stalled_streams_and_idle_connections_do_not_delay_a_signed_batch() -> None:
    with own_sandbox() as (helper, signer):
        release = threading.Event()
        channels, calls = _open_stalled_streams(helper, release)
        idle = _open_idle_connections(helper.socket, IDLE_CONNECTIONS)
        try:
            time.sleep(0.5)  # let the helper accept and register everything
            assert _still_open(idle) == IDLE_CONNECTIONS, "idle connections dropped early"
            assert not any(call.done() for call in calls)
            started = time.monotonic()
            helper.hello()
            reply = helper.submit(signer.sign(signer.batch([create(spec("st-a"), spec("st-b"))])))
            elapsed = time.monotonic() - started
            assert reply.ok, reply.error
            assert elapsed < 1.0, f"a signed batch took {elapsed:.2f} s behind the stalled clients"
            assert helper.link("st-a") is not None
            _stalled_calls_are_refused_and_audited(helper, calls)
        finally:
            release.set()
            for conn in idle:
                conn.close()
            for channel in channels:
                channel.close()


def _stalled_calls_are_refused_and_audited(
    helper: Sandbox, calls: list[grpc.Future]  # type: ignore[type-arg]
) -> None:
    deadline = time.monotonic() + front.BODY_TIMEOUT_S + 30
    for call in calls:
        reply = call.result(timeout=max(0.1, deadline - time.monotonic()))
        assert not reply.ok and reply.error_kind == helper_pb2.MALFORMED, reply
        assert "no request body" in reply.error
    refused = [r for r in helper.audit_records() if r["kind"] == "refused"]
    assert sum("no request body" in r["error"] for r in refused) == len(calls)


def test_idle_connections_are_closed_after_the_idle_limit() -> None:
    """The helper closes a connection that carries no call for IDLE_TIMEOUT_MS."""
    with own_sandbox() as (helper, _):
        idle = _open_idle_connections(helper.socket, 20)
        try:
            deadline = time.monotonic() + front.IDLE_TIMEOUT_MS / 1000 + 30
            while _still_open(idle) and time.monotonic() < deadline:
                time.sleep(1)
            assert _still_open(idle) == 0
            helper.hello()
        finally:
            for conn in idle:
                conn.close()
