"""CI run of the executor's live fuzz (tests/fuzz/fuzz_executor_live.py) at a small count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "fuzz_executor_live.py"
COUNT = int(os.environ.get("FUZZ_LIVE_BATCHES", "60"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_random_signed_batches_leave_the_kernel_as_the_helper_reported() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", str(COUNT), "--seed", "11"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["batches"] == COUNT
    assert figures["applied"] > 0 and figures["vanished"] > 0, figures
