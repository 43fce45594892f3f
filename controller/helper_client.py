"""Typed gRPC client of the netlinkd helper over its Unix socket (no generated stubs)."""

from __future__ import annotations

import os

import grpc

from netagent_api import helper_pb2

_SERVICE = "/netagent.helper.v1.Netlinkd"


class HelperUnavailable(Exception):
    """The helper socket did not answer; retry later."""


class HelperClient:
    """`hello()` and `submit()` against `unix://<socket_path>`."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = os.path.abspath(socket_path)  # gRPC rejects unix://relative
        self._timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
        self._hello = self._channel.unary_unary(
            f"{_SERVICE}/Hello",
            request_serializer=helper_pb2.HelloRequest.SerializeToString,
            response_deserializer=helper_pb2.HelloReply.FromString,
        )
        self._submit = self._channel.unary_unary(
            f"{_SERVICE}/Submit",
            request_serializer=helper_pb2.SignedBatch.SerializeToString,
            response_deserializer=helper_pb2.BatchReply.FromString,
        )

    def _failed(self, call: str, err: grpc.RpcError) -> HelperUnavailable:
        code = err.code() if isinstance(err, grpc.Call) else None
        details = err.details() if isinstance(err, grpc.Call) else str(err)
        return HelperUnavailable(
            f"helper at {self.socket_path} did not answer {call}: {code}: {details}; "
            "check that netlinkd is running and this user is in the socket's group"
        )

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

    def close(self) -> None:
        self._channel.close()
