"""The kfac-jax / optax side of the side-by-side benchmark (run by ``side_by_side.py``).

Runs only in the separate virtual environment of ``requirements.txt`` (``setup.sh``); it never
imports geomkfac. It reads a job file (JSON) naming an ``.npz`` with the data and the initial
weights written by the geomkfac side, so that both sides train the same net from the same
point on the same data, and writes its measurements as JSON::

    python jax_side.py JOB.json OUT.json

Job keys: ``npz`` (arrays ``X``, ``Y``, ``W0, b0, W1, b1, …`` in geomkfac's layouts: a
dense ``W_i`` of shape ``(out, in)``, a convolution ``W_i`` of shape ``(out, in, k, k)``),
``mode`` (``"steps"``, ``"target"`` or ``"serve"``, the interleaved protocol of
:func:`_serve`), ``runs`` (a list of
``{"name", "optimizer": "kfac" | "sgd", "hyper": {...}}``; an SGD run of an MLP may add
``"ablate": "gemms"``: the same step with every activation the identity and the loss
``Σ f / N``, so that what is left is the GEMMs, the bias adds and the momentum update — the
floor that ``side_by_side.py --gemm-floor`` compares with geomkfac's GEMMs alone), and for
``"steps"``:
``warmup``, ``steps``; for ``"target"``: ``target``, ``max_steps``, ``max_seconds``;
``gemm`` (``[m, k, n]`` of a reference float32 GEMM, optional); ``arch`` and ``loss``
(optional, below).

The network, without ``arch``: ``tanh`` hidden layers and a linear output layer giving
Bernoulli logits; the loss is ``mean_n Σ_c softplus(f_c) − y_c f_c`` (geomkfac's
``"bernoulli"``), registered with kfac-jax as a sigmoid cross-entropy loss. With ``arch``
(the ``spec()`` of each layer of a ``geomkfac.nn.Sequential``, in order:
``{"type": "conv", "pad", "stride", "act"}``, ``{"type": "maxpool", "k", "stride"}``,
``{"type": "flatten"}``, ``{"type": "dense", "act"}``; ``act`` one of ``identity``, ``relu``,
``tanh``) the network is built from those layers: the convolutions by
``lax.conv_general_dilated`` with zero padding, max pooling by ``lax.reduce_window``. Images
stay in ``NCHW`` (geomkfac's layout, so that the channel-major flatten ``(C, H, W)`` feeds the
dense layer in the same order as in geomkfac); the kernels are transposed once, at load, from
geomkfac's ``OIHW`` to ``HWIO``, because kfac-jax 0.0.8's conv block flattens its parameters
to ``(H·W·I, O)`` with the output channels last whatever the convolution's dimension numbers
(with ``OIHW`` kernels its block fails to initialise). ``loss`` ``"softmax_ce"`` is the mean softmax
cross-entropy with integer labels ``Y`` (geomkfac's ``"ce"``), registered with
``kfac_jax.register_softmax_cross_entropy_loss``. kfac-jax finds the layers by its automatic
graph matching; the curvature blocks it made (``Conv2DTwoKroneckerFactored``,
``DenseTwoKroneckerFactored``, …) are reported per K-FAC run as ``kfac_blocks``. A run with
``"conv_patches": "explicit"`` replaces kfac-jax's default conv block by a subclass that
computes its input factor with kfac-jax's own ``patches_moments_explicit`` (patches extracted
by ``lax.conv_general_dilated_patches``, then one matrix product: the im2col route) instead of
the default ``patches_moments`` (a loop over the kernel offsets, each a 4-D convolution of the
image with itself, which is slow on a CPU); everything else is kfac-jax's default.
Everything is float32 (jax's default).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback


def _load(npz_path, loss="bernoulli"):
    """The data and the weights: dense ``W`` transposed to ``(in, out)`` (``x @ W``), a
    convolution kernel from geomkfac's ``(out, in, k, k)`` to ``HWIO`` ``(k, k, in, out)``."""
    import numpy as np

    with np.load(npz_path) as d:
        X = d["X"].astype(np.float32)
        Y = d["Y"].astype(np.int32 if loss == "softmax_ce" else np.float32)
        L = sum(1 for k in d.files if k.startswith("W"))
        params = []
        for i in range(L):
            W = d[f"W{i}"].astype(np.float32)
            params.append((W.T.copy() if W.ndim == 2 else W.transpose(2, 3, 1, 0).copy(),
                           d[f"b{i}"].astype(np.float32)))
    return X, Y, params


def _explicit_patches_conv_block():
    """``kfac_jax.Conv2DTwoKroneckerFactored`` with the input factor from
    ``patches_moments_explicit`` (documented by kfac-jax as the same moments, computed from
    explicitly extracted patches)."""
    import kfac_jax

    psm = kfac_jax.patches_second_moment

    class ExplicitPatchesConv2D(kfac_jax.Conv2DTwoKroneckerFactored):
        def compute_inputs_stats(self, inputs, weighting_array=None):
            # the block calls psm.patches_moments while it is traced: swap it for that call
            default = psm.patches_moments
            psm.patches_moments = psm.patches_moments_explicit
            try:
                return super().compute_inputs_stats(inputs, weighting_array)
            finally:
                psm.patches_moments = default

    return ExplicitPatchesConv2D


def _kfac_blocks(opt):
    """The curvature blocks kfac-jax registered (after ``init``): kind and parameter
    shapes, or ``None`` where this version does not expose them."""
    try:
        blocks = opt._estimator.blocks  # no public accessor in kfac-jax 0.0.8
        return [{"block": type(b).__name__, "parameter_shapes": [list(s) for s in
                                                                 b.parameters_shapes]}
                for b in blocks]
    except Exception:  # noqa: BLE001  (a report, never a reason to fail the run)
        return None


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

    loss_name = job.get("loss", "bernoulli")
    arch = job.get("arch")
    X_np, Y_np, params_np = _load(job["npz"], loss_name)
    X, Y = jnp.asarray(X_np), jnp.asarray(Y_np)
    batch = (X, Y)
    acts = {"identity": lambda h: h, "relu": jax.nn.relu, "tanh": jnp.tanh}

    def forward_mlp(params, x):
        h = x
        for i, (W, b) in enumerate(params):
            h = jnp.dot(h, W) + b
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return h

    def forward_arch(params, x):
        h, i = x, 0
        for layer in arch:
            kind = layer["type"]
            if kind == "conv":
                W, b = params[i]
                i += 1
                p, st = int(layer.get("pad", 0)), int(layer.get("stride", 1))
                h = jax.lax.conv_general_dilated(
                    h, W, window_strides=(st, st), padding=((p, p), (p, p)),
                    dimension_numbers=("NCHW", "HWIO", "NCHW"))
                h = acts[layer.get("act", "identity")](h + b[None, :, None, None])
            elif kind == "maxpool":
                k, st = int(layer["k"]), int(layer.get("stride", layer["k"]))
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, k, k),
                                          (1, 1, st, st), "VALID")
            elif kind == "flatten":
                h = h.reshape(h.shape[0], -1)  # channel-major (C, H, W), as geomkfac
            elif kind == "dense":
                W, b = params[i]
                i += 1
                h = acts[layer.get("act", "identity")](jnp.dot(h, W) + b)
            else:
                raise ValueError(f"layer type {kind!r} of the job's arch is not supported here")
        return h

    forward = forward_mlp if arch is None else forward_arch

    def bernoulli(logits, y):
        return jnp.mean(jnp.sum(jax.nn.softplus(logits) - y * logits, axis=1))

    def softmax_ce(logits, y):
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)

    objective = softmax_ce if loss_name == "softmax_ce" else bernoulli
    register = (kfac_jax.register_softmax_cross_entropy_loss if loss_name == "softmax_ce"
                else kfac_jax.register_sigmoid_cross_entropy_loss)

    def loss_fn(params, batch):
        x, y = batch
        logits = forward(params, x)
        register(logits, y)
        return objective(logits, y)

    value_and_grad = jax.value_and_grad(loss_fn)
    eval_loss = jax.jit(lambda p: objective(forward(p, X), Y))

    def fresh_params():
        return [(jnp.asarray(W), jnp.asarray(b)) for W, b in params_np]

    def make_kfac(hyper, conv_patches=None):
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
        if conv_patches == "explicit":
            kw["layer_tag_to_block_ctor"] = {"conv2d": _explicit_patches_conv_block()}
        return kfac_jax.Optimizer(**kw)

    # one optimizer / jitted step per setting, shared by the throwaway compile run and the
    # measured run (a new kfac_jax.Optimizer or jax.jit would compile everything again)
    compiled = {}

    def kfac_runner(hyper, conv_patches=None):
        key_ = ("kfac", json.dumps(hyper, sort_keys=True), conv_patches)
        if key_ not in compiled:
            compiled[key_] = make_kfac(hyper, conv_patches)
        opt = compiled[key_]
        key = jax.random.PRNGKey(0)
        state = {"params": fresh_params()}
        state["opt"] = opt.init(state["params"], key, batch)
        state["t"] = 0
        state["blocks"] = _kfac_blocks(opt)

        def step():
            t = state["t"]
            p, s, stats = opt.step(state["params"], state["opt"], jax.random.fold_in(key, t),
                                   batch=batch, global_step_int=t)
            jax.block_until_ready(p)
            state["params"], state["opt"], state["t"] = p, s, t + 1
            return float(stats["loss"])

        return step, state

    def linear_mlp(params, x):  # the ablation: the GEMMs and bias adds of forward_mlp
        h = x
        for W, b in params:
            h = jnp.dot(h, W) + b
        return h

    def sgd_runner(hyper, ablate=None):
        key_ = ("sgd", json.dumps(hyper, sort_keys=True), ablate)
        if ablate not in (None, "gemms") or (ablate and arch is not None):
            raise ValueError(f"ablate={ablate!r}: only 'gemms', for the MLP nets")
        if ablate:
            value_fn = lambda q: jnp.sum(linear_mlp(q, X)) / X.shape[0]  # noqa: E731
        else:
            value_fn = lambda q: objective(forward(q, X), Y)  # noqa: E731
        if key_ not in compiled:
            tx = optax.sgd(learning_rate=float(hyper.get("lr", 0.01)),
                           momentum=float(hyper.get("momentum", 0.9)))

            @jax.jit
            def _step(p, s):
                value, g = jax.value_and_grad(value_fn)(p)
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
        if run["optimizer"] == "kfac":
            return kfac_runner(dict(run["hyper"]), run.get("conv_patches"))
        return sgd_runner(dict(run["hyper"]), run.get("ablate"))

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
    initial_loss = float(eval_loss(fresh_params()))  # the same point as the geomkfac side's
    if job["mode"] == "serve":
        return _serve(job, runner, eval_loss, initial_loss, gemm)
    for run in job["runs"]:
        rec = {"name": run["name"], "optimizer": run["optimizer"], "hyper": run["hyper"],
               "conv_patches": run.get("conv_patches", "default")}
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
                warm = _block(step, int(job["warmup"]))
                timed = _block(step, int(job["steps"]))
                times = timed["times"]
                rec.update(step_times_s=times, median_s=statistics.median(times),
                           cores_used=timed["cpu"] / sum(times),
                           page_faults_per_step=timed["faults"] / len(times),
                           losses=warm["losses"] + timed["losses"],
                           final_loss=float(eval_loss(state["params"])))
                if state.get("blocks") is not None:
                    rec["kfac_blocks"] = state["blocks"]
            else:
                # compile every variant of the step on a throwaway run, then train from the
                # initial point on the clock
                step, _ = runner(run)
                t0 = time.perf_counter()
                for _ in range(int(job.get("compile_steps", 11))):
                    step()
                rec["compile_run_s"] = time.perf_counter() - t0
                step, state = runner(run)
                clock, trace, reached, cpu = 0.0, [], None, 0.0
                for t in range(int(job["max_steps"])):
                    c0, t0 = time.process_time(), time.perf_counter()
                    value = step()  # the loss before this step
                    clock_before = clock
                    clock += time.perf_counter() - t0
                    cpu += time.process_time() - c0
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
                           cores_used=cpu / clock if clock else None,
                           best_loss=min(v for _, _, v in trace))
        except Exception as exc:  # report and go on with the next run
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc()[-4000:]
        results.append(rec)

    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("jax", "jaxlib", "kfac-jax", "optax", "numpy")}
    out = {"runs": results, "gemm": gemm, "versions": versions, "initial_loss": initial_loss,
           "python": platform.python_version(), "jax_devices": [str(d) for d in jax.devices()],
           "xla_flags": os.environ.get("XLA_FLAGS"), "blas": _blas_info(),
           "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else None}
    with open(out_path, "w") as fh:
        json.dump(out, fh)
    return 0


def _block(step, k):
    """``k`` steps of one live run: their times, losses, CPU time and page faults."""
    times, losses, cpu, faults = [], [], 0.0, 0
    for _ in range(k):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0, t0 = time.process_time(), time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return {"times": times, "losses": losses, "cpu": cpu, "faults": faults}


def _serve(job, runner, eval_loss, initial_loss, gemm):
    """The interleaved protocol (``side_by_side.py --mode interleaved``): compile every run on
    a throwaway copy, keep one live copy of each, answer ``READY``; then for each command line
    on stdin, ``{"run": name, "steps": k}``, take ``k`` steps of that run and answer one
    ``RESULT`` line (:func:`_block`); ``{"quit": true}`` answers ``FINAL`` (each run's loss
    after its last step) and ends. Answers are single lines ``TAG <json>`` on stdout."""
    live = {}
    for run in job["runs"]:
        step, _ = runner(run)
        for _ in range(int(job.get("compile_steps", 11))):
            step()
        live[run["name"]] = runner(run)
    blocks = {name: state.get("blocks") for name, (_, state) in live.items()}
    print("READY " + json.dumps({"initial_loss": initial_loss, "gemm": gemm,
                                 "kfac_blocks": blocks}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        step, _ = live[cmd["run"]]
        print("RESULT " + json.dumps(_block(step, int(cmd["steps"]))), flush=True)
    final = {name: float(eval_loss(state["params"])) for name, (_, state) in live.items()}
    print("FINAL " + json.dumps(final), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
