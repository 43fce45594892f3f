"""Fixtures of the fleet tests: one TLS + auth etcd cluster per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.cluster import TlsCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[TlsCluster]:
    started = TlsCluster()
    try:
        started.start()
        yield started
    finally:
        started.stop()
