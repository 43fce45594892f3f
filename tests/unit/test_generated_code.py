"""netagent_api/ must be exactly what scripts/gen-proto produces from proto/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "netagent_api"


def _generated_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi")))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen-proto")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), str(out)], check=True, env=env, timeout=120
    )
    return out / "netagent_api"


def test_the_same_files_are_generated(generated: Path) -> None:
    assert _generated_files(generated) == _generated_files(CHECKED_IN)
    assert _generated_files(CHECKED_IN), "no generated code is checked in"


def test_generated_code_is_byte_identical(generated: Path) -> None:
    stale = [
        name
        for name in _generated_files(generated)
        if (generated / name).read_bytes() != (CHECKED_IN / name).read_bytes()
    ]
    assert stale == [], f"run scripts/gen-proto and commit: {stale} differ"
