"""StatusPublisher against a real etcd: JSON shape, change-only writes, stale cleanup."""

from __future__ import annotations

import json
from typing import Any

from etcd_server import Etcd

from controller import keys
from controller.etcd_client import ClientFactory
from controller.etcd_options import EtcdOptions, parse_endpoints
from controller.ops import State, Status
from controller.status import TXN_OPS, StatusPublisher

OK = Status(State.CONFIGURED, "")
WAIT = Status(State.PENDING, "waiting for microservice web", ("two containers",))


def _read(etcd: Etcd, label: str) -> dict[str, dict[str, object]]:
    prefix = keys.status_prefix(label)
    return {meta.key.decode()[len(prefix):]: json.loads(value)
            for value, meta in etcd.client().get_prefix(prefix)}


def test_publish_shape_and_stale_cleanup(etcd: Etcd, label: str) -> None:
    client = etcd.client()
    client.put(keys.status_key(label, "stale"), b'{"state": "CONFIGURED", "reason": ""}')
    StatusPublisher(lambda: client, label).publish({"a": OK, "b": WAIT})
    assert _read(etcd, label) == {
        "a": {"state": "CONFIGURED", "reason": ""},
        "b": {"state": "PENDING", "reason": "waiting for microservice web",
              "warnings": ["two containers"]},
    }


def test_writes_only_changes_and_deletes_removed(etcd: Etcd, label: str) -> None:
    client = etcd.client()
    publisher = StatusPublisher(lambda: client, label)
    publisher.publish({"a": OK, "b": WAIT})
    _, before = client.get(keys.status_key(label, "a"))
    publisher.publish({"a": OK})
    _, after = client.get(keys.status_key(label, "a"))
    assert after.mod_revision == before.mod_revision
    assert set(_read(etcd, label)) == {"a"}


def test_etcd_down_is_not_fatal_and_recovers(etcd: Etcd, label: str) -> None:
    publisher = StatusPublisher(etcd.client, label)
    etcd.kill()
    publisher.publish({"a": OK})
    etcd.start()
    publisher.publish({"a": WAIT})
    assert _read(etcd, label)["a"]["state"] == "PENDING"



def _revision(client: Any, label: str) -> int:
    marker = f"/netagent-test/{label}/marker"
    client.put(marker, b"")
    _, meta = client.get(marker)
    return int(meta.mod_revision)


def test_many_changes_go_in_transactions_within_etcds_op_limit(etcd: Etcd, label: str) -> None:
    client = etcd.client()
    publisher = StatusPublisher(lambda: client, label)
    many = {f"if{i:03}": OK for i in range(3 * TXN_OPS + 5)}
    before = _revision(client, label)
    publisher.publish(many)
    assert _revision(client, label) - before - 1 == 4, "one revision per transaction"
    assert set(_read(etcd, label)) == set(many)
    publisher.publish({"if000": WAIT})
    assert set(_read(etcd, label)) == {"if000"}
    assert _read(etcd, label)["if000"]["state"] == "PENDING"


def test_a_status_published_again_unchanged_is_not_encoded_again(
        etcd: Etcd, label: str, monkeypatch: Any) -> None:
    """Every reconcile publishes every status (issue 16: 2,000 of them, each encoded to
    JSON, at every link-event burst of a 1,000-pair create); only a changed one is encoded.
    Its live facts count, and so does the published value where the counters are not
    taken yet (the published ones are kept), unless it is that status's own encoding."""
    from controller import status as status_module
    from controller.ops import Live, NsRef

    encoded: list[str] = []
    real = status_module.encode

    def counted(status: Status, published: bytes | None = None) -> bytes:
        encoded.append(status.reason)
        return real(status, published)

    monkeypatch.setattr(status_module, "encode", counted)
    client = etcd.client()
    publisher = StatusPublisher(lambda: client, label)
    live = Live("a", NsRef.named("ns1"), ifindex=7, oper_state="UP")
    waiting = Status(State.CONFIGURED, "", live=Live("b", NsRef.named("ns1"), statistics=None))
    publisher.publish({"a": Status(State.CONFIGURED, "", live=live), "b": waiting})
    assert len(encoded) == 2
    publisher.publish({"a": Status(State.CONFIGURED, "", live=live), "b": waiting})
    assert len(encoded) == 2, "b's published value is its own encoding"
    publisher.publish({"a": Status(State.CONFIGURED, "", live=live), "b": waiting})
    assert len(encoded) == 2
    down = Live("a", NsRef.named("ns1"), ifindex=7, oper_state="DOWN")
    publisher.publish({"a": Status(State.CONFIGURED, "", live=down), "b": waiting})
    assert len(encoded) == 3
    assert _read(etcd, label)["a"]["oper_state"] == "DOWN"
    client.put(keys.status_key(label, "b"), b'{"state": "CONFIGURED", "reason": "",'
               b' "statistics": {"rx_packets": 5}}')
    publisher._dirty = True  # as after a failure: the prefix is listed again
    publisher.publish({"a": Status(State.CONFIGURED, "", live=down), "b": waiting})
    assert len(encoded) == 4, "b's published counters changed: encoded with them"
    assert _read(etcd, label)["b"]["statistics"] == {"rx_packets": 5}


def test_the_publisher_keeps_one_copy_of_each_value(etcd: Etcd, label: str) -> None:
    """10,000 statuses of some 400 bytes each: a second copy of each (the value it replaced,
    kept with its encoding; an equal value listed or encoded again) was 4 MiB of the
    controller's RSS."""
    import gc
    import tracemalloc

    from controller.ops import Live, NsRef

    client = etcd.client()
    publisher = StatusPublisher(lambda: client, label)
    names = [f"e{i}" for i in range(200)]

    def statuses(counters: tuple[int, ...] | None) -> dict[str, Status]:
        return {name: Status(State.CONFIGURED, "r" * 1000, live=Live(
            name, NsRef.named("ns1"), ifindex=7, oper_state="UP", statistics=counters))
            for name in names}

    gc.collect()
    tracemalloc.start()  # before the first copy, so that its release counts
    try:
        publisher.publish(statuses((1,) * 8))
        one_copy = sum(len(value) for value in publisher.written().values())
        for counters in ((2,) * 8, None, None):  # new counters; then kept from the published
            wanted = statuses(counters)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            publisher.publish(wanted)
            del wanted
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
            assert grown < one_copy // 4, (counters, grown, one_copy)
    finally:
        tracemalloc.stop()
    publisher._dirty = True  # listed again: equal values, new objects
    publisher.publish(statuses(None))
    assert all(publisher._written[n] is publisher._encoded[n][-1] for n in names)



def test_status_keys_over_grpcs_4_mib_are_listed(etcd: Etcd, label: str) -> None:
    """10,000 statuses with their counters (some 420 bytes each with the key) are more than
    gRPC's default 4 MiB in the one Range response that lists them (at a restart, after a
    failed publish); the listing failed with RESOURCE_EXHAUSTED every time."""
    client = etcd.client()
    value = b'{"state": "CONFIGURED", "statistics": {"rx_bytes": 0}, "reason": "' \
        + b"r" * 300 + b'"}'
    names = [f"e{i:05d}" for i in range(10_000)]
    for start in range(0, len(names), TXN_OPS):
        client.transaction(compare=[], failure=[], success=[
            client.transactions.put(keys.status_key(label, name), value)
            for name in names[start:start + TXN_OPS]])
    factory = ClientFactory(EtcdOptions(parse_endpoints(etcd.endpoint, "etcd")))
    publisher = StatusPublisher(factory.connect, label)
    try:
        assert len(publisher.listed()) == len(names)
    finally:
        publisher.close()
