"""Smoke test of the side-by-side benchmark against kfac-jax (``benchmarks/kfac_jax``).

The geomkfac side runs here for 2 steps on tiny nets (an MLP and a CNN; no JAX needed, no
timing assertions). The JAX side needs the separate virtual environment of
``benchmarks/kfac_jax/setup.sh`` (``.venv-kfac-jax`` in the repository root, or the folder
named by ``GEOMKFAC_KFAC_JAX_VENV``) and is skipped when it is absent (as in CI); where it
exists it runs only with ``GEOMKFAC_BENCH_JAX=1`` (its JIT compilation takes tens of seconds
to minutes).
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
#: the CNN of the benchmark with 2 and 4 channels, 8 hidden units, 8×8 images, batch 16
TINY_CNN = {"sizes": [2, 4, 8, 8], "batch": 16}
VENV = Path(os.environ.get("GEOMKFAC_KFAC_JAX_VENV",
                           HERE.parent.parent / ".venv-kfac-jax"))
needs_jax = [
    pytest.mark.skipif(not (VENV / "bin" / "python").exists(),
                       reason="no kfac-jax environment (benchmarks/kfac_jax/setup.sh makes it)"),
    pytest.mark.skipif(os.environ.get("GEOMKFAC_BENCH_JAX") != "1",
                       reason="the JAX side compiles for tens of seconds: set GEOMKFAC_BENCH_JAX=1"),
]


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


@needs_jax[0]
@needs_jax[1]
def test_jax_side_tiny(sbs, tmp_path):
    X, Y, model = sbs.make_problem("digits", **TINY)
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    job = {"npz": str(tmp_path / "p.npz"), "mode": "steps", "warmup": 0, "steps": 2,
           "compile_steps": 6,
           "runs": [{"name": "kfac", "optimizer": "kfac", "hyper": sbs.JAX_KFAC},
                    {"name": "sgd", "optimizer": "sgd", "hyper": {"lr": 0.05}}]}
    out = sbs.run_jax(VENV, job, tmp_path)
    assert "error" not in out, out.get("error")
    runs = {r["name"]: r for r in out["runs"]}
    g = sbs.geomkfac_steps("digits", "kfac", sbs.GEOMKFAC_KFAC, 0, 2, **TINY)
    # same start, same data: the first loss is the same function at the same point
    assert runs["kfac"]["losses"][0] == pytest.approx(g["losses"][0], rel=1e-5)
    assert json.dumps(out)


# ---------------------------------------------------------------------------- interleaved
def _block(times, loss=1.0):
    return {"times": times, "losses": [loss] * len(times), "cpu": sum(times), "faults": 0}


def test_pair_summary_ratios_of_block_means(sbs):
    """Each pair's ratio is the ratio of the two blocks' mean step times (not of medians:
    a block covers one inverse / damping period), the summary their median."""
    pairs = [{"geomkfac": _block([1.0, 1.0, 4.0]), "jax": _block([1.0, 1.0, 1.0])},  # 2.0
             {"geomkfac": _block([1.0, 1.0, 1.0]), "jax": _block([2.0, 2.0, 2.0])},  # 0.5
             {"geomkfac": _block([3.0, 3.0, 3.0]), "jax": _block([3.0, 1.0, 2.0])}]  # 1.5
    s = sbs.pair_summary(pairs)
    assert s["pair_ratios"] == [2.0, 0.5, 1.5]
    assert (s["ratio"], s["ratio_min"], s["ratio_max"]) == (1.5, 0.5, 2.0)
    assert s["geomkfac_mean_s"] == pytest.approx(2.0) and s["jax_cores_used"] == 1.0


def test_geomkfac_block_counts_steps_and_page_faults(sbs):
    X, Y, model = sbs.make_problem("digits", **TINY)
    opt = sbs._optimizer("sgd", model, {"lr": 0.05, "momentum": 0.9})
    b = sbs.geomkfac_block(opt, X, Y, 3)
    assert len(b["times"]) == len(b["losses"]) == 3 and b["faults"] >= 0
    assert b["losses"][-1] < b["losses"][0]


def test_interleaved_markdown(sbs):
    summary = sbs.pair_summary([{"geomkfac": _block([0.02]), "jax": _block([0.01])}])
    res = {"mode": "interleaved", "warmup": 1, "block": 1, "pairs": 1, "settle_s": 0.3,
           "environment": {"blas": None},
           "nets": {"digits": {"label": "tiny", "kfac": summary, "sgd": summary,
                               "load_before": [1.0], "load_after": [1.1],
                               "initial_loss_geomkfac": 2.0, "initial_loss_jax": 2.0}}}
    text = sbs.markdown(res)
    assert "| tiny | **2.00×** (2.00–2.00) | 10.0 ms | 20.0 ms | **2.00×**" in text


@needs_jax[0]
@needs_jax[1]
def test_jax_side_serves_blocks(sbs, tmp_path):
    """The interleaved protocol: READY, one RESULT per block, FINAL; the live run continues
    from block to block (its losses go on from where the last block stopped)."""
    X, Y, model = sbs.make_problem("digits", **TINY)
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    job = {"npz": str(tmp_path / "p.npz"), "mode": "serve", "compile_steps": 2,
           "runs": [{"name": "sgd", "optimizer": "sgd", "hyper": {"lr": 0.05}}]}
    proc, ready = sbs.start_jax(VENV, job, tmp_path)
    try:
        assert "error" not in ready, ready.get("error")
        a = sbs._ask(proc, {"run": "sgd", "steps": 2})
        b = sbs._ask(proc, {"run": "sgd", "steps": 2})
        final = sbs._ask(proc, {"quit": True}, "FINAL")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    g = sbs.geomkfac_block(sbs._optimizer("sgd", model, {"lr": 0.05, "momentum": 0.9}), X, Y, 4)
    assert a["losses"] + b["losses"] == pytest.approx(g["losses"], rel=1e-5)
    assert final["sgd"] < b["losses"][-1]


# ---------------------------------------------------------------------------- the CNN
def test_geomkfac_side_cnn_two_steps(sbs):
    """The tiny benchmark CNN trains on the geomkfac side with the kfac-jax-matched K-FAC
    settings and with SGD-momentum (softmax cross-entropy on integer labels)."""
    for kind, hyper in (("kfac", sbs.GEOMKFAC_KFAC), ("sgd", {"lr": 0.05, "momentum": 0.9})):
        r = sbs.geomkfac_steps("cnn", kind, hyper, warmup=0, steps=2, **TINY_CNN)
        assert len(r["step_times_s"]) == 2 and all(t > 0 for t in r["step_times_s"])
        assert all(math.isfinite(v) for v in r["losses"])
        assert r["final_loss"] < r["losses"][0], kind


def test_cnn_is_the_benchmark_cnn(sbs):
    """``cnn`` at its real size is the net of the brief and of ``layer_step_cost.py``: the
    layer specs and parameter shapes written out here by hand, float32 ``1×28×28`` inputs,
    batch 128, labels in ``0..9``; the job for the JAX side names those layers and the softmax
    cross-entropy, and the MLP nets send no architecture (the JAX side's default)."""
    X, Y, model = sbs.make_problem("cnn")
    assert X.shape == (128, 1, 28, 28) and X.dtype == np.float32
    assert Y.shape == (128,) and Y.min() >= 0 and Y.max() <= 9
    assert [W.shape for W, _ in sbs.weights(model)] == [(32, 1, 5, 5), (64, 32, 5, 5),
                                                        (1024, 3136), (10, 1024)]
    job = sbs.jax_net("cnn", model)
    assert job["loss"] == "softmax_ce"
    assert [(l["type"], l.get("pad"), l.get("act"), l.get("k")) for l in job["arch"]] == [
        ("conv", 2, "relu", 5), ("maxpool", None, None, 2), ("conv", 2, "relu", 5),
        ("maxpool", None, None, 2), ("flatten", None, None, None), ("dense", None, "relu", None),
        ("dense", None, "identity", None)]
    assert all(l.get("stride", 1) == 1 for l in job["arch"] if l["type"] == "conv")
    assert sbs.jax_net("digits", sbs.make_problem("digits", **TINY)[2]) == {}


def test_cnn_problem_file(sbs, tmp_path):
    """The .npz for the JAX side holds the CNN's data, integer labels and the weights in
    geomkfac's layouts (conv ``(out, in, k, k)``), exactly."""
    X, Y, model = sbs.make_problem("cnn", **TINY_CNN)
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    with np.load(tmp_path / "p.npz") as d:
        assert np.array_equal(d["X"], X) and np.array_equal(d["Y"], Y)
        assert np.issubdtype(d["Y"].dtype, np.integer)
        for i, layer in enumerate(model.param_layers):
            assert np.array_equal(d[f"W{i}"], layer.W) and np.array_equal(d[f"b{i}"], layer.b)
        assert d["W0"].shape == (2, 1, 5, 5) and d["W2"].shape == (8, 4 * 2 * 2)


def test_markdown_notes_for_the_cnn(sbs):
    res = {"mode": "steps", "warmup": 0, "steps": 2, "environment": {"blas": None},
           "nets": {"cnn": {"label": "tiny cnn", "initial_loss_geomkfac": 2.5,
                            "initial_loss_jax": 2.5000002, "initial_loss_rel_diff": 8e-8,
                            "kfac_jax_blocks": [{"block": "Conv2DTwoKroneckerFactored"}] * 2
                            + [{"block": "DenseTwoKroneckerFactored"}] * 2,
                            "jax_kfac_explicit": {"median_s": 0.5, "final_loss": 0.25},
                            "ratio_kfac_explicit": 3.0}}}
    text = sbs.markdown(res)
    assert "500.0 ms, geomkfac K-FAC / it = 3.00×; loss after 0.25" in text
    assert "`cnn`: initial loss geomkfac 2.5, kfac-jax 2.5 (relative difference 8.0e-08)" in text
    assert ("kfac-jax curvature blocks: Conv2DTwoKroneckerFactored ×2, "
            "DenseTwoKroneckerFactored ×2") in text


@needs_jax[0]
@needs_jax[1]
def test_jax_side_tiny_cnn(sbs, tmp_path):
    """The JAX side builds the same CNN: the same loss at the initial point (float32: both
    sides sum in different orders, so 1e-5 relative, ~100 float32 ulps), the same SGD-momentum
    trajectory over 2 steps, and kfac-jax registers both convolutions as conv2d blocks and both
    dense layers as dense blocks; the run with kfac-jax's explicit-patches input factor follows
    the default run's K-FAC path (the same moments summed in another order: 1e-4 relative
    over 2 steps). Negative control: the first dense layer's columns permuted
    to the (H, W, C) order of a channels-last flatten give a different initial loss, so the
    check sees a layout mismatch."""
    X, Y, model = sbs.make_problem("cnn", **TINY_CNN)
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    sgd = {"lr": 0.05, "momentum": 0.9}
    job = {"npz": str(tmp_path / "p.npz"), "mode": "steps", "warmup": 0, "steps": 2,
           "compile_steps": 6,
           "runs": [{"name": "kfac", "optimizer": "kfac", "hyper": sbs.JAX_KFAC},
                    {"name": "kfac_explicit", "optimizer": "kfac", "hyper": sbs.JAX_KFAC,
                     "conv_patches": "explicit"},
                    {"name": "sgd", "optimizer": "sgd", "hyper": sgd}],
           **sbs.jax_net("cnn", model)}
    out = sbs.run_jax(VENV, job, tmp_path)
    assert "error" not in out, out.get("error")
    runs = {r["name"]: r for r in out["runs"]}
    assert all("error" not in r for r in runs.values()), runs
    g0 = sbs.train_loss(model, X, Y, "ce")
    assert out["initial_loss"] == pytest.approx(g0, rel=1e-5)
    assert [b["block"] for b in runs["kfac"]["kfac_blocks"]] == (
        ["Conv2DTwoKroneckerFactored"] * 2 + ["DenseTwoKroneckerFactored"] * 2)
    assert runs["kfac_explicit"]["conv_patches"] == "explicit"
    assert runs["kfac_explicit"]["losses"] == pytest.approx(runs["kfac"]["losses"], rel=1e-4)
    g = sbs.geomkfac_steps("cnn", "sgd", sgd, 0, 2, **TINY_CNN)
    assert runs["sgd"]["losses"] == pytest.approx(g["losses"], rel=1e-5)
    assert runs["sgd"]["final_loss"] == pytest.approx(g["final_loss"], rel=1e-5)

    # negative control: the dense layer after the flatten fed in channels-last order
    W2 = model.param_layers[2].W  # (8, C·H·W) with C = 4, H = W = 2
    model.param_layers[2].W = np.ascontiguousarray(
        W2.reshape(8, 4, 2, 2).transpose(0, 2, 3, 1).reshape(8, 16))
    sbs.save_problem(tmp_path / "q.npz", X, Y, model)
    model.param_layers[2].W = W2
    bad = sbs.run_jax(VENV, dict(job, npz=str(tmp_path / "q.npz"), runs=[]), tmp_path)
    assert "error" not in bad, bad.get("error")
    assert abs(bad["initial_loss"] - g0) > 1e-3 * abs(g0)


def test_cores_used_is_recorded(sbs):
    r = sbs.geomkfac_steps("digits", "sgd", {"lr": 0.05, "momentum": 0.9}, 0, 3, **TINY)
    # process CPU time ÷ wall time: positive, and at most the CPUs the process may use (with
    # slack for the coarse resolution of the CPU clock on steps this short)
    assert 0 <= r["cores_used"] <= len(os.sched_getaffinity(0)) + 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and at least 2 CPUs")
def test_threads_option_pins_the_process_tree(sbs, tmp_path):
    """``--threads 1`` must restrict the CPUs, not only the BLAS threads: XLA sizes its pool
    from the affinity mask. Run in a child process so that the test's own mask is kept;
    the grandchild shows that the mask is inherited (as by the JAX subprocess)."""
    import subprocess
    import sys

    code = (
        "import importlib.util, os, subprocess, sys\n"
        f"spec = importlib.util.spec_from_file_location('s', {str(HERE / 'side_by_side.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.pin_cpus(1)\n"
        "child = subprocess.run([sys.executable, '-c', "
        "'import os; print(len(os.sched_getaffinity(0)))'], capture_output=True, text=True)\n"
        "print(len(os.sched_getaffinity(0)), child.stdout.strip())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
    # control: without pinning the child sees all of this process's CPUs
    plain = subprocess.run([sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)))"],
                           capture_output=True, text=True, timeout=60)
    assert int(plain.stdout) == len(os.sched_getaffinity(0)) >= 2


def test_repeats_are_summarized_by_their_median(sbs):
    def steps_run(k, g):
        return {"mode": "steps", "nets": {"deep": {
            "label": "deep", "ratio_kfac": k, "ratio_sgd": g,
            "geomkfac_kfac": {"median_s": k}, "jax_kfac": {"median_s": 1.0}}}}

    runs = [steps_run(0.8, 1.3), steps_run(1.2, 0.9), steps_run(1.0, 1.1)]
    res = dict(runs[-1], repeats=[sbs.repeat_summary(r) for r in runs])
    text = "\n".join(sbs.repeats_markdown(res))
    assert "| deep | 0.80×, 1.20×, 1.00× | 1.00× | 1.30×, 0.90×, 1.10× | 1.10× |" in text
    target = {"mode": "target",
              "geomkfac": [{"reached": {"seconds": 2.0}}, {"reached": None}],
              "jax": [{"reached": {"seconds": 1.0}}, {"reached": {"seconds": 0.5}}]}
    assert sbs.repeat_summary(target) == {"geomkfac_best_s": 2.0, "jax_best_s": 0.5,
                                          "ratio": 4.0}
    # control: a side that never reached the target has no ratio
    assert sbs.repeat_summary(dict(target, geomkfac=[{"reached": None}]))["ratio"] is None


def test_target_sweep_gives_both_sides_the_same_settings(sbs):
    sweep = sbs._target_sweep(quick=False)
    assert len(sweep) == len(sbs.SWEEP_DAMPING) * len(sbs.SWEEP_TRACKING)
    names = [n for n, _, _ in sweep]
    assert len(set(names)) == len(names)
    for _, g, j in sweep:
        assert g["damping"] == j["initial_damping"]
        assert g["ema_decay"] == j.get("curvature_ema", sbs.JAX_KFAC["curvature_ema"])
        assert g["inverse_update_period"] == j["inverse_update_period"]
        assert g["factor_update_period"] == j["curvature_update_period"] == 1
    # control: the fast setting really differs from the default on both sides
    fast = [(g, j) for n, g, j in sweep if "fast" in n]
    assert fast and all(g["ema_decay"] == 0.5 and j["curvature_ema"] == 0.5 for g, j in fast)


def test_gemm_floor_is_the_gemms_of_the_sgd_step(sbs):
    """The floor's products are the step's: its weight-gradient GEMMs divided by N are the
    gradient of ``loss_and_grad`` (the curvature module's route), its last forward GEMM the
    network's output, and a block of them leaves the model as it was."""
    from geomkfac.nn import MLP, get_loss
    from geomkfac.nn.curvature import loss_and_grad

    X, Y, _ = sbs.make_problem("digits", **TINY)
    model = MLP(TINY["sizes"], "tanh", seed=1)  # float64: the comparison's tolerances
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    gemms, value = sbs.sgd_step_gemms(model, X, Y)
    fwd, wgrads, back = gemms()
    L = len(model.layers)
    assert len(fwd) == L and len(wgrads) == L and len(back) == L - 1
    ref_value, ref_grad = loss_and_grad(model, X, Y, get_loss("bernoulli"))
    assert value == pytest.approx(float(ref_value), rel=1e-12)
    flat = np.concatenate([(g / X.shape[0]).reshape(-1, order="F") for g in reversed(wgrads)])
    np.testing.assert_allclose(flat, ref_grad, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(fwd[-1], model.forward(X), rtol=1e-12, atol=1e-14)
    theta = model.get_flat()
    b = sbs.gemm_floor_block(model, X, Y, 2)
    assert len(b["times"]) == 2 and b["losses"] == [value, value]
    assert np.array_equal(model.get_flat(), theta)


def test_interleaved_markdown_reports_the_gemm_floor(sbs):
    step = sbs.pair_summary([{"geomkfac": _block([0.03]), "jax": _block([0.02])}])
    floor = sbs.pair_summary([{"geomkfac": _block([0.02]), "jax": _block([0.018])}])
    res = {"mode": "interleaved", "warmup": 1, "block": 1, "pairs": 1, "settle_s": 0.3,
           "environment": {"blas": None},
           "nets": {"digits": {"label": "tiny", "kfac": step, "sgd": step, "sgd_gemms": floor,
                               "load_before": [1.0], "load_after": [1.1],
                               "initial_loss_geomkfac": 2.0, "initial_loss_jax": 2.0}}}
    text = sbs.markdown(res)
    assert "GEMMs of the SGD step alone 20.0 ms against" in text and "18.0 ms, ratio **1.11×**" in text
    assert "spends 10.0 ms (geomkfac) and 2.0 ms (optax)" in text


@needs_jax[0]
@needs_jax[1]
def test_jax_side_serves_the_linear_floor(sbs, tmp_path):
    """The ablated run (``"ablate": "gemms"``) is the same net made linear with the loss Σf/N:
    its first value is the mean of the summed outputs of the linear net at the shared
    initial weights (computed here in NumPy), and it is served like any other run."""
    X, Y, model = sbs.make_problem("digits", **TINY)
    sbs.save_problem(tmp_path / "p.npz", X, Y, model)
    job = {"npz": str(tmp_path / "p.npz"), "mode": "serve", "compile_steps": 1,
           "runs": [{"name": "sgd_gemms", "optimizer": "sgd", "hyper": {"lr": 0.05},
                     "ablate": "gemms"}]}
    proc, ready = sbs.start_jax(VENV, job, tmp_path)
    try:
        assert "error" not in ready, ready.get("error")
        a = sbs._ask(proc, {"run": "sgd_gemms", "steps": 1})
        sbs._ask(proc, {"quit": True}, "FINAL")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    h = X.astype(np.float64)
    for l in model.layers:
        h = h @ l.W.T.astype(np.float64) + l.b
    assert a["losses"][0] == pytest.approx(h.sum() / X.shape[0], rel=1e-5)
