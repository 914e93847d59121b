"""Examples to the headline loss on the digits CNN at batch 50: do learning-rate schedules or
iterate averaging lift K-FAC's saving over SGD-momentum to 3×?

At batch 50 a K-FAC step with factors every 10 steps and inverses every 20 costs what an
SGD-momentum step costs (benchmarks/README.md §4), so the seconds ratio of section 4 is the
ratio of updates, and the question is statistical: how many examples each method needs.
Every setting runs on three batch orders (the initialization fixed, as in
``layer_time_to_target.py``); the full training-set loss is evaluated every 10 updates (not
timed: only update counts are reported, which are deterministic).

Settings (the same axes for both methods):

- K-FAC: Monte Carlo Fisher, λ = 0.01 with π, EMA 0.95, factors every 10 steps, inverses
  every 20, KL clip 0.1, lr ∈ {0.1, 0.2, 0.3}; SGD-momentum 0.9: lr ∈ {0.2, 0.3, 0.5};
- schedules through ``Optimizer.set_lr`` (factor of the base lr at update ``t``, counted
  from 0): constant; cosine ``½(1 + cos(π t/T))`` and linear ``1 − t/T`` for
  ``T ∈ {100, 150, 200, 300}``, both held at ``FLOOR`` = 1 % from ``t = T`` on;
  ``1/(1 + t/T)`` for ``T ∈ {20, 50, 100}``;
- iterate averaging at a constant rate: the loss is evaluated at the moving average
  ``θ̄ ← β θ̄ + (1 − β) θ`` (β ∈ {0.8, 0.9, 0.95}) instead of at ``θ``.

::

    python benchmarks/cnn_examples_search.py            # 90 settings × 3 orders, ~6 min
    python benchmarks/cnn_examples_search.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import layer_time_to_target as ltt  # noqa: E402  (the problem and the K-FAC step)

from geomkfac.errors import GeomKFACError  # noqa: E402
from geomkfac.nn.architectures import build_model  # noqa: E402
from geomkfac.nn.data import BatchIterator, load_digits  # noqa: E402
from geomkfac.nn.losses import loss_for_model  # noqa: E402
from geomkfac.nn.optim import get_optimizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 50
ORDERS = (0, 1, 2)
TARGET = ltt.HEADLINE
MAX_UPDATES = 600
FLOOR = 0.01
KFAC = dict(ltt._CHEAP, kl_clip=0.1)
KFAC_LRS = (0.1, 0.2, 0.3)
SGD_LRS = (0.2, 0.3, 0.5)
SCHEDULES = ([("constant", 0)] + [(k, T) for k in ("cosine", "linear") for T in (100, 150, 200, 300)]
             + [("inverse", T) for T in (20, 50, 100)])
AVERAGING = (0.8, 0.9, 0.95)


def schedule_factor(kind: str, T: int, t: int) -> float:
    """The factor of the base learning rate at update ``t`` (from 0)."""
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        return max(0.5 * (1.0 + math.cos(math.pi * min(t, T) / T)), FLOOR)
    if kind == "linear":
        return max(1.0 - t / T, FLOOR)
    if kind == "inverse":
        return 1.0 / (1.0 + t / T)
    raise ValueError(f"unknown schedule {kind!r}")


def settings(quick=False):
    """``[(method, hyper, schedule kind, T, β)]``; β = 0: no averaging."""
    base = [("kfac", dict(KFAC, lr=lr)) for lr in KFAC_LRS]
    base += [("sgd", {"lr": lr, "momentum": 0.9}) for lr in SGD_LRS]
    if quick:
        return [("kfac", dict(KFAC, lr=0.1), "cosine", 5, 0.0),
                ("sgd", {"lr": 0.2, "momentum": 0.9}, "constant", 0, 0.9)]
    out = [(m, h, kind, T, 0.0) for kind, T in SCHEDULES for m, h in base]
    out += [(m, h, "constant", 0, beta) for beta in AVERAGING for m, h in base]
    return out


_PROBLEM = {}


def _problem(quick):
    if quick not in _PROBLEM:
        arch, act, view = ltt.PROBLEMS["cnn"]
        data = view(load_digits("classification"))
        if quick:
            data = type(data)(data.X[:200], data.Y[:200], data.task, data.name, data.num_classes)
        _PROBLEM[quick] = (data, build_model(arch, data.X.shape[1:], act, seed=0))
    return _PROBLEM[quick]


def run_one(job):
    """Updates to ``target`` of one setting on one batch order (None: not reached within
    ``max_updates``, or the run failed)."""
    (method, hyper, kind, T, beta), order, target, max_updates, quick = job
    data, model0 = _problem(quick)
    model = model0.copy()
    avg = model0.copy() if beta else model
    opt = get_optimizer(method, model, "ce", **hyper)
    loss = loss_for_model(model, "ce")
    it = BatchIterator(data.num_examples, BATCH, order)
    every = max(1, round(500 / it.batch_size))
    for u in range(1, max_updates + 1):
        opt.set_lr(hyper["lr"] * schedule_factor(kind, T, u - 1))
        try:
            opt.step(*it.next_batch(data))
        except GeomKFACError:
            return None
        if beta:
            for la, lm in zip(avg.param_layers, model.param_layers):
                la.set_Wbar(beta * la.Wbar + (1.0 - beta) * lm.Wbar)
        if u % every == 0:
            value = float(loss.value(avg.forward(data.X), data.Y))
            if not np.isfinite(value):
                return None
            if value <= target:
                return u
    return None


def _one_thread():
    from geomkfac.threads import limit_blas_threads

    limit_blas_threads(1)


def run(quick=False, jobs=2, target=TARGET, max_updates=None):
    max_updates = max_updates or (20 if quick else MAX_UPDATES)
    sets = settings(quick)
    orders = ORDERS[:1] if quick else ORDERS
    work = [(s, o, target, max_updates, quick) for s in sets for o in orders]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, initializer=_one_thread) as ex:
            reached = list(ex.map(run_one, work, chunksize=2))
    else:
        reached = [run_one(w) for w in work]
    rows = []
    for i, (method, hyper, kind, T, beta) in enumerate(sets):
        per = reached[i * len(orders):(i + 1) * len(orders)]
        done = all(u is not None for u in per)
        rows.append({"method": method, "lr": hyper["lr"], "schedule": kind, "T": T,
                     "averaging": beta, "updates": per,
                     "median_examples": statistics.median(per) * BATCH if done else None})
    best = {}
    for r in rows:
        if r["median_examples"] is not None and (
                r["method"] not in best or r["median_examples"] < best[r["method"]]["median_examples"]):
            best[r["method"]] = r
    ratio = (best["sgd"]["median_examples"] / best["kfac"]["median_examples"]
             if {"sgd", "kfac"} <= set(best) else None)
    return {"target": target, "batch": BATCH, "orders": list(orders), "max_updates": max_updates,
            "rows": rows, "best": best, "sgd_over_kfac_examples": ratio,
            "loadavg": list(os.getloadavg())}


def _label(r):
    sched = "constant" if r["schedule"] == "constant" else f"{r['schedule']} T={r['T']}"
    avg = f", averaging β={r['averaging']}" if r["averaging"] else ""
    return f"{r['method']} lr {r['lr']:g}, {sched}{avg}"


def markdown(res):
    lines = [f"Updates to the full-set loss {res['target']:g} at B = {res['batch']} on batch "
             f"orders {res['orders']} (—: not reached within {res['max_updates']} updates); "
             "median examples = the median over the orders × B (— unless every order "
             "reached it).", "",
             "| setting | updates per order | median examples |", "|---|---|---:|"]
    for r in sorted(res["rows"], key=lambda r: (r["method"], r["median_examples"] or math.inf)):
        ups = ", ".join("—" if u is None else str(u) for u in r["updates"])
        ex = "—" if r["median_examples"] is None else f"{r['median_examples']:.0f}"
        lines.append(f"| {_label(r)} | {ups} | {ex} |")
    lines.append("")
    for m, r in sorted(res["best"].items()):
        lines.append(f"Best {m}: {_label(r)}, {r['median_examples']:.0f} examples.")
    if res["sgd_over_kfac_examples"] is not None:
        lines.append(f"SGD-momentum ÷ K-FAC examples (best against best): "
                     f"**{res['sgd_over_kfac_examples']:.2f}×**.")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two settings, one order (a smoke run)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (one BLAS thread each)")
    p.add_argument("--out", help="stem of the .json/.md results "
                                 "(default benchmarks/results/cnn_examples_search)")
    a = p.parse_args(argv)
    res = run(a.quick, a.jobs)
    text = markdown(res)
    print(text)
    stem = a.out or str(RESULTS / ("cnn_examples_search" + ("_quick" if a.quick else "")))
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps(res, indent=1))
    Path(stem + ".md").write_text(text + "\n")
    return res


if __name__ == "__main__":
    main()
