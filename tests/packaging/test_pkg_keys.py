"""packaging/lib/ensure-keys (netagent-setup.service, on the first start): creates
the key pair once with the modes the daemons demand, never replaces a key or a trust file."""

from __future__ import annotations

import base64
import os
import pwd
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from pkg_common import PACKAGING, REPO

pytestmark = pytest.mark.root
ENSURE_KEYS = PACKAGING / "lib" / "ensure-keys"
OWNER = "daemon"  # a system user with a group of the same name, standing in for netagent
OTHER_KEY = "ed25519 " + base64.b64encode(bytes(32)).decode() + " operator's older key"


def ensure_keys(etc: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NETAGENT_ETC": str(etc),
           "NETAGENT_CTL": str(REPO / ".venv" / "bin" / "netagent-ctl"), "NETAGENT_USER": OWNER}
    subprocess.run([str(ENSURE_KEYS)], env=env, check=True, capture_output=True)


def mode_of(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def public_line_of(key_path: Path) -> str:
    key = load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519 " + base64.b64encode(raw).decode()


def test_first_run_creates_the_pair_with_the_daemons_modes(tmp_path: Path) -> None:
    etc = tmp_path / "netagent"
    ensure_keys(etc)
    user = pwd.getpwnam(OWNER)
    owner = (user.pw_uid, user.pw_gid)
    assert mode_of(etc) == (0o755, 0, 0)
    assert mode_of(etc / "controller.key") == (0o600, *owner)
    assert mode_of(etc / "trust.keys") == (0o644, 0, 0)
    trusted = (etc / "trust.keys").read_text()
    assert public_line_of(etc / "controller.key") in trusted


def test_later_runs_keep_the_key_and_restore_modes(tmp_path: Path) -> None:
    etc = tmp_path / "netagent"
    ensure_keys(etc)
    key, trust = (etc / "controller.key").read_bytes(), (etc / "trust.keys").read_bytes()
    (etc / "controller.key").chmod(0o644)
    (etc / "trust.keys").chmod(0o666)
    ensure_keys(etc)
    assert (etc / "controller.key").read_bytes() == key
    assert (etc / "trust.keys").read_bytes() == trust
    assert mode_of(etc / "controller.key")[0] == 0o600
    assert mode_of(etc / "trust.keys")[0] == 0o644


def test_new_key_is_appended_to_an_existing_trust_file(tmp_path: Path) -> None:
    etc = tmp_path / "netagent"
    etc.mkdir()
    (etc / "trust.keys").write_text(OTHER_KEY + "\n")
    ensure_keys(etc)
    lines = (etc / "trust.keys").read_text().splitlines()
    assert lines[0] == OTHER_KEY
    assert any(line.startswith(public_line_of(etc / "controller.key")) for line in lines[1:])
