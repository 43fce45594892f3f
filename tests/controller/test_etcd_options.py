"""etcd client options: flags, then ETCDCTL_* variables, then the [etcd] table; checked at parse."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from controller import etcd_options
from controller.etcd_options import Endpoint, EtcdOptionError

REPO = Path(__file__).resolve().parents[2]


def _resolve(*argv: str, env: dict[str, str] | None = None,
             table: dict[str, object] | None = None) -> etcd_options.EtcdOptions:
    parser = argparse.ArgumentParser()
    etcd_options.add_arguments(parser)
    return etcd_options.resolve(parser.parse_args(list(argv)), table or {}, env or {})


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "file.pem"
    path.write_text("not checked here, only readable\n")
    return path


def test_endpoint_forms_and_the_etcd_alias() -> None:
    options = _resolve("--etcd", "a:1, http://b:2,[::1]:3")
    assert options.endpoints == (Endpoint("a", 1, False), Endpoint("b", 2, False),
                                 Endpoint("[::1]", 3, False))
    assert options.describe() == "http://a:1,http://b:2,http://[::1]:3"
    assert _resolve("--endpoints", "https://c:4/").endpoints == (Endpoint("c", 4, True),)
    assert _resolve().describe() == "http://127.0.0.1:2379"


@pytest.mark.parametrize(("value", "message"), [
    ("localhost", "'localhost' must be HOST:PORT"),
    ("a:1,,b:2", "empty endpoint"),
    ("a:99999", "'a:99999' must be HOST:PORT"),
    ("ftp://a:1", "'ftp://a:1' must be HOST:PORT"),
    ("http://a:1,https://b:2", "mixes http:// and https://"),
    ("a:1,a:1", "listed twice"),
    ("a b:1", "'a b:1' must be"),
])
def test_bad_endpoints_name_the_option(value: str, message: str) -> None:
    with pytest.raises(EtcdOptionError, match=f"^--endpoints: .*{message}"):
        _resolve("--endpoints", value)


def test_flags_win_over_environment_over_file(pem: Path) -> None:
    env = {"ETCDCTL_ENDPOINTS": "env:1", "ETCDCTL_CACERT": str(pem)}
    table: dict[str, object] = {"endpoints": ["file:1", "file:2"], "user": "u:p"}
    assert _resolve(env=env, table=table).describe() == "https://env:1"
    assert _resolve("--endpoints", "flag:1", env=env, table=table).describe() == "https://flag:1"
    from_file = _resolve(table=table)
    assert from_file.describe() == "http://file:1,http://file:2"
    assert (from_file.user, from_file.password) == ("u", "p")


def test_tls_files(pem: Path, tmp_path: Path) -> None:
    options = _resolve("--cacert", str(pem), "--cert", str(pem), "--key", str(pem),
                       "--endpoints", "a:1,https://b:2")
    assert options.tls and options.cacert == str(pem)
    with pytest.raises(EtcdOptionError, match=r"^--cert: a client certificate needs both"):
        _resolve("--cert", str(pem))
    with pytest.raises(EtcdOptionError, match=r"^ETCDCTL_KEY: cannot read .*missing"):
        _resolve(env={"ETCDCTL_KEY": str(tmp_path / "missing")})
    with pytest.raises(EtcdOptionError, match="is plaintext but --cacert or --cert is given"):
        _resolve("--cacert", str(pem), "--endpoints", "http://a:1")


def test_user_and_passwords(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\nignored\n")
    options = _resolve("--user", "agent-a", "--password-file", str(secret))
    assert (options.user, options.password) == ("agent-a", "s3cret")
    assert "s3cret" not in repr(options)
    assert _resolve("--user", "a:b:c").password == "b:c"
    assert _resolve(env={"ETCDCTL_USER": "a", "ETCDCTL_PASSWORD": "pw"}).password == "pw"
    with pytest.raises(EtcdOptionError, match=r"^--user: user 'a' has no password"):
        _resolve("--user", "a")
    with pytest.raises(EtcdOptionError, match=r"^--password-file: a password needs --user"):
        _resolve("--password-file", str(secret))
    with pytest.raises(EtcdOptionError, match="gives a password and so does --password-file"):
        _resolve("--user", "a:b", "--password-file", str(secret))
    with pytest.raises(EtcdOptionError, match=r"^--user: the password is empty"):
        _resolve("--user", "a:")


def test_file_table_errors() -> None:
    with pytest.raises(EtcdOptionError, match=r"unknown \[etcd\] keys \['endpoint'\]"):
        _resolve(table={"endpoint": "a:1"})
    with pytest.raises(EtcdOptionError, match=r"config file \[etcd\] cacert: expected a non-"):
        _resolve(table={"cacert": 3})


def test_suppressed_defaults_keep_an_earlier_value() -> None:
    parser = argparse.ArgumentParser()
    etcd_options.add_arguments(parser)
    sub = parser.add_subparsers(dest="command").add_parser("list")
    etcd_options.add_arguments(sub, suppress_defaults=True)
    args = parser.parse_args(["--endpoints", "a:1", "list"])
    assert etcd_options.resolve(args, {}, {}).describe() == "http://a:1"
    args = parser.parse_args(["list", "--endpoints", "b:2"])
    assert etcd_options.resolve(args, {}, {}).describe() == "http://b:2"


@pytest.mark.parametrize("command", [
    ["controller.cli", "run", "--config", "/dev/null"],
    ["controller.ctl", "--config", "/dev/null", "--label", "x"],
])
def test_bad_value_is_one_line_exit_2(command: list[str]) -> None:
    """`--etcd localhost` was a traceback after the signing key loaded (issue 14)."""
    argv = [sys.executable, "-m", *command, "--etcd", "localhost"]
    if command[0] == "controller.ctl":
        argv.append("list")
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"netagent-{command[0].split('.')[1].replace('cli', 'controller')}: --endpoints: "
        "'localhost' must be HOST:PORT or http(s)://HOST:PORT, e.g. 127.0.0.1:2379"]
