"""geomkfac against kfac-jax (K-FAC) and optax (SGD-momentum), side by side on one machine.

Both sides train the **same nets from the same initial weights on the same data** with
matched settings, one after the other in one process tree: this script runs the geomkfac
side in its own process (the repository's environment) and the JAX side as a subprocess
in the separate virtual environment made by ``benchmarks/kfac_jax/setup.sh``
(``.venv-kfac-jax`` in the repository root; ``--venv`` to point elsewhere), passing the data
and the initial weights through an ``.npz`` in a temporary folder.

Nets (float32, one fixed batch every step). Two autoencoders (tanh hidden layers, linear
output giving Bernoulli logits, loss ``"bernoulli"`` = ``mean_n Σ_c softplus(f_c) − y_c f_c``):

- ``deep``: the 784-1000-500-250-30-250-500-1000-784 autoencoder, batch 1000, random inputs
  uniform in ``[0, 1]`` (targets = inputs);
- ``digits``: the 64-128-64-32-64-128-64 autoencoder on the embedded digits
  (:func:`geomkfac.nn.data.load_digits`), full batch 1797;

and the benchmark CNN of ``benchmarks/layer_step_cost.py`` (its ``make_cnn``):

- ``cnn``: random ``1×28×28`` inputs, 10 random classes, batch 128: conv 1→32 5×5 (pad 2,
  ReLU) → 2×2 max pool → conv 32→64 5×5 (pad 2, ReLU) → 2×2 max pool → flatten (channel-major)
  → dense 3136→1024 (ReLU) → dense 10, softmax cross-entropy (``"ce"``). The JAX side builds
  the same layers from the geomkfac layers' ``spec()`` (``lax.conv_general_dilated`` on
  ``NCHW`` images, geomkfac's layout, with the kernels as ``HWIO``, see ``jax_side.py``) and
  registers the loss with
  ``register_softmax_cross_entropy_loss``; kfac-jax finds the conv and dense layers by its
  graph matching, and the curvature blocks it made are recorded (``kfac_blocks``). Both sides'
  loss at the initial point is recorded (``initial_loss_*``): equal to float32 rounding, it
  shows that the weights and layouts match. For this net the JAX side also runs kfac-jax
  with its conv input factor from its own ``patches_moments_explicit`` (im2col, then one
  matrix product) instead of its default ``patches_moments`` (a loop of 4-D convolutions,
  slow on a CPU): ``jax_kfac_explicit``, reported under the table with its ratio.

Settings (matched; see ``FEATURES``): K-FAC with the learning rate and momentum from the
quadratic model (exact GGN-vector products), Levenberg–Marquardt damping from λ = 1 adapted
every 5 steps, curvature EMA 0.95, factors every step, inverses every 5 steps, one-sample
curvature estimate; SGD with heavy-ball momentum 0.9 (same learning rate on both sides).

Modes:

- ``--mode steps`` (default): per-step wall time, the median over the steps after the
  warm-up, for each optimizer and net, and the ratios geomkfac / JAX; the losses after the
  run are reported beside them (they should be comparable, not equal: the curvature samples
  and the damping rule's constants differ, see ``FEATURES``);
- ``--mode interleaved``: the per-step cost with both sides alive at once, alternating
  blocks of ``--block`` steps (``--pairs`` pairs per optimizer and net, the order swapped
  every pair, ``--settle`` idle seconds before every block; the JAX side serves the blocks
  through its stdin, ``jax_side.py``'s ``serve`` job); the ratio is the median over the pairs
  of the two blocks' mean step times (:func:`pair_summary`), which cancels the machine's
  drift between the time windows that the one-after-the-other modes compare;
- ``--mode target``: seconds (and steps) of K-FAC on both sides to reach a fixed training loss
  on the digits autoencoder, each side the best run of the same small sweep (initial damping
  × curvature tracking, :func:`_target_sweep`; JAX's compilation is done on a throwaway run
  and is not on the clock; it is reported).

``--threads N`` pins both sides to N CPUs and sets their thread counts (:func:`pin_cpus`);
every run records the cores it used (process CPU time ÷ wall time). ``--repeats K`` runs the
whole comparison K times and reports each run's ratios and their median: the machine's
speed can drift between the two sides' time windows of one run.

Each run records the machine load (``/proc/loadavg``) before and after each side, the BLAS
(``threadpoolctl``) and the versions. ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE``, when set in
the environment, are dropped for this script (it re-executes itself without them, unless
``--keep-openblas-env``), since they select a slower OpenBLAS kernel than the one NumPy picks
itself; the kernel that ran is in the results.

Run ``python benchmarks/kfac_jax/side_by_side.py --quick`` (a few steps; a few minutes, mostly JAX compilation), the
full measurement without ``--quick`` (``--nets cnn`` for the CNN alone), and ``--mode target``
for the time to the target loss.
Results go to ``benchmarks/results/side_by_side[_target|_interleaved][_quick].{json,md}`` (``--out`` to
change the stem). ``--no-jax`` runs the geomkfac side alone.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_VENV = ROOT / ".venv-kfac-jax"
RESULTS = HERE.parent / "results"
if str(ROOT) not in sys.path:  # this checkout's geomkfac, not another installed copy
    sys.path.insert(0, str(ROOT))
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

NETS = {
    "deep": {"sizes": [784, 1000, 500, 250, 30, 250, 500, 1000, 784], "batch": 1000,
             "data": "uniform", "loss": "bernoulli", "sgd_lr": 1e-3,
             "label": "784-1000-500-250-30-250-500-1000-784, batch 1000, Bernoulli"},
    "digits": {"sizes": [64, 128, 64, 32, 64, 128, 64], "batch": 1797, "data": "digits",
               "loss": "bernoulli", "sgd_lr": 1e-2,
               "label": "digits 64-128-64-32-64-128-64, full batch 1797"},
    # sizes = (conv1 channels, conv2 channels, hidden units, image side) of make_cnn
    "cnn": {"sizes": [32, 64, 1024, 28], "batch": 128, "data": "cnn", "loss": "ce",
            "sgd_lr": 1e-2,
            "label": "CNN c5×5(32)-pool-c5×5(64)-pool-1024-10, 1×28×28, batch 128, softmax CE"},
}
#: the loss names of the JAX side, by geomkfac loss name
JAX_LOSS = {"bernoulli": "bernoulli", "ce": "softmax_ce"}

#: the geomkfac K-FAC settings matched to kfac-jax's defaults (kfac_jax.Optimizer with
#: use_adaptive_learning_rate / use_adaptive_momentum / use_adaptive_damping, initial_damping=1)
GEOMKFAC_KFAC = {"adaptive_lr": True, "adapt_damping": True, "damping": 1.0,
                 "ema_decay": 0.95, "factor_update_period": 1, "inverse_update_period": 5,
                 "lm_period": 5, "fisher": "mc", "mc_samples": 1}
JAX_KFAC = {"initial_damping": 1.0, "curvature_ema": 0.95, "curvature_update_period": 1,
            "inverse_update_period": 5, "damping_adaptation_interval": 5}

FEATURES = {
    "kfac-jax K-FAC": (
        "kfac_jax.Optimizer 0.0.8, jit; adaptive learning rate and momentum (quadratic model, "
        "exact GGN products); LM damping from 1.0 every 5 steps (factor 0.9^5, thresholds "
        "0.25/0.75); curvature EMA 0.95; factors every step, inverses every 5; curvature "
        "estimate 'ggn_curvature_prop' (1 sample); π-corrected factored damping; "
        "no weight decay, no step rejection, no burn-in"),
    "geomkfac K-FAC": (
        "get_optimizer('kfac', adaptive_lr=True, adapt_damping=True, damping=1.0, "
        "ema_decay=0.95, factor_update_period=1, inverse_update_period=5, lm_period=5, "
        "fisher='mc', mc_samples=1); LM factor (19/20)^5, thresholds 0.25/0.75; π-corrected "
        "factored damping; no KL clipping (off with adaptive_lr)"),
    "optax SGD-m": "optax.sgd(lr, momentum=0.9) in one jax.jit'ed step (value_and_grad + update)",
    "geomkfac SGD-m": "get_optimizer('sgd', lr, momentum=0.9) (PyTorch heavy ball, as optax)",
    "fused kernels": (
        "geomkfac: the elementwise work around NumPy's tanh/exp/log1p passes compiled by "
        "numba where installed (geomkfac.nn.kernels; the results record whether it was); "
        "JAX: XLA's fusion"),
    "memory": (
        "geomkfac: glibc keeps freed memory between steps (geomkfac.memory, the default of "
        "every optimizer's first step); JAX: XLA's own allocator (its default)"),
    "kfac-jax K-FAC, explicit patches (cnn only)": (
        "as 'kfac-jax K-FAC' with the conv blocks' input factor computed by kfac-jax's "
        "patches_moments_explicit (conv_general_dilated_patches + one matmul) instead of its "
        "default patches_moments (a loop of 4-D convolutions over the kernel offsets)"),
    "cnn curvature blocks": (
        "both sides KFC (Grosse & Martens 2016) for the conv layers: A over the 5×5 patches "
        "with the bias's homogeneous 1, G over the locations, scale |T|; the dense layers "
        "K-FAC; max pooling and flatten parameter-free (kfac-jax's blocks as registered by "
        "its graph matcher are in kfac_blocks)"),
}


# ---------------------------------------------------------------------------- environment
def loadavg():
    """The three load averages of ``/proc/loadavg`` (``None`` where it is not readable)."""
    try:
        with open("/proc/loadavg") as fh:
            return [float(x) for x in fh.read().split()[:3]]
    except OSError:
        return None


def blas_info():
    """The BLAS libraries NumPy loaded, their kernel and threads (``threadpoolctl``), or
    ``None`` when threadpoolctl is not installed."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    return [{"internal_api": d.get("internal_api"), "version": d.get("version"),
             "architecture": d.get("architecture"), "num_threads": d.get("num_threads"),
             "library": os.path.basename(d.get("filepath") or "")}
            for d in threadpoolctl.threadpool_info()]


def allocator():
    """What geomkfac's first optimizer step set for the C library's allocator
    (:mod:`geomkfac.memory`), ``None`` before any step."""
    from geomkfac import memory

    s = memory.current()
    return None if s is None else {"keep_freed_memory": s.keep, "applied": s.applied,
                                   "allocator": s.allocator, "detail": s.detail}


def fused_kernels():
    """Whether geomkfac's elementwise kernels ran compiled (:mod:`geomkfac.nn.kernels`), and
    numba's version."""
    from geomkfac.nn import kernels

    active = kernels.jit_active()
    version = None
    if active:
        import numba

        version = numba.__version__
    return {"compiled": active, "numba": version}


def environment():
    import geomkfac

    from geomkfac.nn.parallel import MIN_ROWS, workers

    return {"allocator": allocator(), "fused_kernels": fused_kernels(),
            "batch_workers": {"workers": workers(), "min_rows": MIN_ROWS},
            "python": platform.python_version(), "numpy": np.__version__,
            "geomkfac": getattr(geomkfac, "__version__", None), "geomkfac_commit": _commit(), "nproc": os.cpu_count(),
            "machine": platform.machine(), "processor": _cpu_model(),
            "openblas_env": {v: os.environ.get(v) for v in OPENBLAS_VARS},
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None,
            "blas": blas_info()}


def _commit():
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# ---------------------------------------------------------------------------- problems
def _layer_step_cost():
    """``benchmarks/layer_step_cost.py`` as a module (the CNN is its ``make_cnn``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_layer_step_cost",
                                                  HERE.parent / "layer_step_cost.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_problem(net, seed=0, sizes=None, batch=None):
    """``(X, Y, model)`` of one benchmark net: float32 data and a float32 geomkfac model
    (``seed`` fixes both); ``sizes`` / ``batch`` override the net's (smoke tests). The MLPs
    are ``geomkfac.nn.MLP``; ``cnn`` is ``layer_step_cost.make_cnn`` (a
    ``geomkfac.nn.Sequential``, ``Y`` integer labels), ``sizes`` = ``(c1, c2, hidden,
    side)``."""
    from geomkfac.nn import MLP

    spec = NETS[net]
    sizes = list(sizes or spec["sizes"])
    batch = int(batch or spec["batch"])
    if spec["data"] == "cnn":
        model, X, Y = _layer_step_cost().make_cnn(False, seed, (*sizes, batch))
        return np.ascontiguousarray(X, dtype=np.float32), Y, model
    if spec["data"] == "digits":
        from geomkfac.nn.data import load_digits

        X = load_digits(dtype=np.float32).X[:batch, : sizes[0]]
    else:
        X = np.random.default_rng(seed).random((batch, sizes[0]), dtype=np.float32)
    X = np.ascontiguousarray(X, dtype=np.float32)
    model = MLP(sizes, "tanh", seed=seed, dtype=np.float32)
    return X, X.copy(), model


def weights(model):
    """``[(W_i, b_i)]`` of the parametrized layers of a geomkfac MLP or Sequential, in
    geomkfac's layouts: dense ``W_i`` of shape ``(out, in)``, conv ``W_i`` of shape
    ``(out, in, k, k)``."""
    return [(np.array(l.W, dtype=np.float32), np.array(l.b, dtype=np.float32))
            for l in model.param_layers]


def save_problem(path, X, Y, model):
    arrays = {"X": X, "Y": Y}
    for i, (W, b) in enumerate(weights(model)):
        arrays[f"W{i}"], arrays[f"b{i}"] = W, b
    np.savez(path, **arrays)


def jax_net(net, model):
    """The job keys that tell the JAX side which network and loss to build: nothing for the
    MLP autoencoders (its default), else the layers' ``spec()`` and the loss."""
    if NETS[net]["data"] != "cnn":
        return {}
    return {"arch": [layer.spec() for layer in model.layers],
            "loss": JAX_LOSS[NETS[net]["loss"]]}


def _optimizer(kind, model, hyper, loss="bernoulli"):
    from geomkfac.nn import get_optimizer

    if kind == "kfac":
        return get_optimizer("kfac", model, loss, **hyper)
    return get_optimizer("sgd", model, loss, **hyper)


def train_loss(model, X, Y, loss="bernoulli"):
    from geomkfac.nn import get_loss

    return float(get_loss(loss).value(model.forward(X), Y))


def geomkfac_steps(net, kind, hyper, warmup, steps, seed=0, sizes=None, batch=None):
    """Time ``warmup + steps`` geomkfac steps of one optimizer on one net (fresh model).

    Returns a dict with ``step_times_s`` (the steps after the warm-up), ``median_s``,
    ``losses`` (the loss before each step) and ``final_loss`` (after the last step)."""
    X, Y, model = make_problem(net, seed, sizes, batch)
    loss = NETS[net]["loss"]
    opt = _optimizer(kind, model, hyper, loss)
    warm = geomkfac_block(opt, X, Y, warmup)
    timed = geomkfac_block(opt, X, Y, steps)
    times = timed["times"]
    return {"step_times_s": times, "median_s": statistics.median(times),
            "losses": warm["losses"] + timed["losses"],
            "final_loss": train_loss(model, X, Y, loss), "cores_used": timed["cpu"] / sum(times),
            "page_faults_per_step": timed["faults"] / len(times)}


def geomkfac_to_target(net, hyper, target, max_steps, max_seconds, seed=0):
    """Train geomkfac K-FAC until the loss before a step is ``<= target``; the clock counts
    the steps before that one."""
    X, Y, model = make_problem(net, seed)
    opt = _optimizer("kfac", model, hyper, NETS[net]["loss"])
    clock, trace, reached, diverged, cpu = 0.0, [], None, None, 0.0
    from geomkfac.errors import GeomKFACError

    for t in range(max_steps):
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            info = opt.step(X, Y)
        except GeomKFACError as exc:
            diverged = f"step {t}: {exc}"
            break
        before = clock
        clock += time.perf_counter() - t0
        cpu += time.process_time() - c0
        value = float(info.loss)
        trace.append((t, before, value))
        if value <= target:
            reached = {"steps": t, "seconds": before, "loss": value}
            break
        if clock > max_seconds:
            break
    rec = {"trace": trace, "reached": reached, "steps_run": len(trace),
           "best_loss": min(v for _, _, v in trace) if trace else None,
           "cores_used": cpu / clock if clock else None}
    if diverged:
        rec["diverged"] = diverged
    return rec


def numpy_gemm(m, k, n, repeats=20):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    med = statistics.median(ts)
    return {"shape": [m, k, n], "median_s": med, "gflops_per_s": 2 * m * k * n / med / 1e9}


# ---------------------------------------------------------------------------- the JAX side
def jax_python(venv):
    py = Path(venv) / "bin" / "python"
    return py if py.exists() else None


def _jax_env(threads=None):
    """The JAX side's environment: this one without the OpenBLAS kernel overrides, the CPU
    platform, and with ``threads`` the thread counts (one thread: XLA's Eigen pool off)."""
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    env.setdefault("JAX_PLATFORMS", "cpu")
    if threads:
        for v in THREAD_VARS:
            env[v] = str(threads)
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                                + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def run_jax(venv, job, tmp, threads=None):
    """Run ``jax_side.py`` in the venv on ``job``; returns its JSON (or ``{"error": ...}``)."""
    py = jax_python(venv)
    if py is None:
        return {"error": f"no virtual environment at {venv}: run benchmarks/kfac_jax/setup.sh"}
    job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "jax_out.json"
    job_path.write_text(json.dumps(job))
    env = _jax_env(threads)
    proc = subprocess.run([str(py), str(HERE / "jax_side.py"), str(job_path), str(out_path)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out_path.exists():
        return {"error": f"jax side exited {proc.returncode}: {proc.stderr[-3000:]}"}
    return json.loads(out_path.read_text())


def start_jax(venv, job, tmp, threads=None):
    """Start ``jax_side.py`` in the venv serving ``job`` (the interleaved protocol, see its
    ``_serve``); returns ``(process, READY payload)`` or ``(None, {"error": ...})``."""
    py = jax_python(venv)
    if py is None:
        return None, {"error": f"no virtual environment at {venv}: run benchmarks/kfac_jax/setup.sh"}
    job_path = Path(tmp) / "job.json"
    job_path.write_text(json.dumps(job))
    env = _jax_env(threads)
    proc = subprocess.Popen([str(py), str(HERE / "jax_side.py"), str(job_path),
                             str(Path(tmp) / "unused.json")], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc, _answer(proc, "READY")


def _answer(proc, tag):
    """The JSON of the next ``TAG <json>`` line of the JAX side (other lines skipped)."""
    for line in proc.stdout:
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    proc.wait(timeout=60)
    return {"error": f"jax side exited {proc.returncode} before {tag}: "
                     f"{proc.stderr.read()[-3000:]}"}


def _ask(proc, cmd, tag="RESULT"):
    proc.stdin.write(json.dumps(cmd) + "\n")
    proc.stdin.flush()
    return _answer(proc, tag)


def _timed(fn, k):
    """``k`` calls of ``fn``, each timed: times, the values ``fn`` returned (as floats), CPU
    time and page faults (the JAX side's block format)."""
    times, values, cpu, faults = [], [], 0.0, 0
    for _ in range(k):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0, t0 = time.process_time(), time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        values.append(float(value))
    return {"times": times, "losses": values, "cpu": cpu, "faults": faults}


def geomkfac_block(opt, X, Y, k):
    """``k`` geomkfac steps: times, losses, CPU time and page faults (as the JAX side's)."""
    return _timed(lambda: opt.step(X, Y).loss, k)


def sgd_step_gemms(model, X, Y, loss="bernoulli"):
    """The GEMMs of one geomkfac SGD step of an MLP, as a function of no arguments that
    computes them again on arrays from one pass made now, and the loss at that point.

    The function returns ``(forward, weight_grads, backprops)``: the forward GEMMs (``[z 1] =
    ā Wextᵀ`` of the hidden layers, ``ā W̄ᵀ`` of the last, as ``MLP.forward_cache``), the
    weight-gradient GEMMs ``Dzᵀ ā`` (``rows_product``, before the division by N) and the
    backpropagated ``Dz W`` (as ``MLP.backward``), last layer first for the last two."""
    from geomkfac.nn import get_loss
    from geomkfac.nn.layers.base import rows_product

    f, cache = model.forward_cache(X)
    value, g_out = get_loss(loss).value_and_grad(f, Y)
    Dz = model.backward(cache, g_out)
    layers, last = model.layers, len(model.layers) - 1

    def gemms():
        fwd = [cache.abar[i] @ (l.Wbar_view.T if i == last else l.Wext.T)
               for i, l in enumerate(layers)]
        wgrads, back = [], []
        for i in range(last, -1, -1):
            wgrads.append(rows_product(Dz[i], cache.abar[i]))
            if i > 0:
                back.append(Dz[i] @ (layers[i].Wbar_view if (i - 1) in cache.zext
                                     else layers[i].W))
        return fwd, wgrads, back

    return gemms, float(value)


def gemm_floor_block(model, X, Y, k, loss="bernoulli"):
    """``k`` times :func:`sgd_step_gemms` alone (``--gemm-floor``); returns what
    :func:`geomkfac_block` returns (the losses: the loss at that point)."""
    gemms, value = sgd_step_gemms(model, X, Y, loss)
    return _timed(lambda: (gemms(), value)[1], k)


def pair_summary(pairs):
    """Each pair's ratio of mean step times (geomkfac ÷ JAX; a block of ``k`` steps covers
    the same step indices on both sides, so periodic inverse and damping steps fall in both
    alike), the median of those ratios, and each side's median step and cores used."""
    ratios = [statistics.fmean(p["geomkfac"]["times"]) / statistics.fmean(p["jax"]["times"])
              for p in pairs]
    out = {"pair_ratios": ratios, "ratio": statistics.median(ratios),
           "ratio_min": min(ratios), "ratio_max": max(ratios)}
    for side in ("geomkfac", "jax"):
        times = [t for p in pairs for t in p[side]["times"]]
        out[f"{side}_mean_s"] = statistics.fmean(times)
        out[f"{side}_median_s"] = statistics.median(times)
        out[f"{side}_cores_used"] = sum(p[side]["cpu"] for p in pairs) / sum(times)
        out[f"{side}_page_faults_per_step"] = sum(p[side]["faults"] for p in pairs) / len(times)
        out[f"{side}_last_loss"] = pairs[-1][side]["losses"][-1]
    return out


def mode_interleaved(args):
    """Both sides alive at once, alternating blocks of ``--block`` steps (``--pairs`` pairs,
    the order swapped every pair, ``--settle`` seconds of idle before each block so that
    neither side's spinning BLAS / XLA threads overlap the other's block)."""
    nets = args.nets or ["deep", "digits"]
    warmup, k, npairs = (2, 2, 2) if args.quick else (args.warmup, args.block, args.pairs)
    out = {"mode": "interleaved", "quick": args.quick, "warmup": warmup, "block": k,
           "pairs": npairs, "settle_s": args.settle, "features": FEATURES, "nets": {}}
    out["numpy_gemm_1000x784x1000"] = numpy_gemm(1000, 784, 1000)
    for net in nets:
        spec = NETS[net]
        sgd = {"lr": spec["sgd_lr"], "momentum": 0.9}
        X, Y, model = make_problem(net)
        rec = {"label": spec["label"], "load_before": loadavg(),
               "initial_loss_geomkfac": train_loss(model, X, Y, spec["loss"])}
        with tempfile.TemporaryDirectory() as tmp:
            save_problem(Path(tmp) / "problem.npz", X, Y, model)
            floor = bool(args.gemm_floor) and spec["data"] != "cnn"
            job = {"npz": str(Path(tmp) / "problem.npz"), "mode": "serve",
                   "gemm": [1000, 784, 1000] if net == nets[0] else None,
                   "runs": [{"name": "kfac", "optimizer": "kfac", "hyper": JAX_KFAC},
                            {"name": "sgd", "optimizer": "sgd", "hyper": sgd}]
                   + ([{"name": "sgd_gemms", "optimizer": "sgd", "hyper": sgd,
                        "ablate": "gemms"}] if floor else []),
                   **jax_net(net, model)}
            proc, ready = start_jax(args.venv, job, tmp, args.threads)
            if proc is None or "error" in ready:
                rec["error"] = ready.get("error")
                out["nets"][net] = rec
                continue
            rec["initial_loss_jax"] = ready["initial_loss"]
            rec["kfac_jax_blocks"] = (ready.get("kfac_blocks") or {}).get("kfac")
            if ready.get("gemm"):
                out["xla_gemm_1000x784x1000"] = ready["gemm"]
            try:
                kinds = [("kfac", GEOMKFAC_KFAC), ("sgd", sgd)] + ([("sgd_gemms", sgd)]
                                                                   if floor else [])
                for kind, hyper in kinds:
                    gX, gY, gmodel = make_problem(net)
                    opt = _optimizer(kind.split("_")[0], gmodel, hyper, spec["loss"])
                    geomkfac_block(opt, gX, gY, warmup)
                    _ask(proc, {"run": kind, "steps": warmup})
                    if kind == "sgd_gemms":  # the GEMMs alone, at the point warm-up reached
                        block = functools.partial(gemm_floor_block, gmodel, gX, gY,
                                                  loss=spec["loss"])
                    else:
                        block = functools.partial(geomkfac_block, opt, gX, gY)
                    pairs = []
                    for p in range(npairs):
                        pair = {}
                        for side in (("geomkfac", "jax") if p % 2 == 0 else ("jax", "geomkfac")):
                            time.sleep(args.settle)
                            pair[side] = (block(k) if side == "geomkfac"
                                          else _ask(proc, {"run": kind, "steps": k}))
                            if "error" in pair[side]:
                                raise RuntimeError(pair[side]["error"])
                        pairs.append(pair)
                    rec[kind] = pair_summary(pairs)
                    rec[kind]["pairs"] = pairs
                rec["final_loss_jax"] = _ask(proc, {"quit": True}, "FINAL")
            except (RuntimeError, BrokenPipeError, json.JSONDecodeError) as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        rec["load_after"] = loadavg()
        out["nets"][net] = rec
    return out


def interleaved_markdown(res):
    lines = [f"Interleaved: both sides alive, {res['pairs']} pairs of blocks of {res['block']} "
             f"steps after {res['warmup']} warm-up steps each, the order swapped every pair, "
             f"{res['settle_s']} s idle before every block; ratio = geomkfac ÷ JAX of the mean "
             "step time in the two blocks of a pair, median over the pairs (range in brackets).",
             "",
             "| net | K-FAC ratio | kfac-jax K-FAC | geomkfac K-FAC | SGD-m ratio | optax SGD-m | "
             "geomkfac SGD-m | cores used (JAX / geomkfac: K-FAC; SGD) | page faults per step "
             "(K-FAC; SGD) | load |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for net, r in res["nets"].items():
        if "error" in r:
            lines.append(f"| {r['label']} | error: {r['error'][:200]} | | | | | | | | |")
            continue
        kf, sg = r["kfac"], r["sgd"]
        lines.append(
            f"| {r['label']} | **{kf['ratio']:.2f}×** ({kf['ratio_min']:.2f}–{kf['ratio_max']:.2f}) "
            f"| {_ms(kf['jax_mean_s'])} | {_ms(kf['geomkfac_mean_s'])} "
            f"| **{sg['ratio']:.2f}×** ({sg['ratio_min']:.2f}–{sg['ratio_max']:.2f}) "
            f"| {_ms(sg['jax_mean_s'])} | {_ms(sg['geomkfac_mean_s'])} "
            f"| {kf['jax_cores_used']:.2f} / {kf['geomkfac_cores_used']:.2f}; "
            f"{sg['jax_cores_used']:.2f} / {sg['geomkfac_cores_used']:.2f} "
            f"| {kf['jax_page_faults_per_step']:.0f} / {kf['geomkfac_page_faults_per_step']:.0f}; "
            f"{sg['jax_page_faults_per_step']:.0f} / {sg['geomkfac_page_faults_per_step']:.0f} "
            f"| {r['load_before'][0]} → {r['load_after'][0]} |")
    lines.append("")
    lines.append("Step times are means over all timed steps of a side (K-FAC's include its "
                 "inverse and damping steps).")
    for net, r in res["nets"].items():
        fl = r.get("sgd_gemms")
        if "error" in r or not fl:
            continue
        lines.append(
            f"`{net}` GEMM floor (`--gemm-floor`): geomkfac's GEMMs of the SGD step alone "
            f"{_ms(fl['geomkfac_mean_s'])} against JAX's SGD step of the same net made linear "
            f"(identity activations, loss Σf/N: its GEMMs, bias adds and momentum update) "
            f"{_ms(fl['jax_mean_s'])}, ratio **{fl['ratio']:.2f}×** "
            f"({fl['ratio_min']:.2f}–{fl['ratio_max']:.2f}); beyond them each side spends "
            f"{_ms(r['sgd']['geomkfac_mean_s'] - fl['geomkfac_mean_s'])} (geomkfac) and "
            f"{_ms(r['sgd']['jax_mean_s'] - fl['jax_mean_s'])} (optax) per SGD step.")
    for net, r in res["nets"].items():
        if "error" in r:
            continue
        lines.append(f"`{net}`: initial loss geomkfac {r['initial_loss_geomkfac']:.7g}, kfac-jax "
                     f"{r['initial_loss_jax']:.7g}; after the run K-FAC "
                     f"{r['kfac']['jax_last_loss']:.6g} (kfac-jax) / "
                     f"{r['kfac']['geomkfac_last_loss']:.6g} (geomkfac), SGD-m "
                     f"{r['sgd']['jax_last_loss']:.6g} / {r['sgd']['geomkfac_last_loss']:.6g} "
                     "(the loss before each side's last step).")
    return lines


def pin_cpus(n):
    """Restrict this process, and every process it starts, to ``n`` CPUs.

    Setting the BLAS thread counts is not enough for a like-for-like comparison: XLA's CPU
    runtime sizes its own thread pool from the CPUs the process may run on and kept using both
    cores of the 2-core machine with ``--xla_cpu_multi_thread_eigen=false`` (measured: process
    CPU time twice the wall time of a jitted GEMM). The affinity mask is inherited by the
    re-executed script and by the JAX subprocess, so both sides run on the same ``n`` CPUs;
    each run also records its CPU time over wall time (``cores_used``) as the check."""
    if not hasattr(os, "sched_setaffinity"):
        print("side_by_side: this platform cannot pin CPUs; --threads sets thread counts only",
              file=sys.stderr)
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > n:
        os.sched_setaffinity(0, set(cpus[:n]))


# ---------------------------------------------------------------------------- modes
def mode_steps(args):
    warmup, steps = (2, 4) if args.quick else (args.warmup, args.steps)
    nets = args.nets or list(NETS)
    out = {"mode": "steps", "quick": args.quick, "warmup": warmup, "steps": steps,
           "features": FEATURES, "nets": {}}
    out["numpy_gemm_1000x784x1000"] = numpy_gemm(1000, 784, 1000)
    for net in nets:
        spec = NETS[net]
        sgd = {"lr": spec["sgd_lr"], "momentum": 0.9}
        rec = {"label": spec["label"], "load_before_geomkfac": loadavg()}
        rec["geomkfac_kfac"] = geomkfac_steps(net, "kfac", GEOMKFAC_KFAC, warmup, steps)
        rec["geomkfac_sgd"] = geomkfac_steps(net, "sgd", sgd, warmup, steps)
        rec["load_after_geomkfac"] = loadavg()
        X, Y, model = make_problem(net)
        rec["initial_loss_geomkfac"] = train_loss(model, X, Y, spec["loss"])
        if not args.no_jax:
            with tempfile.TemporaryDirectory() as tmp:
                save_problem(Path(tmp) / "problem.npz", X, Y, model)
                job = {"npz": str(Path(tmp) / "problem.npz"), "mode": "steps",
                       "warmup": warmup, "steps": steps,
                       "gemm": [1000, 784, 1000] if net == nets[0] else None,
                       "runs": [{"name": "kfac", "optimizer": "kfac", "hyper": JAX_KFAC},
                                {"name": "sgd", "optimizer": "sgd", "hyper": sgd}],
                       **jax_net(net, model)}
                if spec["data"] == "cnn":
                    job["runs"].insert(1, {"name": "kfac_explicit", "optimizer": "kfac",
                                           "hyper": JAX_KFAC, "conv_patches": "explicit"})
                rec["load_before_jax"] = loadavg()
                if net == nets[0]:  # next to the XLA GEMM the JAX side times first
                    out["numpy_gemm_1000x784x1000"] = numpy_gemm(1000, 784, 1000)
                jx = run_jax(args.venv, job, tmp, args.threads)
                rec["load_after_jax"] = loadavg()
            rec["jax"] = jx
            if "initial_loss" in jx:
                rec["initial_loss_jax"] = jx["initial_loss"]
                rec["initial_loss_rel_diff"] = (abs(jx["initial_loss"]
                                                    - rec["initial_loss_geomkfac"])
                                                / abs(rec["initial_loss_geomkfac"]))
            if "runs" in jx:
                runs = {r["name"]: r for r in jx["runs"]}
                rec["jax_kfac"], rec["jax_sgd"] = runs["kfac"], runs["sgd"]
                if "kfac_explicit" in runs:
                    rec["jax_kfac_explicit"] = runs["kfac_explicit"]
                    if "median_s" in runs["kfac_explicit"]:
                        rec["ratio_kfac_explicit"] = (rec["geomkfac_kfac"]["median_s"]
                                                      / runs["kfac_explicit"]["median_s"])
                if runs["kfac"].get("kfac_blocks") is not None:
                    rec["kfac_jax_blocks"] = runs["kfac"]["kfac_blocks"]
                if jx.get("gemm"):
                    out["xla_gemm_1000x784x1000"] = jx["gemm"]
                out["jax_versions"] = jx.get("versions")
                out["jax_blas"] = jx.get("blas")
                for kind in ("kfac", "sgd"):
                    j, g = rec[f"jax_{kind}"], rec[f"geomkfac_{kind}"]
                    if "median_s" in j:
                        rec[f"ratio_{kind}"] = g["median_s"] / j["median_s"]
        out["nets"][net] = rec
        _drop_bulk(rec)
    return out


def _drop_bulk(rec):
    rec.get("jax", {}).pop("runs", None)


SWEEP_DAMPING = (1.0, 0.1, 0.01, 0.001)
#: how closely the curvature follows the iterate, on both sides: the defaults of the steps
#: table (EMA 0.95, inverses every 5 steps) and a fast setting (EMA 0.5, inverses every step)
SWEEP_TRACKING = {
    "default": ({}, {}),
    "fast": ({"ema_decay": 0.5, "inverse_update_period": 1},
             {"curvature_ema": 0.5, "inverse_update_period": 1}),
}


def _target_sweep(quick):
    """``[(name, geomkfac hyper, kfac-jax hyper)]``: the same settings on both sides."""
    dampings = SWEEP_DAMPING[:2] if quick else SWEEP_DAMPING
    tracking = ["default"] if quick else list(SWEEP_TRACKING)
    out = []
    for track in tracking:
        g, j = SWEEP_TRACKING[track]
        for lam in dampings:
            name = f"damping={lam}" + ("" if track == "default" else f", {track} curvature")
            out.append((name, dict(GEOMKFAC_KFAC, damping=lam, **g),
                        dict(JAX_KFAC, initial_damping=lam, **j)))
    return out


def mode_target(args):
    net = "digits"
    target = args.target
    max_steps = 40 if args.quick else args.max_steps
    max_seconds = 10.0 if args.quick else args.max_seconds
    sweep = _target_sweep(args.quick)
    out = {"mode": "target", "quick": args.quick, "net": NETS[net]["label"], "target": target,
           "max_steps": max_steps, "max_seconds": max_seconds, "features": FEATURES,
           "sweep": {"initial damping": sorted({h["damping"] for _, h, _ in sweep}, reverse=True),
                     "curvature tracking": {k: v[0] for k, v in SWEEP_TRACKING.items()}}}
    out["load_before_geomkfac"] = loadavg()
    g_runs = []
    for name, hyper, _ in sweep:
        r = geomkfac_to_target(net, hyper, target, max_steps, max_seconds)
        r.update(name=name, hyper=hyper)
        g_runs.append(r)
    out["load_after_geomkfac"] = loadavg()
    out["geomkfac"] = g_runs
    if not args.no_jax:
        with tempfile.TemporaryDirectory() as tmp:
            X, Y, model = make_problem(net)
            save_problem(Path(tmp) / "problem.npz", X, Y, model)
            job = {"npz": str(Path(tmp) / "problem.npz"), "mode": "target", "target": target,
                   "max_steps": max_steps, "max_seconds": max_seconds,
                   "runs": [{"name": name, "optimizer": "kfac", "hyper": jh}
                            for name, _, jh in sweep]}
            out["load_before_jax"] = loadavg()
            jx = run_jax(args.venv, job, tmp, args.threads)
            out["load_after_jax"] = loadavg()
        out["jax"] = jx.get("runs", jx)
        out["jax_versions"] = jx.get("versions")
    for side in ("geomkfac", "jax"):
        runs = out.get(side)
        if isinstance(runs, list):
            best = fastest_run(runs)
            out[f"best_{side}"] = best["name"] if best else None
            for r in runs:
                if "trace" in r:  # keep every 10th point of the trace
                    r["trace"] = r["trace"][::10] + r["trace"][-1:]
    return out


# ---------------------------------------------------------------------------- repeats
def fastest_run(runs):
    """The run that reached the target in the fewest seconds, or ``None``."""
    done = [r for r in runs if r.get("reached")]
    return min(done, key=lambda r: r["reached"]["seconds"]) if done else None


def repeat_summary(res):
    """The figures of one run that the repeats table compares: per net the step medians and
    ratios (steps mode), or each side's best seconds and their ratio (target mode)."""
    if res["mode"] == "interleaved":
        return {net: {"ratio_kfac": r.get("kfac", {}).get("ratio"),
                      "ratio_sgd": r.get("sgd", {}).get("ratio")}
                for net, r in res["nets"].items()}
    if res["mode"] == "steps":
        return {net: {k: r.get(k) for k in ("ratio_kfac", "ratio_sgd")}
                | {f"{k}_median_s": r.get(k, {}).get("median_s")
                   for k in ("jax_kfac", "geomkfac_kfac", "jax_sgd", "geomkfac_sgd")}
                for net, r in res["nets"].items()}
    best = {}
    for side in ("geomkfac", "jax"):
        run = fastest_run(res.get(side) if isinstance(res.get(side), list) else [])
        best[side] = run["reached"]["seconds"] if run else None
    ratio = (best["geomkfac"] / best["jax"]) if best["geomkfac"] and best["jax"] else None
    return {"geomkfac_best_s": best["geomkfac"], "jax_best_s": best["jax"], "ratio": ratio}


def repeats_markdown(res):
    reps = res.get("repeats")
    if not reps:
        return []

    def fmt(v):
        return "–" if v is None else f"{v:.2f}×"

    def med(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    lines = ["", f"Repeats ({len(reps)} whole runs, one after the other; geomkfac ÷ JAX):", ""]
    if res["mode"] in ("steps", "interleaved"):
        lines += ["| net | K-FAC ratio per run | median | SGD-m ratio per run | median |",
                  "|---|---|---:|---|---:|"]
        for net in reps[0]:
            k = [r[net]["ratio_kfac"] for r in reps]
            g = [r[net]["ratio_sgd"] for r in reps]
            lines.append(f"| {res['nets'][net]['label']} | {', '.join(fmt(v) for v in k)} | "
                         f"{fmt(med(k))} | {', '.join(fmt(v) for v in g)} | {fmt(med(g))} |")
    else:
        lines += ["| run | geomkfac best s | kfac-jax best s | ratio |", "|---:|---:|---:|---:|"]
        for i, r in enumerate(reps, start=1):
            gs, js = r["geomkfac_best_s"], r["jax_best_s"]
            lines.append(f"| {i} | {'–' if gs is None else f'{gs:.2f}'} | "
                         f"{'–' if js is None else f'{js:.2f}'} | {fmt(r['ratio'])} |")
        lines.append(f"| median | | | {fmt(med([r['ratio'] for r in reps]))} |")
    return lines


# ---------------------------------------------------------------------------- reports
def _ms(x):
    return "–" if x is None else f"{1e3 * x:.1f} ms"


def block_summary(blocks):
    """``"Conv2DTwoKroneckerFactored ×2, DenseTwoKroneckerFactored ×2"`` (in order of first
    appearance) from the ``kfac_blocks`` records of the JAX side.

    >>> block_summary([{"block": "A"}, {"block": "B"}, {"block": "A"}])
    'A ×2, B ×1'
    """
    counts = {}
    for b in blocks:
        counts[b["block"]] = counts.get(b["block"], 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in counts.items())


def _net_notes(net, r):
    """Lines under the steps table for one net: the initial losses of both sides (the check
    that they compute the same function at the same point), the SGD losses after the run and
    the curvature blocks kfac-jax registered."""
    out = []
    g0, j0 = r.get("initial_loss_geomkfac"), r.get("initial_loss_jax")
    if g0 is not None:
        text = f"`{net}`: initial loss geomkfac {g0:.7g}"
        if j0 is not None:
            text += f", kfac-jax {j0:.7g} (relative difference {r['initial_loss_rel_diff']:.1e})"
        gs, js = r.get("geomkfac_sgd", {}).get("final_loss"), r.get("jax_sgd", {}).get("final_loss")
        if gs is not None and js is not None:
            text += f"; SGD-m loss after the run: kfac-jax {js:.6g} / geomkfac {gs:.6g}"
        out.append(text + ".")
    x = r.get("jax_kfac_explicit")
    if x is not None:
        if "median_s" in x:
            out.append(f"`{net}`: kfac-jax K-FAC with explicit patches (its "
                       f"`patches_moments_explicit` for the conv input factor): "
                       f"{_ms(x['median_s'])}, geomkfac K-FAC / it = "
                       f"{r['ratio_kfac_explicit']:.2f}×; loss after {x['final_loss']:.2f}.")
        else:
            out.append(f"`{net}`: kfac-jax K-FAC with explicit patches failed: "
                       f"{x.get('error', '?')[:200]}")
    if r.get("kfac_jax_blocks"):
        out.append(f"`{net}`: kfac-jax curvature blocks: {block_summary(r['kfac_jax_blocks'])}.")
    return out


def _per_run_table(res, key, fmt):
    """A table of one figure of each of the four runs per net (steps mode), and a blank line."""
    lines = ["| net | kfac-jax K-FAC | geomkfac K-FAC | optax SGD-m | geomkfac SGD-m |",
             "|---|---:|---:|---:|---:|"]
    for r in res["nets"].values():
        cells = [fmt(r.get(k, {}).get(key))
                 for k in ("jax_kfac", "geomkfac_kfac", "jax_sgd", "geomkfac_sgd")]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _faults(v):
    return "–" if v is None else f"{v:.0f}"


def _cores(v):
    return "–" if v is None else f"{v:.2f}"


def _cpus(res):
    cpus = res.get("environment", {}).get("cpu_affinity")
    return "unknown" if cpus is None else f"{len(cpus)} ({', '.join(map(str, cpus))})"


def markdown(res):
    lines = []
    env = res["environment"]
    blas = env.get("blas") or []
    kern = ", ".join(f"{b['internal_api']} {b.get('version')} {b.get('architecture')} "
                     f"×{b.get('num_threads')}" for b in blas) or "unknown (no threadpoolctl)"
    if res["mode"] == "interleaved":
        lines.extend(interleaved_markdown(res))
        g, x = res.get("numpy_gemm_1000x784x1000"), res.get("xla_gemm_1000x784x1000")
        if g:
            lines.append(f"GEMM 1000×784 @ 784×1000 float32: NumPy {_ms(g['median_s'])} "
                         f"({g['gflops_per_s']:.0f} GFLOP/s)"
                         + (f", XLA {_ms(x['median_s'])} ({x['gflops_per_s']:.0f} GFLOP/s)"
                            if x else "") + ".")
    elif res["mode"] == "steps":
        lines.append("| net | kfac-jax K-FAC | geomkfac K-FAC | ratio | optax SGD-m (jit) | "
                     "geomkfac SGD-m | ratio | loss after (K-FAC jax / geomkfac) | load |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
        for net, r in res["nets"].items():
            def med(key):
                return r.get(key, {}).get("median_s")

            def ratio(kind):
                v = r.get(f"ratio_{kind}")
                return "–" if v is None else f"{v:.2f}×"

            def fl(key):
                v = r.get(key, {}).get("final_loss")
                return "–" if v is None else f"{v:.2f}"

            load = r.get("load_before_geomkfac"), r.get("load_after_jax")
            lines.append(
                f"| {r['label']} | {_ms(med('jax_kfac'))} | {_ms(med('geomkfac_kfac'))} | "
                f"{ratio('kfac')} | {_ms(med('jax_sgd'))} | {_ms(med('geomkfac_sgd'))} | "
                f"{ratio('sgd')} | {fl('jax_kfac')} / {fl('geomkfac_kfac')} | "
                f"{' → '.join(str(x[0]) if x else '?' for x in load)} |")
        lines.append("")
        lines.append(f"Medians over {res['steps']} steps after {res['warmup']} warm-up steps; "
                     "load = 1-min load average before the geomkfac side → after the JAX side.")
        lines.append("")
        lines.append("Cores used (process CPU time ÷ wall time over the timed steps; "
                     f"CPUs the processes may run on: {_cpus(res)}):")
        lines.append("")
        lines.extend(_per_run_table(res, "cores_used", _cores))
        lines.append("Page faults per timed step (minor faults, `getrusage`: memory the process "
                     "took from the system during the step):")
        lines.append("")
        lines.extend(_per_run_table(res, "page_faults_per_step", _faults))
        for net, r in res["nets"].items():
            lines.extend(_net_notes(net, r))
        g = res.get("numpy_gemm_1000x784x1000")
        x = res.get("xla_gemm_1000x784x1000")
        if g:
            lines.append(f"GEMM 1000×784 @ 784×1000 float32: NumPy {_ms(g['median_s'])} "
                         f"({g['gflops_per_s']:.0f} GFLOP/s)"
                         + (f", XLA {_ms(x['median_s'])} ({x['gflops_per_s']:.0f} GFLOP/s)"
                            if x else "") + ".")
    else:
        lines.append(f"Time to training loss ≤ {res['target']} on {res['net']} "
                     f"(K-FAC, sweep of the initial damping {res['sweep']['initial damping']} "
                     "× the curvature tracking: default (EMA 0.95, inverses every 5 steps) or "
                     "fast (EMA 0.5, inverses every step), the same on both sides):")
        lines.append("")
        lines.append("| side | run | reached | steps | seconds | best loss | cores used |")
        lines.append("|---|---|---|---:|---:|---:|---:|")
        for side in ("jax", "geomkfac"):
            runs = res.get(side)
            if not isinstance(runs, list):
                continue
            for r in runs:
                best = "**" if r.get("name") == res.get(f"best_{side}") else ""
                rc = r.get("reached")
                bl = r.get("best_loss")
                who = "kfac-jax" if side == "jax" else "geomkfac"
                status = "yes" if rc else "no"
                if "error" in r:
                    status += f" ({r['error'][:60]})"
                elif "diverged" in r:
                    status += f" ({r['diverged'][:60]})"
                steps_ = rc["steps"] if rc else r.get("steps_run", "–")
                secs = f"{rc['seconds']:.2f}" if rc else "–"
                bls = f"{bl:.3f}" if bl is not None else "–"
                lines.append(f"| {who} | {best}{r['name']}{best} | {status} | {steps_} | "
                             f"{secs} | {bls} | {_cores(r.get('cores_used'))} |")
        lines.append("")
        lines.append(f"CPUs the processes may run on: {_cpus(res)}; cores used = process CPU "
                     "time ÷ wall time over the timed steps.")
        lines.append(f"Load: {res.get('load_before_geomkfac')} before geomkfac, "
                     f"{res.get('load_before_jax')} before JAX, {res.get('load_after_jax')} after.")
    al = env.get("allocator")
    if al:
        lines.append(f"geomkfac's memory allocator ({al['allocator']}): keep freed memory "
                     f"between steps {al['keep_freed_memory']} ({al['detail']}); the JAX side "
                     "allocates through XLA's own allocator.")
    fk = env.get("fused_kernels")
    if fk:
        lines.append("geomkfac's fused elementwise kernels (geomkfac.nn.kernels): "
                     + (f"compiled by numba {fk['numba']}" if fk["compiled"]
                        else "not compiled (NumPy passes)") + ".")
    bw = env.get("batch_workers")
    if bw:
        lines.append(f"geomkfac's batch workers (geomkfac.nn.parallel, SGD only): {bw['workers']}"
                     + (f", blocks of at least {bw['min_rows']} rows, a single-threaded BLAS "
                        "inside each" if bw["workers"] > 1 else " (the batch is not split)")
                     + ".")
    lines.append(f"BLAS (NumPy): {kern}; OPENBLAS_CORETYPE/L2_SIZE at start: "
                 f"{res.get('openblas_env_at_start')}; {env.get('processor')}, "
                 f"{env.get('nproc')} cores.")
    if res.get("jax_versions"):
        lines.append("JAX side: " + ", ".join(f"{k} {v}" for k, v in res["jax_versions"].items())
                     + ".")
    lines.extend(repeats_markdown(res))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=("steps", "target", "interleaved"), default="steps")
    p.add_argument("--quick", action="store_true", help="few steps (a smoke run)")
    p.add_argument("--nets", nargs="*", choices=list(NETS), help="steps mode: which nets")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--target", type=float, default=15.0, help="target mode: the loss to reach")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--venv", default=str(DEFAULT_VENV))
    p.add_argument("--no-jax", action="store_true", help="run the geomkfac side only")
    p.add_argument("--out", help="stem of the .json/.md results (default benchmarks/results/...)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS / XLA threads on both sides (default: each library's own)")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the whole comparison this many times (one side after the other "
                        "each time) and report every run's ratios and their median")
    p.add_argument("--block", type=int, default=5,
                   help="interleaved mode: steps per block (5 = one inverse / damping period)")
    p.add_argument("--pairs", type=int, default=10, help="interleaved mode: pairs of blocks")
    p.add_argument("--settle", type=float, default=0.3,
                   help="interleaved mode: idle seconds before every block")
    p.add_argument("--gemm-floor", action="store_true",
                   help="interleaved mode, MLP nets: also alternate geomkfac's GEMMs of the SGD "
                        "step alone with the JAX side's SGD step of the linear net (sum loss)")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="do not drop OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    p.add_argument("--workers", default=None,
                   help="geomkfac's batch workers for SGD (geomkfac.nn.parallel.set_workers: "
                        "an integer or 'auto'; default: GEOMKFAC_WORKERS, else 1)")
    args = p.parse_args(argv)

    at_start = {v: os.environ.get(v) for v in OPENBLAS_VARS}
    if args.threads:
        pin_cpus(args.threads)
    if args.workers is not None:  # after pinning: "auto" counts the CPUs left to the process
        from geomkfac.nn.parallel import set_workers

        set_workers(args.workers)
    if argv is None:  # the command line: fix the BLAS environment before NumPy starts
        env = dict(os.environ)
        if not args.keep_openblas_env:
            for v in OPENBLAS_VARS:
                env.pop(v, None)
        if args.threads:
            for v in THREAD_VARS:
                env[v] = str(args.threads)
        if env != dict(os.environ) and "SIDE_BY_SIDE_OPENBLAS_AT_START" not in os.environ:
            env["SIDE_BY_SIDE_OPENBLAS_AT_START"] = json.dumps(at_start)
            print("side_by_side: re-running with the BLAS environment set "
                  f"(OPENBLAS_CORETYPE/L2_SIZE dropped: {not args.keep_openblas_env}, "
                  f"threads: {args.threads or 'default'})", file=sys.stderr)
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    at_start = json.loads(os.environ.get("SIDE_BY_SIDE_OPENBLAS_AT_START", "null")) or at_start
    limiter = None
    if args.threads:
        try:
            import scipy.linalg  # noqa: F401  (load SciPy's BLAS too before limiting)
            import threadpoolctl

            limiter = threadpoolctl.threadpool_limits(args.threads)
        except ImportError:
            pass

    modes = {"steps": mode_steps, "target": mode_target, "interleaved": mode_interleaved}
    runs = [modes[args.mode](args) for _ in range(max(1, args.repeats))]
    res = runs[-1]  # the tables show the last run in full; the repeats summarize them all
    if len(runs) > 1:
        res["repeats"] = [repeat_summary(r) for r in runs]
    res["environment"] = environment()
    res["openblas_env_at_start"] = at_start
    res["threads"] = args.threads
    res["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = markdown(res)
    print(text)
    suffix = {"steps": "", "target": "_target", "interleaved": "_interleaved"}[args.mode]
    stem = args.out or str(RESULTS / ("side_by_side" + suffix + ("_quick" if args.quick
                                                                 else "")))
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps(res, indent=1))
    Path(stem + ".md").write_text(text)
    if limiter is not None:
        limiter.restore_original_limits()
    return res


if __name__ == "__main__":
    main()
