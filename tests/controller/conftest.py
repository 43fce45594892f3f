"""Fixtures: a real etcd per test and a unique agent label."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest
from etcd_server import Etcd


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    server = Etcd()
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def label() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"
