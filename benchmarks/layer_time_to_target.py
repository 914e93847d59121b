"""Time to a target training loss on the digits as images (CNN) and as sequences of rows
(RNN): K-FAC vs SGD-momentum and Adam, each the best of a small learning-rate sweep.

Problems (embedded 8×8 digits, 1,797 examples, 10 classes, float64, softmax cross-entropy;
every run starts from the same initialization and draws its mini-batches of 100 from the
same seeded iterator):

- **cnn**: ``1×8×8`` images, ``conv8k3p1-max2-conv16k3p1-avg2-dense10`` (ReLU);
- **rnn**: 8 steps of 8 pixels (row by row), ``rnn32-last-dense10`` (tanh), the class read
  at the last step.

Procedure: SGD-momentum (0.9) runs a fixed budget of updates for each learning rate; the
target is the lowest full-training-set loss the best SGD run reached, plus 0.5 %. Adam and
K-FAC (Monte Carlo Fisher, factors every step, inverses every 5, factored damping 0.01 with
the π correction, KL clipping; lr × KL clip ∈ {(0.1, 0.01), (0.3, 0.01), (1, 0.01), (0.3, 0.1),
(1, 0.1)}; for the RNN also the temporally correlated ``temporal="option1"``
and ``"option2"``) then run until they reach it or their budget ends. The training loss is
evaluated on all examples every ``eval_every`` updates (not counted in the seconds, which
are the time spent in ``step`` plus fetching the batches). Reported per method: the best
sweep entry's updates and seconds to the target, and the ratios SGD / method; and the same
runs read at looser targets (the best SGD loss within 10 %, 25 %, 50 % of its budget).

Run ``python benchmarks/layer_time_to_target.py --json layer_time_to_target.json``
(``--quick``: 200 examples and 10 updates, a smoke test; ``--which cnn`` or ``rnn``).
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

KFAC_COMMON = {"fisher": "mc", "factor_update_period": 1, "inverse_update_period": 5,
               "damping": 1e-2, "kl_clip": 1e-2}


def sweeps(which, quick):
    sgd = [("sgd", {"lr": lr, "momentum": 0.9}) for lr in ((0.1,) if quick else (0.03, 0.1, 0.3))]
    adam = [("adam", {"lr": lr}) for lr in ((3e-3,) if quick else (1e-3, 3e-3, 1e-2))]
    grid = [(0.3, 1e-2)] if quick else [(0.1, 1e-2), (0.3, 1e-2), (1.0, 1e-2), (0.3, 1e-1), (1.0, 1e-1)]
    kfac = [("kfac", dict(KFAC_COMMON, lr=lr, kl_clip=kl)) for lr, kl in grid]
    if which == "rnn":
        for opt in ("option1", "option2"):
            kfac += [(f"kfac-{opt}", dict(KFAC_COMMON, lr=lr, temporal=opt))
                     for lr in ((0.3,) if quick else (0.3, 1.0))]
    return sgd, adam + kfac


def run_one(name, hyper, model0, data, updates, eval_every, target=None, seed=0):
    model = model0.copy()
    opt = get_optimizer(name.split("-")[0], model, "ce", **hyper)
    loss = loss_for_model(model, "ce")
    it = BatchIterator(data.num_examples, 100, seed)
    seconds, trace = 0.0, []
    for u in range(1, updates + 1):
        t0 = CLOCK[0]()
        X, Y = it.next_batch(data)
        try:
            opt.step(X, Y)
        except GeomKFACError as exc:
            return {"name": name, "hyper": hyper, "trace": trace, "failed": str(exc)}
        seconds += CLOCK[0]() - t0
        if u % eval_every == 0 or u == updates:
            val = float(loss.value(model.forward(data.X), data.Y))
            trace.append((u, seconds, val))
            if not np.isfinite(val) or (target is not None and val <= target):
                break
    return {"name": name, "hyper": hyper, "trace": trace}


def first_reach(trace, target):
    for u, s, v in trace:
        if v <= target:
            return u, s
    return None


def best_per_method(runs, target):
    """Per method, the run that reached ``target`` in the fewest seconds."""
    table = {}
    for r in runs:
        hit = first_reach(r["trace"], target)
        if hit is None:
            continue
        cur = table.get(r["name"])
        if cur is None or hit[1] < cur["seconds"]:
            table[r["name"]] = {"updates": hit[0], "seconds": hit[1], "hyper": r["hyper"]}
    sgd = table.get("sgd")
    for v in table.values():
        if sgd:
            v["updates_ratio"] = sgd["updates"] / v["updates"]
            v["seconds_ratio"] = sgd["seconds"] / v["seconds"]
    return table


def looser_targets(runs, sgd_updates, margin=0.005, fractions=(0.1, 0.25, 0.5)):
    """The same runs read at looser targets: the best SGD loss within a fraction of its
    budget, plus the margin."""
    out = []
    for frac in fractions:
        vals = [v for r in runs if r["name"] == "sgd" for u, _, v in r["trace"]
                if u <= frac * sgd_updates and np.isfinite(v)]
        if vals:
            t = min(vals) * (1 + margin)
            out.append({"fraction": frac, "target": t, "table": best_per_method(runs, t)})
    return out


def run(which, quick=False, sgd_updates=None, other_updates=None, seed=0):
    arch, act, view = PROBLEMS[which]
    data = view(load_digits("classification"))
    if quick:  # a smoke test: 200 examples
        data = type(data)(data.X[:200], data.Y[:200], data.task, data.name, data.num_classes)
    model0 = build_model(arch, data.X.shape[1:], act, seed=seed)
    sgd_updates = sgd_updates or (10 if quick else 1500)
    other_updates = other_updates or (10 if quick else 1500)
    eval_every = 5 if quick else 10
    sgd_sweep, other_sweep = sweeps(which, quick)
    load0 = os.getloadavg()[0]
    sgd_runs = [run_one(n, h, model0, data, sgd_updates, eval_every, seed=seed) for n, h in sgd_sweep]
    best = min((v for r in sgd_runs for _, _, v in r["trace"] if np.isfinite(v)), default=np.inf)
    target = best * 1.005
    runs = sgd_runs + [run_one(n, h, model0, data, other_updates, eval_every, target, seed)
                       for n, h in other_sweep]
    for r in runs:
        r["reached"] = first_reach(r["trace"], target)
    return {"which": which, "arch": arch, "target": target, "best_sgd_loss": best,
            "table": best_per_method(runs, target),
            "looser": looser_targets(runs, sgd_updates), "runs": runs, "loadavg_before": load0,
            "loadavg_after": os.getloadavg()[0], "sgd_updates": sgd_updates,
            "other_updates": other_updates}


def format_table(res):
    lines = [f"{res['which']} ({res['arch']}): target loss {res['target']:.4g}",
             f"{'method':14s} {'updates':>8s} {'seconds':>9s} {'SGD/upd':>8s} {'SGD/sec':>8s}  best setting"]
    for name, v in res["table"].items():
        hp = ",".join(f"{k}={v['hyper'][k]}" for k in ("lr", "momentum", "kl_clip") if k in v["hyper"])
        lines.append(f"{name:14s} {v['updates']:8d} {v['seconds']:9.2f} "
                     f"{v.get('updates_ratio', float('nan')):8.2f} "
                     f"{v.get('seconds_ratio', float('nan')):8.2f}  {hp}")
    missing = {r["name"] for r in res["runs"]} - set(res["table"])
    for name in sorted(missing):
        lines.append(f"{name:14s} {'not reached':>8s}")
    for lt in res["looser"]:
        cells = ", ".join(f"{n} {v['updates']} upd {v['seconds']:.2f} s"
                          f" ({v.get('updates_ratio', float('nan')):.2f}x/{v.get('seconds_ratio', float('nan')):.2f}x)"
                          for n, v in lt["table"].items())
        lines.append(f"  target at {int(100 * lt['fraction'])}% of the SGD budget "
                     f"({lt['target']:.4g}): {cells}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--which", choices=("cnn", "rnn", "both"), default="both")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sgd-updates", type=int)
    p.add_argument("--other-updates", type=int)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--threads", type=int, default=None, help="limit the BLAS threads")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    CLOCK[0] = time.process_time if a.clock == "cpu" else time.perf_counter
    kinds = ["cnn", "rnn"] if a.which == "both" else [a.which]

    def go():
        return {k: run(k, a.quick, a.sgd_updates, a.other_updates) for k in kinds}

    if a.threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            res = go()
    else:
        res = go()
    for r in res.values():
        r["clock"], r["threads"] = a.clock, a.threads
    for r in res.values():
        print(format_table(r))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1, default=float)
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
