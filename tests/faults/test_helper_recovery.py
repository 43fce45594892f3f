"""A helper SIGKILLed inside a batch cleans up at its next start (netlinkd/recovery.py),
driven with signed batches straight to a real helper in a sandbox (no controller)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.helper_client import HelperClient, HelperUnavailable
from controller.ops import CreateVethPair, DeleteLink, LinkSpec, NsRef, Op
from controller.signer import Signer
from netagent_api import helper_pb2
from netagent_audit import records
from netagent_audit.records import Head
from netlinkd.links import batch_group
from tests.faults.helper_faults import link_groups, start_helper, wait_helper_died
from tests.harness import HelperSandbox, KeyPair, SandboxError, links
from tests.harness.paths import venv_tool

OWNER = "crash"
NS1, NS2 = NsRef.named("rc1"), NsRef.named("rc2")


class Client:
    def __init__(self, helper: HelperSandbox, keys: KeyPair) -> None:
        key = serialization.load_pem_private_key(keys.signing_key.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self.signer = Signer(key)
        self.helper = helper

    def send(self, *ops: Op) -> tuple[helper_pb2.BatchReply | None, int]:
        """Submit; (None, group) when the helper died on it. `group` is the batch's."""
        signed = self.signer.sign(ops, None, OWNER)
        batch = helper_pb2.Batch.FromString(signed.batch)
        client = HelperClient(str(self.helper.socket), timeout=30)
        try:
            return client.submit(signed), batch_group(batch.epoch, batch.sequence)
        except HelperUnavailable:
            return None, batch_group(batch.epoch, batch.sequence)
        finally:
            client.close()


@pytest.fixture
def client(helper: HelperSandbox, keys: KeyPair) -> Iterator[Client]:
    yield Client(helper, keys)


def pair(name: str, *addresses: str) -> CreateVethPair:
    return CreateVethPair(
        LinkSpec(f"{name}a", NS1, "02:00:00:00:0c:01", 1400, True, tuple(addresses)),
        LinkSpec(f"{name}b", NS2, "02:00:00:00:0c:02", 1400, True),
    )


def audit_records(helper: HelperSandbox) -> list[dict[str, Any]]:
    return [json.loads(line) for line in helper.audit_log.read_text().splitlines()]


def names(helper: HelperSandbox, netns: str) -> set[str]:
    return set(links(helper, netns)) - {"lo"}


def die_at(client: Client, kill_at: int, *ops: Op) -> int:
    start_helper(client.helper, kill_at=kill_at)
    reply, group = client.send(*ops)
    assert reply is None, f"the helper should have died at write {kill_at + 1}: {reply}"
    wait_helper_died(client.helper)
    return group


def test_a_pair_born_but_not_stamped_is_removed_at_start(client: Client) -> None:
    helper = client.helper
    group = die_at(client, 1, pair("p", "10.9.0.1/24"))
    half = links(helper, "rc1")["pa"]
    assert half.alias == "" and link_groups(helper)[("rc1", "pa")] == group, \
        "killed between the create and the stamp: born in the batch's group, no alias"
    start_helper(helper)
    assert names(helper, "rc1") == set() and names(helper, "rc2") == set()
    result = audit_records(helper)[-1]
    assert result["kind"] == "result" and result["verdict"] == "interrupted"
    assert any("delete unstamped pa" in step for step in result["results"]), result
    reply, _ = client.send(pair("p", "10.9.0.1/24"))
    assert reply is not None and reply.ok, reply
    assert links(helper, "rc1")["pa"].alias == f"netagent:{OWNER}:pb"


def test_one_end_stamped_the_other_not_removes_the_pair(client: Client) -> None:
    die_at(client, 2, pair("p"))
    assert links(client.helper, "rc1")["pa"].alias == f"netagent:{OWNER}:pb"
    assert links(client.helper, "rc2")["pb"].alias == ""
    start_helper(client.helper)
    assert names(client.helper, "rc1") == set() and names(client.helper, "rc2") == set()


def test_a_link_marked_for_deletion_goes_back_to_group_zero(client: Client) -> None:
    reply, _ = client.send(pair("p"))
    assert reply is not None and reply.ok
    group = die_at(client, 1, DeleteLink("pa", NS1))
    assert link_groups(client.helper)[("rc1", "pa")] == group, "marked, not yet deleted"
    start_helper(client.helper)
    assert link_groups(client.helper)[("rc1", "pa")] == 0
    assert links(client.helper, "rc1")["pa"].alias == f"netagent:{OWNER}:pb", "still owned"
    result = audit_records(client.helper)[-1]
    (step,) = result["results"]
    assert re.fullmatch(r"recovery: unmark pa \(ifindex \d+\) in namespace name=rc1", step), step


def test_strangers_are_left_alone(client: Client) -> None:
    helper = client.helper
    group = die_at(client, 1, pair("p"), pair("q"))
    # Both pairs were born by one sendmsg; the second is removed so a stranger takes its name.
    assert link_groups(helper)[("rc1", "qa")] == group
    helper.ip("link", "del", "qa", netns="rc1")
    # A stranger's link named like an end of the intent (but in another group), and one
    # in the batch's group under a name the intent does not create.
    helper.ip("link", "add", "qa", "type", "veth", "peer", "name", "qa-p", netns="rc1")
    helper.ip("link", "add", "zz", "type", "veth", "peer", "name", "zz-p", netns="rc1")
    set_group = f"import pyroute2; pyroute2.IPRoute().link('set', ifname='zz', group={group})"
    helper.run("ip", "netns", "exec", "rc1", sys.executable, "-c", set_group)
    start_helper(helper)
    assert names(helper, "rc1") == {"qa", "qa-p", "zz", "zz-p"}
    assert link_groups(helper)[("rc1", "zz")] == group
    warned = [line for line in helper.log_path.read_text().splitlines()
              if "link zz in namespace name=rc1 is in group" in line]
    assert warned and "left alone" in warned[0], "the operator is told of the stranger"


def test_killed_again_while_cleaning_up(client: Client) -> None:
    die_at(client, 1, pair("p"))
    with pytest.raises(SandboxError, match="exited"):
        start_helper(client.helper, kill_at=0)  # dies before the clean-up's first write
    assert "pa" in names(client.helper, "rc1")
    start_helper(client.helper)
    assert names(client.helper, "rc1") == set() and names(client.helper, "rc2") == set()
    verdicts = [r.get("verdict") for r in audit_records(client.helper) if r["kind"] == "result"]
    assert verdicts[-2:] == ["interrupted", "interrupted"]


def test_a_namespace_file_left_empty_is_removed(client: Client) -> None:
    """A kill between creating /run/netns/<name> and mounting the namespace on it leaves an
    empty file, which reads as a namespace gone for good and would block every create."""
    helper = client.helper
    make = CreateVethPair(LinkSpec("na", NsRef.named("rc9")), LinkSpec("nb", NS2))
    die_at(client, 0, make)  # before the first netlink write: the namespaces are made
    helper.run("umount", "/run/netns/rc9")  # what a kill before the mount leaves
    assert "rc9" in helper.netns_list()
    start_helper(helper)
    assert "rc9" not in helper.netns_list()
    result = audit_records(helper)[-1]
    assert any("empty namespace file" in s and s.endswith("rc9 (its creation was cut short)")
               for s in result["results"]), result
    reply, _ = client.send(make)
    assert reply is not None and reply.ok, reply


def _submit(helper: HelperSandbox, signed: helper_pb2.SignedBatch) -> helper_pb2.BatchReply | None:
    client = HelperClient(str(helper.socket), timeout=30)
    try:
        return client.submit(signed)
    except HelperUnavailable:
        return None
    finally:
        client.close()


def test_a_batch_killed_once_its_intent_is_durable_stays_a_replay(client: Client) -> None:
    """The intent is the one fsync before acting; replay.json follows only when the helper
    is idle or stops. Killed right before the batch's first kernel write (that file never
    written, even deleted), the same signed batch is refused as a replay after the restart:
    the marks come back from the log's intent."""
    helper = client.helper
    start_helper(helper, kill_at=0)
    signed = client.signer.sign([pair("q")], None, OWNER)
    assert _submit(helper, signed) is None
    wait_helper_died(helper)
    intent = audit_records(helper)[-1]
    assert intent["kind"] == "intent"
    head = Head.decode((helper.state_dir / records.HEAD_FILE).read_bytes(), "head")
    assert head == Head(intent["n"], intent["hash"])  # cutting the intent would show
    state = helper.state_dir / "replay.json"
    assert not state.exists() or client.signer.epoch.hex() not in state.read_text()
    state.unlink(missing_ok=True)
    start_helper(helper)
    reply = _submit(helper, signed)
    assert reply is not None and not reply.ok and reply.error_kind == helper_pb2.REPLAY, reply
    assert names(helper, "rc1") == set() and names(helper, "rc2") == set()
    reply, _ = client.send(pair("q"))
    assert reply is not None and reply.ok, reply


def verify_audit(helper: HelperSandbox, keys: KeyPair) -> str:
    result = subprocess.run(
        [venv_tool("netagent-audit"), "verify", "--audit-log", str(helper.audit_log),
         "--trust-key", str(keys.trust_key), "--state-dir", str(helper.state_dir)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("tear_at", [1, 2])
def test_a_head_write_torn_by_a_kill_is_passed_over(client: Client, keys: KeyPair,
                                                     tear_at: int) -> None:
    """The helper killed half-way through writing the audit head in place (its first batch
    makes the file, then its first in-place write is that batch's result's head, 0): the
    second batch's intent's head before it acts (1), or its result's after it (2). The torn
    slot is passed over: the head is the record before, which the helper resumes from and
    `audit verify` accepts; recovery cleans up and the next batch is applied."""
    helper = client.helper
    start_helper(helper, tear_head_at=tear_at)
    reply, _ = client.send(pair("h"))
    assert reply is not None and reply.ok, reply
    assert client.send(pair("t"))[0] is None
    wait_helper_died(helper)
    logged = audit_records(helper)
    assert logged[-1]["kind"] == ("intent", "result")[tear_at - 1]
    head_file = (helper.state_dir / records.HEAD_FILE).read_bytes()
    assert None in Head.slots(head_file), "half a slot was written"
    assert Head.decode(head_file, "head") == Head(logged[-2]["n"], logged[-2]["hash"])
    assert "1 record(s) after the helper's recorded head" in verify_audit(helper, keys)
    start_helper(helper)
    assert names(helper, "rc1") == {"ha"} | ({"ta"} if tear_at == 2 else set())
    reply, _ = client.send(pair("u"))
    assert reply is not None and reply.ok, reply
    assert "record(s) after" not in verify_audit(helper, keys)


def append_chained(path: Any, record: dict[str, object]) -> None:
    """What a writer of the log can do: append a record chained to the last one (the helper
    accepts a log one record ahead of its recorded head, as after a crash)."""
    last = json.loads(path.read_bytes().splitlines()[-1])
    full = {**record, "n": last["n"] + 1, "ts": last["ts"], "prev": last["hash"]}
    full["hash"] = records.record_hash(full)
    with open(path, "ab") as handle:
        handle.write(records.canonical_json(full) + b"\n")


@pytest.mark.parametrize("kind", ["interrupted", "intent"])
def test_a_log_writer_cannot_steer_recovery_into_deleting_links(client: Client,
                                                                kind: str) -> None:
    """Recovery acts on signed bytes that verify, never on a batch the controller did not
    sign: a forged last record (an `interrupted` result carrying an unsigned batch, or an
    intent whose signature does not verify) that names a stranger's link, put in that
    batch's group, leaves the link alone."""
    helper = client.helper
    reply, _ = client.send(pair("p"))
    assert reply is not None and reply.ok, reply
    epoch, seq = os.urandom(16), 7
    group = batch_group(epoch, seq)
    helper.ip("link", "add", "vx", "type", "veth", "peer", "name", "vy", netns="rc1")
    set_group = f"import pyroute2; pyroute2.IPRoute().link('set', ifname='vx', group={group})"
    helper.run("ip", "netns", "exec", "rc1", sys.executable, "-c", set_group)
    ends = [helper_pb2.LinkSpec(name=name, netns=helper_pb2.NamespaceRef(name="rc1"))
            for name in ("vx", "vy")]
    forged = helper_pb2.Batch(
        epoch=epoch, sequence=seq, owner=OWNER, unix_time_ms=int(time.time() * 1000),
        operations=[helper_pb2.Operation(
            create_veth_pair=helper_pb2.CreateVethPair(a=ends[0], b=ends[1]))],
    )
    if kind == "interrupted":
        record = records.result_record(forged, "interrupted", "", "", -1, [])
        record["batch"] = base64.b64encode(forged.SerializeToString()).decode()
    else:
        record = records.intent_record(client.signer.key_id, forged.SerializeToString(),
                                       bytes(64), forged)
    helper.stop_helper()
    append_chained(helper.audit_log, record)
    start_helper(helper)
    assert {"vx", "vy"} <= names(helper, "rc1"), "a forged record steered recovery"
    assert link_groups(helper)[("rc1", "vx")] == group
