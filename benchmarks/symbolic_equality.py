"""Time of the SYMBOLIC field's equality on a K-FAC update (Theorem 3.2, exact).

The case: a 2-2-1 tanh network with rational weights, three rational examples, squared
error (``"gaussian"``), and a second choice of frames with a symbolic entry ``o`` on the
hidden layer (``Ω = [[o, 1], [0, 2]]``, ``γ = (1, -1)``, ``Φ = [[1, 0], [1, 1]]``).  One K-FAC
natural-gradient step is computed in each frame; the two results are the same point
(Theorem 3.2), and the benchmark times

* ``equal``: ``Point.equals`` of the two updates (target < 1 s), and
* ``reject``: ``Point.equals`` of the K-FAC update and the SGD update read in κ, which
  differ (target < 50 ms),

each the best of ``--repeats`` runs on fresh copies (no cached coordinates).  Building the
two updates (the abstract pipeline, not timed) takes about 20 s; ``--quick`` uses a
1-1-1 network instead.

Usage: ``python benchmarks/symbolic_equality.py [--repeats N] [--quick] [--json FILE]
[--zero-test random|proof]``.
"""

from __future__ import annotations

import argparse
import json
import time

import sympy as sp

from geomkfac.fields import get_zero_test, zero_test
from geomkfac.kfac import kfac_metric, loss_differential, natural_gradient_update, sgd_update
from geomkfac.networks import AbstractMLP, LayerChange
from geomkfac.spaces import Point

R = sp.Rational


def build(quick: bool = False):
    """The two K-FAC updates (frames ι and κ) and the SGD update in κ, as Points."""
    o = sp.Symbol("o", positive=True)
    if quick:
        net = AbstractMLP([1, 1, 1], ["tanh", "identity"], name="q111")
        w = net.weights_from([sp.Matrix([[R(1, 2), R(1, 3)]]), sp.Matrix([[R(3, 2), R(1, 4)]])])
        x, y = sp.Matrix([[R(1, 3)], [2]]), sp.Matrix([[1], [0]])
        change = LayerChange(Omega=sp.Matrix([[o]]), gamma=sp.Matrix([1]), Phi=sp.Matrix([[2]]))
    else:
        net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="t221")
        w = net.weights_from([sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]]),
                              sp.Matrix([[R(3, 2), -2, R(1, 4)]])])
        x = sp.Matrix([[R(1, 3), -1], [2, R(1, 2)], [1, 1]])
        y = sp.Matrix([[1], [0], [R(1, 2)]])
        change = LayerChange(Omega=sp.Matrix([[o, 1], [0, 2]]), gamma=sp.Matrix([1, -1]),
                             Phi=sp.Matrix([[1, 0], [1, 1]]))
    ref = net.reference_frames()
    kappa = ref.derive({1: change})
    steps = {}
    for name, fr in (("ref", ref), ("kappa", kappa)):
        g = kfac_metric(net, w, x, "gaussian", fr)
        steps[name] = natural_gradient_update(g, w, loss_differential(net, w, x, y, "gaussian", fr), R(1, 2))
    dh = loss_differential(net, w, x, y, "gaussian", kappa)
    steps["sgd"] = sgd_update(w, dh, R(1, 2), kappa.weight_space_frame)
    return steps, ref.weight_space_frame


def _fresh(p: Point) -> Point:
    """A copy with only its own coordinates (nothing cached in other frames)."""
    return Point(p.frame, p.coords())


def _best(f, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a 1-1-1 network (a second)")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--zero-test", choices=["random", "proof"], default="random",
                    help="how exact zeros are decided (geomkfac.fields.zero_test)")
    args = ap.parse_args(argv)
    with zero_test(args.zero_test):
        return _run(args)


def _run(args) -> dict:
    t0 = time.perf_counter()
    steps, F = build(args.quick)
    build_s = time.perf_counter() - t0
    eq_s, eq = _best(lambda: _fresh(steps["ref"]).equals(_fresh(steps["kappa"]), F), args.repeats)
    rej_s, rej = _best(lambda: _fresh(steps["ref"]).equals(_fresh(steps["sgd"]), F), args.repeats)
    res = {"case": "1-1-1 tanh" if args.quick else "2-2-1 tanh", "zero_test": get_zero_test(),
           "build_s": build_s, "equal_s": eq_s, "equal_result": bool(eq),
           "reject_s": rej_s, "reject_result": bool(rej), "repeats": args.repeats}
    print(f"case {res['case']} (zero test {res['zero_test']!r}); building the updates took {build_s:.1f} s")
    print(f"K-FAC update in ι vs in κ: equals -> {eq}   best {eq_s * 1e3:.0f} ms (target < 1000 ms)")
    print(f"K-FAC update vs SGD in κ:  equals -> {rej}  best {rej_s * 1e3:.1f} ms (target < 50 ms)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    main()
