"""netagent-controller option merging: defaults < [controller] table < flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller import cli
from controller.config_file import ConfigFileError, load_section

REPO = Path(__file__).resolve().parents[2]


def _options(*argv: str) -> cli.RunOptions:
    return cli.resolve_options(cli.build_parser().parse_args(["run", *argv]))


def test_file_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "netagent.toml"
    config.write_text('[controller]\netcd = "10.0.0.1:2379"\nlabel = "from-file"\n'
                      'resync_interval = 5\nno_docker = true\n'
                      '[netlinkd]\nsocket = "/x"\n')
    options = _options("--config", str(config), "--label", "from-flag")
    assert options.etcd.describe() == "http://10.0.0.1:2379"
    assert options.label == "from-flag"
    assert options.resync_interval == 5.0
    assert not options.use_docker and cli.docker_url(options) is None


def test_defaults_and_explicit_docker(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    options = _options("--config", str(empty), "--docker", "unix:///tmp/d.sock")
    assert options.etcd.describe() == "http://127.0.0.1:2379"
    assert options.resync_interval == 30.0
    assert cli.docker_url(options) == "unix:///tmp/d.sock"


def test_unknown_key_and_bad_values(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[controller]\nsignin_key = "/k"\n')
    with pytest.raises(cli.UsageError, match="signin_key"):
        _options("--config", str(config))
    assert cli.main(["run", "--label", "a/b", "--config", str(tmp_path / "missing.toml")]) == 2


def test_resync_interval_must_be_positive(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(cli.UsageError, match="resync-interval"):
        _options("--config", str(empty), "--resync-interval", "0")


def test_load_section_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        load_section(str(tmp_path / "missing.toml"), "controller")
    broken = tmp_path / "broken.toml"
    broken.write_text("[controller\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_section(str(broken), "controller")


def test_docker_flag_overrides_no_docker_in_file(tmp_path: Path) -> None:
    config = tmp_path / "netagent.toml"
    config.write_text("[controller]\nno_docker = true\n")
    options = _options("--config", str(config), "--docker", "unix:///tmp/d.sock")
    assert options.use_docker
    assert cli.docker_url(options) == "unix:///tmp/d.sock"


_DEFAULTS_PROBE = """
from controller import cli, ctl
run = cli.resolve_options(cli.build_parser().parse_args(["run", "--config", "/dev/null"]))
args = ctl.build_parser().parse_args(["--config", "/dev/null", "list"])
print(run.etcd.describe(), run.label, ctl.etcd_settings(args).describe(), args.label)
"""


@pytest.mark.parametrize(
    ("environment", "label"),
    [({}, "vpp1"), ({"MICROSERVICE_LABEL": ""}, "vpp1"), ({"MICROSERVICE_LABEL": "web7"}, "web7")],
)
def test_etcd_and_label_defaults_of_both_commands(environment: dict[str, str], label: str) -> None:
    """The defaults are read when the modules load, so each case gets its own interpreter."""
    env = {"PATH": os.environ["PATH"], **environment}
    shown = subprocess.run([sys.executable, "-c", _DEFAULTS_PROBE], env=env, cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["http://127.0.0.1:2379", label, "http://127.0.0.1:2379", label]


def test_log_level_any_case_and_typed_no_docker(tmp_path: Path) -> None:
    config = tmp_path / "netagent.toml"
    config.write_text('[controller]\nlog_level = "debug"\n')
    options = _options("--config", str(config))
    assert options.log_level == "DEBUG"
    config.write_text('[controller]\nlog_level = "loud"\n')
    with pytest.raises(cli.UsageError, match="log-level: 'loud' is not one of DEBUG, INFO"):
        _options("--config", str(config))
    config.write_text('[controller]\nno_docker = "false"\n')
    with pytest.raises(cli.UsageError, match="no-docker: expected true or false"):
        _options("--config", str(config))
    config.write_text('[controller]\nno_docker = true\ndocker = "unix:///d.sock"\n')
    with pytest.raises(cli.UsageError, match="sets both docker and no_docker = true"):
        _options("--config", str(config))
    config.write_text("")
    assert _options("--config", str(config), "--log-level", "warning").log_level == "WARNING"


def test_docker_host_from_the_environment(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    options = _options("--config", str(empty))
    assert cli.docker_url(options, {"DOCKER_HOST": "tcp://10.0.0.9:2375"}) == "tcp://10.0.0.9:2375"
    flagged = _options("--config", str(empty), "--docker", "unix:///tmp/d.sock")
    assert cli.docker_url(flagged, {"DOCKER_HOST": "tcp://x:1"}) == "unix:///tmp/d.sock"
    off = _options("--config", str(empty), "--no-docker")
    assert cli.docker_url(off, {"DOCKER_HOST": "tcp://x:1"}) is None


def test_docker_tls_from_the_environment(tmp_path: Path) -> None:
    from controller.docker_watch import tls_from_env

    assert tls_from_env({"DOCKER_HOST": "tcp://x:2376"}) is None
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-")
    tls = tls_from_env({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert tls.verify is True and tls.ca_cert == str(tmp_path / "ca.pem")
    assert tls.cert == (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    with pytest.raises(ValueError, match="DOCKER_CERT_PATH"):
        tls_from_env({"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path / "none")})


def test_versions() -> None:
    for module in ("controller.cli", "controller.ctl", "netlinkd.cli"):
        done = subprocess.run(
            [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())",
             "--version"], capture_output=True, text=True, check=False, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[1][0].isdigit(), done.stdout


def test_liveness_ttl_and_metrics_address(tmp_path: Path) -> None:
    config = tmp_path / "netagent.toml"
    config.write_text("[controller]\nliveness_ttl = 30\nmetrics_address = \"127.0.0.1:9435\"\n")
    options = _options("--config", str(config))
    assert (options.liveness_ttl, options.metrics_address) == (30, ("127.0.0.1", 9435))
    assert _options("--config", str(config), "--liveness-ttl", "5").liveness_ttl == 5
    with pytest.raises(cli.UsageError, match="liveness-ttl: expected whole seconds"):
        _options("--config", str(config), "--liveness-ttl", "1")
    with pytest.raises(ValueError, match=r"--metrics-address: '0\.0\.0\.0' is not a loopback"):
        _options("--config", str(config), "--metrics-address", "0.0.0.0:1")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert _options("--config", str(empty)).metrics_address is None
