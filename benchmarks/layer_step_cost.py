"""Step cost of K-FAC against SGD on a convolutional and a recurrent network (float32).

- **cnn**: random ``1×28×28`` inputs, 10 random classes, batch 128: conv 1→32 5×5 (pad 2,
  ReLU) → 2×2 max pool → conv 32→64 5×5 (pad 2, ReLU) → 2×2 max pool → dense 3136→1024
  (ReLU) → dense 10, softmax cross-entropy;
- **rnn**: Elman RNN, 64 inputs, 256 hidden units (tanh), ``T = 50`` steps, batch 64, a dense
  readout to 10 classes at every step (cross-entropy summed over steps).

SGD (momentum 0.9) and K-FAC (``geomkfac.nn.optim.KFAC``: Monte Carlo Fisher with one
sample, EMA 0.95, factored Tikhonov damping with the π correction, direct damped inverses,
KL clipping — the defaults) are timed **in alternation** in one process: each round (after a
warm-up round) times one float32 GEMM (``n = 2000``), 3 SGD steps (median) and one whole
period (lcm of the two update periods) of each K-FAC setting (mean step). Step times are
medians over rounds; "x SGD" is the median of the per-round (paired) ratios. Settings:

- ``plain``: factors every step, inverses every 5 steps;
- ``amortized``: factors every 10 steps, inverses every 20 steps;
- for the RNN also ``option1`` / ``option2``: plain periods with the temporally correlated
  blocks of Martens, Ba & Johnson (2018) (``temporal="option1"|"option2"``).

FLOPs (multiply-adds count 2; activations, pooling, the loss and EMAs not counted), per
parametrized layer with ``R = N·T`` rows of ``ā`` of width ``d+1`` and ``out`` outputs:
forward ``2 R out (d+1)``; backward ``2 R out (d+1)`` (weight gradient) plus ``2 R out d``
(gradient to the layer below, not for the first layer); factors ``2 R (d+1)² + 2 R out²`` plus
one sampled backward pass ``Σ 2 R out d``; inverses ``(d+1)³ + out³``; preconditioning
``2 out² (d+1) + 2 out (d+1)²``, or ``2R(out² + (d+1)² + out (d+1))`` where K-FAC applies the
block to the gradient's rows because that is cheaper (the dense 3136→1024 layer at batch 128). The achieved rate is FLOPs / median step time.

Run ``python benchmarks/layer_step_cost.py --json layer_step_cost.json`` (``--quick``: tiny
networks, a smoke test; ``--which cnn`` or ``rnn`` for one of them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

import geomkfac.nn as gnn
from geomkfac.nn.optim import KFAC, SGD
from geomkfac.nn.optim.kronecker import rows_are_cheaper

#: the clock: wall time (``time.perf_counter``) or the process's CPU time
#: (``time.process_time``; with one BLAS thread it counts only the time this process ran,
#: which makes the figures usable on a machine shared with other jobs)
CLOCK = [time.perf_counter]

#: targets (K-FAC step time / SGD step time), from the issues
TARGETS = {"plain": 3.0, "amortized": 2.0}


def make_cnn(quick, seed=0, sizes=None):
    """``(net, X, Y)`` of the benchmark CNN (He-normal weights, zero biases, standard normal
    inputs, uniform random labels; ``seed`` fixes all). ``sizes`` = ``(c1, c2, hidden, side,
    batch)`` overrides the sizes (``quick``: ``(2, 4, 8, 8, 16)``; else ``(32, 64, 1024, 28,
    128)``); ``side`` must be a multiple of 4.

    >>> net, X, Y = make_cnn(True)
    >>> X.shape, Y.shape, net.forward(X).shape
    ((16, 1, 8, 8), (16,), (16, 10))
    """
    rng = np.random.default_rng(seed)
    c1, c2, hid, side, N = sizes or ((2, 4, 8, 8, 16) if quick else (32, 64, 1024, 28, 128))

    def w(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    flat = c2 * (side // 4) ** 2
    net = gnn.Sequential([
        gnn.Conv2d(w(c1, 1, 5, 5), np.zeros(c1, np.float32), "relu", padding=2),
        gnn.MaxPool2d(2),
        gnn.Conv2d(w(c2, c1, 5, 5), np.zeros(c2, np.float32), "relu", padding=2),
        gnn.MaxPool2d(2),
        gnn.Flatten(),
        gnn.Dense(w(hid, flat), np.zeros(hid, np.float32), "relu"),
        gnn.Dense(w(10, hid), np.zeros(10, np.float32)),
    ], dtype=np.float32)
    X = rng.standard_normal((N, 1, side, side)).astype(np.float32)
    return net, X, rng.integers(0, 10, N)


def make_rnn(quick, seed=0):
    rng = np.random.default_rng(seed)
    H, d, T, N = (16, 8, 6, 8) if quick else (256, 64, 50, 64)
    W = (rng.standard_normal((H, H + d)) / np.sqrt(H + d)).astype(np.float32)
    net = gnn.Sequential([
        gnn.RNN(W, np.zeros(H, np.float32), "tanh"),
        gnn.Dense((rng.standard_normal((10, H)) / np.sqrt(H)).astype(np.float32),
                  np.zeros(10, np.float32)),
    ], dtype=np.float32)
    X = rng.standard_normal((N, T, d)).astype(np.float32)
    return net, X, rng.integers(0, 10, (N, T))


def flops(net, X):
    """FLOP counts of one forward+backward pass, of a factor update, of an inverse update and
    of the preconditioning (see the module docstring)."""
    _, cache = net.forward_cache(X)
    fb = fac = inv = pre = 0
    for i, (ab, l) in enumerate(zip(cache.abar, net.param_layers)):
        R, d1 = ab.shape
        out = l.Wbar_shape[0]
        back_in = 0 if i == 0 else 2 * R * out * (d1 - 1)
        fb += 4 * R * out * d1 + back_in
        fac += 2 * R * d1 * d1 + 2 * R * out * out + back_in
        inv += d1 ** 3 + out ** 3
        pre += (2 * R * (out * out + d1 * d1 + out * d1) if rows_are_cheaper(R, out, d1)
                else 2 * out * out * d1 + 2 * out * d1 * d1)
    return {"forward_backward": fb, "factors": fac, "inverses": inv, "precondition": pre}


def settings_for(which):
    s = {"plain": dict(factor_update_period=1, inverse_update_period=5),
         "amortized": dict(factor_update_period=10, inverse_update_period=20)}
    if which == "rnn":
        s["option1"] = dict(factor_update_period=1, inverse_update_period=5, temporal="option1")
        s["option2"] = dict(factor_update_period=1, inverse_update_period=5, temporal="option2")
    return s


def time_interleaved(net, X, Y, settings, repeats, gemm_n, sgd_steps=3):
    sgd = SGD(net.copy(), "ce", lr=1e-3, momentum=0.9)
    kfacs = {k: KFAC(net.copy(), "ce", lr=1e-3, damping=1e-1, **v) for k, v in settings.items()}
    rng = np.random.default_rng(0)
    GA = rng.standard_normal((gemm_n, gemm_n)).astype(np.float32)
    GB = rng.standard_normal((gemm_n, gemm_n)).astype(np.float32)
    GC = np.empty_like(GA)
    gemm, sgd_t = [], []
    per = {k: {"rounds_s": [], "ratios": []} for k in settings}
    for r in range(repeats + 1):
        t0 = CLOCK[0]()
        np.matmul(GA, GB, out=GC)
        if r:
            gemm.append(2.0 * gemm_n ** 3 / (CLOCK[0]() - t0) / 1e9)
        ts = []
        for _ in range(sgd_steps):
            t0 = CLOCK[0]()
            sgd.step(X, Y)
            ts.append(CLOCK[0]() - t0)
        t_sgd = statistics.median(ts)
        if r:
            sgd_t.append(t_sgd)
        for k, opt in kfacs.items():
            period = math.lcm(settings[k]["factor_update_period"], settings[k]["inverse_update_period"])
            t0 = CLOCK[0]()
            for _ in range(period):
                opt.step(X, Y)
            mean = (CLOCK[0]() - t0) / period
            if r:
                per[k]["rounds_s"].append(mean)
                per[k]["ratios"].append(mean / t_sgd)
    return gemm, sgd_t, per


def run(which, quick=False, repeats=None, gemm_n=None):
    repeats = repeats or (2 if quick else 5)
    gemm_n = gemm_n or (128 if quick else 2000)
    net, X, Y = (make_cnn if which == "cnn" else make_rnn)(quick)
    settings = settings_for(which)
    load0 = os.getloadavg()[0]
    gemm, sgd_t, per = time_interleaved(net, X, Y, settings, repeats, gemm_n)
    fl = flops(net, X)
    g = statistics.median(gemm)
    t_sgd = statistics.median(sgd_t)
    rows = [{"method": "sgd", "setting": "-", "step_s": t_sgd, "ratio_to_sgd": 1.0,
             "gflop_per_step": fl["forward_backward"] / 1e9,
             "gflops_per_s": fl["forward_backward"] / t_sgd / 1e9}]
    for k, v in settings.items():
        fp, ip = v["factor_update_period"], v["inverse_update_period"]
        f = (fl["forward_backward"] + fl["precondition"] + fl["factors"] / fp
             + fl["inverses"] / ip)
        t = statistics.median(per[k]["rounds_s"])
        rows.append({"method": "kfac", "setting": k, "periods": f"{fp}/{ip}", "step_s": t,
                     "ratio_to_sgd": statistics.median(per[k]["ratios"]),
                     "paired_ratios": per[k]["ratios"], "gflop_per_step": f / 1e9,
                     "gflops_per_s": f / t / 1e9})
    return {"which": which, "quick": quick, "repeats": repeats, "batch": int(X.shape[0]),
            "input_shape": list(X.shape[1:]), "gemm_n": gemm_n, "gemm_gflops_per_s": g,
            "gemm_rounds": gemm, "flops": fl, "rows": rows,
            "loadavg_before": load0, "loadavg_after": os.getloadavg()[0],
            "python": platform.python_version(), "numpy": np.__version__,
            "nproc": os.cpu_count()}


def format_table(res):
    lines = [f"{res['which']}: batch {res['batch']}, input {res['input_shape']}, float32; "
             f"GEMM {res['gemm_gflops_per_s']:.1f} GFLOP/s",
             f"{'method':8s} {'setting':10s} {'step ms':>9s} {'x SGD':>7s} {'GFLOP':>8s} "
             f"{'GFLOP/s':>8s} {'% GEMM':>7s}"]
    for r in res["rows"]:
        lines.append(f"{r['method']:8s} {r['setting']:10s} {1e3 * r['step_s']:9.1f} "
                     f"{r['ratio_to_sgd']:7.2f} {r['gflop_per_step']:8.3f} "
                     f"{r['gflops_per_s']:8.1f} {100 * r['gflops_per_s'] / res['gemm_gflops_per_s']:6.0f}%")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", choices=("cnn", "rnn", "both"), default="both")
    p.add_argument("--quick", action="store_true", help="tiny networks (smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 2 quick)")
    p.add_argument("--gemm-n", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="limit the BLAS threads")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall time, or the process's CPU time (use with --threads 1 on a "
                        "machine shared with other jobs)")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    CLOCK[0] = time.process_time if a.clock == "cpu" else time.perf_counter
    kinds = ["cnn", "rnn"] if a.which == "both" else [a.which]

    def go():
        return {k: run(k, a.quick, a.repeats, a.gemm_n) for k in kinds}

    if a.threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            res = go()
    else:
        res = go()
    for r in res.values():
        r["clock"], r["threads"] = a.clock, a.threads
        print(format_table(r))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
