"""The helper's socket front: a gRPC asyncio server that never gives a thread to a client.

A call costs a coroutine, not a worker thread, until its body has arrived and its signature
verifies. What a client without the key can hold is bounded on every axis:
- a request body must arrive within BODY_TIMEOUT_S of the call's headers, or the call is
  refused (audited like any refusal);
- connections are accepted here, counted per peer uid (SO_PEERCRED) and relayed to gRPC's
  root-only socket: at most MAX_CONNECTIONS_PER_UID each. Together, the uids other than root
  and the controller's hold at most half of the helper's descriptors, so neither many uids
  (one member's subordinate uids) nor one can keep the controller from connecting; at most
  MAX_STREAMS_PER_CONNECTION calls per connection; a connection with no call for
  IDLE_TIMEOUT_MS, or silent to keepalive pings, is closed;
- a request whose signature does not verify goes to the refusal writer, never into the
  batch queue: only signed batches (at most MAX_QUEUED_BATCHES) wait for the netlink
  thread, and they share the audit log's lock with at most one refusal being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from netagent_api import helper_pb2
from netagent_log import sd_notify
from netlinkd.allocator import release_free_memory
from netlinkd.errors import HelperError, Malformed
from netlinkd.link_monitor import StreamQueue

if TYPE_CHECKING:
    from netlinkd.server import Helper, Service

log = logging.getLogger(__name__)
SERVICE = "netagent.helper.v1.Netlinkd"
BODY_TIMEOUT_S = 5.0
MAX_QUEUED_BATCHES = 16  # signed batches running or waiting; more get RESOURCE_EXHAUSTED
MAX_PENDING_REFUSALS = 64  # refusals waiting for their audit record; more calls wait
MAX_STREAMS_PER_CONNECTION = 8
MAX_CONNECTIONS_PER_UID = 64
FDS_PER_CONNECTION = 3  # in the helper: the client's, the relay's and gRPC's
IDLE_TIMEOUT_MS = 30_000
HANDSHAKE_TIMEOUT_MS = 5_000
KEEPALIVE_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 10_000
MAX_METADATA_BYTES = 16 * 1024
AUDIT_HEAD_LOG_INTERVAL_S = 60.0
TRIM_AFTER_IDLE_S = 1.0
T = TypeVar("T")


def server_options(max_message: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        ("grpc.max_connection_idle_ms", IDLE_TIMEOUT_MS),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ]


class _Relay(asyncio.Protocol):
    """One end of a relayed connection: what it receives is written to the other end."""

    def __init__(self, other: Any = None) -> None:
        self.other = other
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.other.transport.write(data)

    def pause_writing(self) -> None:  # a full write buffer stops reading on the other end
        self.other.transport.pause_reading()

    def resume_writing(self) -> None:
        self.other.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None:
            self.other.transport.close()


class _Client(_Relay):
    """A client's connection: admitted if its uid holds fewer than the cap, then relayed."""

    def __init__(self, front: Front) -> None:
        super().__init__()
        self._front = front
        self._uid: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        uid = struct.unpack("3i", peer)[1]
        if not self._front.admit(uid):
            self.transport.abort()
            return
        self._uid = uid
        self._early = b""
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self.other is None:  # still connecting: keep it, and read no more till then
            self._early += data
            self.transport.pause_reading()
        else:
            super().data_received(data)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, inner = await loop.create_unix_connection(lambda: _Relay(self), self._front.inner)
        except OSError:
            self.transport.abort()
            return
        if self.transport.is_closing():
            inner.transport.close()
            return
        self.other = inner
        inner.transport.write(self._early)
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._uid is not None:
            self._front.release(self._uid)


class Front:
    """Async handlers over the synchronous `Service`: batches on the netlink thread, one
    refusal thread."""

    def __init__(
        self, service: Service, inner: str = "", reserved_uids: frozenset[int] = frozenset({0})
    ) -> None:
        self._service = service
        self.inner = inner  # gRPC's own socket, root's alone
        self.connections: Counter[int] = Counter()  # per peer uid
        self._reserved_uids = reserved_uids
        self._shared = 0  # connections of the uids not reserved
        descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_shared = descriptors // 2 // FDS_PER_CONNECTION
        self._refusals = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refusal")
        self._queued = 0
        self._refusal_slots = asyncio.Semaphore(MAX_PENDING_REFUSALS)
        self._trim: asyncio.TimerHandle | None = None

    def admit(self, uid: int) -> bool:
        shared = uid not in self._reserved_uids
        if self.connections[uid] >= MAX_CONNECTIONS_PER_UID or (
            shared and self._shared >= self.max_shared
        ):
            return False
        self.connections[uid] += 1
        self._shared += shared
        return True

    def release(self, uid: int) -> None:
        self.connections[uid] -= 1
        if not self.connections[uid]:
            del self.connections[uid]
        self._shared -= uid not in self._reserved_uids

    @property
    def _batches(self) -> ThreadPoolExecutor:
        return self._service.executor.pool  # the netlink thread runs the whole batch

    async def _on(self, pool: ThreadPoolExecutor, work: Callable[[], T]) -> T:
        return await asyncio.wrap_future(pool.submit(work))

    async def hello(
        self, request: helper_pb2.HelloRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> helper_pb2.HelloReply:
        return self._service.hello(request, context)

    async def watch_links(
        self, request: helper_pb2.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[helper_pb2.LinkEvent]:
        """Read-only: owned-link changes as they happen; the first message names the
        helper instance and says since when each watched namespace was quiet. Costs a
        coroutine and a bounded queue, no thread. Only a request signed by a trusted key
        takes one of the watcher slots; a refusal is not audited (nothing changed, and a
        client without the key must not fill the audit log)."""
        try:
            self._service.verifier.check_watch(request)
        except HelperError as error:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
        monitor = self._service.monitor
        stream = StreamQueue(asyncio.get_running_loop(), self._service.instance)
        if monitor is None or not monitor.subscribe(stream.deliver):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many link watchers")
            return
        try:
            first = await asyncio.get_running_loop().run_in_executor(None, monitor.quiet)
            first.helper_instance = self._service.instance
            yield first
            while (event := await stream.events.get()) is not None:
                yield event
        finally:
            monitor.unsubscribe(stream.deliver)

    async def submit(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> helper_pb2.BatchReply:
        try:  # in this task: wait_for would run the read in a task of its own
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await anext(requests)
        except (TimeoutError, StopAsyncIteration):
            error = Malformed(f"no request body within {BODY_TIMEOUT_S:.0f} s of the call")
            return await self._refuse(self._service.screen_facts(b""), error)
        verified = self._service.screen(raw)
        if isinstance(verified, tuple):
            return await self._refuse(*verified)
        if self._queued >= MAX_QUEUED_BATCHES:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_QUEUED_BATCHES} signed batches are already waiting; retry",
            )
        self._queued += 1
        try:
            return await self._on(self._batches, lambda: self._service.submit(verified, None))
        finally:
            self._queued -= 1
            if self._queued == 0:
                self._trim_later()

    def _trim_later(self) -> None:
        """Free memory goes back to the kernel once no batch came for TRIM_AFTER_IDLE_S
        (trimming between the batches of a burst would only fault the pages in again)."""
        if self._trim is not None:
            self._trim.cancel()
        self._trim = asyncio.get_running_loop().call_later(TRIM_AFTER_IDLE_S, self._trim_now)

    def _trim_now(self) -> None:
        if self._queued == 0:
            self._batches.submit(self._service.verifier.replay.flush)  # off any batch's path
            self._batches.submit(release_free_memory)

    async def _refuse(
        self, facts: dict[str, object], error: HelperError
    ) -> helper_pb2.BatchReply:
        async with self._refusal_slots:
            return await self._on(self._refusals, lambda: self._service.refuse(facts, error))

    def close(self) -> None:
        if self._trim is not None:
            self._trim.cancel()
        self._refusals.shutdown(wait=True)


def build_server(front: Front, max_message: int) -> grpc.aio.Server:
    handlers = {
        "Hello": grpc.unary_unary_rpc_method_handler(
            front.hello,
            request_deserializer=helper_pb2.HelloRequest.FromString,
            response_serializer=helper_pb2.HelloReply.SerializeToString,
        ),
        # stream_unary on the server: the handler starts at the headers, so the body can be
        # awaited with a timeout. On the wire it is the client's unary call.
        "Submit": grpc.stream_unary_rpc_method_handler(
            front.submit,
            request_deserializer=None,  # the raw bytes: the signature covers them
            response_serializer=helper_pb2.BatchReply.SerializeToString,
        ),
        "WatchLinks": grpc.unary_stream_rpc_method_handler(
            front.watch_links,
            request_deserializer=helper_pb2.WatchRequest.FromString,
            response_serializer=helper_pb2.LinkEvent.SerializeToString,
        ),
    }
    server = grpc.aio.server(options=server_options(max_message))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server


async def _log_audit_head(helper: Helper) -> None:
    """Copy the audit head to the journal at a bounded interval, when it moved."""
    while True:
        await asyncio.sleep(AUDIT_HEAD_LOG_INTERVAL_S)
        helper.service.audit.log_head()


async def serve(helper: Helper, grace_s: float) -> None:
    """Bind, serve until SIGTERM/SIGINT, reload trust keys on SIGHUP, then stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, helper.reload_trust)
    head_copies = loop.create_task(_log_audit_head(helper))
    front = Front(helper.service, helper.inner_socket, helper.reserved_uids)
    server = build_server(front, helper.max_message)
    public = helper.bind(server)
    await server.start()
    relay = await loop.create_unix_server(lambda: _Client(front), sock=public)
    sd_notify.ready()  # the socket accepts connections (Type=notify)
    try:
        await stop.wait()
    finally:
        head_copies.cancel()
        relay.close()
        await loop.run_in_executor(None, helper.stop_watching)
        await server.stop(grace_s)
        await loop.run_in_executor(None, helper.close)
        with contextlib.suppress(Exception):
            front.close()
