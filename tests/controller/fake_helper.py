"""A fake netlinkd gRPC server on a Unix socket: verifies signatures, keeps links in memory.

Only for testing the controller process; the real helper is tested on its own.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controller import observed, wire
from controller.ops import ObservedLink
from netagent_api import helper_pb2


class FakeHelperServer:
    def __init__(self, socket_path: str, public: Ed25519PublicKey) -> None:
        self.socket_path = socket_path
        self._public = public
        self.links: tuple[ObservedLink, ...] = ()
        self.batches: list[helper_pb2.Batch] = []
        self.lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler("netagent.helper.v1.Netlinkd", {
            "Hello": grpc.unary_unary_rpc_method_handler(
                self._hello, request_deserializer=helper_pb2.HelloRequest.FromString,
                response_serializer=helper_pb2.HelloReply.SerializeToString),
            "Submit": grpc.unary_unary_rpc_method_handler(
                self._submit, request_deserializer=helper_pb2.SignedBatch.FromString,
                response_serializer=helper_pb2.BatchReply.SerializeToString),
        })
        self._server.add_generic_rpc_handlers((handler,))
        self._server.add_insecure_port(f"unix://{socket_path}")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()

    def _hello(self, request: helper_pb2.HelloRequest, context: Any) -> helper_pb2.HelloReply:
        return helper_pb2.HelloReply(helper_instance=b"fake", version="test")

    def _submit(self, signed: helper_pb2.SignedBatch, context: Any) -> helper_pb2.BatchReply:
        self._public.verify(signed.signature, signed.batch)
        batch = helper_pb2.Batch.FromString(signed.batch)
        with self.lock:
            self.batches.append(batch)
            ops = [wire.op_from_proto(op) for op in batch.operations]
            self.links = observed.apply(self.links, ops)
            reply = helper_pb2.BatchReply(ok=True, failed_index=-1, helper_instance=b"fake")
            if batch.HasField("observe"):
                reply.observed.extend(wire.observed_to_proto(link) for link in self.links)
            return reply

    def link_names(self) -> set[str]:
        with self.lock:
            return {link.name for link in self.links}
