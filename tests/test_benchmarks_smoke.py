"""Smoke runs of the benchmark scripts' ``--quick`` modes, in-process (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def step_cost():
    return _load("step_cost")


@pytest.fixture(scope="module")
def time_to_target():
    return _load("time_to_target")


def test_step_cost_quick(step_cost, tmp_path, capsys):
    out = tmp_path / "sc.json"
    res = step_cost.main(["--quick", "--repeats", "2", "--json", str(out)])
    text = capsys.readouterr().out
    rows = [(r["method"], r["setting"]) for r in res["rows"]]
    assert rows == [("sgd", "-"), ("kfac", "plain"), ("kfac", "amortized")]
    for r in res["rows"]:
        assert r["step_s"] > 0 and r["gflops_per_s"] > 0 and math.isfinite(r["ratio_to_sgd"])
    assert res["gemm_gflops_per_s"] > 0
    # the printed table has one line per row, and the JSON file holds the same rows
    for method, setting in rows:
        assert any(line.split()[:2] == [method, setting] for line in text.splitlines())
    saved = json.loads(out.read_text())
    assert [(r["method"], r["setting"]) for r in saved["rows"]] == rows
    assert all(v > 0 for v in saved["profile_s"].values())


def test_step_cost_flop_formulas(step_cost):
    # one layer 2 -> 3, batch 4 (d = in + 1 = 3), counted by hand from the docstring formulas
    sizes, N = [2, 3], 4
    assert step_cost.flops_forward(sizes, N) == 2 * 4 * 3 * 3
    assert step_cost.flops_backward(sizes, N) == 2 * 4 * 3 * 3  # no layer below: no Dz W
    assert step_cost.flops_factors(sizes, N) == 2 * 4 * 9 + 2 * 4 * 9
    assert step_cost.flops_inverses(sizes) == 27 + 27  # Cholesky: n³ per factor
    assert step_cost.flops_precondition(sizes) == 2 * 9 * 3 + 2 * 3 * 9
    # a second layer 3 -> 5 adds a backward pass to the layer below (2 N out in)
    assert step_cost.flops_backward([2, 3, 5], N) - step_cost.flops_backward([2, 3], N) == (
        2 * N * 5 * 4 + 2 * N * 5 * 3)


def test_time_to_target_quick(time_to_target, tmp_path, capsys):
    out = tmp_path / "ttt.json"
    res = time_to_target.main(["--quick", "--quiet", "--json", str(out)])
    text = capsys.readouterr().out
    assert set(res["runs"]) == {"sgd_momentum", "adam", "kfac"}
    assert all(len(rs) == 2 for rs in res["runs"].values())
    # the target comes from the SGD-momentum sweep: its best run reaches it by construction
    assert res["best"]["sgd_momentum"] is not None
    best_sgd = res["runs"]["sgd_momentum"][res["best"]["sgd_momentum"]]
    assert best_sgd["reached"][1] > 0 and best_sgd["reached"][0] >= 1
    assert best_sgd["reached"][2] <= res["target"]
    for rs in res["runs"].values():
        for r in rs:
            seconds = [t for _, t, _ in r["trace"]]
            assert seconds == sorted(seconds) and seconds[-1] > 0
    lines = text.splitlines()
    for method in ("sgd_momentum", "adam", "kfac"):
        assert sum(line.startswith(method) for line in lines) == 2
    assert json.loads(out.read_text())["target"] == pytest.approx(res["target"])


def test_layer_step_cost_quick(tmp_path, capsys):
    mod = _load("layer_step_cost")
    out = tmp_path / "lsc.json"
    res = mod.main(["--quick", "--repeats", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert [r["setting"] for r in res["cnn"]["rows"]] == ["-", "plain", "amortized"]
    assert [r["setting"] for r in res["rnn"]["rows"]] == ["-", "plain", "amortized", "option1",
                                                         "option2"]
    for which in ("cnn", "rnn"):
        for r in res[which]["rows"]:
            assert r["step_s"] > 0 and r["gflops_per_s"] > 0 and math.isfinite(r["ratio_to_sgd"])
    assert text.count("GFLOP/s") >= 2
    assert json.loads(out.read_text())["rnn"]["which"] == "rnn"


def test_layer_step_cost_flops_by_hand():
    """One conv layer 1→2, 3×3, no padding, on 4×4 images, batch 1: T = 4 locations,
    d+1 = 10, out = 2 — forward 2·4·2·10, weight gradient the same, no input gradient."""
    import numpy as np

    import geomkfac.nn as gnn

    mod = _load("layer_step_cost")
    net = gnn.Sequential([gnn.Conv2d(np.zeros((2, 1, 3, 3)), np.zeros(2))])
    fl = mod.flops(net, np.zeros((1, 1, 4, 4)))
    assert fl["forward_backward"] == 2 * (2 * 4 * 2 * 10)
    assert fl["factors"] == 2 * 4 * 100 + 2 * 4 * 4
    assert fl["inverses"] == 10 ** 3 + 2 ** 3
    assert fl["precondition"] == 2 * 4 * 10 + 2 * 2 * 100


def test_layer_time_to_target_full_sweep_is_valid_and_fair():
    """Every setting of the full sweep builds its optimizer (a misspelt or invalid
    hyperparameter would only surface in the long run); K-FAC has at most 16 settings on
    the sweep's batch sizes; the lower momentum K-FAC uses is given to SGD-momentum and
    Adam at every batch size where K-FAC uses it."""
    from geomkfac.errors import ConfigurationError
    from geomkfac.nn.architectures import build_model
    from geomkfac.nn.optim import get_optimizer

    mod = _load("layer_time_to_target")
    for which, (arch, act, _) in mod.PROBLEMS.items():
        shape = (1, 8, 8) if which == "cnn" else (8, 8)
        model = build_model(arch, shape, act, seed=0)
        runs = mod.sweeps(which, quick=False)
        for name, batch, hyper in runs:
            assert batch in mod.BATCHES
            get_optimizer(name.split("-")[0], model, "ce", **dict(hyper))
        kfac = [(b, h) for n, b, h in runs if n == "kfac"]
        assert kfac == list(mod.KFAC_SWEEP) and len(kfac) <= 16
        low = {b for b, h in kfac if 0 < h.get("momentum", 0.0) < 0.9}
        assert low and low <= {b for n, b, h in runs if n == "sgd" and h["momentum"] < 0.9}
        assert low <= {b for n, b, h in runs if n == "adam" and h.get("beta1", 0.9) < 0.9}
    # the check above can fail: a misspelt hyperparameter is refused
    with pytest.raises(ConfigurationError):
        get_optimizer("kfac", model, "ce", lr=0.1, kl_clp=0.1)


def test_layer_time_to_target_quick(tmp_path, capsys):
    mod = _load("layer_time_to_target")
    res = mod.main(["--quick", "--json", str(tmp_path / "t.json")])
    for which in ("cnn", "rnn"):
        r = res[which]
        assert all(np.isfinite(v) for _, _, v in r["runs"][0]["trace"])
        assert {run["batch"] for run in r["runs"]} == {50, 200}
        # a target every run reaches at its first evaluation: the ratios are defined
        loose = mod.method_table(r["runs"], np.inf)
        assert loose["sgd"]["updates_ratio"] == 1.0 and loose["sgd"]["seconds_ratio"] == 1.0
        first = min(run["eval_every"] for run in r["runs"] if run["name"] == "kfac")
        assert loose["kfac"]["min_updates"] == first
        # a target no run reaches: the table is empty
        assert mod.method_table(r["runs"], -1.0) == {}
    assert {run["name"] for run in res["rnn"]["runs"]} >= {"kfac-option1", "kfac-option2"}
    assert "target loss 0.01 (headline)" in capsys.readouterr().out
    # --previous reuses the sweep; --extend-full-batch adds the uncapped full-batch SGD runs
    again = mod.main(["--quick", "--which", "cnn", "--extend-full-batch", "3",
                      "--previous", str(tmp_path / "t.json")])["cnn"]
    old = [r for r in again["runs"] if not r.get("extended")]
    new = [r for r in again["runs"] if r.get("extended")]
    assert [r["trace"] for r in old] == [[list(p) for p in r["trace"]] for r in res["cnn"]["runs"]]
    assert [(r["name"], r["batch"], r["hyper"]["lr"]) for r in new] == [("sgd", 200, 0.1), ("sgd", 200, 0.3)]
    assert all(r["trace"][-1][0] == 3 for r in new)


def test_homogeneous_layout_quick(tmp_path, capsys):
    mod = _load("homogeneous_layout")
    res = mod.main(["--quick", "--json", str(tmp_path / "h.json")])
    assert set(res["summary"]) == {"forward GEMM", "gradient GEMM", "tanh into the input",
                                   "φ' = 1 − a²"}
    assert all(v["homogeneous_ms"] > 0 and v["split_ms"] > 0 for v in res["summary"].values())
    assert (tmp_path / "h.json").exists() and "| total |" in capsys.readouterr().out


def test_cnn_examples_search_quick(tmp_path, capsys):
    mod = _load("cnn_examples_search")
    # the schedules: their values at the ends, and the floor that keeps lr positive
    assert mod.schedule_factor("constant", 0, 500) == 1.0
    assert mod.schedule_factor("cosine", 100, 0) == 1.0
    assert mod.schedule_factor("cosine", 100, 50) == pytest.approx(0.5)
    assert mod.schedule_factor("cosine", 100, 100) == mod.schedule_factor("cosine", 100, 400) == mod.FLOOR
    assert mod.schedule_factor("linear", 100, 25) == 0.75
    assert mod.schedule_factor("linear", 100, 300) == mod.FLOOR
    assert mod.schedule_factor("inverse", 20, 20) == 0.5
    with pytest.raises(ValueError, match="unknown schedule"):
        mod.schedule_factor("step", 10, 1)
    # every setting of the full search builds its optimizer, on the same axes for both methods
    full = mod.settings()
    assert len(full) == 6 * (len(mod.SCHEDULES) + len(mod.AVERAGING))
    for method in ("kfac", "sgd"):
        axes = {(k, T, b) for m, _, k, T, b in full if m == method}
        assert len(axes) == len(mod.SCHEDULES) + len(mod.AVERAGING)
    # a target every run reaches at its first evaluation: the ratio is defined and equal to 1
    res = mod.run(quick=True, jobs=1, target=np.inf)
    assert [r["updates"] for r in res["rows"]] == [[10], [10]]
    assert res["sgd_over_kfac_examples"] == 1.0
    # a target no run reaches: no best run, no ratio, and the table says so
    none = mod.run(quick=True, jobs=1, target=-1.0)
    assert none["best"] == {} and none["sgd_over_kfac_examples"] is None
    assert "| — | — |" in mod.markdown(none)
    saved = mod.main(["--quick", "--jobs", "1", "--out", str(tmp_path / "s")])
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == json.loads(json.dumps(saved["rows"]))
    assert "kfac lr 0.1, cosine T=5" in capsys.readouterr().out


def test_batch_workers_quick(tmp_path, capsys):
    """Each setting in its own process: one block unsplit, two blocks of 550 rows split, and
    the same final loss to float32 rounding (the blocks' sums are added in another order)."""
    res = _load("batch_workers").main(["--quick", "--out", str(tmp_path / "bw")])
    assert "| 2 | 2 |" in capsys.readouterr().out
    assert {w: s["blocks"] for w, s in res["summary"].items()} == {1: 1, 2: 2}
    assert all(s["mean_ms"] > 0 and s["p50_ms"] <= s["max_ms"] for s in res["summary"].values())
    (l1,), (l2,) = res["final_losses"][1], res["final_losses"][2]
    assert math.isclose(l1, l2, rel_tol=1e-5)
    saved = json.loads((tmp_path / "bw.json").read_text())
    assert saved["summary"]["2"]["blocks"] == 2
