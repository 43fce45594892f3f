"""StatusPublisher logs an etcd outage once when publishing starts failing and once when
it works again, not once per attempt (issue 12 §3b: 22 warnings in a 30 s outage)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from controller.ops import State, Status
from controller.status import StatusPublisher


class FlakyEtcd:
    """An etcd3-like client factory that fails while `down`."""

    def __init__(self) -> None:
        self.down = False

    def connect(self) -> Any:
        if self.down:
            raise ConnectionError("etcd connection failed")
        return self

    def get_prefix(self, prefix: str) -> list[Any]:
        return []

    @property
    def transactions(self) -> Any:
        return self

    def put(self, key: str, value: bytes) -> tuple[str, str, bytes]:
        return ("put", key, value)

    def transaction(self, **kwargs: Any) -> None:
        if self.down:
            raise ConnectionError("etcd connection failed")

    def close(self) -> None:
        pass


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    etcd = FlakyEtcd()
    publisher = StatusPublisher(etcd.connect, "vpp1")
    caplog.set_level(logging.WARNING, logger="controller.status")
    assert publisher.publish({"a": Status(State.CONFIGURED, "")})
    etcd.down = True
    for attempt in range(20):
        assert not publisher.publish({"a": Status(State.PENDING, f"try {attempt}")})
    etcd.down = False
    assert publisher.publish({"a": Status(State.CONFIGURED, "")})
    assert publisher.publish({"a": Status(State.PENDING, "again")})
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "failed: etcd connection failed" in messages[0]
    assert messages[1] == ("statuses under /vnf-agent/vpp1/linux/status/v1/interface/ "
                           "published again after 20 failed attempts")
