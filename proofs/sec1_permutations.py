"""§1: exact natural gradient is invariant to permuting the entries of a weight matrix
(a linear reparameterization of the weights, not an affine change of the activation and
pre-activation bases), while K-FAC is not.

Method: numeric (float64, several seeds).  A 3-4-2 tanh MLP of the NumPy backend
``geomkfac.nn`` with squared error (Gaussian output, where the GGN is the Fisher) and
``N = 32`` examples; one undamped step of size 0.1.  ``Π`` is a random permutation of the
entries of ``vec W̄₁`` (checked not to be a permutation of rows or columns).

* Exact natural gradient, direct: one step of the backend's ``NGD`` optimizer (dense GGN,
  ``damping=0``).  Permuted: the weight space as an :class:`AffineSpace` with the frame κ
  whose coordinates are ``θ' = Π θ``; the Fisher (``geomkfac.nn.ggn``) and the
  differential of the loss given in the reference frame; the step is
  ``natural_gradient(F, dh_κ)`` with ``dh`` handed over in κ coordinates, taken in κ and read
  back in θ (the core's laws).  The two updated networks' outputs must agree to round-off.
* K-FAC, direct: one step of the backend's ``KFAC`` optimizer (exact Fisher factors,
  ``damping=0``, no KL clipping).  Permuted: K-FAC applied in the coordinates ``θ'`` — the
  layer's gradient matrix is ``unvec(Π vec DW̄₁)``, preconditioned ``G⁻¹ D' A⁻¹`` with the
  factors of ``geomkfac.nn.kfac_factors`` by dense NumPy solves here, mapped back by ``Πᵀ``.
  With ``Π = I`` the same code must reproduce the optimizer (round-off), so the K-FAC
  drift below is the permutation's, not this script's.

The statement holds when the natural-gradient discrepancy and the ``Π = I`` K-FAC
discrepancy are at round-off.  Negative control (the same output comparison): K-FAC under
the permutation must drift away — "K-FAC is invariant too" must fail.
"""

from __future__ import annotations

import numpy as np

from geomkfac.metrics import Metric, natural_gradient
from geomkfac.nn import MLP, get_optimizer, ggn, kfac_factors, loss_and_grad
from geomkfac.spaces import AffineSpace, Covector, Point

ID = "§1"
STATEMENT = ("exact natural gradient is invariant to permuting the entries of a weight "
             "matrix; K-FAC is not")
METHOD = "numeric"

# Tolerances (why): outputs are O(1); one step solves with a GGN of condition number
# ≲ 1e6 here (reported), so an exact identity shows output differences ≲ 1e-9.
ROUND_OFF = 1e-8
# the control: a step of size 0.1 in a direction that is not the K-FAC direction moves the
# outputs by O(0.1·|Δ|) ≳ 1e-3; we require ≥ 1e-4.
DRIFT_MIN = 1e-4

LR = 0.1
LOSS = "mse"


def _non_structured_permutation(rng, shape):
    """A permutation of ``vec`` of a ``shape`` matrix that is not a row or column permutation."""
    r, c = shape
    idx = np.arange(r * c).reshape(shape, order="F")
    while True:
        perm = rng.permutation(r * c)
        M = perm.reshape(shape, order="F")
        rows_kept = all(set((M[i] % r).tolist()) == {int(M[i, 0] % r)} for i in range(r))
        cols_kept = all(set((M[:, j] // r).tolist()) == {int(M[0, j] // r)} for j in range(c))
        if not rows_kept and not cols_kept and not np.array_equal(M, idx):
            return perm


def _outputs_after(model, Wbars, X):
    m = model.copy()
    m.set_Wbars(Wbars)
    return m.forward(X)


def _ng_permuted(model, X, Y, perm):
    """θ after one natural-gradient step taken in the coordinates θ' = Π θ (core frames)."""
    P_all = model.num_params
    theta = np.concatenate([W.reshape(-1, order="F") for W in model.get_Wbars()])
    full = np.arange(P_all)
    full[:perm.size] = perm
    Pi = np.eye(P_all)[full]                         # θ' = Π θ, θ'_k = θ_{full[k]}
    Wsp = AffineSpace(P_all, "W")
    kappa = Wsp.reference_frame.derive(Pi, name="κ (permuted entries)")
    F = Metric(Wsp.reference_frame, ggn(model, X, Y, LOSS))
    _, grad = loss_and_grad(model, X, Y, LOSS)
    dh_k = Covector(kappa, Covector(Wsp.reference_frame, grad).coords(kappa))
    step_k = natural_gradient(F, dh_k).coords(kappa)
    theta_k = Point(Wsp.reference_frame, theta).coords(kappa)
    new = Point(kappa, theta_k - LR * step_k).coords(Wsp.reference_frame)
    return model.split_flat(new), float(np.linalg.cond(F.matrix()))


def _kfac_permuted(model, X, Y, perm):
    """W̄ after one undamped K-FAC step taken in coordinates where vec W̄₁ is permuted."""
    factors = kfac_factors(model, X, None, LOSS, fisher="exact")
    _, grad = loss_and_grad(model, X, Y, LOSS)
    grads = model.split_flat(grad)
    out = []
    for i, (W, D, (A, G)) in enumerate(zip(model.get_Wbars(), grads, factors)):
        if i == 0:
            shape = D.shape
            Dp = D.reshape(-1, order="F")[perm].reshape(shape, order="F")
            Vp = np.linalg.solve(G, np.linalg.solve(A, Dp.T).T).reshape(-1, order="F")
            v = np.empty_like(Vp)
            v[perm] = Vp
            V = v.reshape(shape, order="F")
        else:
            V = np.linalg.solve(G, np.linalg.solve(A, D.T).T)
        out.append(W - LR * V)
    return out


def _direct(model, X, Y, name, **hyper):
    m = model.copy()
    get_optimizer(name, m, LOSS, lr=LR, **hyper).step(X, Y)
    return m.forward(X)


def check(fast: bool = False) -> dict:
    seeds = range(2) if fast else range(4)
    worst_ng, worst_id, drift_min, worst_cond = 0.0, 0.0, np.inf, 0.0
    per_seed = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        model = MLP([3, 4, 2], "tanh", seed=seed)
        X = rng.normal(size=(32, 3))
        Y = np.tanh(X[:, :2]) + 0.3 * rng.normal(size=(32, 2))
        perm = _non_structured_permutation(rng, model.get_Wbars()[0].shape)

        f_ng = _direct(model, X, Y, "ngd", damping=0.0)
        W_ng, cond = _ng_permuted(model, X, Y, perm)
        d_ng = float(np.max(np.abs(_outputs_after(model, W_ng, X) - f_ng)))

        kfac_hyper = dict(damping=0.0, fisher="exact", kl_clip=None, ema_decay=0.0,
                          inverse_update_period=1)
        f_kfac = _direct(model, X, Y, "kfac", **kfac_hyper)
        ident = np.arange(perm.size)
        d_id = float(np.max(np.abs(_outputs_after(model, _kfac_permuted(model, X, Y, ident), X)
                                   - f_kfac)))
        d_kfac = float(np.max(np.abs(_outputs_after(model, _kfac_permuted(model, X, Y, perm), X)
                                     - f_kfac)))
        worst_ng, worst_id = max(worst_ng, d_ng), max(worst_id, d_id)
        drift_min, worst_cond = min(drift_min, d_kfac), max(worst_cond, cond)
        per_seed[f"seed {seed}"] = (f"natural gradient {d_ng:.1e}; K-FAC, Π = I {d_id:.1e}; "
                                    f"K-FAC, entries permuted {d_kfac:.1e}")
    holds = worst_ng <= ROUND_OFF and worst_id <= ROUND_OFF
    return {
        "holds": bool(holds),
        "discrepancy": max(worst_ng, worst_id),
        "negative_control": ("K-FAC with the entries of W̄₁ permuted gives the same network "
                             "(must not: it drifts)"),
        "negative_discrepancy": float(drift_min),
        "negative_fails": bool(drift_min >= DRIFT_MIN),
        "details": {
            "network": f"3-4-2 tanh MLP (geomkfac.nn), squared error, N=32, step {LR}, "
                       f"seeds {len(seeds)}",
            "discrepancy": "max |f(X) after the direct step − after the step in permuted "
                           "coordinates|",
            "natural gradient (largest)": worst_ng,
            "K-FAC with Π = I, this script vs the optimizer (largest)": worst_id,
            "K-FAC with entries permuted (smallest)": float(drift_min),
            "largest GGN condition number": worst_cond,
            "tolerances": f"round-off {ROUND_OFF:g}, K-FAC drift ≥ {DRIFT_MIN:g}",
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
