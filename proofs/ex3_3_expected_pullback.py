"""Example 3.3 with Eqn. 3.2: the expected pullback ``E_ξ[Ψ_ξ* g]`` of an output metric is
the Fisher (2.4) when ``g`` is the output Fisher metric, the Gauss-Newton matrix when ``g``
is Euclidean, and the generalized Gauss-Newton matrix when ``g`` is the Hessian of a convex
``φ`` (Bregman divergence loss).

Method: numeric (float64, several seeds).  A 3-4-3 tanh MLP (identity output) and ``N``
inputs.  ``geomkfac.kfac.expected_pullback`` (the abstract pipeline: chain of pushforwards,
evaluation maps ``āᵀ ⊗ I``) is compared with independent computations:

* the output Fisher of each likelihood → the Fisher by its definition (2.4),
  ``E_x E_{y ~ p(y|x)} [∇ℓ_y ∇ℓ_yᵀ]``, the expectation over the model's own targets
  computed *exactly* by enumeration, with the per-example gradients ``∇ℓ_y`` of the NumPy
  backend ``geomkfac.nn`` (its own forward/backward code and losses, no output metric):
  softmax categorical — every class ``y`` with weight ``p_y(x)``; independent Bernoulli on
  logits — every ``y ∈ {0, 1}³`` with weight ``Π_c p_c^{y_c} (1 − p_c)^{1 − y_c}``; Gaussian
  (unit variance) — ``y = f(x) + ε`` over the 2-point Gauss–Hermite grid ``ε ∈ {±1}³``
  (weights 2⁻³), exact here because ``∇ℓ_y ∇ℓ_yᵀ = Jᵀ ε εᵀ J`` is quadratic in ``ε`` and the
  rule integrates every polynomial of degree ≤ 3 in each ``ε_c`` exactly;
* Gaussian output Fisher (unit variance) and the Euclidean metric → ``E_x[Jᵀ J]`` with ``J``
  by central finite differences of the network in the weight coordinates;
* Bregman metric of ``φ(z) = log(1 + e^{z₀}) + z₁⁴/12 + z₁²/2 + cosh(z₀ − z₂) + z₂²/2`` →
  ``E_x[Jᵀ H_x J]`` with ``H_x`` the Hessian of the Bregman loss in the output by second
  differences of its *value*, and ``J`` by finite differences.

Negative control: the empirical Fisher ``E[dL ⊗ dL]`` at the data targets (not at the
model's predictive distribution) must *not* equal the Fisher: relative difference ≥ 1e-2.
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp
from _pipeline import fd_jacobian, nn_model, problem, rel

from geomkfac import kfac as K
from geomkfac.nn.curvature import per_example_grads
from geomkfac.output_metrics import BregmanMetric, loss_for

ID = "Ex. 3.3"
STATEMENT = ("the expected pullback (3.2) of the output Fisher is the Fisher (2.4) "
             "(categorical, Bernoulli, Gaussian); of the Euclidean metric the Gauss-Newton "
             "matrix; of a Bregman metric the GGN")
METHOD = "numeric"

# Tolerances (why):
# - enumeration / exact quadrature vs pipeline: both exact up to float64 round-off on O(1)
#   entries (sums of at most 2³ outer products per example) → 1e-10.
ENUM_TOL = 1e-10
# - central differences with h = 1e-6: truncation ~h²·f''' ≈ 1e-12, round-off ~ε/h ≈ 2e-10
#   per Jacobian entry, relative error of Jᵀ G J ≲ 1e-8; second differences of the loss
#   value with h = 1e-3: truncation ~h² ≈ 1e-6 relative → 1e-5 for the Bregman case.
FD_TOL = 1e-7
BREG_TOL = 1e-5
# - control: the empirical and true Fisher differ at O(1) relative size away from a
#   perfect fit; we require ≥ 1e-2.
CONTROL_MIN = 1e-2

_z = sp.symbols("z0:3")
_PHI = (sp.log(1 + sp.exp(_z[0])) + _z[1] ** 4 / 12 + _z[1] ** 2 / 2 + sp.cosh(_z[0] - _z[2])
        + _z[2] ** 2 / 2)


def _softmax(f):
    e = np.exp(f - f.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _expected_outer(model, X, loss, targets_and_weights):
    """``(1/N) Σ_n Σ_y w_n(y) ∇ℓ_y(x_n) ∇ℓ_y(x_n)ᵀ`` with per-example gradients from
    geomkfac.nn; ``targets_and_weights`` yields ``(Y, w)``: a target for every example and
    its probability (or quadrature weight) per example."""
    F = 0.0
    N = X.shape[0]
    for Y, w in targets_and_weights:  # one backward pass per target, vectorized over examples
        g = per_example_grads(model, X, Y, loss)
        F = F + (g * w[:, None]).T @ g / N
    return F


def _fisher_by_enumeration(model, X, f):
    """Categorical (2.4): every class ``c`` with probability ``softmax(f)_c``."""
    N, C = f.shape
    P = _softmax(f)
    return _expected_outer(model, X, "softmax_ce",
                           ((np.full(N, c), P[:, c]) for c in range(C)))


def _bernoulli_fisher_by_enumeration(model, X, f):
    """Independent Bernoulli on logits (2.4): every ``y ∈ {0,1}^C`` with ``Π p^y (1−p)^(1−y)``."""
    N, C = f.shape
    p = 1.0 / (1.0 + np.exp(-f))
    pairs = []
    for bits in itertools.product((0.0, 1.0), repeat=C):
        y = np.array(bits)
        pairs.append((np.tile(y, (N, 1)), np.prod(np.where(y == 1.0, p, 1.0 - p), axis=1)))
    return _expected_outer(model, X, "bernoulli", pairs)


def _gaussian_fisher_by_quadrature(model, X, f):
    """Unit-variance Gaussian (2.4): ``y = f + ε`` on the 2-point Gauss–Hermite grid ``{±1}^C``."""
    N, C = f.shape
    pairs = [(f + np.array(eps), np.full(N, 0.5 ** C))
             for eps in itertools.product((-1.0, 1.0), repeat=C)]
    return _expected_outer(model, X, "mse", pairs)


def _loss_hessian_fd(loss, f, y, h=1e-3):
    """Hessian in ``z`` of ``ℓ(z, y)`` per example by second differences of its value."""
    N, C = f.shape
    E = np.eye(C) * h
    H = np.empty((N, C, C))
    for i in range(C):
        for j in range(C):
            v = (loss.value(f + E[i] + E[j], y) - loss.value(f + E[i] - E[j], y)
                 - loss.value(f - E[i] + E[j], y) + loss.value(f - E[i] - E[j], y))
            H[:, i, j] = v / (4 * h * h)
    return 0.5 * (H + np.swapaxes(H, 1, 2))


def _seed(seed, N):
    net, w, X, rng = problem(seed, widths=(3, 4, 3), activations=("tanh", "identity"), N=N)
    f = net.forward(w, X)
    model = nn_model(net, w)
    J = fd_jacobian(net, w, X)
    JtJ = np.einsum("ncp,ncq->pq", J, J) / N
    out = {}
    F_pipe = np.asarray(K.expected_pullback(net, w, X, "categorical").matrix(), dtype=float)
    F_enum = _fisher_by_enumeration(model, X, f)
    out["softmax Fisher vs enumeration (2.4)"] = (rel(F_pipe, F_enum), ENUM_TOL)
    F_bern = np.asarray(K.expected_pullback(net, w, X, "bernoulli").matrix(), dtype=float)
    out["Bernoulli Fisher vs enumeration (2.4)"] = (
        rel(F_bern, _bernoulli_fisher_by_enumeration(model, X, f)), ENUM_TOL)
    F_gauss = np.asarray(K.expected_pullback(net, w, X, "gaussian").matrix(), dtype=float)
    out["Gaussian Fisher vs exact quadrature (2.4)"] = (
        rel(F_gauss, _gaussian_fisher_by_quadrature(model, X, f)), ENUM_TOL)
    out["Gaussian Fisher vs E[JᵀJ] (FD)"] = (rel(F_gauss, JtJ), FD_TOL)
    out["Euclidean → Gauss-Newton vs E[JᵀJ] (FD)"] = (
        rel(K.expected_pullback(net, w, X, "euclidean").matrix(), JtJ), FD_TOL)
    breg = BregmanMetric(_PHI, _z)
    y = f + 0.3 * rng.normal(size=f.shape)
    H = _loss_hessian_fd(loss_for(breg), f, y)
    ggn = np.einsum("ncp,ncd,ndq->pq", J, H, J) / N
    out["Bregman → GGN vs E[Jᵀ ∇²ℓ J] (FD)"] = (
        rel(K.expected_pullback(net, w, X, breg).matrix(), ggn), BREG_TOL)
    # control: empirical Fisher at data labels
    labels = rng.integers(0, 3, size=N)
    emp = np.asarray(K.empirical_fisher_metric(net, w, X, labels, "categorical").matrix(),
                     dtype=float)
    return out, rel(emp, F_enum)


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(3)
    N = 16 if fast else 32
    worst, ok, ctrl_min, per_seed = {}, True, np.inf, {}
    for seed in seeds:
        out, ctrl = _seed(seed, N)
        for k, (d, tol) in out.items():
            worst[k] = max(worst.get(k, 0.0), d)
            ok &= d <= tol
        ctrl_min = min(ctrl_min, ctrl)
        per_seed[f"seed {seed}"] = "; ".join(f"{k}: {d:.1e}" for k, (d, _) in out.items()) + \
            f" | empirical vs true Fisher: {ctrl:.1e}"
    return {
        "holds": bool(ok),
        "discrepancy": max(worst.values()),
        "negative_control": "the empirical Fisher (data targets) equals the Fisher (must not)",
        "negative_discrepancy": float(ctrl_min),
        "negative_fails": bool(ctrl_min >= CONTROL_MIN),
        "details": {
            "network": f"3-4-3 tanh MLP, identity output, N={N}, seeds {len(seeds)}",
            "discrepancy": "max|pipeline − reference| / max(1, max|reference|)",
            "largest per comparison": "; ".join(f"{k} {v:.1e}" for k, v in worst.items()),
            "tolerances": f"enumeration {ENUM_TOL:g}, finite differences {FD_TOL:g}, "
                          f"Bregman second differences {BREG_TOL:g}",
            "smallest relative |empirical − true Fisher|": float(ctrl_min),
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
