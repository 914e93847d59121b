"""Time to fixed training losses on the digits as images (CNN) and as sequences of rows
(RNN): K-FAC vs SGD-momentum and Adam, each the best of its own small sweep, in which the
batch size is a hyperparameter of every method.

Problems (embedded 8×8 digits, 1,797 examples, 10 classes, float64, softmax cross-entropy;
every run starts from the same initialization; runs with the same batch size draw the same
seeded batches):

- **cnn**: ``1×8×8`` images, ``conv8k3p1-max2-conv16k3p1-avg2-dense10`` (ReLU);
- **rnn**: 8 steps of 8 pixels (row by row), ``rnn32-last-dense10`` (tanh), the class read
  at the last step.

Targets: fixed losses on the full training set, ``TARGETS = (0.1, 0.05, 0.01, 0.001)``;
0.01 is the headline (every example fitted with margin, before the memorization regime in
which the loss falls only by growing the logits). Every run stops at the lowest target or
at its budget (``max_updates`` updates or ``max_seconds`` timed seconds, the same for all
methods). The full-training-set loss is evaluated every ``max(1, round(500 / batch))``
updates (about every 500 examples; not counted in the seconds, which are the time spent in
``step`` plus fetching the batches).

Sweeps (batch sizes ``BATCHES = (50, 100, 300, 1797)``, 1797 being full-batch):

- SGD with momentum 0.9: lr ∈ {0.03, 0.1, 0.2, 0.3, 0.5, 1} × batch: 24 settings; and with
  momentum 0.5 (K-FAC's small-batch momentum): lr ∈ {0.3, 1} × B ∈ {50, 100, 300}: 6 settings;
- Adam (β₁ = 0.9): lr ∈ {0.001, 0.003, 0.01, 0.02, 0.03, 0.05} × batch: 24 settings; and with
  β₁ = 0.5: lr ∈ {0.01, 0.03} × B ∈ {50, 100, 300}: 6 settings;
- K-FAC: the 16 settings of :data:`KFAC_SWEEP` (Monte Carlo and exact Fisher, fixed and
  Levenberg–Marquardt damping, fixed learning rate with KL clipping, with momentum 0.5 and
  without, the quadratic-model learning rate and momentum with the default curvature
  tracking (λ₀ = 0.01, EMA 0.95, inverses every 5 steps) and a fast one (λ₀ = 1e-4, EMA
  0.5, inverses every step), factor / inverse update periods 1/5 and 10/20), each with its
  own batch size;
- for the RNN also the temporally correlated ``temporal="option1"`` / ``"option2"`` on the
  best fixed-lr setting.

Reported per target and method: the run reaching the target in the fewest seconds (its
updates and seconds) and, separately, the fewest updates any of the method's runs needed;
the ratios are SGD-momentum ÷ method for each (seconds: best by seconds; updates: best by
updates).

Full-batch SGD-momentum takes ~0.13 s a step on the CNN, so the seconds budget stops it
after ~130 updates; ``--extend-full-batch N`` adds full-batch SGD-momentum runs (lr 0.1,
0.3) with N updates and no seconds cap, so that SGD's fewest updates are not an artefact of
the budget (``--previous FILE`` adds them to an earlier result instead of repeating the sweep).

Run ``python benchmarks/layer_time_to_target.py --threads 1 --extend-full-batch 600 --json
layer_time_to_target.json`` (``--quick``: 200 examples and 10 updates, a smoke test;
``--which cnn`` or ``rnn``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from geomkfac.errors import GeomKFACError
from geomkfac.nn.architectures import build_model
from geomkfac.nn.data import BatchIterator, load_digits
from geomkfac.nn.losses import loss_for_model
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.shaped import as_images, as_sequences

PROBLEMS = {
    "cnn": ("conv8k3p1-max2-conv16k3p1-avg2-dense10", "relu", as_images),
    "rnn": ("rnn32-last-dense10", "tanh", as_sequences),
}

#: the clock (see benchmarks/layer_step_cost.py): wall or process CPU time
CLOCK = [time.perf_counter]

TARGETS = (0.1, 0.05, 0.01, 0.001)
HEADLINE = 0.01
BATCHES = (50, 100, 300, 1797)

#: K-FAC settings: (batch, hyperparameters); unlisted ones are the library defaults
#: (factored damping with π, EMA 0.95, float64).
_MC = {"fisher": "mc", "damping": 1e-2, "factor_update_period": 1, "inverse_update_period": 5}
#: the cheap small-batch step: factors every 10 steps, inverses every 20
_CHEAP = dict(_MC, factor_update_period=10, inverse_update_period=20)
_ADAPTIVE = {"adaptive_lr": True, "adapt_damping": True, "damping": 1e-2,
             "factor_update_period": 1, "inverse_update_period": 5}
#: the quadratic model with curvature that follows the iterate closely: a small initial λ
#: (LM raises it where the model is poor), EMA 0.5 and inverses every step (large batches
#: only: at B = 100 the noisy factors make it diverge)
_ADAPTIVE_FAST = dict(_ADAPTIVE, damping=1e-4, ema_decay=0.5, inverse_update_period=1)
KFAC_SWEEP = [
    (50, dict(_MC, lr=0.1, kl_clip=0.1)),
    (50, dict(_CHEAP, lr=0.1, kl_clip=0.1)),
    (100, dict(_MC, lr=0.3, kl_clip=0.1)),
    (100, dict(_MC, lr=0.1, momentum=0.5, kl_clip=0.1)),
    (100, dict(_CHEAP, lr=0.3, kl_clip=0.1)),
    (100, dict(_CHEAP, lr=0.1, momentum=0.5, kl_clip=0.1)),
    (100, dict(_ADAPTIVE, fisher="mc")),
    (300, dict(_MC, lr=0.3, kl_clip=0.1)),
    (300, dict(_MC, fisher="exact", lr=0.3, kl_clip=0.1)),
    (300, dict(_MC, lr=0.3, kl_clip=0.1, adapt_damping=True)),
    (300, dict(_ADAPTIVE, fisher="mc")),
    (300, dict(_ADAPTIVE_FAST, fisher="mc")),
    (1797, dict(_ADAPTIVE, fisher="mc")),
    (1797, dict(_ADAPTIVE, fisher="exact")),
    (1797, dict(_ADAPTIVE_FAST, fisher="mc")),
    (1797, dict(_ADAPTIVE_FAST, fisher="exact")),
]

#: learning rates of the baselines at every batch size (SGD with momentum 0.9, Adam with
#: β₁ = 0.9), and the lower-momentum runs that match K-FAC's momentum 0.5 (SGD momentum 0.5,
#: Adam β₁ = 0.5) at the small batch sizes, with learning rates around each method's best
SGD_LRS = (0.03, 0.1, 0.2, 0.3, 0.5, 1.0)
ADAM_LRS = (1e-3, 3e-3, 1e-2, 2e-2, 3e-2, 5e-2)
LOW_MOMENTUM_BATCHES = (50, 100, 300)
SGD_LOW_MOMENTUM_LRS = (0.3, 1.0)
ADAM_LOW_BETA1_LRS = (1e-2, 3e-2)


def sweeps(which, quick):
    """``[(method, batch, hyper)]`` for every run."""
    if quick:
        return [("sgd", 50, {"lr": 0.1, "momentum": 0.9}), ("adam", 50, {"lr": 3e-3}),
                ("kfac", 50, dict(_MC, lr=0.3, kl_clip=0.1)),
                ("kfac", 200, dict(_ADAPTIVE, fisher="exact"))] + (
            [("kfac-option1", 50, dict(_MC, lr=0.3, kl_clip=0.1, temporal="option1")),
             ("kfac-option2", 50, dict(_MC, lr=0.3, kl_clip=0.1, temporal="option2"))]
            if which == "rnn" else [])
    out = [("sgd", b, {"lr": lr, "momentum": 0.9}) for b in BATCHES for lr in SGD_LRS]
    out += [("sgd", b, {"lr": lr, "momentum": 0.5})
            for b in LOW_MOMENTUM_BATCHES for lr in SGD_LOW_MOMENTUM_LRS]
    out += [("adam", b, {"lr": lr}) for b in BATCHES for lr in ADAM_LRS]
    out += [("adam", b, {"lr": lr, "beta1": 0.5})
            for b in LOW_MOMENTUM_BATCHES for lr in ADAM_LOW_BETA1_LRS]
    out += [("kfac", b, h) for b, h in KFAC_SWEEP]
    if which == "rnn":
        for opt in ("option1", "option2"):
            out += [(f"kfac-{opt}", 100, dict(_MC, lr=0.3, kl_clip=0.1, temporal=opt)),
                    (f"kfac-{opt}", 300, dict(_MC, lr=0.3, kl_clip=0.1, temporal=opt))]
    return out


def run_one(name, batch, hyper, model0, data, max_updates, max_seconds, stop, seed=0):
    """One run: the trace ``[(updates, seconds, full-set loss)]``, stopped at the loss
    ``stop``, a non-finite loss, or the budget."""
    model = model0.copy()
    opt = get_optimizer(name.split("-")[0], model, "ce", **hyper)
    loss = loss_for_model(model, "ce")
    it = BatchIterator(data.num_examples, batch, seed)
    eval_every = max(1, round(500 / it.batch_size))
    seconds, trace = 0.0, [(0, 0.0, float(loss.value(model.forward(data.X), data.Y)))]
    out = {"name": name, "batch": it.batch_size, "hyper": hyper, "trace": trace,
           "eval_every": eval_every}
    for u in range(1, max_updates + 1):
        t0 = CLOCK[0]()
        X, Y = it.next_batch(data)
        try:
            opt.step(X, Y)
        except GeomKFACError as exc:
            out["failed"] = str(exc)
            return out
        seconds += CLOCK[0]() - t0
        if u % eval_every == 0 or u == max_updates or seconds >= max_seconds:
            val = float(loss.value(model.forward(data.X), data.Y))
            trace.append((u, seconds, val))
            if not np.isfinite(val) or val <= stop or seconds >= max_seconds:
                break
    return out


def first_reach(trace, target):
    """The first ``(updates, seconds)`` of the trace at or below ``target`` after at least
    one update (the initial loss is recorded but reaches nothing)."""
    for u, s, v in trace:
        if u > 0 and v <= target:
            return u, s
    return None


def method_table(runs, target):
    """Per method: the run reaching ``target`` in the fewest seconds, and the fewest updates
    any run of the method needed; ratios SGD ÷ method (seconds by seconds, updates by
    updates)."""
    table = {}
    for r in runs:
        hit = first_reach(r["trace"], target)
        if hit is None:
            continue
        cur = table.setdefault(r["name"], {"seconds": np.inf, "min_updates": np.inf})
        if hit[1] < cur["seconds"]:
            cur.update(updates=hit[0], seconds=hit[1], batch=r["batch"], hyper=r["hyper"])
        if hit[0] < cur["min_updates"]:
            cur.update(min_updates=hit[0], min_updates_batch=r["batch"],
                       min_updates_hyper=r["hyper"], min_updates_seconds=hit[1])
    sgd = table.get("sgd")
    for v in table.values():
        if sgd:
            v["updates_ratio"] = sgd["min_updates"] / v["min_updates"]
            v["seconds_ratio"] = sgd["seconds"] / v["seconds"]
    return table


def run(which, quick=False, max_updates=None, max_seconds=None, seed=0, extend=0, previous=None):
    """The sweep of ``which``; ``extend > 0`` adds full-batch SGD-momentum runs (lr 0.1,
    0.3) with ``extend`` updates and no seconds cap, so that SGD's fewest updates are not
    limited by the seconds budget of its slow full-batch steps; ``previous`` (an earlier
    result of this function) reuses that result's runs instead of repeating the sweep."""
    arch, act, view = PROBLEMS[which]
    data = view(load_digits("classification"))
    if quick:  # a smoke test: 200 examples
        data = type(data)(data.X[:200], data.Y[:200], data.task, data.name, data.num_classes)
    model0 = build_model(arch, data.X.shape[1:], act, seed=seed)
    max_updates = max_updates or (10 if quick else 3000)
    max_seconds = max_seconds or (60.0 if quick else {"cnn": 12.0, "rnn": 6.0}[which])
    load0 = os.getloadavg()
    if previous is not None:
        runs = [r for r in previous["runs"] if not r.get("extended")]
        max_updates, max_seconds = previous["max_updates"], previous["max_seconds"]
        load0 = previous["loadavg_before"]
    else:
        runs = [run_one(n, b, h, model0, data, max_updates, max_seconds, min(TARGETS), seed)
                for n, b, h in sweeps(which, quick)]
    for lr in (0.1, 0.3) if extend else ():
        r = run_one("sgd", data.num_examples, {"lr": lr, "momentum": 0.9}, model0, data,
                    extend, np.inf, min(TARGETS), seed)
        r["extended"] = True
        runs.append(r)
    for r in runs:
        r["reached"] = {str(t): first_reach(r["trace"], t) for t in TARGETS}
    return {"which": which, "arch": arch, "targets": list(TARGETS), "headline": HEADLINE,
            "tables": {str(t): method_table(runs, t) for t in TARGETS},
            "table": method_table(runs, HEADLINE), "runs": runs,
            "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()),
            "max_updates": max_updates, "max_seconds": max_seconds, "extend": extend}


def _setting(batch, hyper):
    keys = ("lr", "momentum", "beta1", "fisher", "damping", "kl_clip", "adaptive_lr",
            "adapt_damping", "ema_decay", "factor_update_period", "inverse_update_period",
            "temporal")
    return f"B={batch} " + ",".join(f"{k}={hyper[k]}" for k in keys if k in hyper)


def format_table(res):
    lines = [f"{res['which']} ({res['arch']}), load {res['loadavg_before'][0]:.2f} -> "
             f"{res['loadavg_after'][0]:.2f}"]
    names = list(dict.fromkeys(r["name"] for r in res["runs"]))
    for t in res["targets"]:
        tab = res["tables"][str(t)]
        lines.append(f"target loss {t:g}{' (headline)' if t == res['headline'] else ''}")
        lines.append(f"  {'method':13s} {'updates':>8s} {'seconds':>8s} {'min upd':>8s} "
                     f"{'SGD/upd':>8s} {'SGD/sec':>8s}  fastest setting")
        for name in names:
            v = tab.get(name)
            if v is None:
                lines.append(f"  {name:13s} {'not reached':>17s}")
                continue
            lines.append(f"  {name:13s} {v['updates']:8d} {v['seconds']:8.2f} {v['min_updates']:8d} "
                         f"{v.get('updates_ratio', float('nan')):8.2f} "
                         f"{v.get('seconds_ratio', float('nan')):8.2f}  {_setting(v['batch'], v['hyper'])}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", choices=("cnn", "rnn", "both"), default="both")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--max-updates", type=int)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--threads", type=int, default=None, help="limit the BLAS threads")
    p.add_argument("--extend-full-batch", type=int, default=0, metavar="N",
                   help="also run full-batch SGD-momentum for N updates without a seconds cap")
    p.add_argument("--previous", metavar="FILE",
                   help="reuse the sweep runs of an earlier --json result (with --extend-full-batch)")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    CLOCK[0] = time.process_time if a.clock == "cpu" else time.perf_counter
    kinds = ["cnn", "rnn"] if a.which == "both" else [a.which]
    previous = {}
    if a.previous:
        with open(a.previous) as fh:
            previous = json.load(fh)
    res = {}

    def go():
        for k in kinds:
            res[k] = run(k, a.quick, a.max_updates, a.max_seconds, extend=a.extend_full_batch,
                         previous=previous.get(k))
            res[k]["clock"], res[k]["threads"] = a.clock, a.threads
            print(format_table(res[k]), flush=True)

    if a.threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            go()
    else:
        go()
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, default=float)
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
