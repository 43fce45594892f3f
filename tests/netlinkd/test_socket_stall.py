"""A socket-group member without the key cannot stall the helper (issue 15, part 1).

Stalled request bodies, idle HTTP/2 connections and connection floods hold no thread of the
helper and no connection another uid needs: while a keyless member under its own uid holds
100 stalled streams and tries 2,100 connections (more than the helper's old total cap of
2,048), a new connection from the controller's uid applies a signed batch within 1 s.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

from nlkd_lib import Sandbox, create, own_sandbox, spec

from netlinkd import front
from tests.harness import TEST_GID, UNPRIVILEGED_UID, unprivileged

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
STALLED_STREAMS = 100
STREAMS_PER_CHANNEL = 4  # below the helper's per-connection cap, so every stream starts
FLOOD_CONNECTIONS = 2100

# flood(): opens `count` idle HTTP/2 connections; 1 s later, how many the helper kept open.
FLOOD = textwrap.dedent("""
    import socket, time
    def flood(path, count, preface):
        conns = []
        for _ in range(count):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(path)
                conn.sendall(preface)
                conns.append(conn)
            except OSError:
                conn.close()
        time.sleep(1.0)
        alive = 0
        for conn in conns:
            conn.setblocking(False)
            try:
                alive += conn.recv(65536) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive, conns
""")
# Run as the keyless member: stalled Submit streams on 25 connections, then a flood of idle
# HTTP/2 connections; it reports how many the helper kept, and holds all until stdin closes.
KEYLESS_CLIENT = FLOOD + textwrap.dedent("""
    import json, resource, socket, sys, threading, time
    import grpc
    path, preface = sys.argv[1], bytes.fromhex(sys.argv[5])
    stalled, per_channel, flood_count = map(int, sys.argv[2:5])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    release = threading.Event()
    def body():
        release.wait()
        return
        yield b""
    channels, calls = [], []
    for _ in range(stalled // per_channel):
        own = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own each
        channel = grpc.insecure_channel("unix:" + path, options=own)
        channels.append(channel)
        submit = channel.stream_unary("/netagent.helper.v1.Netlinkd/Submit")
        calls += [submit.future(body()) for _ in range(per_channel)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    alive, conns = flood(path, flood_count, preface)
    print(json.dumps({"streams": len(calls), "flood_kept": alive}), flush=True)
    sys.stdin.read()
    release.set()
""")


def _start_keyless_client(helper: Sandbox) -> tuple[subprocess.Popen[str], dict[str, int]]:
    argv = [sys.executable, "-c", KEYLESS_CLIENT, helper.socket, str(STALLED_STREAMS),
            str(STREAMS_PER_CHANNEL), str(FLOOD_CONNECTIONS), HTTP2_PREFACE.hex()]
    client = subprocess.Popen(
        unprivileged(argv, uid=UNPRIVILEGED_UID, gid=TEST_GID),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert client.stdout is not None
    line = client.stdout.readline()
    if not line:
        client.wait(timeout=30)
        raise AssertionError(f"the keyless client failed (rc {client.returncode})")
    return client, json.loads(line)


def test_a_keyless_uid_flooding_connections_and_streams_does_not_delay_a_signed_batch() -> None:
    with own_sandbox(socket_group=TEST_GID) as (helper, signer):
        client, held = _start_keyless_client(helper)
        try:
            assert held["streams"] == STALLED_STREAMS
            channels = STALLED_STREAMS // STREAMS_PER_CHANNEL
            assert held["flood_kept"] <= front.MAX_CONNECTIONS_PER_UID - channels, held
            started = time.monotonic()
            helper.hello()  # a new connection from the controller's uid
            reply = helper.submit(signer.sign(signer.batch([create(spec("st-a"), spec("st-b"))])))
            elapsed = time.monotonic() - started
            assert reply.ok, reply.error
            assert elapsed < 1.0, f"a signed batch took {elapsed:.2f} s behind the keyless uid"
            assert helper.link("st-a") is not None
            _stalled_calls_are_refused_and_audited(helper)
        finally:
            assert client.stdin is not None
            client.stdin.close()
            client.wait(timeout=30)


def _stalled_calls_are_refused_and_audited(helper: Sandbox) -> None:
    deadline = time.monotonic() + front.BODY_TIMEOUT_S + 30
    refused: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        refused = [r for r in helper.audit_records() if r["kind"] == "refused"]
        if sum("no request body" in str(r["error"]) for r in refused) == STALLED_STREAMS:
            return
        time.sleep(0.5)
    raise AssertionError(f"not every stalled call was refused and audited: {refused}")


def _open_idle_connections(path: str, count: int) -> list[socket.socket]:
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


# Run as one uid of many: FLOOD_PER_UID idle HTTP/2 connections; reports how many the helper
# kept, and holds them until stdin closes.
UID_FLOOD_CLIENT = FLOOD + textwrap.dedent("""
    import json, sys
    alive, conns = flood(sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]))
    print(json.dumps({"kept": alive}), flush=True)
    sys.stdin.read()
""")
HELLO_CLIENT = textwrap.dedent("""
    import sys, grpc
    from netagent_api import helper_pb2
    with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
        hello = channel.unary_unary(
            "/netagent.helper.v1.Netlinkd/Hello",
            request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString)
        try:
            hello(helper_pb2.HelloRequest(), timeout=5)
        except grpc.RpcError as error:
            print(error.code().name)
        else:
            print("OK")
""")
FLOOD_UIDS = range(61001, 61013)  # subordinate uids of one member, say: 12 uids of their own
CONTROLLER_UID = 61100
HELPER_DESCRIPTORS = 2048


def _hello_as(uid: int, socket_path: str) -> str:
    argv = unprivileged([sys.executable, "-c", HELLO_CLIENT, socket_path], uid=uid, gid=TEST_GID)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def test_many_uids_together_cannot_crowd_out_the_controllers_uid() -> None:
    """12 uids of 64 connections each would take more descriptors than the helper has; the
    uids other than root and the controller's share half of them, so the controller's uid
    (and root's) still connect, and a signed batch applies within 1 s."""
    shared = HELPER_DESCRIPTORS // 2 // front.FDS_PER_CONNECTION
    assert len(FLOOD_UIDS) * front.MAX_CONNECTIONS_PER_UID * front.FDS_PER_CONNECTION \
        > HELPER_DESCRIPTORS
    with own_sandbox(socket_group=TEST_GID, pre_script=f"ulimit -n {HELPER_DESCRIPTORS}",
                     extra_args=("--controller-user", str(CONTROLLER_UID))) as (helper, signer):
        flooders = []
        try:
            for uid in FLOOD_UIDS:
                argv = [sys.executable, "-c", UID_FLOOD_CLIENT, helper.socket,
                        str(front.MAX_CONNECTIONS_PER_UID), HTTP2_PREFACE.hex()]
                flooders.append(subprocess.Popen(
                    unprivileged(argv, uid=uid, gid=TEST_GID),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            kept = [json.loads(client.stdout.readline())["kept"]
                    for client in flooders if client.stdout is not None]
            assert len(kept) == len(FLOOD_UIDS)
            assert 0 < sum(kept) <= shared, kept
            assert _hello_as(FLOOD_UIDS.stop, helper.socket) == "UNAVAILABLE"  # shared, full
            assert _hello_as(CONTROLLER_UID, helper.socket) == "OK"
            started = time.monotonic()
            helper.hello()  # root's
            reply = helper.submit(signer.sign(signer.batch([create(spec("su-a"), spec("su-b"))])))
            elapsed = time.monotonic() - started
            assert reply.ok, reply.error
            assert elapsed < 1.0, f"a signed batch took {elapsed:.2f} s behind the flood"
        finally:
            for client in flooders:
                assert client.stdin is not None
                client.stdin.close()
                client.wait(timeout=30)
