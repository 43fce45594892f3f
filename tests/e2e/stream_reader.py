"""A `WatchLinks` stream read on a thread, for tests: every event kept, in order."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc

from netagent_api import helper_pb2

WATCH = "/netagent.helper.v1.Netlinkd/WatchLinks"
HELLO = "/netagent.helper.v1.Netlinkd/Hello"


class StreamReader:
    """`request`: signed (`Signer.watch_request`), or not, to see it refused. Each reader
    has a connection of its own (the helper allows 8 streams per connection)."""

    def __init__(self, socket: Path, request: helper_pb2.WatchRequest) -> None:
        self._channel = grpc.insecure_channel(
            f"unix://{socket}", options=[("grpc.use_local_subchannel_pool", 1)])
        watch = self._channel.unary_stream(
            WATCH, request_serializer=helper_pb2.WatchRequest.SerializeToString,
            response_deserializer=helper_pb2.LinkEvent.FromString)
        self._call: Any = watch(request)
        self.events: list[helper_pb2.LinkEvent] = []
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._call:
                self.events.append(event)
        except grpc.RpcError as err:
            self.error = err

    def hello(self) -> bytes:
        hello = self._channel.unary_unary(
            HELLO, request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString)
        reply: helper_pb2.HelloReply = hello(helper_pb2.HelloRequest(), timeout=5)
        return reply.helper_instance

    def changes(self) -> list[helper_pb2.LinkChange]:
        return [change for event in list(self.events) for change in event.changes]

    def names(self) -> set[str]:
        return {change.name for change in self.changes()}

    def gone(self) -> list[helper_pb2.NamespaceRef]:
        return [ref for event in list(self.events) for ref in event.namespace_gone]

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=5)
        self._channel.close()
