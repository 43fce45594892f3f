"""Controller metrics from the wrappers' point of view (pure: no HTTP, no etcd)."""

from __future__ import annotations

import pytest

from controller.events import ConfigChanges, ConfigDeleted, ConfigPut, ConfigSnapshot
from controller.health import Health
from controller.metrics import Metrics, parse_address
from controller.ops import State, Status
from netagent_api import helper_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_batches_operations_states_and_latency() -> None:
    clock, health = Clock(), Health()
    metrics = Metrics(health, clock=clock)
    batch = helper_pb2.Batch(operations=[
        helper_pb2.Operation(create_veth_pair=helper_pb2.CreateVethPair()),
        helper_pb2.Operation(add_address=helper_pb2.AddAddress())])
    signed = helper_pb2.SignedBatch(batch=batch.SerializeToString())
    metrics.batch(signed, helper_pb2.BatchReply(ok=True))
    metrics.batch(signed, helper_pb2.BatchReply(ok=False, error_kind=helper_pb2.POLICY_REFUSED))
    metrics.batch(signed, None)
    assert _sample(metrics, "netagent_batches_total", result="applied") == 1
    assert _sample(metrics, "netagent_batches_total", result="refused_POLICY_REFUSED") == 1
    assert _sample(metrics, "netagent_batches_total", result="unavailable") == 1
    assert _sample(metrics, "netagent_operations_total", kind="create_veth_pair") == 1
    assert _sample(metrics, "netagent_operations_total", kind="add_address") == 1

    metrics.event(ConfigSnapshot({"a": b"", "b": b""}))
    clock.now += 0.3
    metrics.statuses({"a": Status(State.CONFIGURED, ""), "b": Status(State.PENDING, "peer")})
    assert _sample(metrics, "netagent_interfaces", state="CONFIGURED") == 1
    assert _sample(metrics, "netagent_interfaces", state="PENDING") == 1
    assert _sample(metrics, "netagent_etcd_to_kernel_seconds_count") == 1  # b not settled
    clock.now += 1.0
    metrics.event(ConfigDeleted("a"))
    metrics.statuses({"b": Status(State.ERROR, "x")})
    assert _sample(metrics, "netagent_etcd_to_kernel_seconds_count") == 3
    assert _sample(metrics, "netagent_etcd_to_kernel_seconds_sum") == pytest.approx(0.3 + 1.3)
    metrics.event(ConfigPut("b", b""))
    metrics.event(ConfigPut("b", b"again"))  # timed from the first unsettled change
    clock.now += 2.0
    metrics.statuses({"b": Status(State.CONFIGURED, "")})
    assert _sample(metrics, "netagent_etcd_to_kernel_seconds_bucket", le="2.5") == 4
    metrics.event(ConfigChanges((ConfigPut("c", b""), ConfigDeleted("b"))))  # one watch response
    clock.now += 0.5
    metrics.statuses({"c": Status(State.CONFIGURED, "")})
    assert _sample(metrics, "netagent_etcd_to_kernel_seconds_count") == 6


def test_connection_gauges_follow_health() -> None:
    health = Health()
    metrics = Metrics(health)
    assert _sample(metrics, "netagent_connected", peer="etcd") == 0
    health.set("etcd", True)
    health.set("docker", None, "not watched")
    assert _sample(metrics, "netagent_connected", peer="etcd") == 1
    assert metrics.registry.get_sample_value("netagent_connected", {"peer": "docker"}) is None
    assert b'netagent_connected{peer="etcd"} 1.0' in metrics.exposition()


@pytest.mark.parametrize(("value", "message"), [
    ("0.0.0.0:9435", "not a loopback address"),
    ("10.1.2.3:1", "not a loopback address"),
    ("localhost", "must be HOST:PORT"),
    ("127.0.0.1:0", "must be HOST:PORT"),
])
def test_the_address_is_loopback_only(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(value)
    assert parse_address("[::1]:9435") == ("::1", 9435)
