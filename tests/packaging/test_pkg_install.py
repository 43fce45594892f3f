"""The .deb on this machine: install, check, run the seed's VETH example through the
installed units, reinstall (upgrade path), remove, purge. And the .rpm's metadata.

Installs a real package, so it refuses to run where netagent is already installed.
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pkg_install as pk
import pytest
from pkg_common import REPO, Packages

from tests.harness import EtcdKV, EtcdServer, new_label, wait_until

pytestmark = pytest.mark.root
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture
def fresh_machine(packages: Packages) -> Iterator[Path]:
    if pk.installed():
        pytest.fail("netagent is already installed here; this test installs and purges it")
    try:
        yield packages.deb
    finally:
        if pk.installed() or "netagent" in pk.sh(["dpkg", "-l", "netagent"], check=False).stdout:
            pk.sh(["apt-get", "-y", "purge", "netagent"], check=False)


def test_deb_lifecycle(fresh_machine: Path, tmp_path: Path) -> None:
    pk.apt("install", str(fresh_machine))
    check_installed_files()
    seed_applies_through_the_units(tmp_path)
    reinstall_keeps_keys_config_and_audit_log(fresh_machine)
    remove_keeps_configuration()
    purge_removes_everything_but_the_user()


def check_installed_files() -> None:
    assert pk.wrong_modes() == {}
    user = pwd.getpwnam("netagent")
    assert user.pw_uid < 1000 and user.pw_shell.endswith("nologin")
    conffiles = pk.sh(["dpkg-query", "-W", "-f=${Conffiles}", "netagent"]).stdout
    assert str(pk.CONFIG) in conffiles
    assert pk.leftovers(pk.ENABLED_LINKS) == list(pk.ENABLED_LINKS)
    for tool in ("/usr/sbin/netlinkd", "/usr/sbin/netagent-controller", "/usr/bin/netagent-ctl"):
        assert pk.sh([tool, "--help"]).stdout.startswith("usage:"), tool
    assert pk.leftovers([str(pk.KEY), str(pk.TRUST)]) == [], "keys are made at first start"


def seed_applies_through_the_units(tmp_path: Path) -> None:
    etcd = EtcdServer().start()
    label = new_label()
    running = None
    try:
        pk.configure(etcd.endpoint, label)
        running = pk.start_helper(tmp_path / "netlinkd.log")
        assert pk.wrong_modes(pk.EXPECTED_KEY_MODES) == {}
        trusted = pk.TRUST.read_text().splitlines()
        assert any(line.startswith("ed25519 ") for line in trusted), trusted
        pk.start_controller(running, tmp_path / "controller.log")
        ctl = ["/usr/bin/netagent-ctl", "--etcd", etcd.endpoint, "--label", label]
        for name in ("veth1", "veth2"):
            pk.sh([*ctl, "put", name, str(FIXTURES / f"{name}.json")])
        kv = EtcdKV(etcd, label)

        def logs() -> str:
            return _logs(tmp_path)

        wait_until(lambda: kv.state("veth1") == kv.state("veth2") == "CONFIGURED",
                   timeout=60, what="veth1 and veth2 CONFIGURED", describe=logs)
        world = running.world
        check_daemon_confinement(running)
        assert pk.world_has_link(world, "ns1", "veth1"), logs()
        assert pk.world_has_link(world, "ns2", "veth2"), logs()
        assert "ns1" not in pk.host_netns()
        pk.sh(["/usr/sbin/netlinkd", "audit", "verify", "--audit-log", str(pk.AUDIT_LOG),
               "--trust-key", str(pk.TRUST)])
        pk.sh([*ctl, "del", "veth1"])
        wait_until(lambda: not pk.world_has_link(world, "ns2", "veth2"), timeout=60,
                   what="the pair to be removed after del veth1", describe=logs)
    finally:
        if running is not None:
            running.stop()
        etcd.stop()


def check_daemon_confinement(running: pk.RunningUnits) -> None:
    """Both daemons run filtered (seccomp mode 2) with no_new_privs; caps as designed."""
    assert running.controller is not None
    helper = pk.daemon_status(running.helper, "netlinkd.cli")
    controller = pk.daemon_status(running.controller, "controller.cli")
    for status in (helper, controller):
        assert (status["Seccomp"], status["NoNewPrivs"]) == ("2", "1"), status
    helper_caps = int(helper["CapBnd"], 16)
    assert helper_caps & ~pk.HELPER_RUNTIME_CAPS == 0 and helper_caps != 0, helper
    assert int(controller["CapBnd"], 16) == int(controller["CapEff"], 16) == 0, controller
    assert controller["Uid"].split()[0] == str(pwd.getpwnam("netagent").pw_uid), controller


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"== {log.name}\n{log.read_text(errors='replace')[-4000:]}"
                     for log in sorted(tmp_path.glob("*.log")))


def reinstall_keeps_keys_config_and_audit_log(deb: Path) -> None:
    kept = {path: pk.digest(path) for path in (pk.KEY, pk.TRUST, pk.CONFIG, pk.AUDIT_LOG)}
    pk.apt("install", "--reinstall", str(deb))
    assert {path: pk.digest(path) for path in kept} == kept
    assert pk.wrong_modes() == {}


def remove_keeps_configuration() -> None:
    pk.apt("remove", "netagent")
    assert pk.leftovers(pk.PROGRAM_PATHS) == []
    assert pk.leftovers(pk.ENABLED_LINKS) == []
    for path in (pk.CONFIG, pk.KEY, pk.TRUST, pk.AUDIT_LOG):
        assert path.exists(), f"{path} must survive 'apt-get remove'"


def purge_removes_everything_but_the_user() -> None:
    pk.apt("purge", "netagent")
    assert pk.leftovers(pk.STATE_PATHS) == []
    assert "netagent" not in pk.sh(["dpkg", "-l"]).stdout.split()
    pwd.getpwnam("netagent")  # left on purpose: see docs/PACKAGING.md


def test_rpm_contents_and_scriptlets(packages: Packages) -> None:
    def query(*args: str) -> str:
        return subprocess.run(["rpm", "-qp", *args, str(packages.rpm)], capture_output=True,
                              text=True, check=True).stdout

    files = query("-l").splitlines()
    for path in ("/usr/sbin/netlinkd", "/usr/sbin/netagent-controller", "/usr/bin/netagent-ctl",
                 "/opt/netagent/venv/bin/python3", "/usr/lib/netagent/netns-propagation",
                 "/usr/lib/systemd/system/netagent-netlinkd.service",
                 "/usr/lib/sysusers.d/netagent.conf", "/usr/lib/tmpfiles.d/netagent.conf",
                 "/usr/share/selinux/packages/netagent.pp", "/usr/share/man/man8/netlinkd.8.gz",
                 "/usr/share/doc/netagent/copyright"):
        assert path in files, path
    flags = query("--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]")
    assert f"{pk.CONFIG} cn" in flags.splitlines()
    scripts = query("--scripts")
    assert "postinstall scriptlet" in scripts and "/usr/lib/netagent/setup-system" in scripts
    # The effects of %systemd_post, %systemd_preun and %systemd_postun_with_restart.
    assert "systemctl --no-reload preset netagent-netlinkd.service" in scripts
    assert "systemctl --no-reload disable --now netagent-controller.service" in scripts
    assert "systemctl try-restart netagent-netlinkd.service netagent-controller.service" in scripts
    assert "semodule -r netagent" in scripts
    requires = query("-R").split()
    assert {"python3.11", "libstdc++.so.6()(64bit)", "libc.so.6()(64bit)",
            "libgcc_s.so.1()(64bit)"} <= set(requires), requires
    owned = query("--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]").splitlines()
    for directory in ("/opt/netagent", "/usr/lib/netagent", "/usr/share/doc/netagent"):
        assert f"drwxr-xr-x {directory}" in owned, directory
    assert "/usr/share/licenses/netagent/LICENSE" in files
    assert "etcd" in query("--suggests").split()


def test_deb_scriptlets_stop_the_services_on_remove(packages: Packages) -> None:
    """systemd is not PID 1 here, so stopping is checked in the scripts, not observed."""
    def script(name: str) -> str:
        return pk.sh(["dpkg-deb", "-I", str(packages.deb), name]).stdout

    assert "remove|deconfigure) /usr/lib/netagent/stop-services" in script("prerm")
    postinst = script("postinst")
    assert "/usr/lib/netagent/setup-system" in postinst and "--no-block restart" in postinst
    stop = (REPO / "packaging" / "lib" / "stop-services").read_text()
    assert "systemctl stop $units" in stop and "systemctl disable $units" in stop
