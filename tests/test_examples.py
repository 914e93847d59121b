"""The example scripts run to the end for several seeds: a diverged run is reported, never a
traceback (``examples/invariance_demo.py --seed 3`` used to end in DegenerateMetricError)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from geomkfac.errors import DegenerateMetricError

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("seed", [3])
def test_invariance_demo_for_several_seeds(seed, capsys):
    out = _load("invariance_demo").main(steps=2, seed=seed)
    text = capsys.readouterr().out
    assert "stopped" not in text, text
    assert all(np.isfinite(v) for v in out.values()), out
    # Theorem 3.2: undamped K-FAC is the same step in both frames (rounding: functions O(1),
    # frame changes with condition numbers below 1e3, so 1e-6 leaves a wide margin) ...
    assert out["kfac"] < 1e-6
    # ... and the controls, damping and SGD, differ between the frames
    assert out["kfac_damped"] > 1e-3 and out["sgd"] > 1e-3
    if seed == 3:  # the start with a saturated unit: the safeguard shortened the first steps
        assert "the learning rate was halved" in text


def test_invariance_demo_reports_a_failed_run_and_goes_on(monkeypatch, capsys):
    mod = _load("invariance_demo")
    real = mod.kfac_metric
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # the undamped run's metric (first call) is degenerate
        calls["n"] += 1
        if calls["n"] == 1:
            raise DegenerateMetricError("the K-FAC metric is degenerate (a test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "kfac_metric", flaky)
    out = mod.main(steps=1, seed=0)
    text = capsys.readouterr().out
    assert "K-FAC stopped at step 1: the K-FAC metric is degenerate (a test)" in text
    assert np.isnan(out["kfac"]) and np.isfinite(out["kfac_damped"]) and np.isfinite(out["sgd"])


def test_invariance_demo_command_line_another_seed():
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "invariance_demo.py"), "--seed", "5",
                           "--steps", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert any(line.split()[:1] == ["1"] for line in proc.stdout.splitlines())  # the table's step 1


def test_train_digits_example_other_seed(tmp_path, capsys):
    results = _load("train_digits").main_with(2, str(tmp_path / "out"), seed=7)
    assert all(r.ok and np.isfinite(r.final_loss) for r in results.values())
    assert (tmp_path / "out" / "loss.png").exists()
    assert "stopped" not in capsys.readouterr().out


def test_two_frames_example_runs(capsys):
    mod = _load("two_frames")
    mod.symbolic()
    mod.numeric()
    assert capsys.readouterr().out.strip()


def test_train_digits_reports_a_diverged_run(tmp_path, monkeypatch, capsys):
    mod = _load("train_digits")
    real = mod.get_optimizer

    def exploding(name, model, loss, **hyper):  # a learning rate that overflows the weights
        return real("sgd", model, loss, lr=1e308)

    monkeypatch.setattr(mod, "get_optimizer", exploding)
    results = mod.main_with(2, str(tmp_path / "out"), seed=0)
    text = capsys.readouterr().out
    assert not any(r.ok for r in results.values())
    assert text.count("stopped:") == 2 and "Traceback" not in text
