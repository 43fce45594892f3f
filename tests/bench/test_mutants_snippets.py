"""bench/mutants.py changes exact snippets of the source: each must still be there, once,
or its mutant silently tests nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_hand_written_mutant_names_a_snippet_found_exactly_once() -> None:
    spec = importlib.util.spec_from_file_location("bench_mutants", ROOT / "bench" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        counts = {mutant.name: (ROOT / mutant.path).read_text().count(mutant.before)
                  for mutant in module.MUTANTS}
    finally:
        del sys.modules[spec.name]
    assert {name: n for name, n in counts.items() if n != 1} == {}
