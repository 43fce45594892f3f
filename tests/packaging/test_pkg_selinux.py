"""The SELinux policy module builds with the distribution's policy development files.

SELinux is disabled on this kernel: loading (semodule -i), labelling (restorecon) and
enforcing are NOT exercised here; see docs/PACKAGING.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from pkg_common import REPO

SOURCES = ("netagent.te", "netagent.fc", "netagent.if", "Makefile")
DEVEL = Path("/usr/share/selinux/devel/Makefile")


def _build(directory: Path) -> subprocess.CompletedProcess[str]:
    assert DEVEL.exists(), f"{DEVEL} missing: install the Debian package selinux-policy-dev"
    return subprocess.run(["make", "-f", str(DEVEL), "netagent.pp"], cwd=directory,
                          capture_output=True, text=True, check=False)


def _copy_sources(tmp_path: Path) -> Path:
    for name in SOURCES:
        shutil.copy2(REPO / "selinux" / name, tmp_path / name)
    return tmp_path


def test_module_builds(tmp_path: Path) -> None:
    result = _build(_copy_sources(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "netagent.pp").stat().st_size > 0


def test_a_broken_policy_does_not_build(tmp_path: Path) -> None:
    directory = _copy_sources(tmp_path)
    te = directory / "netagent.te"
    te.write_text(te.read_text() + "\nallow netagent_netlinkd_t no_such_type_t:file read;\n")
    assert _build(directory).returncode != 0


def test_audit_log_is_append_only_for_the_helper() -> None:
    te = (REPO / "selinux" / "netagent.te").read_text()
    rule = r"^allow netagent_netlinkd_t netagent_audit_log_t:file \{([^}]*)\}"
    rules = re.findall(rule, te, re.M)
    assert rules, "no file rule for the audit log"
    granted = set(" ".join(rules).split())
    assert "append" in granted
    assert not granted & {"write", "setattr", "unlink", "rename", "rw_file_perms"}
    assert re.search(r"^neverallow netagent_netlinkd_t netagent_audit_log_t:file \{[^}]*write",
                     te, re.M)


def test_file_contexts_cover_the_packaged_paths() -> None:
    fc = (REPO / "selinux" / "netagent.fc").read_text()
    for path in ("/usr/sbin/netlinkd", "/usr/sbin/netagent-controller", "/etc/netagent",
                 "/run/netagent", "/var/log/netagent", "/var/lib/netagent"):
        assert re.search(rf"^{re.escape(path)}", fc, re.M), path
