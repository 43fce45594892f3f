"""`bench/executor_create.py` at a tiny size: the executor alone creates pairs and the
benchmark reports its CPU, its netlink requests per pair and `ip -batch`'s CPU. No timing
is asserted; the request count is: per pair with two addresses per end, two pre-check
look-ups, the create, two look-ups of the new ends, four addresses and two stamps."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.root


def test_reports_cpu_and_requests_per_pair() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "executor_create.py"),
                             "--pairs", "3", "--rounds", "1"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"executor ([\d.]+) s CPU .* ([\d.]+) requests per pair .* ip -batch "
                      r"([\d.]+) s CPU", result.stdout)
    assert found, result.stdout
    assert float(found[2]) == 11.0, result.stdout
