"""What the controller imports before its first batch (a restart's resync waits for it),
and before a restart's READY=1.

The Docker SDK (with requests and urllib3), `importlib.metadata` (email, zipfile, csv...)
and `http.server` are not needed to start reconciling: the SDK is imported on the Docker
watcher's thread, the version is a constant, the metrics server only with
--metrics-address. Batches are signed through libsodium: `cryptography` (its library is
7.4 MiB of RSS) reads only key files of uncommon forms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import controller

REPO = Path(__file__).resolve().parents[2]
NOT_BEFORE_THE_FIRST_BATCH = ("docker", "requests", "urllib3", "importlib.metadata",
                              "http.server", "prometheus_client", "cryptography")

# `cli.run` as the controller runs it, stopped where its agent loop would begin. The
# Docker watcher's thread does nothing here: what it imports is its own business.
_PROBE = """
import gc, json, sys
from controller import agent, cli, docker_watch

def stop_here(self):
    print(json.dumps(sorted(sys.modules)), flush=True)
    print(json.dumps(gc.isenabled()), flush=True)

agent.Agent.run = stop_here
docker_watch.MicroserviceWatcher._run = lambda self: None
sys.exit(cli.main(sys.argv[1:]))
"""


def _signing_key(directory: Path) -> Path:
    path = directory / "signing.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _run_probe(tmp_path: Path, probe: str,
               drop_env: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """`controller run` with an empty config, under `probe`, against nothing reachable."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    return subprocess.run(
        [sys.executable, "-c", probe, "run", "--config", str(config),
         "--etcd", "127.0.0.1:9", "--socket", str(tmp_path / "none.sock"),
         "--signing-key", str(_signing_key(tmp_path)), "--docker", "unix:///nonexistent.sock"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith(drop_env)})


def test_the_controller_starts_without_docker_sdk_metadata_or_http_server(
        tmp_path: Path) -> None:
    done = _run_probe(tmp_path, _PROBE, drop_env=("DOCKER_",))
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.splitlines()[0]))
    assert "controller.docker_watch" in loaded  # the watcher was made
    early = sorted(m for m in loaded if m in NOT_BEFORE_THE_FIRST_BATCH
                   or m.split(".")[0] in NOT_BEFORE_THE_FIRST_BATCH)
    assert early == []
    assert json.loads(done.stdout.splitlines()[1]) is True  # the collector is on again


# `cli.run` stopped where it waits for a restart's decision (`Resume.wait_decided`: READY=1
# told, or the recorded state found changed; at once without a record).
_DECISION_PROBE = """
import gc, json, sys, threading
from controller.lean_imports import import_lean
import_lean()  # what cli.run does first; `resume` imported here would come before it
from controller import cli, resume

def decided(self, timeout):
    print(json.dumps({"modules": sorted(sys.modules), "gc": gc.isenabled(),
                      "threads": sorted(t.name for t in threading.enumerate())}), flush=True)
    raise SystemExit(0)

resume.Resume.wait_decided = decided
sys.exit(cli.main(sys.argv[1:]))
"""
NOT_BEFORE_READY = ("controller.agent", "controller.reconcile", "controller.model",
                    "controller.namespaces", "controller.live_status", "controller.liveness",
                    "google.protobuf.json_format")
NOT_USED_BY_THE_CONTROLLER = ("asyncio", "ssl", "grpc.aio", "uuid", "google.protobuf.text_format")
"""gRPC's and etcd3's imports the controller does not use (`controller.lean_imports`)."""


def test_a_restart_decides_ready_before_importing_the_agent(tmp_path: Path) -> None:
    """READY=1 of a restart on a recorded state waits for etcd's listing, the helper's
    first link event and the status keys: their watchers run before the agent's modules,
    the liveness key and Docker are imported."""
    done = _run_probe(tmp_path, _DECISION_PROBE, drop_env=("DOCKER_", "PYTHON"))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[0])
    assert {"etcd-watch", "helper-events"} <= set(found["threads"])
    assert found["gc"] is False  # start-up's objects live on: collecting them is wasted
    assert sorted(set(found["modules"]) & set(NOT_BEFORE_READY)) == []
    assert sorted(set(found["modules"]) & set(NOT_USED_BY_THE_CONTROLLER)) == []
    assert sorted(m for m in found["modules"]
                  if m.split(".")[0] in NOT_BEFORE_THE_FIRST_BATCH) == []


def test_the_version_is_the_packages() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert controller.__version__ == project["version"]
