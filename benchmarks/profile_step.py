"""Where a geomkfac K-FAC step and an SGD step spend their time on the deep autoencoder.

The net, data and settings of ``benchmarks/kfac_jax/side_by_side.py`` (net ``deep``: the
784-1000-500-250-30-250-500-1000-784 tanh autoencoder, batch 1000, Bernoulli loss, float32;
K-FAC with kfac-jax's default features: adaptive learning rate and momentum, LM damping from
1, EMA 0.95, factors every step, inverses every 5; SGD with momentum 0.9). Two views:

1. **Phase timer.** The methods the step calls (the model's forward and backward passes and
   forward-mode product, the loss, the optimizer's factor statistics, inverses,
   preconditioning, quadratic model, update) are wrapped at run time by timers that charge
   each call its *exclusive* time to a label qualified by its caller (``factors > backward``
   is the sampled backward pass of the curvature statistics); what no wrapper covers is the
   step's own Python and elementwise work (EMA, the gradient GEMMs ``Dzᵀ ā`` of
   ``_forward_backward``, …). Beside each phase stands a **GEMM floor**: the time of the same
   GEMMs (same shapes, dtype and memory layout) called alone, so that the phase's time minus
   its floor is what is spent around the GEMMs (elementwise passes, temporaries, copies,
   Python). The wrappers follow the names of the current backend; a name that is gone is
   skipped (its time then shows as unattributed).
2. **cProfile** of the same steps, the top functions by own time (written next to the
   results).

Reference: a 1000×784 @ 784×1000 float32 GEMM (the roofline of these shapes).

Run ``python benchmarks/profile_step.py`` (``--threads 1`` for one BLAS thread, ``--quick`` for
a small net). Writes ``benchmarks/results/profile_step[_quick].{json,md}`` and the cProfile
listings ``…_cprofile_{kfac,sgd}.txt``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "kfac_jax"))
import side_by_side as sbs  # noqa: E402  (the harness: nets, data, settings)

QUICK_SIZES = [64, 48, 24, 8, 24, 48, 64]


class PhaseTimer:
    """Exclusive wall time per caller-qualified label of wrapped callables."""

    def __init__(self):
        self.stack = []  # [label, start, child_time]
        self.times = defaultdict(float)
        self.calls = defaultdict(int)

    def wrap(self, owner, attr, label):
        fn = getattr(owner, attr, None)
        if fn is None:
            return False
        timer = self

        def timed(*a, **k):
            parent = timer.stack[-1][0] if timer.stack else None
            full = label if parent is None or parent == label else f"{parent} > {label}"
            timer.stack.append([full, time.perf_counter(), 0.0])
            try:
                return fn(*a, **k)
            finally:
                full, t0, child = timer.stack.pop()
                dt = time.perf_counter() - t0
                timer.times[full] += dt - child
                timer.calls[full] += 1
                if timer.stack:
                    timer.stack[-1][2] += dt

        setattr(owner, attr, timed)
        return True

    def reset(self):
        self.times.clear()
        self.calls.clear()


def instrument(opt, model, timer):
    """Wrap the backend's callables; returns the list of names wrapped."""
    import geomkfac.nn.optim.kfac as kfac_mod

    done = []
    for owner, attr, label in [
        (model, "forward_cache", "forward"), (model, "forward", "forward (eval)"),
        (model, "backward", "backward"), (model, "jvp", "jvp"),
        (opt.loss_fn, "value", "loss"), (opt.loss_fn, "grad", "loss"), (opt.loss_fn, "sample", "loss"),
        (opt, "_forward_backward", "fwd/bwd"), (opt, "_new_factors", "factors"),
        (opt, "_precondition", "precondition"), (opt, "_update", "quadratic model"),
        (opt, "_apply", "apply"), (opt, "_check", "finite checks"),
        (kfac_mod, "pi_correction", "inverses"), (kfac_mod, "safe_inverse", "inverses"),
        (kfac_mod, "use_cholesky", "inverses"),
    ]:
        if timer.wrap(owner, attr, label):
            done.append(f"{type(owner).__name__}.{attr}" if not isinstance(owner, type(kfac_mod))
                        else f"{owner.__name__}.{attr}")
    return done


def timeit(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def gemm_floors(model, N, repeats, k_dirs=2):
    """Median times of the GEMMs of each phase, called alone with the backend's layouts."""
    dt = model.dtype
    rng = np.random.default_rng(0)
    Ws = [np.asarray(l.W) for l in model.layers]
    sizes = model.sizes
    abar = [np.ones((N, s + 1), dtype=dt) for s in sizes[:-1]]
    Dz = [rng.standard_normal((N, s), dtype=np.float32).astype(dt) for s in sizes[1:]]
    Dk = [rng.standard_normal((k_dirs, N, s), dtype=np.float32).astype(dt) for s in sizes[1:]]
    Vk = [rng.standard_normal((k_dirs, o, i + 1), dtype=np.float32).astype(dt)
          for i, o in zip(sizes[:-1], sizes[1:])]
    Ainv = [np.eye(s + 1, dtype=dt) for s in sizes[:-1]]
    Ginv = [np.eye(s, dtype=dt) for s in sizes[1:]]
    G = [np.ones((o, i + 1), dtype=dt) for i, o in zip(sizes[:-1], sizes[1:])]
    L = len(Ws)

    def fwd():
        for i in range(L):
            abar[i][:, :-1] @ Ws[i].T

    def bwd():  # Dz_i W_i to the layer below
        for i in range(1, L):
            Dz[i] @ Ws[i]

    def grad():  # DW̄ = Dzᵀ ā
        for i in range(L):
            Dz[i].T @ abar[i]

    def factors():  # āᵀā, Dzᵀ Dz, and the sampled backward pass
        for i in range(L):
            abar[i].T @ abar[i]
            Dz[i].T @ Dz[i]
        bwd()

    import scipy.linalg

    def inverses():  # damped Cholesky inverses (potrf + potri), as the backend's
        for M in Ainv + Ginv:
            Md = M + 0.1 * np.eye(M.shape[0], dtype=dt)
            potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (Md,))
            c, _ = potrf(Md, lower=False)
            potri(c, lower=False, overwrite_c=True)

    def precond():
        for g, a, q in zip(G, Ainv, Ginv):
            q @ (g @ a)

    def gvp():  # the quadratic model: one forward-mode pass of k stacked directions, as the
        # backend's direction_rows (ā [V_1; …; V_k]ᵀ) and the k·N rows times Wᵀ (no backward pass)
        for i in range(L):
            abar[i] @ Vk[i].reshape(-1, Vk[i].shape[-1]).T
            if i:
                Dk[i - 1].reshape(-1, Dk[i - 1].shape[-1]) @ Ws[i].T

    return {name: timeit(fn, repeats) for name, fn in [
        ("forward", fwd), ("backward", bwd), ("gradient", grad), ("factors", factors),
        ("inverses", inverses), ("precondition", precond), ("gvp", gvp)]}


#: the phases of the table: (name, GEMM floor keys)
PHASES = [
    ("forward pass", ["forward"]),
    ("backward pass + gradient GEMMs Dzᵀā", ["backward", "gradient"]),
    ("loss and its gradient (elementwise)", []),
    ("factor statistics (āᵀā, sampled backward, DzᵀDz)", ["factors"]),
    ("inverses (every 5th step: π, damped Cholesky inverses)", ["inverses"]),
    ("preconditioning G⁻¹ DW̄ A⁻¹", ["precondition"]),
    ("quadratic model (GGN Gram matrix of 2 directions by forward mode, α, μ)", ["gvp"]),
    ("update θ ← θ + δ", []),
    ("LM ρ: extra forward pass (every 5th step)", []),
    ("finite checks", []),
]


def classify(label):
    """The phase of a caller-qualified label of the phase timer."""
    parts = label.split(" > ")
    first, last = parts[0], parts[-1]
    if first == "factors":
        return PHASES[3][0]
    if first == "quadratic model":
        return PHASES[6][0]
    if "forward (eval)" in parts:
        return PHASES[8][0]
    return {"forward": PHASES[0][0], "backward": PHASES[1][0], "fwd/bwd": PHASES[1][0],
            "loss": PHASES[2][0], "inverses": PHASES[4][0], "precondition": PHASES[5][0],
            "apply": PHASES[7][0], "forward (eval)": PHASES[8][0],
            "finite checks": PHASES[9][0]}.get(last, "other: " + label)


def phase_table(times, steps, floors, inverse_period=5):
    acc = defaultdict(float)
    for label, t in times.items():
        acc[classify(label)] += t
    rows = []
    for name, fkeys in PHASES:
        floor = sum(floors.get(k, 0.0) for k in fkeys)
        if "inverses" in fkeys:
            floor /= inverse_period
        rows.append({"phase": name, "ms_per_step": 1e3 * acc.pop(name, 0.0) / steps,
                     "gemm_floor_ms": 1e3 * floor if fkeys else None})
    for name, t in acc.items():
        rows.append({"phase": name, "ms_per_step": 1e3 * t / steps, "gemm_floor_ms": None})
    return rows


def profile(kind, args, sizes, N, steps, warmup):
    from geomkfac.nn import get_optimizer

    X, Y, model = sbs.make_problem("deep", sizes=sizes, batch=N)
    hyper = (sbs.GEOMKFAC_KFAC if kind == "kfac"
             else {"lr": sbs.NETS["deep"]["sgd_lr"], "momentum": 0.9})
    opt = get_optimizer(kind, model, "bernoulli", **hyper)
    for _ in range(warmup):
        opt.step(X, Y)
    # plain step times (no instrumentation)
    plain = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step(X, Y)
        plain.append(time.perf_counter() - t0)
    # phase timer (a whole number of inverse periods)
    timer = PhaseTimer()
    wrapped = instrument(opt, model, timer)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(X, Y)
    total = time.perf_counter() - t0
    times = dict(timer.times)
    # cProfile
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(steps):
        opt.step(X, Y)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
    listing = re.sub(r"\S*/site-packages/", "site-packages/",
                     s.getvalue().replace(str(sbs.ROOT) + "/", ""))
    floors = gemm_floors(model, N, repeats=5)
    rows = phase_table(times, steps, floors)
    instrumented = 1e3 * total / steps
    rows.append({"phase": "unattributed (step body: EMA, bookkeeping, Python)",
                 "ms_per_step": instrumented - sum(r["ms_per_step"] for r in rows),
                 "gemm_floor_ms": None})
    return {"kind": kind, "hyper": hyper, "plain_median_ms": 1e3 * statistics.median(plain),
            "plain_step_ms": [1e3 * t for t in plain], "instrumented_mean_ms": instrumented,
            "phases": rows, "labels_ms_per_step": {k: 1e3 * v / steps for k, v in times.items()},
            "calls": dict(timer.calls), "wrapped": wrapped,
            "gemm_floors_ms": {k: 1e3 * v for k, v in floors.items()},
            "cprofile": listing}


def markdown(res):
    out = []
    for key in ("kfac", "sgd"):
        r = res[key]
        out.append(f"**{'K-FAC' if key == 'kfac' else 'SGD-m'}**: median step "
                   f"{r['plain_median_ms']:.1f} ms uninstrumented, "
                   f"{r['instrumented_mean_ms']:.1f} ms under the phase timer (mean).")
        out.append("")
        out.append("| phase | ms / step | GEMM floor ms | around the GEMMs ms |")
        out.append("|---|---:|---:|---:|")
        for p in r["phases"]:
            if p["ms_per_step"] < 0.05 and (key == "sgd" or p["gemm_floor_ms"] is None):
                continue
            fl = p["gemm_floor_ms"]
            fls = "–" if fl is None else f"{fl:.1f}"
            around = "–" if fl is None else f"{p['ms_per_step'] - fl:.1f}"
            out.append(f"| {p['phase']} | {p['ms_per_step']:.1f} | {fls} | {around} |")
        out.append("")
    g = res["gemm"]
    out.append(f"GEMM 1000×784 @ 784×1000 float32: {g['median_s'] * 1e3:.1f} ms "
               f"({g['gflops_per_s']:.0f} GFLOP/s). Load {res['load_before']} → "
               f"{res['load_after']}; BLAS threads: {res['threads'] or 'default'}; "
               + ", ".join(f"{b['internal_api']} {b.get('architecture')} ×{b.get('num_threads')}"
                           for b in (res['blas'] or [])) + ".")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="steps per view (a multiple of 5)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="stem of the results (default benchmarks/results/profile_step)")
    args = p.parse_args(argv)
    limiter = None
    if args.threads:
        import scipy.linalg  # noqa: F401  (SciPy's own OpenBLAS: load it before limiting)
        import threadpoolctl

        limiter = threadpoolctl.threadpool_limits(args.threads)
    sizes, N = (QUICK_SIZES, 100) if args.quick else (sbs.NETS["deep"]["sizes"], 1000)
    steps, warmup = (5, 1) if args.quick else (args.steps, args.warmup)
    res = {"sizes": sizes, "batch": N, "steps": steps, "warmup": warmup,
           "threads": args.threads, "load_before": sbs.loadavg()}
    res["gemm"] = sbs.numpy_gemm(1000, 784, 1000)
    res["kfac"] = profile("kfac", args, sizes, N, steps, warmup)
    res["sgd"] = profile("sgd", args, sizes, N, steps, warmup)
    res["load_after"] = sbs.loadavg()
    res["blas"] = sbs.blas_info()
    res["environment"] = sbs.environment()
    res["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = markdown(res)
    print(text)
    stem = args.out or str(HERE / "results" / ("profile_step" + ("_quick" if args.quick else "")))
    for key in ("kfac", "sgd"):
        Path(f"{stem}_cprofile_{key}.txt").write_text(res[key].pop("cprofile"))
    Path(stem + ".json").write_text(json.dumps(res, indent=1))
    Path(stem + ".md").write_text(text)
    if limiter is not None:
        limiter.restore_original_limits()
    return res


if __name__ == "__main__":
    main()
