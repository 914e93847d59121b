"""Remark 3.1: the analysis needs smooth activations; ReLU is not smooth, but it is locally
smooth with probability 1 when the weights are drawn from a continuous distribution, and it
is the limit of the smooth softplus functions ``s_n(x) = (1/n) log(1 + e^{n x})``.

What is checked (the remark's checkable content, decided as follows):

* the limit: ``sup_x |s_n(x) − relu(x)| = log(2)/n`` (attained at 0), exactly — sympy shows
  ``s_n(x) − relu(x) = (1/n) log(1 + e^{−n|x|})`` on both half-lines, decreasing in ``|x|``;
* "locally smooth with probability 1" in the form the paper uses it — pullbacks: at weights
  drawn from a Gaussian, no pre-activation is exactly 0, the ReLU network is smooth on a
  neighbourhood of the weights, and its pullback metric (the Gauss–Newton matrix
  ``E[Ψ*g]`` of the Euclidean output metric, a :class:`Pullback` along a
  :class:`SmoothMap` whose Jacobian uses ``relu' = 1{z > 0}``) is the limit of the pullback
  metrics of the softplus networks.  The difference decays like ``e^{−n m}``, ``m`` the
  smallest ``|pre-activation|``: for ``n = c/m``, ``c ∈ {1, 5, 20, 50}``, the relative
  difference must decrease and be at round-off (≤ 1e-12) at ``c = 50``.

The first half of the remark (smoothness is required to define pushforwards and pullbacks)
is a definition, not a checkable claim.

Method: numeric (float64) for the metrics, symbolic for the sup-norm identity; a one-hidden
layer ReLU network 3-4-1, ``N = 16`` inputs, several seeds.

Negative control (the same comparison): at weights where one pre-activation is exactly 0
(a kink, a set of probability zero), ``s_n'(0) = ½`` for every ``n`` while ``relu'(0) = 0``:
the softplus pullback metrics must *not* converge to the ReLU one — the relative difference
at ``c = 50`` stays ≥ 1e-3.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from scipy.special import expit

from geomkfac.maps import SmoothMap
from geomkfac.metrics import Metric, Pullback
from geomkfac.spaces import AffineSpace, Point

ID = "Rem 3.1"
STATEMENT = ("ReLU is the uniform limit of softplus (sup = log 2/n); at random weights the "
             "ReLU network's pullback metric is the limit of the softplus ones")
METHOD = "symbolic+numeric"

# Tolerances (why): the Jacobians differ by w₂ x (σ(n z) − 1{z>0}) with |…| ≤ e^{−n|z|},
# so at n = 50/m the difference is ≤ e^{−50} ≈ 2e-22 relative: only float64 round-off of
# O(1) Gauss–Newton entries remains (≲ 1e-14); we allow 1e-12.
CONVERGED = 1e-12
# the control: at a kink the Jacobian entries of one unit at one example differ by ½ w₂ x
# for every n (w₂ = 1 there): entries of the mean over N = 16 examples change by
# ≈ (½ x)²/16 ~ 1e-2; we require ≥ 1e-3.
KINK_MIN = 1e-3
CS = (1.0, 5.0, 20.0, 50.0)
D_IN, H, N = 3, 4, 16


def _sup_norm_identity() -> int:
    """Nonzero count of the exact identities behind ``sup |s_n − relu| = log 2 / n``.

    With ``E = e^{n x}`` (``x > 0``) every identity is a rational function of ``E`` that
    must cancel to 0.
    """
    x, n, E = sp.symbols("x n E", positive=True)
    s = lambda t: sp.log(1 + sp.exp(n * t)) / n  # noqa: E731
    gap = sp.log(1 + sp.exp(-n * x)) / n            # the claimed |s_n − relu| at ±x
    to_E = {sp.exp(n * x): E, sp.exp(-n * x): 1 / E}
    bad = 0
    # x > 0: s_n(x) − x = gap  ⇔  exp(n (s_n(x) − x − gap)) = 1
    ratio = (1 + sp.exp(n * x)) * sp.exp(-n * x) / (1 + sp.exp(-n * x))
    bad += int(sp.cancel(ratio.xreplace(to_E) - 1) != 0)
    # x > 0: s_n(−x) − relu(−x) = gap
    bad += int(sp.expand(s(-x) - 0 - gap) != 0)
    # the gap decreases in |x|: d gap/dx = −1/(1 + e^{n x}) < 0
    bad += int(sp.cancel(sp.diff(gap, x).xreplace(to_E) + 1 / (1 + E)) != 0)
    # its supremum, at x = 0, is log 2 / n, which tends to 0
    bad += int(sp.expand(gap.subs(x, 0) - sp.log(2) / n) != 0)
    bad += int(sp.limit(sp.log(2) / n, n, sp.oo) != 0)
    return bad


def _unpack(w):
    W1 = w[:H * D_IN].reshape(H, D_IN, order="F")
    b1 = w[H * D_IN:H * D_IN + H]
    w2 = w[H * D_IN + H:H * D_IN + 2 * H]
    return W1, b1, w2, w[-1]


def _network(Wsp, Z, X, act, dact):
    """``Ψ : W → Z``, ``w ↦ (w₂ᵀ act(W₁ x_n + b₁) + b₂)_n`` with its Jacobian."""
    def f(w):
        W1, b1, w2, b2 = _unpack(np.asarray(w, dtype=float))
        return act(X @ W1.T + b1) @ w2 + b2

    def jac(w):
        W1, b1, w2, b2 = _unpack(np.asarray(w, dtype=float))
        Zp = X @ W1.T + b1                                  # (N, H)
        S = dact(Zp) * w2                                   # ∂f/∂z  (N, H)
        dW1 = (S[:, :, None] * X[:, None, :])               # (N, H, D) → vec column-major
        dW1 = np.transpose(dW1, (0, 2, 1)).reshape(len(X), -1)
        return np.hstack([dW1, S, act(Zp), np.ones((len(X), 1))])

    return SmoothMap(Wsp.reference_frame, Z.reference_frame, f, jac)


def _gn(Wsp, Z, X, w, act, dact):
    psi = _network(Wsp, Z, X, act, dact)
    F = Pullback(Metric.identity(Z.reference_frame), psi, at=Point(Wsp.reference_frame, w))
    return np.asarray(F.matrix(), dtype=float) / len(X)


def _relu(z):
    return np.maximum(z, 0.0)


def _drelu(z):
    return (z > 0).astype(float)


def _softplus(n):
    return (lambda z: np.logaddexp(0.0, n * z) / n), (lambda z: expit(n * z))


def _differences(Wsp, Z, X, w):
    """Relative |GN_softplus_n − GN_relu| for n = c/m, and m = min |pre-activation|."""
    W1, b1, _, _ = _unpack(w)
    m = float(np.min(np.abs(X @ W1.T + b1)))
    G_relu = _gn(Wsp, Z, X, w, _relu, _drelu)
    scale = max(1.0, float(np.max(np.abs(G_relu))))
    out = []
    for c in CS:
        n = c / max(m, 1e-3)
        act, dact = _softplus(n)
        out.append(float(np.max(np.abs(_gn(Wsp, Z, X, w, act, dact) - G_relu))) / scale)
    return np.array(out), m


def check(fast: bool = False) -> dict:
    sym_bad = _sup_norm_identity()
    seeds = range(2) if fast else range(5)
    P = H * D_IN + 2 * H + 1
    Wsp, Z = AffineSpace(P, "W"), AffineSpace(N, "Z")
    worst_final, monotone, kink_min, per_seed = 0.0, True, np.inf, {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(N, D_IN))
        w = rng.normal(size=P)
        d, m = _differences(Wsp, Z, X, w)
        worst_final = max(worst_final, float(d[-1]))
        monotone &= bool(np.all(np.diff(d) <= 0))
        # control: put a kink on unit 0 at example 0, b₁[0] = −W₁[0]·x₀ (and w₂[0] = 1, so
        # that the unit matters at O(1))
        wk = w.copy()
        W1, _, _, _ = _unpack(wk)
        wk[H * D_IN] = -float(W1[0] @ X[0])
        wk[H * D_IN + H] = 1.0
        G_relu = _gn(Wsp, Z, X, wk, _relu, _drelu)
        act, dact = _softplus(CS[-1] / max(m, 1e-3))
        dk = float(np.max(np.abs(_gn(Wsp, Z, X, wk, act, dact) - G_relu))) / max(
            1.0, float(np.max(np.abs(G_relu))))
        kink_min = min(kink_min, dk)
        per_seed[f"seed {seed}"] = (f"m = {m:.2e}; relative difference at n = c/m, c = "
                                    + ", ".join(f"{c:g}: {v:.1e}" for c, v in zip(CS, d))
                                    + f" | kink: {dk:.1e}")
    holds = sym_bad == 0 and monotone and worst_final <= CONVERGED
    return {
        "holds": bool(holds),
        "discrepancy": float(worst_final + sym_bad),
        "negative_control": ("at a kink (a pre-activation exactly 0) the softplus pullback "
                             "metrics converge to the ReLU one (must not)"),
        "negative_discrepancy": float(kink_min),
        "negative_fails": bool(kink_min >= KINK_MIN),
        "details": {
            "sup-norm identity sup|s_n − relu| = log 2/n: nonzero symbolic differences": sym_bad,
            "network": f"{D_IN}-{H}-1 ReLU, N={N}, Gaussian weights, seeds {len(seeds)}",
            "discrepancy column": "largest relative |GN_softplus − GN_relu| at c = 50 "
                                  "(plus the symbolic count)",
            "differences decrease with n (every seed)": monotone,
            "smallest kink difference at c = 50": float(kink_min),
            "tolerances": f"converged ≤ {CONVERGED:g}, kink ≥ {KINK_MIN:g}",
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
