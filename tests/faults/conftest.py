"""Fixtures of the fault suite (tests/faults/); the checks live in faultlib.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.faultlib import Desired, RestartableEtcd
from tests.harness import EtcdKV, HelperSandbox


@pytest.fixture
def private_etcd() -> Iterator[RestartableEtcd]:
    """An etcd of the test's own, which it may stop, restart and compact."""
    server = RestartableEtcd()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def desired(helper: HelperSandbox, kv: EtcdKV) -> Desired:
    """The test's configs, put through `kv`, checked against the sandbox's kernel."""
    return Desired(helper, kv)
