"""`bench/run --smoke`: the whole performance suite at tiny sizes runs end to end and
reports every figure. No timing is asserted; the numbers only have to exist."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.root

EXPECTED = (
    "latency p50", "latency p99", "create 5 pairs", "delete 5 pairs", "create 10 pairs",
    "delete 10 pairs", "controller restart, 10 pairs converged: resync",
    "helper restart noticed after (from its launch)", "helper restart resync, 10 pairs",
    "helper RSS with 10 pairs", "helper RSS idle", "controller RSS with 40 interfaces",
)


def test_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run([str(REPO / "bench" / "run"), "--smoke", "--json", str(out)],
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {row["measurement"]: row for row in json.loads(out.read_text())["rows"]}
    for name in EXPECTED:
        assert name in rows, f"{name} missing from {sorted(rows)}"
        assert rows[name]["netagent"] > 0, rows[name]
        assert f"{name}:" in result.stdout
    restart = rows["  kernel-changing batches / etcd writes"]
    assert restart["netagent"] == 0, "a converged controller's restart changed something"
