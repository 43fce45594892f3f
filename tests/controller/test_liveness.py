"""The agent key under a lease, against a real etcd: present while kept, gone after."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from etcd_server import Etcd, wait_for

from controller import liveness
from controller.etcd_watch import plain_factory
from controller.health import Connection, Health
from controller.liveness import LivenessKeeper


def _value(etcd: Etcd, label: str) -> dict[str, object] | None:
    raw, _meta = etcd.client().get(liveness.agent_key(label))
    return None if raw is None else dict(json.loads(raw))


def _healthy() -> Health:
    health = Health()
    health.set("etcd", True)
    health.set("helper", True)
    health.set("docker", None, "not watched")
    return health


@pytest.fixture
def kept(etcd: Etcd, label: str) -> Iterator[tuple[Health, LivenessKeeper]]:
    health = _healthy()
    keeper = LivenessKeeper(plain_factory(etcd.endpoint), label, health, ttl=3,
                            build_version="9.9")
    keeper.start()
    try:
        yield health, keeper
    finally:
        keeper.stop()


def test_the_key_says_ok_then_error_then_vanishes_at_stop(
    etcd: Etcd, label: str, kept: tuple[Health, LivenessKeeper]
) -> None:
    health, keeper = kept
    wait_for(lambda: _value(etcd, label) is not None, "the agent key")
    value = _value(etcd, label)
    assert value is not None
    assert value["state"] == "OK" and value["build_version"] == "9.9"
    assert value["connections"] == {"docker": None, "etcd": True, "helper": True}
    assert value["etcd_endpoint"] == f"http://{etcd.endpoint}"
    _raw, meta = etcd.client().get(liveness.agent_key(label))
    assert 0 < etcd.client().get_lease_info(meta.lease_id).TTL <= 3
    health.set("helper", False, "helper at /x did not answer Hello")
    wait_for(lambda: (_value(etcd, label) or {}).get("state") == "ERROR", "state ERROR")
    assert (_value(etcd, label) or {}).get("errors") == {
        "helper": "helper at /x did not answer Hello"}
    keeper.stop()
    assert _value(etcd, label) is None, "revoked at stop, not left to expire"
    report = liveness.read(etcd.client(), label)
    assert not report.alive and report.value["state"] == "STOPPING"
    assert f"no live controller serves {label} since " in report.describe(label)
    assert "(stopped)" in report.describe(label)


def test_a_dead_keepers_key_expires_and_status_says_since_when(etcd: Etcd, label: str) -> None:
    keeper = LivenessKeeper(plain_factory(etcd.endpoint), label, _healthy(), ttl=3)
    keeper.start()
    wait_for(lambda: liveness.read(etcd.client(), label).alive, "a live controller")
    assert "controller for " + label + ": OK" in liveness.read(etcd.client(), label).describe(
        label)
    keeper._stop.set()  # dies: no renewal, no revoke
    keeper._health.changed.set()
    keeper._thread.join(timeout=10)
    wait_for(lambda: _value(etcd, label) is None, "the lease to expire", timeout=15)
    report = liveness.read(etcd.client(), label)
    assert not report.alive and report.gone_revision > 0
    assert f"since etcd revision {report.gone_revision} (its lease expired" in \
        report.describe(label)


def test_the_key_comes_back_after_an_etcd_outage_longer_than_its_ttl(
    etcd: Etcd, label: str, kept: tuple[Health, LivenessKeeper]
) -> None:
    wait_for(lambda: _value(etcd, label) is not None, "the agent key")
    etcd.kill()
    threading.Event().wait(5)
    etcd.start()
    wait_for(lambda: _value(etcd, label) is not None, "the agent key after the outage",
             timeout=30)


def test_interpret_and_describe_are_plain() -> None:
    connections = {"etcd": Connection(True), "helper": Connection(False, "x" * 1000),
                   "docker": Connection(None)}
    raw = liveness.encode(connections, 1_700_000_000, 1_700_000_100, "0.1.0", "https://a:1")
    alive = liveness.interpret(raw)
    assert alive.alive and alive.value["state"] == "ERROR"
    assert len(alive.value["errors"]["helper"]) == 300
    assert alive.describe("vpp1") == ("controller for vpp1: ERROR, version 0.1.0, up since "
                                      "2023-11-14 22:13:20 UTC; not connected: helper")
    never = liveness.interpret(None)
    assert "no liveness key, and none in etcd's history" in never.describe("vpp1")
    assert liveness.interpret(b"{oops").alive
