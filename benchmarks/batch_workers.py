"""Sustained SGD-momentum steps with the batch split over worker threads and without.

``geomkfac.nn.parallel`` cuts a batch into blocks of rows that run their forward and
backward passes in worker threads, each with a single-threaded BLAS. The interleaved
side-by-side protocol (section 6) times blocks of 5 steps after 0.3 s of idle; this script
times long runs of back-to-back steps, as training runs them. Each setting runs in **its own
process** (an in-process alternation would start a split block while OpenBLAS's threads still
spin from the unsplit one, which is what the idle time of the interleaved protocol avoids),
the processes alternate between the settings, and each reports the percentiles and the mean
of its step times.

Net: the digits autoencoder 64-128-64-32-64-128-64 (tanh, Bernoulli loss, float32, full
batch 1797), or the deep autoencoder of section 6 with ``--net deep``; SGD with momentum 0.9.

::

    python benchmarks/batch_workers.py                    # workers 1 and 2, 3 rounds of 300 steps
    python benchmarks/batch_workers.py --quick            # smoke run

Writes ``results/batch_workers[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LR = {"digits": 1e-2, "deep": 1e-3}


def one_run(net: str, workers: int, steps: int, warmup: int, batch: int | None) -> dict:
    """``steps`` timed SGD steps after ``warmup`` in this process (the ``--child`` route)."""
    sys.path.insert(0, str(HERE / "kfac_jax"))
    import side_by_side as sbs

    from geomkfac.nn import get_optimizer, parallel

    parallel.set_workers(workers)
    X, Y, model = sbs.make_problem(net, batch=batch)
    opt = get_optimizer("sgd", model, "bernoulli", lr=LR[net], momentum=0.9)
    for _ in range(warmup):
        opt.step(X, Y)
    times, c0 = [], time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step(X, Y)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"workers": workers, "blocks": len(parallel.row_chunks(X.shape[0]) or [0]),
            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": float(ms.max()),
            "mean_ms": float(ms.mean()), "cores_used": (time.process_time() - c0) / sum(times),
            "final_loss": float(opt.loss(X, Y))}


def summary(runs: list[dict]) -> dict:
    """Per worker count: the median over the rounds of each figure."""
    out = {}
    for w in sorted({r["workers"] for r in runs}):
        rs = [r for r in runs if r["workers"] == w]
        out[w] = {k: statistics.median(r[k] for r in rs)
                  for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "cores_used")}
        out[w]["blocks"] = rs[0]["blocks"]
    return out


def markdown(res: dict) -> str:
    lines = [f"Sustained SGD-momentum steps on `{res['net']}` (N = {res['batch']}): "
             f"{res['rounds']} rounds of {res['steps']} back-to-back steps after "
             f"{res['warmup']} warm-up steps, one process per run, the settings alternated; "
             "the median over the rounds of each figure.", "",
             "| workers | blocks | mean | p50 | p90 | p99 | max | cores used |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, s in res["summary"].items():
        lines.append(f"| {w} | {s['blocks']} | **{s['mean_ms']:.2f} ms** | {s['p50_ms']:.2f} | "
                     f"{s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.1f} | "
                     f"{s['cores_used']:.2f} |")
    ws = sorted(res["summary"])
    if len(ws) > 1:
        base = res["summary"][ws[0]]["mean_ms"]
        lines += ["", "Mean step time against workers = " + str(ws[0]) + ": "
                  + ", ".join(f"{w} workers {res['summary'][w]['mean_ms'] / base:.2f}×"
                              for w in ws[1:]) + "."]
    lines.append(f"Final training losses, by worker count (the runs of one setting give the "
                 f"same bits, so each lists one value): {res['final_losses']}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--net", choices=tuple(LR), default="digits")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=None, help="override the net's batch size")
    p.add_argument("--quick", action="store_true", help="a smoke run: few steps, small batch")
    p.add_argument("--out", help="stem of the results (default results/batch_workers[_quick])")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 3, 1, 1
        args.batch = args.batch or 1100
    if args.child:
        print(json.dumps(one_run(args.net, args.workers[0], args.steps, args.warmup, args.batch)))
        return {}
    runs = []
    for _ in range(args.rounds):
        for w in args.workers:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--net", args.net,
                   "--workers", str(w), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            if args.batch:
                cmd += ["--batch", str(args.batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finals = {w: sorted({r["final_loss"] for r in runs if r["workers"] == w})
              for w in args.workers}
    sys.path.insert(0, str(HERE / "kfac_jax"))
    import side_by_side as sbs

    res = {"net": args.net, "batch": args.batch or sbs.NETS[args.net]["batch"],
           "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds, "runs": runs,
           "summary": summary(runs), "final_losses": finals,
           "environment": sbs.environment(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime())}
    text = markdown(res)
    print(text)
    stem = args.out or str(RESULTS / ("batch_workers" + ("_quick" if args.quick else "")))
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps(res, indent=1, default=str))
    Path(stem + ".md").write_text(text)
    return res


if __name__ == "__main__":
    main()
