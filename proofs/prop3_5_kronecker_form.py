"""Proposition 3.5: in the frame of ``W_i`` induced by frames on ``A_{i−1}`` and ``Z_i`` the
independence metric has the matrix ``E[ā āᵀ] ⊗ E[G]`` — computed two ways: the abstract
pipeline (second moment of the activation points ⊗ expected pullback of the output metric
to ``Z_i``, Eqns. 3.3/3.4) and the closed form of the K-FAC factors (Eqn. 2.7).

Method: numeric (float64, several seeds).  A 3-4-4-2 tanh MLP.

* Reference frames: ``geomkfac.kfac.independence_metric`` for every layer, with the Gaussian
  and with the softmax output Fisher, against ``kron(A_{i−1}, G_i)`` from the NumPy backend
  ``geomkfac.nn.kfac_factors(..., fisher="exact")`` (its own forward/backward code).
* A second FrameChoice κ (random dense affine changes of ``A_0``, ``A_1``, ``A_2`` and every
  ``Z_i``; the output space kept): the pipeline's metric computed in κ against
  ``kron(A‡, G‡)`` of the coordinate network in κ (weights by D.2, conjugated activations
  by D.3), read as a :class:`geomkfac.nn.MLP` (:func:`geomkfac.nn.to_mlp`) and given to
  ``geomkfac.nn.kfac_factors(..., fisher="exact")``.

Negative control: the exact layer block of the Fisher ``E[ā āᵀ ⊗ D_iᵀ G D_i]`` (the diagonal
block of the expected pullback, Eqn. 3.2) is *not* ``E[ā āᵀ] ⊗ E[G]``: the independence of
Eqn. 3.3 is an approximation; the relative difference must be ≥ 1e-2.
"""

from __future__ import annotations

import numpy as np
from _pipeline import nn_model, problem, random_frames, rel

from geomkfac import kfac as K
from geomkfac.nn import get_loss, to_mlp
from geomkfac.nn import kfac_factors as nn_factors

ID = "Prop 3.5"
STATEMENT = ("the independence metric's matrix in an induced frame is E[ā āᵀ] ⊗ E[G] "
             "(abstract pipeline = closed form)")
METHOD = "numeric"

# Tolerances (why):
# - two exact float64 computations of the same sums on O(1) entries (different code paths,
#   conjugated activations in κ) agree to ~1e-14; we allow 1e-10.
TOL = 1e-10
# - control: the Kronecker approximation error of a tanh MLP is O(10 %); require ≥ 1e-2.
CONTROL_MIN = 1e-2


def _seed(seed, N):
    net, w, X, rng = problem(seed, widths=(3, 4, 4, 2), activations=("tanh", "tanh", "identity"),
                             N=N)
    model = nn_model(net, w)
    worst = {}
    for om, loss in (("gaussian", "mse"), ("categorical", "softmax_ce")):
        facs = nn_factors(model, X, None, get_loss(loss), fisher="exact")
        d = 0.0
        for i, (A, G) in enumerate(facs, start=1):
            M = K.independence_metric(net, w, X, om, i).matrix()
            d = max(d, rel(M, np.kron(A, G)))
        worst[f"reference frames, {om}: pipeline vs geomkfac.nn"] = d
    kappa = random_frames(net, rng, output=False)
    cnet = net.coordinates(w, kappa)
    facs = nn_factors(to_mlp(cnet), net.input_coords(X, kappa), None, get_loss("mse"),
                      fisher="exact")
    d = 0.0
    for i, (A, G) in enumerate(facs, start=1):
        M = K.independence_metric(net, w, X, "gaussian", i, frames=kappa).matrix(kappa.weight_frame(i))
        d = max(d, rel(M, np.kron(A, G)))
    worst["frames κ, gaussian: pipeline vs coordinate network in κ"] = d
    F = np.asarray(K.expected_pullback(net, w, X, "gaussian").matrix(), dtype=float)
    offs = np.concatenate([[0], np.cumsum(net.layer_sizes)])
    ctrl = np.inf
    for i in range(1, net.L):  # hidden layers (for the last, identity output, they coincide)
        sl = slice(offs[i - 1], offs[i])
        M = np.asarray(K.independence_metric(net, w, X, "gaussian", i).matrix(), dtype=float)
        ctrl = min(ctrl, float(np.max(np.abs(F[sl, sl] - M)) / np.max(np.abs(F[sl, sl]))))
    return worst, ctrl


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(3)
    N = 16 if fast else 64
    worst, ctrl_min, per_seed = {}, np.inf, {}
    for seed in seeds:
        w, ctrl = _seed(seed, N)
        for k, v in w.items():
            worst[k] = max(worst.get(k, 0.0), v)
        ctrl_min = min(ctrl_min, ctrl)
        per_seed[f"seed {seed}"] = "; ".join(f"{k}: {v:.1e}" for k, v in w.items()) + \
            f" | exact block vs Kronecker: {ctrl:.1e}"
    disc = max(worst.values())
    return {
        "holds": bool(disc <= TOL),
        "discrepancy": disc,
        "negative_control": ("the exact Fisher block E[āāᵀ ⊗ DᵀGD] equals E[āāᵀ] ⊗ E[G] "
                             "(must not: independence is an approximation)"),
        "negative_discrepancy": float(ctrl_min),
        "negative_fails": bool(ctrl_min >= CONTROL_MIN),
        "details": {
            "network": f"3-4-4-2 tanh MLP, N={N}, {len(seeds)} seeds",
            "discrepancy": "max|pipeline − closed form| / max(1, max|closed form|), all layers",
            "largest per comparison": "; ".join(f"{k} {v:.1e}" for k, v in worst.items()),
            "smallest relative |exact block − Kronecker| (hidden layers)": float(ctrl_min),
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
