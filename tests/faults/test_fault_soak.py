"""The soak (bench/soak.py) in short: 50 pairs, 1,000 changes per second for 10 s.

Asserts only convergence: afterwards the kernel and every status equal the final etcd
state. The full run (500 pairs, 60 s) and its memory figures are in bench/RESULTS.md.
"""

from __future__ import annotations

import pytest

from bench.soak import Soak, report, run
from tests.faults.faultlib import Desired
from tests.harness import ControllerProcess, HelperSandbox

pytestmark = pytest.mark.root


def test_short_soak_converges_to_the_final_etcd_state(
    desired: Desired, controller: ControllerProcess, helper: HelperSandbox,
) -> None:
    soak = Soak(pairs=50, seconds=10, rate=1000, converge_timeout=300)
    result = run(soak, desired, controller, helper)
    report(soak, result)
    assert result.problems == []
    assert desired.problems() == []
    assert result.changes >= 1000
