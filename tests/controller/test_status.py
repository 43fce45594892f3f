"""StatusPublisher against a real etcd: JSON shape, change-only writes, stale cleanup."""

from __future__ import annotations

import json
from typing import Any

from etcd_server import Etcd

from controller import keys
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
    taken yet (the published ones are kept)."""
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
    assert len(encoded) == 3, "b's published value is now its first encoding"
    publisher.publish({"a": Status(State.CONFIGURED, "", live=live), "b": waiting})
    assert len(encoded) == 3
    down = Live("a", NsRef.named("ns1"), ifindex=7, oper_state="DOWN")
    publisher.publish({"a": Status(State.CONFIGURED, "", live=down), "b": waiting})
    assert len(encoded) == 4
    assert _read(etcd, label)["a"]["oper_state"] == "DOWN"
    client.put(keys.status_key(label, "b"), b'{"state": "CONFIGURED", "reason": "",'
               b' "statistics": {"rx_packets": 5}}')
    publisher._dirty = True  # as after a failure: the prefix is listed again
    publisher.publish({"a": Status(State.CONFIGURED, "", live=down), "b": waiting})
    assert len(encoded) == 5, "b's published counters changed: encoded with them"
    assert _read(etcd, label)["b"]["statistics"] == {"rx_packets": 5}
