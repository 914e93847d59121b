"""Does the homogeneous column ``[a 1]`` cost anything in the GEMMs and elementwise passes?

The backend keeps each dense layer's input as one ``(N, in+1)`` buffer ``ā = [a 1]`` (the
homogeneous coordinate of the paper's affine spaces, Eqn. 2.1): the activation ``φ(z)`` of the
layer below is written into its first ``in`` columns, the forward GEMM reads the strided view
``ā[:, :-1]`` (row stride ``in+1``), and the weight gradient ``DW̄ = Dzᵀ ā`` and the K-FAC
factor ``A = āᵀ ā / N`` read the whole buffer. The alternative is to split ``W̄ = [W b]``
in every GEMM and keep ``a`` contiguous (``(N, in)``), adding the bias terms separately
(``z = a Wᵀ + b``, ``Db = Σ_n Dz``, ``A`` from ``aᵀa`` and the column sums).

This script times, for the layers of the 784-1000-500-250-30-250-500-1000-784 autoencoder at
batch 1000 in float32 (the net of the side-by-side benchmark), each operation on both
layouts, alternating the two within each repeat (median over repeats), and prints the
totals per step of SGD:

- forward GEMM: ``ā[:, :-1] @ Wᵀ`` (strided rows) against ``a @ Wᵀ`` (contiguous);
- weight-gradient GEMM: ``Dzᵀ ā`` (``in+1`` columns) against ``Dzᵀ a`` plus ``Σ_n Dz``;
- ``tanh`` written into the strided view ``ā[:, :-1]`` against a contiguous array;
- ``φ'`` from the activation, ``1 − a²``, read from the strided view against a contiguous one.

Run ``python benchmarks/homogeneous_layout.py [--threads 1] [--repeats 15]``; writes
``benchmarks/results/homogeneous_layout.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

SIZES = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(sizes=SIZES, N=1000, repeats=15, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i, (d, out) in enumerate(zip(sizes[:-1], sizes[1:])):
        abar = np.empty((N, d + 1), np.float32)
        abar[:, :-1] = rng.random((N, d), dtype=np.float32)
        abar[:, -1] = 1
        a = np.ascontiguousarray(abar[:, :-1])
        W = rng.standard_normal((out, d), dtype=np.float32)
        Dz = rng.standard_normal((N, out), dtype=np.float32)
        z = rng.standard_normal((N, d), dtype=np.float32)
        dst = np.empty((N, d), np.float32)
        ops = {
            "forward GEMM": (lambda: abar[:, :-1] @ W.T, lambda: a @ W.T),
            "gradient GEMM": (lambda: Dz.T @ abar, lambda: (Dz.T @ a, Dz.sum(axis=0))),
            "tanh into the input": (lambda: np.tanh(z, out=abar[:, :-1]),
                                    lambda: np.tanh(z, out=dst)),
            "φ' = 1 − a²": (lambda: np.subtract(1, np.square(abar[:, :-1])),
                            lambda: np.subtract(1, np.square(a))),
        }
        # both layouts compute the same numbers (checked once; rounding of float32 GEMMs
        # with different blockings allows a relative 1e-5)
        fw = abar[:, :-1] @ W.T
        gh, (gs, gb) = Dz.T @ abar, (Dz.T @ a, Dz.sum(axis=0))
        if not (np.allclose(fw, a @ W.T, rtol=1e-5, atol=1e-4)
                and np.allclose(gh[:, :-1], gs, rtol=1e-5, atol=1e-3)
                and np.allclose(gh[:, -1], gb, rtol=1e-5, atol=1e-3)):
            raise AssertionError(f"layer {i + 1}: the two layouts disagree")
        for name, (hom, split) in ops.items():
            hom(), split()  # warm-up
            th, ts = [], []
            for _ in range(repeats):
                th.append(_time(hom))
                ts.append(_time(split))
            rows.append({"layer": i + 1, "in": d, "out": out, "op": name,
                         "homogeneous_ms": 1e3 * statistics.median(th),
                         "split_ms": 1e3 * statistics.median(ts)})
    return rows


def summary(rows):
    """Per operation, the sum over the layers of one SGD step (the activation passes only
    where there is an activation: not on layer 1's input, the data)."""
    out = {}
    for op in dict.fromkeys(r["op"] for r in rows):
        rs = [r for r in rows if r["op"] == op
              and (op in ("forward GEMM", "gradient GEMM") or r["layer"] > 1)]
        h = sum(r["homogeneous_ms"] for r in rs)
        s = sum(r["split_ms"] for r in rs)
        out[op] = {"homogeneous_ms": h, "split_ms": s, "saved_ms": h - s}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="limit the BLAS threads")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="a small net, 3 repeats")
    p.add_argument("--json", default=str(RESULTS / "homogeneous_layout.json"))
    a = p.parse_args(argv)
    sizes, N, reps = ([64, 48, 24, 48, 64], 64, 3) if a.quick else (SIZES, 1000, a.repeats)

    def go():
        return measure(sizes, N, reps)

    if a.threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(a.threads):
            rows = go()
    else:
        rows = go()
    summ = summary(rows)
    total_h = sum(v["homogeneous_ms"] for v in summ.values())
    total_s = sum(v["split_ms"] for v in summ.values())
    lines = ["| operation (all layers, one SGD step) | [a 1] buffers ms | split W, b ms | saved ms |",
             "|---|---:|---:|---:|"]
    for op, v in summ.items():
        lines.append(f"| {op} | {v['homogeneous_ms']:.2f} | {v['split_ms']:.2f} | "
                     f"{v['saved_ms']:.2f} |")
    lines.append(f"| total | {total_h:.2f} | {total_s:.2f} | {total_h - total_s:.2f} |")
    print("\n".join(lines))
    res = {"sizes": sizes, "N": N, "repeats": reps, "threads": a.threads, "rows": rows,
           "summary": summ, "loadavg": Path("/proc/loadavg").read_text().split()[:3]
           if Path("/proc/loadavg").exists() else None,
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
