"""Smoke test of the side-by-side benchmark against kfac-jax (``benchmarks/kfac_jax``).

The geomkfac side runs here for 2 steps on a tiny net (no JAX needed, no timing
assertions). The JAX side needs the separate virtual environment of
``benchmarks/kfac_jax/setup.sh`` and is skipped when it is absent (as in CI); where it exists
it runs only with ``GEOMKFAC_BENCH_JAX=1`` (its JIT compilation takes tens of seconds).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent.parent / "benchmarks" / "kfac_jax"
TINY = {"sizes": [6, 4, 6], "batch": 16}


@pytest.fixture(scope="module")
def sbs():
    spec = importlib.util.spec_from_file_location("bench_side_by_side", HERE / "side_by_side.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("net", ["deep", "digits"])
def test_geomkfac_side_two_kfac_steps(sbs, net):
    r = sbs.geomkfac_steps(net, "kfac", sbs.GEOMKFAC_KFAC, warmup=0, steps=2, **TINY)
    assert len(r["step_times_s"]) == 2 and all(t > 0 for t in r["step_times_s"])
    assert len(r["losses"]) == 2 and all(math.isfinite(v) for v in r["losses"])
    # the step of the quadratic model never increases the model, and on this tiny problem
    # two steps decrease the loss itself
    assert r["final_loss"] < r["losses"][0]


def test_geomkfac_side_sgd_and_gemm(sbs):
    r = sbs.geomkfac_steps("digits", "sgd", {"lr": 0.05, "momentum": 0.9}, 0, 2, **TINY)
    assert r["median_s"] > 0 and r["final_loss"] < r["losses"][0]
    g = sbs.numpy_gemm(8, 8, 8, repeats=3)
    assert g["median_s"] > 0 and g["gflops_per_s"] > 0


def test_problem_file_carries_the_initial_weights(sbs, tmp_path):
    """Both sides start from the same point: the .npz handed to the JAX side holds the data
    and the geomkfac model's weights, and a second model made with the same seed equals it
    (a different seed does not: negative control)."""
    X, Y, model = sbs.make_problem("digits", seed=3, **TINY)
    assert X.dtype == np.float32 and X.shape == (16, 6) and 0 <= X.min() and X.max() <= 1
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    with np.load(tmp_path / "p.npz") as d:
        for i, layer in enumerate(model.layers):
            assert np.array_equal(d[f"W{i}"], layer.W) and np.array_equal(d[f"b{i}"], layer.b)
        assert np.array_equal(d["X"], X) and np.array_equal(d["Y"], Y)
    same = sbs.weights(sbs.make_problem("digits", seed=3, **TINY)[2])
    other = sbs.weights(sbs.make_problem("digits", seed=4, **TINY)[2])
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(sbs.weights(model), same))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(sbs.weights(model), other))


def test_markdown_report(sbs):
    res = {"mode": "steps", "warmup": 0, "steps": 2, "environment": {"blas": None},
           "nets": {"digits": {"label": "tiny", "geomkfac_kfac": {"median_s": 0.02},
                               "jax_kfac": {"median_s": 0.01}, "ratio_kfac": 2.0}}}
    text = sbs.markdown(res)
    assert "| tiny | 10.0 ms | 20.0 ms | 2.00× |" in text


@pytest.mark.skipif(not (HERE.parent.parent / ".venv-kfac-jax" / "bin" / "python").exists(),
                    reason="no kfac-jax environment (benchmarks/kfac_jax/setup.sh makes it)")
@pytest.mark.skipif(os.environ.get("GEOMKFAC_BENCH_JAX") != "1",
                    reason="the JAX side compiles for tens of seconds: set GEOMKFAC_BENCH_JAX=1")
def test_jax_side_tiny(sbs, tmp_path):
    X, Y, model = sbs.make_problem("digits", **TINY)
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    job = {"npz": str(tmp_path / "p.npz"), "mode": "steps", "warmup": 0, "steps": 2,
           "compile_steps": 6,
           "runs": [{"name": "kfac", "optimizer": "kfac", "hyper": sbs.JAX_KFAC},
                    {"name": "sgd", "optimizer": "sgd", "hyper": {"lr": 0.05}}]}
    out = sbs.run_jax(sbs.DEFAULT_VENV, job, tmp_path)
    assert "error" not in out, out.get("error")
    runs = {r["name"]: r for r in out["runs"]}
    g = sbs.geomkfac_steps("digits", "kfac", sbs.GEOMKFAC_KFAC, 0, 2, **TINY)
    # same start, same data: the first loss is the same function at the same point
    assert runs["kfac"]["losses"][0] == pytest.approx(g["losses"][0], rel=1e-5)
    assert json.dumps(out)
