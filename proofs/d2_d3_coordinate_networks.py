"""Appendix D, Eqns. D.2/D.3: the coordinate networks of one abstract MLP in two choices of
frames — weights by D.2, activations conjugated by D.3 — compute the same function,
``f‡(Ω₀ x + γ₀) = f(x)`` (output frame kept).

Method: symbolic+numeric.  Symbolic: a 2-2-1 tanh network with rational weights, rational
dense changes ``(Ω₀, γ₀)`` of the input and ``(Ω₁, γ₁, Φ₁, τ₁)`` of the hidden spaces, and a
*symbolic* input ``x``; ``f‡(Ω₀ x + γ₀) − f(x)`` is exactly 0 (tanh arguments expanded).
Numeric: 3-4-4-2 networks (tanh, sigmoid) under random non-diagonal affine changes, the
sigmoid → tanh change and whitening, several seeds; ``max |f‡(x‡) − f(x)|`` for the closed
form (:func:`geomkfac.reparam.reparameterize`: D.2 and D.3 on arrays).

The route through frames (numeric): the same network as an
:class:`~geomkfac.networks.AbstractMLP`, a frame on *every* space — the input, the hidden
``A_i`` and ``Z_i`` and the output space ``A_L`` — and the coordinate network read in those
frames by the core (weights through the induced frames of ``Aff(A_{i−1}, Z_i)``, activations
from :meth:`FrameChoice.activation`).  Checked against the closed form on arrays: the weights
``W̄‡`` agree — read through the induced frames, and as each layer's
:class:`~geomkfac.maps.AffineMap` (made in the reference frames) asked for its matrix in
``(κ_{A_{i−1}}, κ_{Z_i})`` — and ``f‡(x‡) = Ω_L f(x) + γ_L`` (the output read in the changed output frame).
And through the core maps (:class:`~geomkfac.networks.MLPSample`: ``AffineMap`` s and
activation ``SmoothMap`` s built in κ): the output *point* is the reference network's output.

Negative control: the D.2 weights with the *original* activations (forgetting D.3) compute
a different function, in the closed form and in the route through frames: the difference
must be far above round-off.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac.networks import AbstractMLP
from geomkfac.reparam import (
    CoordinateMLP,
    LayerChange,
    random_affine,
    reparameterize,
    sigmoid_to_tanh,
    whitening,
)

ID = "D.2/D.3"
STATEMENT = ("the coordinate networks of one abstract MLP in two choices of frames "
             "(weights D.2, activations D.3) compute the same function")
METHOD = "symbolic+numeric"
# Tolerances (why): symbolic is exact (difference == 0).  Numeric: a forward pass of
# O(1) values through changes of condition number ≤ 4 loses a few ulps per layer, so
# 1e-12 is generous; forgetting D.3 changes outputs by O(0.1–1).
NUM_TOL = 1e-12
NEG_MIN = 1e-3


def _symbolic():
    R = sp.Rational
    net = CoordinateMLP([sp.Matrix([[1, R(1, 2), -1], [2, -1, R(1, 3)]]),
                         sp.Matrix([[1, -2, R(1, 2)]])], ["tanh", "identity"])
    O0, g0 = sp.Matrix([[1, 1], [0, 3]]), sp.Matrix([R(1, 2), 2])
    ch1 = LayerChange(sp.Matrix([[2, 1], [R(1, 2), 1]]), sp.Matrix([1, -R(1, 3)]),
                      sp.Matrix([[1, R(2, 3)], [-1, 2]]), sp.Matrix([R(1, 4), -1]))
    net_t = reparameterize(net, {0: LayerChange(Omega=O0, gamma=g0), 1: ch1})
    x = sp.Matrix([sp.symbols("x0:2")])   # one example: a row
    d = net_t.forward(x * O0.T + g0.T) - net.forward(x)
    d = d.applyfunc(lambda e: sp.expand(e.replace(sp.tanh, lambda a: sp.tanh(sp.expand(a)))))
    return d


def _frame_route(net, Ws, X, changes):
    """The route through frames against the closed form; returns (discrepancy, control)."""
    widths = net.widths
    anet = AbstractMLP(list(widths), [a.name for a in net.activations], name="d2")
    w = anet.weights_from(Ws)
    kappa = anet.reference_frames().derive(changes)
    closed = reparameterize(net, changes)                       # D.2/D.3 on arrays
    cnet_k = anet.coordinates(w, kappa)                         # D.2/D.3 through the core frames
    d_w = max(float(np.max(np.abs(np.asarray(a, float) - b))) for a, b in zip(cnet_k.Wbars, closed.Wbars))
    # the layers as core AffineMaps (made in the reference frames), asked for [W b] in κ
    omegas, _ = anet.layer_maps(w)
    d_w = max(d_w, max(float(np.max(np.abs(np.asarray(omegas[i].matrix(kappa.A[i - 1], kappa.Z[i]), float)
                                            - closed.Wbars[i - 1])))
                       for i in range(1, anet.L + 1)))
    X_t = changes[0].apply_activations(X)
    L = len(widths) - 1
    f_expected = changes[L].apply_activations(net.forward(X))   # Ω_L f(x) + γ_L, from the arrays
    d_f = float(np.max(np.abs(cnet_k.forward(X_t) - f_expected)))
    d_pt = 0.0
    for x, fx in zip(X[:4], net.forward(X[:4])):                # the core maps, one example each
        out = anet.sample(w, x, kappa).output
        d_pt = max(d_pt, float(np.max(np.abs(out.coords(anet.A[L].reference_frame) - fx))),
                   float(np.max(np.abs(out.coords(kappa.A[L]) - changes[L].apply_activations(fx)))))
    forgot = CoordinateMLP(cnet_k.Wbars, anet.activations)      # frames' D.2 without D.3
    neg = float(np.max(np.abs(forgot.forward(X_t) - f_expected)))
    return max(d_w, d_f, d_pt), neg, (d_w, d_f, d_pt)


def check(fast: bool = False) -> dict:
    d_sym = _symbolic()
    sym_zero = all(e == 0 for e in d_sym)
    worst, neg_min, rows = 0.0, np.inf, {}
    for seed in range(2 if fast else 5):
        rng = np.random.default_rng(seed)
        widths = (3, 4, 4, 2)
        Ws = [rng.normal(size=(o, i + 1)) for i, o in zip(widths[:-1], widths[1:])]
        net = CoordinateMLP(Ws, ["tanh", "sigmoid", "identity"])
        X = rng.normal(size=(50, 3))
        a1 = net.trace(X)[2][1]
        for name, changes in {
            "random affine": {0: random_affine(3, rng).on_A_only(), 1: random_affine(4, rng),
                              2: random_affine(4, rng)},
            "sigmoid→tanh + whitening": {1: whitening(a1.mean(0), np.cov(a1.T)),
                                         2: sigmoid_to_tanh(4)},
        }.items():
            net_t = reparameterize(net, changes)
            X_t = changes[0].apply_activations(X) if 0 in changes else X
            d = float(np.max(np.abs(net_t.forward(X_t) - net.forward(X))))
            forgot = CoordinateMLP(net_t.Wbars, net.activations)      # D.2 without D.3
            neg = float(np.max(np.abs(forgot.forward(X_t) - net.forward(X))))
            worst, neg_min = max(worst, d), min(neg_min, neg)
            rows[f"seed {seed}, {name}"] = f"|f‡ − f| {d:.1e}; without D.3 {neg:.1e}"
        every = {0: random_affine(3, rng).on_A_only(), 1: random_affine(4, rng),
                 2: random_affine(4, rng), 3: random_affine(2, rng)}     # output space too
        d, neg, parts = _frame_route(net, Ws, X, every)
        worst, neg_min = max(worst, d), min(neg_min, neg)
        rows[f"seed {seed}, frames on every space (output too)"] = (
            f"|W̄‡ frames − closed form| {parts[0]:.1e}, |f‡(x‡) − (Ω_L f + γ_L)| {parts[1]:.1e}, "
            f"core maps' output point {parts[2]:.1e}; without D.3 {neg:.1e}")
    return {
        "holds": bool(sym_zero and worst <= NUM_TOL),
        "discrepancy": worst,
        "negative_control": "D.2 weights with the original activations (D.3 forgotten)",
        "negative_discrepancy": neg_min,
        "negative_fails": bool(neg_min >= NEG_MIN),
        "details": {
            "symbolic f‡(Ω₀x + γ₀) − f(x), x symbolic": str(d_sym.tolist()),
            "numeric largest |f‡(x‡) − f(x)|": worst,
            "per case": rows,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
