"""The kfac-jax / optax side of the side-by-side benchmark (run by ``side_by_side.py``).

Runs only in the separate virtual environment of ``requirements.txt`` (``setup.sh``); it never
imports geomkfac. It reads a job file (JSON) naming an ``.npz`` with the data and the initial
weights written by the geomkfac side, so that both sides train the same net from the same
point on the same data, and writes its measurements as JSON::

    python jax_side.py JOB.json OUT.json

Job keys: ``npz`` (arrays ``X``, ``Y``, ``W0, b0, W1, b1, …`` with ``W_i`` of shape
``(out, in)`` as in geomkfac), ``mode`` (``"steps"`` or ``"target"``), ``runs`` (a list of
``{"name", "optimizer": "kfac" | "sgd", "hyper": {...}}``), and for ``"steps"``:
``warmup``, ``steps``; for ``"target"``: ``target``, ``max_steps``, ``max_seconds``;
``gemm`` (``[m, k, n]`` of a reference float32 GEMM, optional).

The network: ``tanh`` hidden layers and a linear output layer giving Bernoulli logits; the
loss is ``mean_n Σ_c softplus(f_c) − y_c f_c`` (geomkfac's ``"bernoulli"``), registered with
kfac-jax as a sigmoid cross-entropy loss. Everything is float32 (jax's default).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time


def _load(npz_path):
    import numpy as np

    with np.load(npz_path) as d:
        X = d["X"].astype(np.float32)
        Y = d["Y"].astype(np.float32)
        L = sum(1 for k in d.files if k.startswith("W"))
        params = [(d[f"W{i}"].T.astype(np.float32).copy(), d[f"b{i}"].astype(np.float32))
                  for i in range(L)]
    return X, Y, params


def _blas_info():
    try:
        import threadpoolctl

        return [{k: d.get(k) for k in ("internal_api", "version", "architecture",
                                          "num_threads")}
                for d in threadpoolctl.threadpool_info()]
    except ImportError:
        return None


def main(argv):
    job_path, out_path = argv[0], argv[1]
    with open(job_path) as fh:
        job = json.load(fh)

    import jax
    import jax.numpy as jnp
    import kfac_jax
    import numpy as np
    import optax

    X_np, Y_np, params_np = _load(job["npz"])
    X, Y = jnp.asarray(X_np), jnp.asarray(Y_np)
    batch = (X, Y)

    def forward(params, x):
        h = x
        for i, (W, b) in enumerate(params):
            h = jnp.dot(h, W) + b
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return h

    def bernoulli(logits, y):
        return jnp.mean(jnp.sum(jax.nn.softplus(logits) - y * logits, axis=1))

    def loss_fn(params, batch):
        x, y = batch
        logits = forward(params, x)
        kfac_jax.register_sigmoid_cross_entropy_loss(logits, y)
        return bernoulli(logits, y)

    value_and_grad = jax.value_and_grad(loss_fn)
    eval_loss = jax.jit(lambda p: bernoulli(forward(p, X), Y))

    def fresh_params():
        return [(jnp.asarray(W), jnp.asarray(b)) for W, b in params_np]

    def make_kfac(hyper):
        kw = dict(
            value_and_grad_func=value_and_grad,
            l2_reg=0.0,
            use_adaptive_learning_rate=True,
            use_adaptive_momentum=True,
            use_adaptive_damping=True,
            initial_damping=1.0,
            curvature_ema=0.95,
            curvature_update_period=1,
            inverse_update_period=5,
            num_burnin_steps=0,
            multi_device=False,
        )
        kw.update(hyper)
        return kfac_jax.Optimizer(**kw)

    # one optimizer / jitted step per setting, shared by the throwaway compile run and the
    # measured run (a new kfac_jax.Optimizer or jax.jit would compile everything again)
    compiled = {}

    def kfac_runner(hyper):
        key_ = ("kfac", json.dumps(hyper, sort_keys=True))
        if key_ not in compiled:
            compiled[key_] = make_kfac(hyper)
        opt = compiled[key_]
        key = jax.random.PRNGKey(0)
        state = {"params": fresh_params()}
        state["opt"] = opt.init(state["params"], key, batch)
        state["t"] = 0

        def step():
            t = state["t"]
            p, s, stats = opt.step(state["params"], state["opt"], jax.random.fold_in(key, t),
                                   batch=batch, global_step_int=t)
            jax.block_until_ready(p)
            state["params"], state["opt"], state["t"] = p, s, t + 1
            return float(stats["loss"])

        return step, state

    def sgd_runner(hyper):
        key_ = ("sgd", json.dumps(hyper, sort_keys=True))
        if key_ not in compiled:
            tx = optax.sgd(learning_rate=float(hyper.get("lr", 0.01)),
                           momentum=float(hyper.get("momentum", 0.9)))

            @jax.jit
            def _step(p, s):
                value, g = jax.value_and_grad(
                    lambda q: bernoulli(forward(q, X), Y))(p)
                updates, s = tx.update(g, s, p)
                return optax.apply_updates(p, updates), s, value

            compiled[key_] = (tx, _step)
        tx, _step = compiled[key_]
        state = {"params": fresh_params()}
        state["opt"] = tx.init(state["params"])

        def step():
            p, s, value = _step(state["params"], state["opt"])
            jax.block_until_ready(p)
            state["params"], state["opt"] = p, s
            return float(value)

        return step, state

    def runner(run):
        return (kfac_runner if run["optimizer"] == "kfac" else sgd_runner)(dict(run["hyper"]))

    gemm = None
    if job.get("gemm"):
        m, k, n = job["gemm"]
        rng = np.random.default_rng(0)
        a = jnp.asarray(rng.standard_normal((m, k)).astype(np.float32))
        b = jnp.asarray(rng.standard_normal((k, n)).astype(np.float32))
        mm = jax.jit(jnp.dot)
        jax.block_until_ready(mm(a, b))
        ts = []
        for _ in range(int(job.get("gemm_repeats", 20))):
            t0 = time.perf_counter()
            jax.block_until_ready(mm(a, b))
            ts.append(time.perf_counter() - t0)
        gemm = {"shape": [m, k, n], "median_s": statistics.median(ts),
                "gflops_per_s": 2 * m * k * n / statistics.median(ts) / 1e9}

    results = []
    for run in job["runs"]:
        rec = {"name": run["name"], "optimizer": run["optimizer"], "hyper": run["hyper"]}
        try:
            if job["mode"] == "steps":
                # kfac-jax compiles one variant of its step per kind of step (first step,
                # inverse update, damping adaptation): compile them all on a throwaway run
                step, _ = runner(run)
                t0 = time.perf_counter()
                for _ in range(int(job.get("compile_steps", 11))):
                    step()
                rec["compile_run_s"] = time.perf_counter() - t0
                step, state = runner(run)
                times, losses = [], []
                for i in range(int(job["warmup"]) + int(job["steps"])):
                    t0 = time.perf_counter()
                    losses.append(step())
                    dt = time.perf_counter() - t0
                    if i >= int(job["warmup"]):
                        times.append(dt)
                rec.update(step_times_s=times, median_s=statistics.median(times),
                           losses=losses, final_loss=float(eval_loss(state["params"])))
            else:
                # compile every variant of the step on a throwaway run, then train from the
                # initial point on the clock
                step, _ = runner(run)
                t0 = time.perf_counter()
                for _ in range(int(job.get("compile_steps", 11))):
                    step()
                rec["compile_run_s"] = time.perf_counter() - t0
                step, state = runner(run)
                clock, trace, reached = 0.0, [], None
                for t in range(int(job["max_steps"])):
                    t0 = time.perf_counter()
                    value = step()  # the loss before this step
                    clock_before = clock
                    clock += time.perf_counter() - t0
                    trace.append((t, clock_before, value))
                    if not np.isfinite(value):
                        rec["diverged"] = f"step {t}: loss {value}"
                        break
                    if value <= float(job["target"]):
                        reached = {"steps": t, "seconds": clock_before, "loss": value}
                        break
                    if clock > float(job["max_seconds"]):
                        break
                rec.update(trace=trace, reached=reached, steps_run=len(trace),
                           best_loss=min(v for _, _, v in trace))
        except Exception as exc:  # report and go on with the next run
            rec["error"] = f"{type(exc).__name__}: {exc}"
        results.append(rec)

    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("jax", "jaxlib", "kfac-jax", "optax", "numpy")}
    out = {"runs": results, "gemm": gemm, "versions": versions,
           "python": platform.python_version(), "jax_devices": [str(d) for d in jax.devices()],
           "xla_flags": os.environ.get("XLA_FLAGS"), "blas": _blas_info()}
    with open(out_path, "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
