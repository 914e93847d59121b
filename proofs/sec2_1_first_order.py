"""§2.1: exact natural gradient is invariant to smooth nonlinear reparameterizations
only to first order.

A tiny model ``f(x; w) = w₃ tanh(w₁ x + w₂) + w₄`` with Gaussian (unit variance) output.
Everything runs on the library's geometry core: the weight space ``W`` and the output
space ``Z`` (one coordinate per example) are :class:`AffineSpace` objects, the network on
the batch is a :class:`SmoothMap` ``Ψ : W → Z`` (Jacobian: sympy's derivative of ``f``), the
Fisher is the :class:`Pullback` of the Euclidean metric of ``Z`` along ``Ψ`` at ``w`` scaled by
``1/N`` (Eqn. 2.4 / 3.2 for a unit-variance Gaussian), the differential of the loss is the
pulled-back covector ``Ψ*(f − y)/N`` (``Map.pullback_covector``) and the step is
``natural_gradient(F, dh)`` (``♯``), applied as ``Point − ε Vector``.

A smooth *nonlinear* reparameterization ``w = r(u)`` is a second :class:`SmoothMap`
``r : U → W``; in ``u`` the network is ``Ψ ∘ r`` (a composed map: Jacobian by the chain
rule) and the whole step is recomputed there.  The two updated networks' outputs differ
by ``½ ε² r''[Δu, Δu] + O(ε³)``: the script measures the difference for ε over two
decades and fits the log-log slope, which must be 2 (first order only, not exact).

Negative control: the same measurement for an *affine* reparameterization, given as a
second affine frame κ on ``W`` (``w = M u + c``, M dense): the differential is handed to ♯
in κ coordinates while the Fisher stays given in the reference frame (the core's laws
``B⁻ᵀ`` and ``B⁻ᵀ G B⁻¹``, and ♯ of a covector given in another frame than the metric's),
and the update is taken in κ coordinates.  The ε² law must fail to show: the discrepancy stays
at round-off at every ε, because there the natural gradient is exactly invariant
(Thm 3.2).  A wrong transformation law or ♯ in the core shows up here as an O(ε)
discrepancy, a wrong chain rule or pullback in the nonlinear case as a slope ≠ 2.

Method: numeric (float64), several random seeds; Jacobians by sympy differentiation
(``r`` through ``SmoothMap.from_sympy``).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac.maps import SmoothMap
from geomkfac.metrics import Metric, Pullback, natural_gradient
from geomkfac.spaces import AffineSpace, Covector, Point

ID = "§2.1"
STATEMENT = ("exact natural gradient is invariant to smooth nonlinear reparameterizations "
             "only to first order: one step's discrepancy is O(ε²)")
METHOD = "numeric"

# Tolerances (why):
# - slope: the remainder is c₂ε² + c₃ε³ + …; over ε ∈ [1e-4, 1e-2] the cubic term shifts
#   the fitted slope by about c₃/c₂·ε ≲ 0.05, far inside ±0.2, while a first-order
#   discrepancy would give slope 1 and an exact invariance no slope at all.
SLOPE_TOL = 0.2
# - "not exact": at ε = 1e-2 the nonlinear discrepancy is ~1e-4·|r''|·|Δu|², at least
#   1e4 × the float64 round-off bound below.
NOT_EXACT_FLOOR = 1e-8
# - round-off: outputs are O(1), the Fisher solve has condition number ≲ 1e6 here, so an
#   exact identity shows differences ≲ 1e-10; an ε² law would be ≥ 1e-8 at ε = 1e-2.
ROUND_OFF = 1e-9

_w = sp.symbols("w1:5")
_u = sp.symbols("u1:5")
# a smooth nonlinear reparameterization w = r(u), invertible near the points used
_R_EXPR = [_u[0] + sp.Rational(3, 10) * _u[1] ** 2,
           _u[1] + sp.Rational(3, 10) * sp.sin(_u[2]),
           _u[2] + sp.Rational(3, 10) * _u[3] * _u[0],
           _u[3] + sp.Rational(3, 10) * sp.tanh(_u[0])]


_x = sp.Symbol("x")
_F_EXPR = _w[2] * sp.tanh(_w[0] * _x + _w[1]) + _w[3]
_f = sp.lambdify((_x, _w), _F_EXPR, "numpy")
_df = sp.lambdify((_x, _w), [sp.diff(_F_EXPR, wi) for wi in _w], "numpy")


def _network(W, Z, X):
    """``Ψ : W → Z``, ``w ↦ (f(x_n; w))_n`` for the batch ``X``, as a SmoothMap whose
    Jacobian is the sympy derivative of ``f`` (evaluated for the whole batch at once)."""
    def jacobian(w):
        return np.column_stack([np.broadcast_to(col, X.shape) for col in _df(X, w)])

    return SmoothMap(W.reference_frame, Z.reference_frame, lambda w: _f(X, w), jacobian)


def _ng_step(psi, Z, Y, at):
    """The exact natural gradient ``F⁻¹ dh`` at the Point ``at`` (a Vector), with
    ``F = (1/N) Ψ*g_Z`` and ``dh = Ψ*((f − y)/N)``, both in the frame of ``at``."""
    N = Z.dim
    F = Pullback(Metric.identity(Z.reference_frame), psi, at=at) * (1.0 / N)
    residual = psi(at).coords(Z.reference_frame) - Y
    dh = psi.pullback_covector(Covector(Z.reference_frame, residual / N), at=at)
    return natural_gradient(F, dh), F, dh


def _discrepancies(psi, Z, Y, w0, eps, u0=None, r=None, kappa=None):
    """max |f(X; w₁ via the reparameterization) − f(X; w₁ direct)| for each ε."""
    step_w, F, dh = _ng_step(psi, Z, Y, w0)
    if r is not None:                      # nonlinear: the model Ψ ∘ r on U
        step_u, F_u, _ = _ng_step(psi @ r, Z, Y, u0)
        via = [r(u0 - e * step_u) for e in eps]
    else:
        # affine: the step in the frame κ of W.  The differential is handed over in κ
        # coordinates (covector law), F stays given in the reference frame (so ♯ needs its
        # matrix in κ: metric law), the step comes back as κ coordinates and the update is
        # taken there (point law when the network is evaluated).
        dh_k = Covector(kappa, dh.coords(kappa))
        step_u = natural_gradient(F, dh_k)
        F_u = Metric(kappa, F.matrix(kappa))
        u0k = w0.coords(kappa)
        via = [Point(kappa, u0k - e * step_u.coords(kappa)) for e in eps]
    out = []
    for e, w_via in zip(eps, via):
        w_direct = w0 - e * step_w
        out.append(np.max(np.abs(psi(w_via).coords() - psi(w_direct).coords())))
    return np.array(out), float(np.linalg.cond(F_u.matrix()))


def check(fast: bool = False) -> dict:
    seeds = range(2) if fast else range(5)
    eps = np.logspace(-4, -2, 5 if fast else 9)
    N = 24
    W, U, Z = AffineSpace(4, "W"), AffineSpace(4, "U"), AffineSpace(N, "Z")
    r = SmoothMap.from_sympy(U.reference_frame, W.reference_frame, _R_EXPR, _u)
    slopes, smallest_big, affine_max, worst_cond = [], np.inf, 0.0, 0.0
    table = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=N)
        psi = _network(W, Z, X)
        u0 = Point(U.reference_frame, rng.normal(size=4) * 0.3 + np.array([1.0, 0.0, 1.0, 0.0]))
        w0 = r(u0)
        # targets from a nearby model, so the natural-gradient step is O(1)
        w_target = Point(W.reference_frame, w0.coords() + 0.3 * rng.normal(size=4))
        Y = psi(w_target).coords() + 0.05 * rng.normal(size=N)
        d, cond = _discrepancies(psi, Z, Y, w0, eps, u0=u0, r=r)
        slope = float(np.polyfit(np.log(eps), np.log(d), 1)[0])
        slopes.append(slope)
        smallest_big = min(smallest_big, float(d[-1]))
        worst_cond = max(worst_cond, cond)
        # affine reparameterization w = M u + c: a second frame κ of W, u = M⁻¹(w − c)
        M = rng.normal(size=(4, 4)) + 2 * np.eye(4)
        c = rng.normal(size=4)
        kappa = W.reference_frame.derive(np.linalg.inv(M), -np.linalg.solve(M, c), name="κ")
        d_aff, _ = _discrepancies(psi, Z, Y, w0, eps, kappa=kappa)
        affine_max = max(affine_max, float(np.max(d_aff)))
        table[f"seed {seed}"] = (f"nonlinear: slope {slope:.3f}, discrepancy "
                                 f"{d[0]:.1e} (ε={eps[0]:.0e}) … {d[-1]:.1e} (ε={eps[-1]:.0e}); "
                                 f"affine frame: max {np.max(d_aff):.1e}")
    slope_err = max(abs(s - 2.0) for s in slopes)
    holds = slope_err <= SLOPE_TOL and smallest_big >= NOT_EXACT_FLOOR
    return {
        "holds": holds,
        "discrepancy": slope_err,
        "negative_control": ("the ε² law for an affine reparameterization (a second frame κ "
                             "of W, w = M u + c, M dense): must fail, the discrepancy stays at "
                             "round-off"),
        "negative_discrepancy": affine_max,
        "negative_fails": affine_max <= ROUND_OFF,
        "details": {
            "step sizes ε": f"{eps[0]:.0e} … {eps[-1]:.0e} ({len(eps)} values)",
            "fitted log-log slopes (nonlinear)": ", ".join(f"{s:.3f}" for s in slopes),
            "discrepancy column": "max_i |slope − 2| (tolerance 0.2)",
            "smallest discrepancy at ε=1e-2 (must be ≫ round-off)": smallest_big,
            "largest Fisher condition number": worst_cond,
            "per seed": table,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
