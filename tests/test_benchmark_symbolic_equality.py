"""Smoke run of benchmarks/symbolic_equality.py's ``--quick`` mode, in-process (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_symbolic_equality_quick(tmp_path, capsys):
    """The 1-1-1 version: the two frames' K-FAC updates are equal, the SGD control is
    rejected (times are measured, not asserted)."""
    spec = importlib.util.spec_from_file_location("bench_symbolic_equality", BENCH / "symbolic_equality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--quick", "--repeats", "1", "--json", str(tmp_path / "s.json")])
    assert res["equal_result"] is True and res["reject_result"] is False
    assert json.loads((tmp_path / "s.json").read_text())["case"] == "1-1-1 tanh"
