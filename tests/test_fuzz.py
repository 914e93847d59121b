"""Fuzzing the public boundaries: every bad or edge-case input ends in a GeomKFACError or
in a finite result; no raw Python/NumPy exception, no silent NaN/inf, no silently wrong
resume, no hang.

The targets and strategies are in ``tests/fuzzing.py`` (shared with the larger campaign of
``benchmarks/fuzz_report.py``). Each test here draws a few dozen inputs (derandomized under
CI, see ``conftest.py``); every target also has a negative control showing that its
classifier does report the failure it guards against.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fuzzing
from geomkfac.errors import DataError

#: examples per target: the cheap ones get more (all together well under 30 s on 2 cores)
EXAMPLES = {
    "make_dataset": 40, "optimizer_step": 40, "layer_models": 40, "frames": 60, "values": 60, "frame_changes": 60,
    "metrics_files": 60, "names": 60, "hyperparameters": 40, "train_arguments": 40,
    "data_files": 40, "checkpoints": 40, "command_line": 6,
}
_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]


def _make_test(name):
    strategy, run = fuzzing.TARGETS[name]

    @settings(max_examples=EXAMPLES[name], suppress_health_check=_QUIET, database=None)
    @given(case=strategy)
    def test(case):
        outcome, detail = fuzzing.classify(run, case)
        assert outcome in ("error", "ok"), f"{name}: {outcome}: {detail}\ninput: {case!r}"

    test.__name__ = f"test_fuzz_{name}"
    return test


for _name in fuzzing.TARGETS:
    globals()[f"test_fuzz_{_name}"] = _make_test(_name)


def test_every_target_is_fuzzed():
    assert set(EXAMPLES) == set(fuzzing.TARGETS)


# --------------------------------------------------------------------------- negative controls
# the classifier must see each failure it is there to catch


def test_classifier_reports_a_raw_exception():
    assert fuzzing.classify(lambda c: np.linalg.inv(np.zeros((2, 2))), None)[0] == "other"
    assert fuzzing.classify(lambda c: {}[c], "k")[0] == "other"


def test_classifier_reports_silent_nan_anywhere_in_the_result():
    assert fuzzing.classify(lambda c: float("nan"), None)[0] == "nan"
    assert fuzzing.classify(lambda c: [1.0, {"a": np.array([0.0, np.inf])}], None)[0] == "nan"
    assert fuzzing.classify(lambda c: np.float32(1.0), None)[0] == "ok"


def test_classifier_reports_a_hang():
    t0 = time.perf_counter()
    outcome, _ = fuzzing.classify(lambda c: time.sleep(5), None, time_limit=0.2)
    assert outcome == "hang" and time.perf_counter() - t0 < 2.0


def test_classifier_accepts_library_errors_only():
    def raise_data_error(c):
        raise DataError("bad")

    assert fuzzing.classify(raise_data_error, None)[0] == "error"


def test_metrics_target_needs_the_torn_line_handling(monkeypatch):
    """A CSV file torn in its last value (the row still has every field): resumed and read
    back intact with the torn-line handling; with it switched off, the torn row is merged
    with the next record and the target no longer passes."""
    import geomkfac.nn.train as T

    case = ("csv", "step,epoch,loss,grad_norm,seconds,eval_loss\n1,0,0.5,1.0,0.01,\n2,0,0.4,0.9,0.02,0.4", 2)
    assert fuzzing.classify(fuzzing._run_metrics_file, case)[0] == "ok"
    monkeypatch.setattr(T, "_complete_lines", lambda path: open(path).read().splitlines(keepends=True))
    assert fuzzing.classify(fuzzing._run_metrics_file, case)[0] != "ok"


def test_checkpoint_target_detects_an_unchecked_edit(monkeypatch):
    """Without the checksum comparison, a one-ulp edit of a weight resumes silently: the
    checkpoint target reports it as 'wrong'."""
    import geomkfac.nn.checkpoint as C

    def ulp(raw):
        arr = bytearray(raw)
        arr[-1] ^= 1  # last byte of the last float: one ulp
        return bytes(arr)

    monkeypatch.setattr(C, "_digest", lambda members: "0" * 64)
    monkeypatch.setattr(fuzzing, "mutate", lambda raw, m: ulp(raw))
    outcome, detail = fuzzing.classify(fuzzing._run_checkpoint, ("adam", "member", (("flip", []), 0)))
    assert outcome == "wrong", detail


@pytest.mark.parametrize("name", ["frames", "values"])
def test_frame_targets_reach_valid_inputs(name):
    """The strategies are not all garbage: some drawn frames and values are valid (so the
    'ok' branch, finite coordinates in three frames, is exercised)."""
    strategy, run = fuzzing.TARGETS[name]
    seen = set()

    @settings(max_examples=150, suppress_health_check=_QUIET, database=None)
    @given(case=strategy)
    def collect(case):
        seen.add(fuzzing.classify(run, case)[0])

    collect()
    assert "ok" in seen and "error" in seen
