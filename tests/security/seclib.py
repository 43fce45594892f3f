"""Helpers for the security tests: capability reading, real signed batches, real audit logs.

`read_caps(pid)` is meant for reuse by other suites (e.g. the controller's CapEff=0 check):
put `tests/security` on `sys.path` and `from seclib import read_caps`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from netagent_api import helper_pb2
from netagent_audit import records
from netlinkd.audit import AuditLog

PYTHON = sys.executable
NETLINKD = str(Path(sys.executable).parent / "netlinkd")
CAP_NAMES = {"net_admin": 12, "sys_admin": 21, "sys_ptrace": 19}


def read_caps(pid: int) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb masks and NoNewPrivs of `pid`'s main thread."""
    return _read_status(Path(f"/proc/{pid}/status"))


def read_caps_all_threads(pid: int) -> dict[int, dict[str, int]]:
    """The same for every thread of `pid` (capabilities are per thread)."""
    tasks = Path(f"/proc/{pid}/task")
    return {int(task.name): _read_status(task / "status") for task in tasks.iterdir()}


def _read_status(path: Path) -> dict[str, int]:
    caps: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            caps[key] = int(value.strip(), 16)
        elif key == "NoNewPrivs":
            caps[key] = int(value.strip())
    return caps


def mask_of(*names: str) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAP_NAMES[name]
    return mask


@dataclass
class BatchSigner:
    """A controller stand-in: an Ed25519 key, one epoch, rising sequence numbers."""

    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    epoch: bytes = field(default_factory=lambda: os.urandom(16))
    sequence: int = 0
    owner: str = "sec-test"

    @property
    def raw_public(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw_public).hexdigest()[:16]

    def trust_line(self) -> str:
        return f"ed25519 {base64.b64encode(self.raw_public).decode()} sec-test\n"

    def write_trust(self, path: Path) -> Path:
        path.write_text("# security tests\n" + self.trust_line())
        path.chmod(0o644)
        return path

    def batch(self, *operations: helper_pb2.Operation) -> helper_pb2.Batch:
        self.sequence += 1
        return helper_pb2.Batch(
            epoch=self.epoch, sequence=self.sequence, unix_time_ms=int(time.time() * 1000),
            owner=self.owner, operations=list(operations),
        )

    def sign(self, batch: helper_pb2.Batch) -> helper_pb2.SignedBatch:
        data = batch.SerializeToString()
        return helper_pb2.SignedBatch(
            batch=data, signature=self.private.sign(data), key_id=self.key_id
        )


def delete_op(name: str) -> helper_pb2.Operation:
    return helper_pb2.Operation(delete_link=helper_pb2.DeleteLink(name=name))


def intent_record(signed: helper_pb2.SignedBatch) -> dict[str, object]:
    """The helper's own intent record (netagent_audit.records), as it writes it."""
    batch = helper_pb2.Batch.FromString(signed.batch)
    return records.intent_record(signed.key_id, signed.batch, signed.signature, batch)


def result_record(signed: helper_pb2.SignedBatch, verdict: str) -> dict[str, object]:
    batch = helper_pb2.Batch.FromString(signed.batch)
    return records.result_record(batch, verdict, "", "", -1, [])


def refused_record(reason: str) -> dict[str, object]:
    facts: dict[str, object] = {
        "key_id": "0" * 16, "request_bytes": 100, "batch_sha256": "0" * 64, "epoch": "", "seq": 0,
    }
    return records.refused_record("BAD_SIGNATURE", reason, facts)


def head_path(audit_path: Path) -> Path:
    """The helper's head file for a test log: in a state dir next to it."""
    state = audit_path.parent / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return state / records.HEAD_FILE


def write_batches(log: AuditLog, signer: BatchSigner, count: int) -> None:
    """`count` batches: intent + result each, with a refusal after every fifth."""
    verdicts = ("applied", "failed", "rolled_back")
    for number in range(count):
        name = f"sec{number}"
        signed = signer.sign(signer.batch(delete_op(name)))
        log.append(intent_record(signed))
        log.append(result_record(signed, verdicts[number % len(verdicts)]))
        if number % 5 == 4:
            log.append(refused_record(f"forged batch {number}"))


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NETLINKD, "audit", *args], capture_output=True, text=True, check=False, timeout=60
    )
