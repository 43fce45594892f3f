"""Fixtures shared by every test directory. The building blocks are in `tests/harness/`."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

# Test modules import the harness as `tests.harness`; `pytest` alone does not put the
# repository root on sys.path (only `python -m pytest` does).
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.harness import (  # noqa: E402
    ControllerProcess,
    EtcdKV,
    EtcdServer,
    HelperSandbox,
    KeyPair,
    StartController,
    host_differences,
    host_snapshot,
    make_keys,
    new_label,
)

_LOGS = pytest.StashKey[list[tuple[str, Path]]]()


def attach_log(request: pytest.FixtureRequest, title: str, path: Path) -> None:
    """Show the file `path` in the report when the requesting test fails."""
    request.node.stash.setdefault(_LOGS, []).append((title, path))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.failed or report.when == "teardown":
        return report
    for title, path in item.stash.get(_LOGS, []):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        report.sections.append((f"{title} ({path})", text[-20000:]))
    return report


@pytest.fixture(scope="session", autouse=True)
def host_unchanged() -> Iterator[None]:
    """After the whole session the host's links and `ip netns list` are as they were."""
    before = host_snapshot()
    yield
    problems = host_differences(before, host_snapshot())
    assert not problems, "tests changed the host:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def label() -> str:
    return new_label()


@pytest.fixture
def kv(etcd: EtcdServer, label: str) -> EtcdKV:
    return EtcdKV(etcd, label)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private dir the unprivileged controller can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="netagent-test-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def keys(workdir: Path) -> KeyPair:
    return make_keys(workdir)


NETNS_DIRS = ("/var/run/netns", "/run/netns")


def netns_files_policy(workdir: Path) -> Path:
    """A helper policy allowing named namespaces and the sandbox's `nsfiles` directory."""
    path = workdir / "policy.toml"
    dirs = ", ".join(f'"{d}"' for d in (*NETNS_DIRS, str(workdir / "nsfiles")))
    path.write_text(f"netns_dirs = [{dirs}]\n")
    return path


@pytest.fixture
def helper(request: pytest.FixtureRequest, workdir: Path, keys: KeyPair) -> Iterator[HelperSandbox]:
    policy = netns_files_policy(workdir)
    if request.node.get_closest_marker("pid_refs"):  # PID references are off by default
        policy.write_text(policy.read_text() + "allow_pid_refs = true\n")
    sandbox = HelperSandbox(workdir, keys.trust_key, policy_file=policy)
    attach_log(request, "netlinkd log", sandbox.log_path)
    try:
        sandbox.start()
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def start_controller(
    request: pytest.FixtureRequest,
    etcd: EtcdServer,
    label: str,
    helper: HelperSandbox,
    keys: KeyPair,
    workdir: Path,
) -> Iterator[StartController]:
    """Factory: `start_controller("--resync-interval", "1")` starts a controller."""
    started: list[ControllerProcess] = []

    def start(*extra_args: str) -> ControllerProcess:
        process = ControllerProcess(
            workdir, etcd=etcd.endpoint, label=label, socket=helper.socket,
            signing_key=keys.signing_key, extra_args=extra_args,
        )
        if not started:
            attach_log(request, "controller log", process.log_path)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def controller(start_controller: StartController) -> ControllerProcess:
    return start_controller()
