"""Step cost of K-FAC against SGD on the deep autoencoder, with achieved GFLOP/s.

The network is the 784-1000-500-250-30-250-500-1000-784 tanh autoencoder of Martens & Grosse
(2015) (linear output layer giving Bernoulli logits), in float32, at batch size 1000, on
random binary data (``X`` with independent fair-coin pixels, targets ``Y = X``, loss
``"bernoulli"``, i.e. sigmoid cross-entropy). Everything runs in one process:

1. a NumPy float32 GEMM (``n × n @ n × n``, ``n = 2000``) — the machine's reachable rate,
   timed once per round of step 2, median over the rounds;
2. SGD steps (``geomkfac.nn.optim.SGD``, momentum 0.9) and K-FAC steps
   (``geomkfac.nn.optim.KFAC``, Monte Carlo Fisher with one sample, factored Tikhonov damping
   with the π correction, EMA of the factors, direct damped inverses) timed in alternation:
   each round (after one warm-up round) times 3 SGD steps (median) and one whole period
   (``lcm`` of the two update periods) of each K-FAC setting (mean step). The step times are
   medians over the rounds; the ratio "x SGD" is the median of the per-round (paired) ratios,
   which is robust to load drifting during the run. A second estimate, "x SGD (kinds)",
   composes the period from the median time of each kind of step (with/without factor and
   inverse updates) over all rounds, which is robust to a disturbed round. The K-FAC
   settings:

   - ``plain``: factors every step, inverses every 5 steps;
   - ``amortized``: factors every 10 steps, inverses every 20 steps (Martens & Grosse 2015
     recompute the inverses every ``T₃ = 20`` iterations; the factor period 10 is this
     benchmark's choice of amortized statistics).

FLOP counts (multiply-adds count 2; elementwise work — activations, the loss, EMA,
symmetrization — is not counted). Layer ``i`` maps ``in_i → out_i``; ``d_i = in_i + 1`` (the
homogeneous input ``ā``); ``N`` is the batch size:

- forward:            ``Σ_i 2 N out_i d_i``
- backward:           ``Σ_i 2 N out_i d_i``  (``DW̄ = Dzᵀ ā``)  ``+ Σ_{i>1} 2 N out_i in_i``
  (``Dz_i W_i`` to the layer below)
- factors (per factor update): ``Σ_i 2 N d_i² + 2 N out_i²`` (``āᵀā`` and ``Dzᵀ Dz``) plus one
  extra backward pass of the sampled output gradients ``Σ_{i>1} 2 N out_i in_i``
- inverses (per inverse update): ``Σ_i d_i³ + out_i³`` (Cholesky ``potrf`` ``⅓ n³`` plus
  ``potri`` ``⅔ n³``, i.e. ``n³`` per symmetric positive-definite factor)
- preconditioning:    ``Σ_i 2 out_i² d_i + 2 out_i d_i²`` (``G⁻¹ (DW̄ A⁻¹)``)

SGD counts forward + backward; a K-FAC step of a period counts forward + backward +
preconditioning + (factor FLOPs)/(factor period) + (inverse FLOPs)/(inverse period). The
achieved rate is FLOPs / median time. A component profile (forward, backward, factor GEMMs,
sampled backward, inverses, preconditioning, bookkeeping) is measured with the same building
blocks the optimizer calls and reported beside it.

Run ``python benchmarks/step_cost.py --json step_cost.json`` (``--quick`` for a small net).
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

from geomkfac.nn import MLP, get_loss
from geomkfac.nn.curvature import kfac_factors_from_cache
from geomkfac.nn.optim import KFAC, SGD
from geomkfac.nn.optim.kronecker import (
    pi_correction,
    precondition_factored,
    safe_inverse,
    use_cholesky,
)

FULL_SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
QUICK_SIZES = [64, 48, 24, 8, 24, 48, 64]

#: the two K-FAC settings: name -> (factor_update_period, inverse_update_period)
SETTINGS = {"plain": (1, 5), "amortized": (10, 20)}

#: targets (K-FAC step time / SGD step time)
TARGETS = {"plain": 4.4, "amortized": 2.0}


# --------------------------------------------------------------------------- FLOP counts


def _dims(sizes):
    return [(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)]


def flops_forward(sizes, N):
    """``Σ_i 2 N out_i (in_i + 1)``."""
    return sum(2 * N * o * (i + 1) for i, o in _dims(sizes))


def flops_backward(sizes, N):
    """Weight gradients ``Σ_i 2 N out_i (in_i + 1)`` plus ``Σ_{i>1} 2 N out_i in_i``."""
    dims = _dims(sizes)
    return sum(2 * N * o * (i + 1) for i, o in dims) + _flops_backprop_only(sizes, N)


def _flops_backprop_only(sizes, N):
    """One backward pass without weight gradients: ``Σ_{i>1} 2 N out_i in_i``."""
    return sum(2 * N * o * i for i, o in _dims(sizes)[1:])


def flops_factors(sizes, N, mc_samples=1):
    """``Σ_i 2 N (in_i+1)² + 2 N out_i²`` plus ``mc_samples`` extra backward passes."""
    gemms = sum(2 * N * (i + 1) ** 2 + 2 * N * o ** 2 for i, o in _dims(sizes))
    return gemms + mc_samples * _flops_backprop_only(sizes, N)


def flops_inverses(sizes):
    """``Σ_i (in_i+1)³ + out_i³`` (Cholesky + inversion from it, ``n³`` per factor)."""
    return sum((i + 1) ** 3 + o ** 3 for i, o in _dims(sizes))


def flops_precondition(sizes):
    """``Σ_i 2 out_i² (in_i+1) + 2 out_i (in_i+1)²``."""
    return sum(2 * o * o * (i + 1) + 2 * o * (i + 1) ** 2 for i, o in _dims(sizes))


def flops_sgd_step(sizes, N):
    return flops_forward(sizes, N) + flops_backward(sizes, N)


def flops_kfac_step(sizes, N, factor_period, inverse_period):
    """Average FLOPs of one K-FAC step over a whole period."""
    return (flops_sgd_step(sizes, N) + flops_precondition(sizes)
            + flops_factors(sizes, N) / factor_period + flops_inverses(sizes) / inverse_period)


# --------------------------------------------------------------------------- timing


def _median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def make_problem(sizes, N, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.random((N, sizes[0])) < 0.5).astype(np.float32)
    return X, X


def _kind(k, factor_period, inverse_period):
    f, i = k % factor_period == 0, k % inverse_period == 0
    if f and i:
        return "factors+inverses"
    return "factors" if f else "inverses" if i else "precondition only"


def time_interleaved(sizes, X, Y, repeats, seed=0, sgd_steps=3, gemm_n=2000):
    """SGD and the K-FAC settings timed in alternation, round by round.

    Each of ``repeats`` rounds (after one warm-up round) times one float32 GEMM of size
    ``gemm_n``, ``sgd_steps`` SGD steps (their median is the round's SGD step) and one whole
    period (``lcm`` of the two update periods,
    aligned to the step counter) of each K-FAC setting (its mean step). Alternating makes the
    K-FAC/SGD ratio of each round a paired measurement, robust to load that drifts during the
    run; the reported figures are medians over the rounds.
    """
    net0 = MLP(sizes, "tanh", seed=seed, dtype=np.float32)
    sgd = SGD(net0.copy(), "bernoulli", lr=1e-3, momentum=0.9)
    kfacs = {}
    for name, (fp, ip) in SETTINGS.items():
        kfacs[name] = KFAC(net0.copy(), "bernoulli", lr=1e-3, damping=1e-1, fisher="mc",
                           ema_decay=0.95, factor_update_period=fp, inverse_update_period=ip)
    res = {"sgd": {"rounds_s": []}, "gemm": []}
    for name in SETTINGS:
        res[name] = {"rounds_s": [], "ratios": [], "steps": []}
    rng = np.random.default_rng(0)
    GA = rng.standard_normal((gemm_n, gemm_n)).astype(np.float32)
    GB = rng.standard_normal((gemm_n, gemm_n)).astype(np.float32)
    GC = np.empty_like(GA)
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        np.matmul(GA, GB, out=GC)
        if r > 0:
            res["gemm"].append(2.0 * gemm_n ** 3 / (time.perf_counter() - t0) / 1e9)
        ts = []
        for _ in range(sgd_steps):
            t0 = time.perf_counter()
            sgd.step(X, Y)
            ts.append(time.perf_counter() - t0)
        t_sgd = statistics.median(ts)
        if r > 0:
            res["sgd"]["rounds_s"].append(t_sgd)
        for name, (fp, ip) in SETTINGS.items():
            period = math.lcm(fp, ip)
            steps = []
            for k in range(period):
                t0 = time.perf_counter()
                kfacs[name].step(X, Y)
                steps.append(time.perf_counter() - t0)
            if r > 0:
                mean = sum(steps) / period
                res[name]["rounds_s"].append(mean)
                res[name]["ratios"].append(mean / t_sgd)
                res[name]["steps"].extend((k, t) for k, t in enumerate(steps))
    out = {"sgd": {"step_s": statistics.median(res["sgd"]["rounds_s"]),
                   "rounds_s": res["sgd"]["rounds_s"]},
           "gemm_gflops_per_s": statistics.median(res["gemm"]), "gemm_rounds": res["gemm"]}
    for name, (fp, ip) in SETTINGS.items():
        by_kind = {}
        for k, t in res[name]["steps"]:
            by_kind.setdefault(_kind(k, fp, ip), []).append(t)
        med = {k: statistics.median(v) for k, v in by_kind.items()}
        period = math.lcm(fp, ip)
        composed = sum(med[_kind(k, fp, ip)] for k in range(period)) / period
        out[name] = {
            "step_s": statistics.median(res[name]["rounds_s"]),
            "composed_step_s": composed,
            "rounds_s": res[name]["rounds_s"],
            "paired_ratios": res[name]["ratios"],
            "period": math.lcm(fp, ip),
            "median_by_step_kind_s": {k: statistics.median(v) for k, v in by_kind.items()},
        }
    return out


def profile_components(sizes, X, Y, repeats, seed=0):
    """Median seconds of each part of a K-FAC step, with the building blocks it calls."""
    net = MLP(sizes, "tanh", seed=seed, dtype=np.float32)
    loss = get_loss("bernoulli")
    N = X.shape[0]
    rng = np.random.default_rng(0)
    out = {}
    f, cache = net.forward_cache(X)
    out["forward"] = _median_time(lambda: net.forward_cache(X), repeats)[0]
    dF = loss.grad(f, Y)
    out["backward (Dz)"] = _median_time(lambda: net.backward(cache, dF), repeats)[0]
    Dz = net.backward(cache, dF)
    out["weight gradients"] = _median_time(
        lambda: [(D.T @ ab) / N for D, ab in zip(Dz, cache.abar)], repeats)[0]
    out["factors (incl. sampled backward)"] = _median_time(
        lambda: kfac_factors_from_cache(net, cache, f, Y, loss, "mc", rng, 1), repeats)[0]
    out["factor GEMMs only"] = _median_time(
        lambda: ([(ab.T @ ab) / N for ab in cache.abar], [(D.T @ D) / N for D in Dz]),
        repeats)[0]
    fac = kfac_factors_from_cache(net, cache, f, Y, loss, "mc", rng, 1)

    def inverses():
        res = []
        chol = use_cholesky([m for pair in fac for m in pair])  # as the optimizer decides
        for a, g in fac:
            pi = pi_correction(a, g)
            res.append((safe_inverse(a, pi * 0.3, cholesky=chol)[0],
                        safe_inverse(g, 0.3 / pi, cholesky=chol)[0]))
        return res

    out["inverses (all layers)"] = _median_time(inverses, max(3, repeats // 2))[0]
    invs = inverses()
    grads = [(D.T @ ab) / N for D, ab in zip(Dz, cache.abar)]
    out["precondition"] = _median_time(
        lambda: [precondition_factored(g, Ai, Gi) for g, (Ai, Gi) in zip(grads, invs)],
        repeats)[0]
    Wb = net.get_Wbars()
    out["get/set W̄ (copies)"] = _median_time(lambda: net.set_Wbars(net.get_Wbars()), repeats)[0]
    del Wb
    return out


# --------------------------------------------------------------------------- report


def blas_info():
    info = {"numpy": np.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
    try:
        import threadpoolctl

        info["blas"] = [
            {k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpoolctl.threadpool_info()
        ]
    except ImportError:  # pragma: no cover - optional
        info["blas"] = None
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:  # pragma: no cover - platform
        info["loadavg"] = None
    return info


def run(quick=False, repeats=None, batch=None, gemm_n=None, seed=0):
    sizes = QUICK_SIZES if quick else FULL_SIZES
    N = batch or (64 if quick else 1000)
    repeats = repeats or (3 if quick else 7)
    gemm_n = gemm_n or (256 if quick else 2000)
    X, Y = make_problem(sizes, N, seed)
    machine = blas_info()  # inside a threadpool_limits block this shows the limit
    rows = []
    timing = time_interleaved(sizes, X, Y, repeats, seed, gemm_n=gemm_n)
    gemm_gflops = timing["gemm_gflops_per_s"]
    sgd = timing["sgd"]
    sgd_flops = flops_sgd_step(sizes, N)
    rows.append({"method": "sgd", "setting": "-", "factor_period": None, "inverse_period": None,
                 "step_s": sgd["step_s"], "ratio_to_sgd": 1.0, "ratio_of_medians": 1.0,
                 "gflop": sgd_flops / 1e9, "gflops_per_s": sgd_flops / sgd["step_s"] / 1e9,
                 "target_ratio": None, "met": None, "detail": sgd})
    for name, (fp, ip) in SETTINGS.items():
        k = timing[name]
        fl = flops_kfac_step(sizes, N, fp, ip)
        ratio = statistics.median(k["paired_ratios"])
        rows.append({"method": "kfac", "setting": name, "factor_period": fp, "inverse_period": ip,
                     "step_s": k["step_s"], "ratio_to_sgd": ratio,
                     "ratio_of_medians": k["step_s"] / sgd["step_s"],
                     "composed_ratio": k["composed_step_s"] / sgd["step_s"], "gflop": fl / 1e9,
                     "gflops_per_s": fl / k["step_s"] / 1e9, "target_ratio": TARGETS[name],
                     "met": bool(ratio <= TARGETS[name]), "detail": k})
    profile = profile_components(sizes, X, Y, repeats, seed)
    machine["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    flops = {"forward": flops_forward(sizes, N), "backward": flops_backward(sizes, N),
             "factors": flops_factors(sizes, N), "inverses": flops_inverses(sizes),
             "precondition": flops_precondition(sizes)}
    return {"sizes": sizes, "batch": N, "dtype": "float32", "loss": "bernoulli",
            "fisher": "mc (1 sample)", "repeats": repeats, "gemm_n": gemm_n,
            "gemm_gflops_per_s": gemm_gflops, "gemm_rounds": timing["gemm_rounds"], "machine": machine,
            "rows": rows, "profile_s": profile, "flops": flops}


def _blas_line(m):
    if not m.get("blas"):
        return "?"
    return ", ".join(f"{d['internal_api']} {d['version']} {d['architecture']} "
                     f"{d['num_threads']} thread(s)" for d in m["blas"] if d)


def format_table(res):
    lines = [
        f"net {'-'.join(map(str, res['sizes']))} tanh, batch {res['batch']}, {res['dtype']}, "
        f"loss {res['loss']}, K-FAC Fisher {res['fisher']}, medians of {res['repeats']} rounds; "
        f"BLAS {_blas_line(res['machine'])}",
        f"float32 GEMM {res['gemm_n']}x{res['gemm_n']}: {res['gemm_gflops_per_s']:.1f} GFLOP/s",
        "",
        f"{'method':<8}{'setting':<11}{'periods':>9}{'step [ms]':>11}{'x SGD':>8}{'(kinds)':>8}"
        f"{'GFLOP':>8}{'GFLOP/s':>9}{'% GEMM':>8}{'target':>8}{'met':>5}",
    ]
    for r in res["rows"]:
        per = "-" if r["factor_period"] is None else f"{r['factor_period']}/{r['inverse_period']}"
        tgt = "-" if r["target_ratio"] is None else f"<={r['target_ratio']:g}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "no")
        lines.append(
            f"{r['method']:<8}{r['setting']:<11}{per:>9}{1e3 * r['step_s']:>11.1f}"
            f"{r['ratio_to_sgd']:>8.2f}{r.get('composed_ratio', 1.0):>8.2f}{r['gflop']:>8.2f}{r['gflops_per_s']:>9.1f}"
            f"{100 * r['gflops_per_s'] / res['gemm_gflops_per_s']:>7.0f}%{tgt:>8}{met:>5}")
    lines += ["", "K-FAC step kinds (median ms):"]
    for r in res["rows"]:
        if r["method"] == "kfac":
            kinds = ", ".join(f"{k} {1e3 * v:.1f}"
                              for k, v in r["detail"]["median_by_step_kind_s"].items())
            lines.append(f"  {r['setting']}: {kinds}")
    lines += ["", "component profile (median ms, one call each):"]
    for k, v in res["profile_s"].items():
        lines.append(f"  {k:<36}{1e3 * v:>9.1f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small net and batch (smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7; 3 quick)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 1000; 64 quick)")
    p.add_argument("--gemm-n", type=int, default=None, help="GEMM size (default 2000)")
    p.add_argument("--threads", type=int, default=None,
                   help="limit the BLAS threads (threadpoolctl; default: the library's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    a = p.parse_args(argv)
    if a.threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            res = run(a.quick, a.repeats, a.batch, a.gemm_n, a.seed)
    else:
        res = run(a.quick, a.repeats, a.batch, a.gemm_n, a.seed)
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
