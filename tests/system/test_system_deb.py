"""The .deb on a real Debian 12 with systemd 252 as PID 1: install, run, restart, remove,
reinstall, purge, and a root cloned before its first boot.

Each machine is a container of a private dockerd booted from the same image: the cached
bookworm root plus `apt-get install ./netagent_*.deb` (see conftest.py, system_root.py).
Inside, etcd-server's own unit runs etcd on 127.0.0.1:2379, where the packaged
/etc/netagent/netagent.toml points the controller.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from system_machine import UNITS, Machine, booted, exposure
from system_root import InstalledImage

from tests.docker.private_dockerd import DockerDaemon
from tests.harness import batch_results, records_in, wait_until

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.timeout(1800)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEED = {"veth1": "ns1", "veth2": "ns2"}
AUDIT_VERIFY = ("netlinkd audit verify --audit-log /var/log/netagent/audit.log "
                "--trust-key /etc/netagent/trust.keys")
KEY = "/etc/netagent/controller.key"
TRUST = "/etc/netagent/trust.keys"
CONVERGED = "/var/lib/netagent-controller/converged.json"
HELPER_EXPOSURE_MAX = 3.0
CONTROLLER_EXPOSURE_MAX = 2.0


def test_package_life_cycle_under_systemd(system_dockerd: DockerDaemon,
                                          installed_image: InstalledImage) -> None:
    print(f"\napt-get install ./{installed_image.deb_name} (chroot, dependencies from the "
          f"mirror): {installed_image.install_seconds:.1f} s")
    with booted(system_dockerd, installed_image.tag, "lifecycle") as machine:
        machine.wait_until_active()
        units_are_ready_and_sandboxed(machine)
        seed_pair_is_configured_and_visible_to_pid1(machine)
        restarts_recreate_no_link(machine)
        a_restart_on_the_state_left_is_ready_before_any_batch(machine)
        remove_then_install_starts_both_again(machine, installed_image.deb_name)
        purge_leaves_only_what_the_docs_say(machine)
        install_after_purge_makes_new_keys_and_applies_etcd(machine, installed_image.deb_name)


def units_are_ready_and_sandboxed(machine: Machine) -> None:
    for unit in UNITS:
        shown = _show(machine, unit, "Type", "NRestarts", "ActiveState", "SubState")
        assert shown == {"Type": "notify", "NRestarts": "0", "ActiveState": "active",
                         "SubState": "running"}, (unit, shown)
    assert _show(machine, "netagent-setup.service", "ActiveState")["ActiveState"] == "active"
    helper_pid = _show(machine, UNITS[0], "MainPID")["MainPID"]
    own, pid1 = machine.sh(f"readlink /proc/{helper_pid}/ns/mnt /proc/1/ns/mnt").split()
    assert own != pid1, "the helper must run in a mount namespace of its own (its sandbox)"
    scores = {unit: exposure(machine, unit) for unit in (*UNITS, "netagent-setup.service")}
    print(f"systemd-analyze security (systemd 252, booted): {scores}")
    assert scores[UNITS[0]] <= HELPER_EXPOSURE_MAX
    assert scores[UNITS[1]] <= CONTROLLER_EXPOSURE_MAX


def seed_pair_is_configured_and_visible_to_pid1(machine: Machine) -> None:
    for name in SEED:
        machine.sh(f"netagent-ctl put {name} -", stdin=(FIXTURES / f"{name}.json").read_bytes())
    wait_configured(machine)
    # docker exec runs in PID 1's namespaces; nsenter makes "PID 1's mount namespace" explicit.
    listed = machine.sh("nsenter --target 1 --mount ip netns list").split()
    assert {"ns1", "ns2"} <= set(listed), listed
    peer = json.loads((FIXTURES / "veth2.json").read_text())["ip_addresses"][0].split("/")[0]
    machine.sh(f"nsenter --target 1 --mount ip netns exec ns1 ping -c 1 -W 5 {peer}")
    assert machine.sh(AUDIT_VERIFY).startswith("OK:")


def restarts_recreate_no_link(machine: Machine) -> None:
    before = ifindexes(machine)
    for unit in UNITS:
        machine.sh(f"systemctl restart {unit}")
        machine.wait_until_active()
        wait_configured(machine)
        assert ifindexes(machine) == before, f"restarting {unit} re-created a link"
    machine.sh(AUDIT_VERIFY)


def a_restart_on_the_state_left_is_ready_before_any_batch(machine: Machine) -> None:
    """docs/PERFORMANCE.md item 10 under the packaged sandbox: the controller records its
    converged state in /var/lib/netagent-controller (writable under ProtectSystem=strict only
    by ReadWritePaths=), and a restart on that state is ready (systemd's ActiveEnterTimestamp,
    taken when it receives READY=1) before the helper has finished any batch of it."""
    wait_until(lambda: machine.sh(f"test -s {CONVERGED} && echo yes", check=False) != "",
               timeout=30.0, interval=0.5, what=f"{CONVERGED} written",
               describe=machine.diagnostics)
    before = _audit(machine)
    old_epochs = {r.get("epoch") for r in before}  # the stopping controller's observe too

    def results() -> list[tuple[float, list[Any]]]:
        return batch_results([r for r in _audit(machine)[len(before):]
                              if r.get("epoch") not in old_epochs])

    machine.sh(f"systemctl restart {UNITS[1]}")
    ready_ms = _active_since_us(machine, UNITS[1]) // 1000
    wait_until(results, timeout=60.0, interval=0.5, what="the full resync after READY=1",
               describe=machine.diagnostics)
    journal = machine.sh("journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID="
                         + _show(machine, UNITS[1], "InvocationID")["InvocationID"])
    assert "converged as left" in journal, journal
    found = results()
    first_ms = round(found[0][0] * 1000)
    print(f"restart on the state left: READY=1 {first_ms - ready_ms} ms before the first "
          "batch's result")
    assert ready_ms <= first_ms, f"READY=1 at {ready_ms} ms, after {found}"
    assert [ops for _, ops in found if ops] == [], "the restart changed the kernel"


def remove_then_install_starts_both_again(machine: Machine, deb: str) -> None:
    key = machine.sh(f"cat {KEY}")
    machine.sh("apt-get remove -y -q netagent")
    states = machine.docker("exec", machine.name, "systemctl", "is-active", *UNITS,
                            check=False).stdout.split()
    assert states == ["inactive", "inactive"], states
    assert machine.sh(f"test -e {KEY} && test -e /var/log/netagent/audit.log && echo kept")
    _apt_install(machine, deb)
    machine.wait_until_active()
    assert machine.sh(f"cat {KEY}") == key, "a reinstall must keep the key"
    wait_configured(machine)


def purge_leaves_only_what_the_docs_say(machine: Machine) -> None:
    """docs/PACKAGING.md: the netagent user and group stay, and so does the kernel state
    (the pairs and their named namespaces under /run/netns); nothing else is left."""
    machine.sh("apt-get purge -y -q netagent")
    left = machine.sh(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /root \\) -prune -o "
        "-name '*netagent*' -print; find /run -name '*netagent*'; "
        "systemctl list-unit-files --no-legend 'netagent*'", check=False).split()
    assert left == [], left
    assert machine.sh("getent passwd netagent && getent group netagent").count("netagent") >= 2
    assert {"ns1", "ns2"} <= set(machine.sh("ip netns list").split())
    status = machine.sh("dpkg-query -W -f '${db:Status-Abbrev}' netagent", check=False)
    assert status.strip() in ("", "un", "pn"), status


def install_after_purge_makes_new_keys_and_applies_etcd(machine: Machine, deb: str) -> None:
    _apt_install(machine, deb)
    machine.wait_until_active()
    units_are_ready_and_sandboxed(machine)
    assert machine.sh(f"stat -c '%a %U:%G' {KEY} {TRUST}").split("\n")[:2] == [
        "600 netagent:netagent", "644 root:root"]
    wait_configured(machine)  # etcd still holds the seed; the new key is trusted
    machine.sh(AUDIT_VERIFY)


def test_a_root_cloned_before_its_first_boot_makes_its_own_keys(
        system_dockerd: DockerDaemon, installed_image: InstalledImage) -> None:
    listing = subprocess.run(["tar", "-tf", str(installed_image.tar)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert f".{KEY}" not in listing and f".{TRUST}" not in listing, "keys made at install"
    with booted(system_dockerd, installed_image.tag, "clone-a") as first, \
            booted(system_dockerd, installed_image.tag, "clone-b") as second:
        made = []
        for machine in (first, second):
            machine.wait_until_active()
            made.append((_key_id(machine), machine.sh(f"sha256sum {KEY}").split()[0],
                         machine.sh(f"grep -v '^#' {TRUST}")))
        for first_made, second_made in zip(*made, strict=True):
            assert first_made != second_made, f"two clones share {first_made}"


def test_share_host_refuses_a_sandboxed_mount_namespace(
        system_dockerd: DockerDaemon, installed_image: InstalledImage) -> None:
    """Why netagent-setup.service has no sandbox: in a unit with PrivateTmp=, systemd 252
    runs even an `ExecStartPre=+` step in the unit's mount namespace (the bug that kept the
    helper from starting), and share-host there would change nothing on the host."""
    with booted(system_dockerd, installed_image.tag, "probe") as machine:
        machine.wait_until_active()
        probe = ("[Service]\nType=oneshot\nPrivateTmp=yes\n"
                 "ExecStartPre=+/bin/sh -c 'readlink /proc/self/ns/mnt >/run/probe-plus'\n"
                 "ExecStart=/bin/true\n")
        machine.sh("cat >/run/systemd/system/netagent-probe.service", stdin=probe.encode())
        machine.sh("systemctl daemon-reload && systemctl start netagent-probe.service")
        assert machine.sh("cat /run/probe-plus") != machine.sh("readlink /proc/1/ns/mnt")
        refused = machine.docker(
            "exec", machine.name, "systemd-run", "--wait", "--quiet", "--unit",
            "netagent-refused", "-p", "PrivateTmp=yes", "/usr/lib/netagent/netns-propagation",
            "share-host", check=False)
        assert refused.returncode != 0
        journal = machine.sh("journalctl --no-pager -o cat -u netagent-refused")
        assert "mount namespace of its own" in journal, journal


# ---- helpers ---------------------------------------------------------------------------

def wait_configured(machine: Machine) -> None:
    def statuses() -> dict[str, str]:
        lines = machine.sh("netagent-ctl status", check=False).splitlines()
        return dict(line.split()[:2] for line in lines if len(line.split()) >= 2)

    wait_until(lambda: all(statuses().get(name) == "CONFIGURED" for name in SEED),
               timeout=60.0, interval=0.5, what="veth1 and veth2 CONFIGURED",
               describe=lambda: f"{statuses()}\n{machine.diagnostics()}")


def ifindexes(machine: Machine) -> dict[str, str]:
    """Each end's ifindex in its namespace (the kernel never reuses one soon)."""
    return {name: machine.sh(f"ip -n {ns} -o link show {name}").split(":")[0]
            for name, ns in SEED.items()}


def _apt_install(machine: Machine, deb: str) -> None:
    started = time.monotonic()
    machine.sh(f"cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./{deb}")
    print(f"apt-get install ./{deb} under systemd: {time.monotonic() - started:.1f} s")


def _show(machine: Machine, unit: str, *properties: str) -> dict[str, str]:
    text = machine.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties))
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _active_since_us(machine: Machine, unit: str) -> int:
    """ActiveEnterTimestamp in microseconds (systemctl show prints whole seconds)."""
    path = "/org/freedesktop/systemd1/unit/" + "".join(
        c if c.isalnum() else f"_{ord(c):02x}" for c in unit)
    kind, value = machine.sh("busctl get-property org.freedesktop.systemd1 "
                             f"{path} org.freedesktop.systemd1.Unit ActiveEnterTimestamp").split()
    assert kind == "t", value
    return int(value)


def _audit(machine: Machine) -> list[dict[str, Any]]:
    return records_in(machine.sh("cat /var/log/netagent/audit.log"))


def _key_id(machine: Machine) -> str:
    found = re.search(r"key id ([0-9a-f]+)",
                      machine.sh("journalctl --no-pager -o cat -u netagent-controller"))
    assert found is not None, machine.diagnostics()
    return found.group(1)

