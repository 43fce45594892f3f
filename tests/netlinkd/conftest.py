"""Fixtures: one real helper per test module (see nlkd_lib.Sandbox)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from nlkd_lib import KeyPair, Sandbox, Signer, make_sandbox, new_key


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return new_key()


@pytest.fixture(scope="module")
def helper(key: KeyPair) -> Iterator[Sandbox]:
    sandbox = make_sandbox(key)
    # PID references are off by default; this shared helper turns them on for the tests
    # of PID references (tests/security/test_least_privilege.py covers the default).
    policy = sandbox.root / "policy.toml"
    policy.write_text("allow_pid_refs = true\n")
    sandbox.extra_args = ["--policy", str(policy)]
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()
        shutil.rmtree(sandbox.root, ignore_errors=True)


@pytest.fixture
def signer(key: KeyPair) -> Signer:
    return Signer(key)
