"""Typed gRPC client of the netlinkd helper over its Unix socket (no generated stubs)."""

from __future__ import annotations

import logging
import os
from typing import Any

import grpc

from netagent_api import helper_pb2

_SERVICE = "/netagent.helper.v1.Netlinkd"
log = logging.getLogger(__name__)


# What gRPC's connect error says -> (what is wrong, what to do). First match wins.
_CAUSES = (
    ("No such file or directory", "does not exist",
     "start netlinkd (systemctl start netagent-netlinkd) or fix --socket"),
    ("Connection refused", "refuses connections (a stale socket)",
     "start netlinkd (systemctl start netagent-netlinkd)"),
    ("Permission denied", "is not accessible to this user",
     "add the controller's user to the socket's group (--socket-group of netlinkd)"),
)


def unreachable_reason(socket_path: str, code: grpc.StatusCode | None, details: str) -> str:
    """One line naming what is wrong with the helper socket and what to do, never gRPC's
    multi-part error text (which goes to the debug log)."""
    for needle, wrong, fix in _CAUSES:
        if needle in details:
            return f"socket {socket_path} {wrong}; {fix}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (f"no answer on {socket_path} in time; "
                "check netlinkd's log (journalctl -u netagent-netlinkd)")
    what = code.name if code is not None else "an unknown error"
    return (f"socket {socket_path}: {what}; check that netlinkd runs and its log "
            "(journalctl -u netagent-netlinkd)")


class HelperUnavailable(Exception):
    """The helper socket did not answer; retry later."""


class HelperClient:
    """`hello()` and `submit()` against `unix://<socket_path>`."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = os.path.abspath(socket_path)  # gRPC rejects unix://relative
        self._timeout = timeout
        # A restarted helper is back within a second or so; gRPC's default reconnect
        # backoff (1 s growing to 120 s) would keep the controller away far longer.
        self._channel = grpc.insecure_channel(f"unix://{self.socket_path}", options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self._hello = self._channel.unary_unary(
            f"{_SERVICE}/Hello",
            request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString,
        )
        self._watch = self._channel.unary_stream(
            f"{_SERVICE}/WatchLinks",
            request_serializer=helper_pb2.WatchRequest.SerializeToString,
            response_deserializer=helper_pb2.LinkEvent.FromString,
        )
        self._submit = self._channel.unary_unary(
            f"{_SERVICE}/Submit",
            request_serializer=helper_pb2.SignedBatch.SerializeToString,
            response_deserializer=helper_pb2.BatchReply.FromString,
        )

    def _failed(self, call: str, err: grpc.RpcError) -> HelperUnavailable:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        log.debug("helper %s failed: %s: %s", call, code, details)
        return HelperUnavailable(unreachable_reason(self.socket_path, code, details or ""))

    def hello(self) -> bytes:
        """The helper's instance id (changes at every helper start)."""
        try:
            reply: helper_pb2.HelloReply = self._hello(
                helper_pb2.HelloRequest(), timeout=min(self._timeout, 5.0)
            )
        except grpc.RpcError as err:
            raise self._failed("Hello", err) from None
        return reply.helper_instance

    def submit(self, batch: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        try:
            reply: helper_pb2.BatchReply = self._submit(batch, timeout=self._timeout)
        except grpc.RpcError as err:
            raise self._failed("Submit", err) from None
        return reply

    def watch_links(self, request: helper_pb2.WatchRequest) -> Any:
        """The `WatchLinks` stream (`request` from `Signer.watch_request`): iterate it for
        `LinkEvent`s, `cancel()` it to stop. Iterating raises `grpc.RpcError` when the
        helper goes away or refuses the request."""
        return self._watch(request)

    def close(self) -> None:
        self._channel.close()
