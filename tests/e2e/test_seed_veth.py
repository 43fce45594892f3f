"""End to end: etcd → unprivileged controller → netlinkd in a sandbox → kernel.

Every test gets its own agent label, sandbox (namespaces on a private tmpfs, so the seed's
ns1/ns2/veth1/veth2 are used unchanged) and controller running as uid 65534.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from netagent_api import helper_pb2
from tests.e2e.e2e_common import (
    RESYNC,
    expect_gone,
    expect_link,
    expect_state,
    matches,
    named_ns,
    seed,
    veth_anywhere,
    veth_config,
)
from tests.harness import (
    ControllerProcess,
    EtcdKV,
    HelperSandbox,
    StartController,
    changing_intents,
    free_port,
    link,
    links_in_file,
    links_of_pid,
    proc_status,
    records,
    wait_until,
)

pytestmark = pytest.mark.root


def put_seed_pair(kv: EtcdKV, helper: HelperSandbox) -> tuple[int, int]:
    """Put veth1 and veth2; wait until both ends are configured; return their ifindexes."""
    kv.put("veth1", seed("veth1"))
    kv.put("veth2", seed("veth2"))
    one = expect_link(helper, seed("veth1"), "ns1")
    two = expect_link(helper, seed("veth2"), "ns2")
    expect_state(kv, "veth1", "CONFIGURED")
    expect_state(kv, "veth2", "CONFIGURED")
    return one.ifindex, two.ifindex


def intents_since(audit_log: Path, start: int) -> list[dict[str, object]]:
    return [r for r in records(audit_log)[start:] if r.get("kind") == "intent"]


def signed_batch(intent: dict[str, object]) -> helper_pb2.Batch:
    """The batch an audit intent record carries, as signed."""
    return helper_pb2.Batch.FromString(base64.b64decode(str(intent["batch"])))


def settle(helper: HelperSandbox, start: int, rounds: int = 2) -> list[dict[str, object]]:
    """Wait until the controller sent `rounds` batches after audit record `start`.

    With a 1 s resync interval this means at least one full periodic resync has run, so a
    later check for "no changes" is not just early.
    """
    return wait_until(
        lambda: (lambda found: found if len(found) >= rounds else None)(
            intents_since(helper.audit_log, start)
        ),
        timeout=30, what=f"{rounds} batches from the controller after record {start}",
    ) or []


def test_seed_story(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    controller: ControllerProcess = start_controller(*RESYNC)

    # 1. One end only: nothing in the kernel, PENDING naming the missing peer.
    kv.put("veth1", seed("veth1"))
    pending = expect_state(kv, "veth1", "PENDING")
    assert "veth2" in pending["reason"]
    assert veth_anywhere(helper, "veth1") == []

    # 2. The peer arrives: both ends exactly as configured.
    kv.put("veth2", seed("veth2"))
    first = expect_link(helper, seed("veth1"), "ns1")
    second = expect_link(helper, seed("veth2"), "ns2")
    expect_state(kv, "veth1", "CONFIGURED")
    expect_state(kv, "veth2", "CONFIGURED")
    assert first.kind == "veth" and second.kind == "veth"

    # 3. MTU change is applied in place.
    bigger = seed("veth1") | {"mtu": 9000}
    kv.put("veth1", bigger)
    assert expect_link(helper, bigger, "ns1").ifindex == first.ifindex
    assert expect_link(helper, seed("veth2"), "ns2").ifindex == second.ifindex

    # 4. Deleting one end removes the pair; the other end waits again.
    kv.delete("veth2")
    expect_gone(helper, "veth1", "ns1")
    expect_gone(helper, "veth2", "ns2")
    assert "veth2" in expect_state(kv, "veth1", "PENDING")["reason"]

    # 5. The peer comes back: so does the pair.
    kv.put("veth2", seed("veth2"))
    one = expect_link(helper, bigger, "ns1")
    two = expect_link(helper, seed("veth2"), "ns2")
    expect_state(kv, "veth1", "CONFIGURED")
    expect_state(kv, "veth2", "CONFIGURED")

    # 6. A controller restart changes nothing in the kernel.
    settle(helper, len(records(helper.audit_log)), rounds=1)
    changes_before = changing_intents(helper.audit_log)
    mark = len(records(helper.audit_log))
    controller.restart()
    settle(helper, mark, rounds=3)
    expect_state(kv, "veth1", "CONFIGURED")
    assert changing_intents(helper.audit_log) == changes_before, intents_since(
        helper.audit_log, mark
    )
    assert expect_link(helper, bigger, "ns1").ifindex == one.ifindex
    assert expect_link(helper, seed("veth2"), "ns2").ifindex == two.ifindex


def test_bad_keys_get_errors_naming_the_field_while_good_keys_apply(
    kv: EtcdKV, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    unknown = veth_config("bad1", "bad9", netns=named_ns("ns1"), mac="02:00:00:00:0b:01",
                          addresses=[]) | {"linux_namespace": {"name": "ns1"}}
    bad_mtu = veth_config("bad2", "bad8", netns=named_ns("ns1"), mac="02:00:00:00:0b:02",
                          addresses=[], mtu=-5)
    kv.put("bad1", unknown)
    kv.put("bad2", bad_mtu)
    kv.put("bad3", b"{not json")
    put_seed_pair(kv, helper)
    assert "linux_namespace" in expect_state(kv, "bad1", "ERROR")["reason"]
    assert "mtu" in expect_state(kv, "bad2", "ERROR")["reason"]
    expect_state(kv, "bad3", "ERROR")
    assert veth_anywhere(helper, "bad1") == [] and veth_anywhere(helper, "bad2") == []


def test_controller_runs_unprivileged(
    kv: EtcdKV, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    put_seed_pair(kv, helper)
    status = proc_status(controller.pid)
    assert status["Uid"].split() == ["65534"] * 4
    for capabilities in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, f"{capabilities}={status[capabilities]}"
    assert status["NoNewPrivs"] == "1"
    assert "netagent-controller" in Path(f"/proc/{controller.pid}/cmdline").read_text()


def test_helper_restart_resyncs_without_flapping(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller(*RESYNC)
    ifindexes = put_seed_pair(kv, helper)
    settle(helper, len(records(helper.audit_log)), rounds=1)
    revisions = (kv.status_revision("veth1"), kv.status_revision("veth2"))
    changes_before = changing_intents(helper.audit_log)
    helper.restart()
    mark = len(records(helper.audit_log))
    settle(helper, mark, rounds=3)
    assert changing_intents(helper.audit_log) == changes_before, intents_since(
        helper.audit_log, mark
    )
    assert (kv.status_revision("veth1"), kv.status_revision("veth2")) == revisions
    after = (expect_link(helper, seed("veth1"), "ns1"), expect_link(helper, seed("veth2"), "ns2"))
    assert (after[0].ifindex, after[1].ifindex) == ifindexes


@pytest.mark.pid_refs
def test_pid_and_file_namespaces(
    kv: EtcdKV, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    sleeper = helper.spawn("unshare", "--net", "sleep", "infinity")
    sandbox_ns = Path(f"/proc/{helper.pid}/ns/net").stat().st_ino
    wait_until(lambda: Path(f"/proc/{sleeper.pid}/ns/net").stat().st_ino != sandbox_ns,
               what="the sleeper to enter its own network namespace")
    nsf = str(helper.new_netns_file("nsf"))
    by_pid = veth_config("pida", "fileb", netns={"type": 0, "pid": sleeper.pid},
                         mac="02:00:00:00:0a:01", addresses=["10.9.0.1/24"])
    by_file = veth_config("fileb", "pida", netns={"type": 3, "filepath": nsf},
                          mac="02:00:00:00:0a:02", addresses=["10.9.0.2/24"])
    kv.put("pida", by_pid)
    kv.put("fileb", by_file)
    expect_state(kv, "pida", "CONFIGURED")
    expect_state(kv, "fileb", "CONFIGURED")
    assert matches(links_in_file(helper, nsf).get("fileb"), by_file)
    assert matches(links_of_pid(helper, sleeper.pid).get("pida"), by_pid)


def test_host_if_name_and_default_namespace(
    kv: EtcdKV, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    outside = veth_config("left", "right", netns=None, mac="02:00:00:00:0c:01",
                          addresses=["10.8.0.1/30"]) | {"host_if_name": "vleft0"}
    inside = veth_config("right", "left", netns=named_ns("nsr"), mac="02:00:00:00:0c:02",
                         addresses=["10.8.0.2/30"]) | {"host_if_name": "vright0"}
    kv.put("left", outside)
    kv.put("right", inside)
    expect_link(helper, outside, None)
    expect_link(helper, inside, "nsr")
    expect_state(kv, "left", "CONFIGURED")
    expect_state(kv, "right", "CONFIGURED")
    assert link(helper, "left") is None and link(helper, "right", "nsr") is None
    ping = helper.run("ip", "netns", "exec", "nsr", "busybox", "ping", "-c1", "-W5", "10.8.0.1",
                      check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_both_ends_with_one_kernel_name_in_two_namespaces(
    kv: EtcdKV, helper: HelperSandbox, controller: ControllerProcess
) -> None:
    """eth0 in a container and eth0 on the host side: the controller plans it and the
    helper's policy accepts it (issue 15: they disagreed)."""
    outside = veth_config("sleft", "sright", netns=None, mac="02:00:00:00:0d:01",
                          addresses=["10.8.1.1/30"]) | {
        "host_if_name": "vsame0"}
    inside = veth_config("sright", "sleft", netns=named_ns("nss"), mac="02:00:00:00:0d:02",
                         addresses=["10.8.1.2/30"]) | {
        "host_if_name": "vsame0"}
    kv.put("sleft", outside)
    kv.put("sright", inside)
    expect_link(helper, outside, None)
    expect_link(helper, inside, "nss")
    expect_state(kv, "sleft", "CONFIGURED")
    expect_state(kv, "sright", "CONFIGURED")
    ping = helper.run("ip", "netns", "exec", "nss", "busybox", "ping", "-c1", "-W5", "10.8.1.1",
                      check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_drift_is_repaired_and_foreign_links_are_left_alone(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    helper.run("ip", "netns", "add", "nsx")
    helper.ip("link", "add", "taken1", "mtu", "1400", "type", "veth", "peer", "name", "foreign1",
              netns="nsx")
    foreign = link(helper, "taken1", "nsx")
    start_controller(*RESYNC)
    first, _second = put_seed_pair(kv, helper)

    helper.ip("link", "set", "veth1", "mtu", "1400", netns="ns1")
    assert expect_link(helper, seed("veth1"), "ns1").ifindex == first

    kv.put("taken1", veth_config("taken1", "taken2", netns=named_ns("nsx"),
                                 mac="02:00:00:00:0d:01", addresses=["10.7.0.1/24"]))
    kv.put("taken2", veth_config("taken2", "taken1", netns=named_ns("nsy"),
                                 mac="02:00:00:00:0d:02", addresses=["10.7.0.2/24"]))
    reason = expect_state(kv, "taken1", "ERROR")["reason"].lower()
    assert "taken1" in reason and ("conflict" in reason or "own" in reason), reason
    settle(helper, len(records(helper.audit_log)), rounds=2)
    assert link(helper, "taken1", "nsx") == foreign


def test_deleted_namespace_comes_back_with_its_pair(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    start_controller(*RESYNC)
    put_seed_pair(kv, helper)
    inode = helper.run("stat", "-L", "-c", "%i", "/run/netns/ns2").stdout.strip()
    helper.run("ip", "netns", "del", "ns2")

    def recreated() -> bool:
        if "ns2" not in helper.netns_list():
            return False
        now = helper.run("stat", "-L", "-c", "%i", "/run/netns/ns2", check=False).stdout.strip()
        return now not in ("", inode)

    wait_until(recreated, timeout=30, what="ns2 to be recreated by the periodic resync")
    expect_link(helper, seed("veth1"), "ns1")
    expect_link(helper, seed("veth2"), "ns2")
    expect_state(kv, "veth1", "CONFIGURED")
    expect_state(kv, "veth2", "CONFIGURED")


def test_foreign_name_fails_only_its_pair_while_the_others_apply(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    """All keys arrive in one snapshot, so the refused creates (a foreign name, a namespace
    file outside the helper's allow-list) and the good one share a batch; the helper runs
    batches all-or-nothing, so the controller must set the refused ones aside."""
    helper.run("ip", "netns", "add", "nsx")
    helper.ip("link", "add", "taken1", "mtu", "1400", "type", "veth", "peer", "name", "foreign1",
              netns="nsx")
    foreign = link(helper, "taken1", "nsx")
    kv.put("taken1", veth_config("taken1", "taken2", netns=named_ns("nsx"),
                                 mac="02:00:00:00:0e:01", addresses=["10.6.0.1/24"]))
    kv.put("taken2", veth_config("taken2", "taken1", netns=named_ns("nsy"),
                                 mac="02:00:00:00:0e:02", addresses=["10.6.0.2/24"]))
    kv.put("pol1", veth_config("pol1", "pol2", netns={"type": 3, "filepath": "/etc/passwd"},
                               mac="02:00:00:00:0e:03", addresses=[]))
    kv.put("pol2", veth_config("pol2", "pol1", netns=None, mac="02:00:00:00:0e:04",
                               addresses=[]))
    kv.put("veth1", seed("veth1"))
    kv.put("veth2", seed("veth2"))
    start_controller(*RESYNC)

    expect_link(helper, seed("veth1"), "ns1")
    expect_link(helper, seed("veth2"), "ns2")
    expect_state(kv, "veth1", "CONFIGURED")
    expect_state(kv, "veth2", "CONFIGURED")
    for name in ("taken1", "taken2"):
        reason = expect_state(kv, name, "ERROR")["reason"]
        assert "CONFLICT" in reason and "taken1" in reason, reason
    settle(helper, len(records(helper.audit_log)), rounds=2)
    assert link(helper, "taken1", "nsx") == foreign
    assert link(helper, "taken2", "nsy") is None
    assert "POLICY_REFUSED" in expect_state(kv, "pol1", "ERROR")["reason"]
    assert link(helper, "pol2") is None

    helper.ip("link", "del", "taken1", netns="nsx")
    expect_state(kv, "taken1", "CONFIGURED")
    expect_state(kv, "taken2", "CONFIGURED")
    assert link(helper, "taken1", "nsx") is not None
    expect_state(kv, "veth1", "CONFIGURED")


def test_owned_pair_deleted_from_etcd_while_the_controller_was_down_is_removed(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    controller = start_controller(*RESYNC)
    kept = put_seed_pair(kv, helper)
    kv.put("gone1", veth_config("gone1", "gone2", netns=named_ns("ns1"),
                                mac="02:00:00:00:0f:01", addresses=["10.5.0.1/24"]))
    kv.put("gone2", veth_config("gone2", "gone1", netns=named_ns("ns2"),
                                mac="02:00:00:00:0f:02", addresses=["10.5.0.2/24"]))
    expect_state(kv, "gone1", "CONFIGURED")
    controller.stop()
    helper.ip("link", "set", "veth1", "mtu", "1400", netns="ns1")
    kv.delete("gone1")
    kv.delete("gone2")
    controller.start()
    expect_gone(helper, "gone1", "ns1")
    expect_gone(helper, "gone2", "ns2")
    assert expect_link(helper, seed("veth1"), "ns1").ifindex == kept[0], "fixed in place"
    assert expect_link(helper, seed("veth2"), "ns2").ifindex == kept[1]
    wait_until(lambda: not {"gone1", "gone2"} & set(kv.statuses()), timeout=30,
               what="the statuses of the removed keys to be deleted", describe=kv.statuses)


def test_controller_started_while_etcd_is_unreachable_keeps_every_link(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    """Without its config the controller must not take the kernel for unconfigured."""
    first = start_controller(*RESYNC)
    ifindexes = put_seed_pair(kv, helper)
    first.stop()
    changes_before = changing_intents(helper.audit_log)
    revisions = (kv.status_revision("veth1"), kv.status_revision("veth2"))
    blind = start_controller(*RESYNC, "--etcd", f"127.0.0.1:{free_port()}")
    time.sleep(4)  # four resync intervals with no etcd listing
    assert blind.alive(), blind.log_text()
    blind.stop()
    assert changing_intents(helper.audit_log) == changes_before
    assert (kv.status_revision("veth1"), kv.status_revision("veth2")) == revisions
    start_controller(*RESYNC)
    settle(helper, len(records(helper.audit_log)), rounds=2)
    assert changing_intents(helper.audit_log) == changes_before
    after = (expect_link(helper, seed("veth1"), "ns1"), expect_link(helper, seed("veth2"), "ns2"))
    assert (after[0].ifindex, after[1].ifindex) == ifindexes


def test_disabling_an_end_keeps_its_ipv6_addresses(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    """The kernel drops IPv6 addresses when a link goes down; the controller adds them back
    in the same batch, so the status is true at once, without waiting for a resync."""
    start_controller()
    ifindexes = put_seed_pair(kv, helper)
    disabled = seed("veth1") | {"enabled": False}
    mark = changing_intents(helper.audit_log)
    kv.put("veth1", disabled)
    down = expect_link(helper, disabled, "ns1", timeout=10)
    assert down.ifindex == ifindexes[0] and not down.up
    assert "2001:db8::ff00:89e3:bb42/48" in down.addresses
    assert changing_intents(helper.audit_log) == mark + 1
    expect_state(kv, "veth1", "CONFIGURED")


def test_each_put_of_a_new_pair_is_one_helper_batch(
    kv: EtcdKV, helper: HelperSandbox, start_controller: StartController
) -> None:
    """Issue 16: one helper round trip per change. Both namespaces are made after the
    controller's first observe, so neither has been observed: the first end's put is one
    batch (an observe of its namespace: the end waits for its peer), the second end's
    put is one batch too, the create, carrying the observe of the second namespace."""
    start_controller()
    settle(helper, 0, rounds=1)
    helper.run("ip", "netns", "add", "nsp1")
    helper.run("ip", "netns", "add", "nsp2")
    one = veth_config("rt1", "rt2", netns=named_ns("nsp1"), mac="02:00:00:00:0f:01",
                      addresses=["10.8.0.1/24"])
    two = veth_config("rt2", "rt1", netns=named_ns("nsp2"), mac="02:00:00:00:0f:02",
                      addresses=["10.8.0.2/24"])
    mark = len(records(helper.audit_log))
    kv.put("rt1", one)
    expect_state(kv, "rt1", "PENDING")
    first = [signed_batch(r) for r in intents_since(helper.audit_log, mark)]
    assert [(len(b.operations), [r.name for r in b.observe.netns]) for b in first] == [
        (0, ["nsp1"])]
    mark = len(records(helper.audit_log))
    kv.put("rt2", two)
    expect_link(helper, one, "nsp1")
    expect_link(helper, two, "nsp2")
    create = signed_batch(intents_since(helper.audit_log, mark)[0])
    assert [op.WhichOneof("op") for op in create.operations] == ["create_veth_pair"]
    assert "nsp2" in {r.name for r in create.observe.netns}
    expect_state(kv, "rt1", "CONFIGURED")
    expect_state(kv, "rt2", "CONFIGURED")
