"""Test library for netlinkd: a real helper in a scratch namespace, and a test signer.

The helper's "host" namespace is a fresh one made by `unshare`, and /run/netns inside it
is a private tmpfs, so every namespace the helper creates vanishes with the process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from netagent_api import helper_pb2

VENV_BIN = Path(sys.executable).parent
NETLINKD = str(VENV_BIN / "netlinkd")
EMPTY_CONFIG = str(Path(__file__).resolve().parents[1] / "fixtures" / "empty-config.toml")
SUBMIT = "/netagent.helper.v1.Netlinkd/Submit"
HELLO = "/netagent.helper.v1.Netlinkd/Hello"
START_DEADLINE_S = 30.0

if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
    pytest.skip("netlinkd tests need root, unshare and nsenter", allow_module_level=True)


@dataclass
class KeyPair:
    private: Ed25519PrivateKey
    raw_public: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw_public).hexdigest()[:16]

    def trust_line(self, comment: str = "test") -> str:
        return f"ed25519 {base64.b64encode(self.raw_public).decode()} {comment}\n"


def new_key() -> KeyPair:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return KeyPair(private, raw)


@dataclass
class Signer:
    """Signs batches like the controller: one random epoch, increasing sequence."""

    key: KeyPair
    owner: str = "t"
    epoch: bytes = field(default_factory=lambda: os.urandom(16))
    seq: int = 0

    def batch(
        self,
        ops: list[helper_pb2.Operation],
        observe: helper_pb2.ObserveRequest | None = None,
        *,
        owner: str | None = None,
        time_ms: int | None = None,
    ) -> bytes:
        self.seq += 1
        batch = helper_pb2.Batch(
            epoch=self.epoch,
            sequence=self.seq,
            unix_time_ms=int(time.time() * 1000) if time_ms is None else time_ms,
            owner=self.owner if owner is None else owner,
            operations=ops,
        )
        if observe is not None:
            batch.observe.CopyFrom(observe)
        return batch.SerializeToString()

    def sign(self, data: bytes, key_id: str | None = None) -> helper_pb2.SignedBatch:
        return helper_pb2.SignedBatch(
            batch=data,
            signature=self.key.private.sign(data),
            key_id=self.key.key_id if key_id is None else key_id,
        )


@dataclass
class Sandbox:
    """Paths of one helper environment; `start()` launches the helper inside it."""

    root: Path
    key: KeyPair
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    pre_script: str = "true"
    audit_path: str | None = None
    program: str = NETLINKD

    @property
    def socket(self) -> str:
        return str(self.root / "run" / "netlinkd.sock")

    @property
    def trust(self) -> str:
        return str(self.root / "keys" / "trust.keys")

    @property
    def audit(self) -> str:
        return self.audit_path or str(self.root / "audit.log")

    @property
    def state(self) -> str:
        return str(self.root / "state")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        serve = [
            self.program, "serve", "--socket", self.socket, "--trust-key", self.trust,
            "--audit-log", self.audit, "--state-dir", self.state, *self.extra_args,
        ]
        if "--config" not in self.extra_args:
            serve += ["--config", EMPTY_CONFIG]
        script = (
            "mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns && "
            + self.pre_script
            + " && exec "
            + " ".join(serve)
        )
        log = open(self.root / "helper.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "slave", "sh", "-c", script],
            stdout=log, stderr=log,
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"helper exited early:\n{self.log_text()}")
            if os.path.exists(self.socket):
                try:
                    self.hello()
                    return
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"helper not ready in {START_DEADLINE_S} s:\n{self.log_text()}")

    def log_text(self) -> str:
        path = self.root / "helper.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.socket}")

    def hello(self) -> helper_pb2.HelloReply:
        with self.channel() as channel:
            call = channel.unary_unary(
                HELLO,
                request_serializer=helper_pb2.HelloRequest.SerializeToString,
                response_deserializer=helper_pb2.HelloReply.FromString,
            )
            reply: helper_pb2.HelloReply = call(helper_pb2.HelloRequest(), timeout=5)
            return reply

    def submit_raw(self, raw: bytes) -> helper_pb2.BatchReply:
        with self.channel() as channel:
            call = channel.unary_unary(
                SUBMIT,
                request_serializer=lambda b: b,
                response_deserializer=helper_pb2.BatchReply.FromString,
            )
            reply: helper_pb2.BatchReply = call(raw, timeout=60)
            return reply

    def submit(self, signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply:
        return self.submit_raw(signed.SerializeToString())

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the helper's mount and network namespaces."""
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-n", *argv],
            capture_output=True, text=True, check=check, timeout=30,
        )

    def links(self, netns: str | None = None) -> list[dict[str, Any]]:
        ns = ["-n", netns] if netns else []
        out = self.run("ip", *ns, "-j", "-d", "addr", "show").stdout
        parsed: list[dict[str, Any]] = json.loads(out or "[]")
        return parsed

    def link(self, name: str, netns: str | None = None) -> dict[str, Any] | None:
        return next((x for x in self.links(netns) if x["ifname"] == name), None)

    def netns_list(self) -> list[str]:
        out = self.run("ip", "netns", "list").stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def audit_records(self) -> list[dict[str, Any]]:
        with open(self.audit, encoding="utf-8") as handle:
            # a line without its newline is a record still being written
            return [json.loads(line) for line in handle if line.endswith("\n") and line.strip()]


@contextmanager
def own_sandbox(
    policy: str | None = None, socket_group: int | None = None,
    extra_args: tuple[str, ...] = (), pre_script: str = "true",
) -> Iterator[tuple[Sandbox, Signer]]:
    """A started helper of its own, with `policy` as its policy file and the socket given to
    `socket_group` (its directory then reachable by other uids); always removed after."""
    pair = new_key()
    sandbox = make_sandbox(pair)
    sandbox.pre_script = pre_script
    if policy is not None:
        path = sandbox.root / "policy.toml"
        path.write_text(policy)
        sandbox.extra_args = ["--policy", str(path)]
    if socket_group is not None:
        sandbox.root.chmod(0o711)
        sandbox.extra_args += ["--socket-group", str(socket_group)]
    sandbox.extra_args += extra_args
    try:
        sandbox.start()
        yield sandbox, Signer(pair)
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


def make_sandbox(key: KeyPair) -> Sandbox:
    root = Path(tempfile.mkdtemp(prefix="nlkd-"))
    (root / "keys").mkdir(mode=0o700)
    trust = root / "keys" / "trust.keys"
    trust.write_text("# test trust file\n" + key.trust_line())
    trust.chmod(0o600)
    return Sandbox(root, key)


# --- operation builders ------------------------------------------------------------------

Ref = helper_pb2.NamespaceRef


def named(name: str, expect_inode: int = 0) -> helper_pb2.NamespaceRef:
    return helper_pb2.NamespaceRef(name=name, expect_inode=expect_inode)


def spec(name: str, netns: Ref | None = None, **kw: Any) -> helper_pb2.LinkSpec:
    return helper_pb2.LinkSpec(name=name, netns=netns or helper_pb2.NamespaceRef(), **kw)


def create(a: helper_pb2.LinkSpec, b: helper_pb2.LinkSpec) -> helper_pb2.Operation:
    return helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair(a=a, b=b))


def delete(name: str, netns: Ref | None = None) -> helper_pb2.Operation:
    return helper_pb2.Operation(
        delete_link=helper_pb2.DeleteLink(name=name, netns=netns or helper_pb2.NamespaceRef())
    )


def set_link(name: str, netns: Ref | None = None, **kw: Any) -> helper_pb2.Operation:
    return helper_pb2.Operation(
        set_link=helper_pb2.SetLink(name=name, netns=netns or helper_pb2.NamespaceRef(), **kw)
    )


def add_address(name: str, address: str, netns: Ref | None = None) -> helper_pb2.Operation:
    return helper_pb2.Operation(
        add_address=helper_pb2.AddAddress(
            name=name, netns=netns or helper_pb2.NamespaceRef(), address=address
        )
    )


def del_address(name: str, address: str, netns: Ref | None = None) -> helper_pb2.Operation:
    return helper_pb2.Operation(
        del_address=helper_pb2.DelAddress(
            name=name, netns=netns or helper_pb2.NamespaceRef(), address=address
        )
    )
