"""Fixtures of the security suite: a signer, its trust file, a real audit log built from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from seclib import BatchSigner, head_path, write_batches

from netlinkd.audit import AuditLog

BATCHES = 24


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner()


@pytest.fixture
def trust_file(tmp_path: Path, signer: BatchSigner) -> Path:
    return signer.write_trust(tmp_path / "trust.keys")


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def built_log(audit_path: Path, signer: BatchSigner) -> Iterator[Path]:
    """A closed log of BATCHES batches (intents, results, refusals), all signed for real."""
    log = AuditLog(str(audit_path), head_path=str(head_path(audit_path)))
    try:
        write_batches(log, signer, BATCHES)
    finally:
        log.close()
    yield audit_path
