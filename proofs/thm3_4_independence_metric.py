"""Theorem 3.4: the independence metric ``g_ind = E[α ⊗ α] ⊗ g`` on ``W_i = Aff(A_{i-1}, Z_i)``
is symmetric positive semidefinite, and nondegenerate when ``E_a[ψ_a* g]`` is.

Symbolic part (exact).  With ``E[ā āᵀ] = Σ_k ā_k ā_kᵀ / K`` for symbolic points ``a_k`` and
``G = Mᵀ M`` for a symbolic ``M`` (so both factors are Gram matrices), the matrix
``kron(E[ā āᵀ], G)`` of the core's KroneckerMetric (A of dim 1, Z of dim 2) equals its
transpose exactly and equals ``Rᵀ R`` with ``R`` built from ``ā_k ⊗ M`` — an exact PSD
certificate (``uᵀ Rᵀ R u = ‖R u‖² ≥ 0``).

Numeric part (float64, several seeds).  A 3-4-3 tanh MLP; for every layer ``i`` the pipeline's
``independence_metric`` (Eqns. 3.3/3.4) is checked symmetric and PSD (smallest eigenvalue
≥ −1e-12·scale) with the Bernoulli output Fisher (nondegenerate).  For the last layer, the
metric ``g(ζ)`` on ``Z_L`` is the output Fisher at each example; ``E_a[ψ_a* g]`` is built with
the core (``AffineMaps.evaluation_map``, ``pullback``, ``expectation``) from the per-example
pairs ``(a_n, G(z_n))``; it is nondegenerate although every single ``ψ_a* g`` has rank
``C`` only — and then ``g_ind`` is nondegenerate too (``is_nondegenerate()`` and full rank).

Negative control: with a softmax output layer the output Fisher ``diag(p) − ppᵀ`` has rank
``C − 1``: ``E_a[ψ_a* g]`` is degenerate, and Theorem 3.4's check must report ``g_ind``
degenerate: ``is_nondegenerate()`` False, rank ``(n_{L−1}+1)(C−1)``, and ``sharp`` raising
``DegenerateMetricError``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from _pipeline import problem

from geomkfac import kfac as K
from geomkfac.errors import DegenerateMetricError
from geomkfac.metrics import KroneckerMetric, Metric, SecondMoment, expectation, pullback
from geomkfac.output_metrics import get_output_metric
from geomkfac.spaces import AffineSpace, Covector, Point

ID = "Thm 3.4"
STATEMENT = ("the independence metric E[α⊗α] ⊗ g is symmetric PSD, and nondegenerate when "
             "E_a[ψ_a* g] is")
METHOD = "symbolic+numeric"

# Tolerances (why):
# - PSD: eigenvalues of a float64 Gram-type matrix are exact up to ~ε·‖M‖·dim; we allow
#   −1e-12·max(1, ‖M‖).
PSD_TOL = 1e-12
# - rank decisions are the core's (eigenvalues ≤ dim·ε·‖M‖ count as zero); the softmax
#   zero eigenvalues are ~1e-17, the nondegenerate ones ≥ 1e-6 here.


def _symbolic():
    K_pts = 2
    A, Z = AffineSpace(1, "A"), AffineSpace(2, "Z")
    pts = [sp.Matrix([sp.Symbol(f"a{k}"), 1]) for k in range(K_pts)]
    Abar = sum((p * p.T for p in pts), sp.zeros(2)) / K_pts
    M = sp.Matrix(2, 2, sp.symbols("m0:4"))
    G = M.T * M
    g_ind = KroneckerMetric(SecondMoment(A.reference_frame, sp.ImmutableMatrix(Abar), check=False),
                            Metric(Z.reference_frame, sp.ImmutableMatrix(G), check=False))
    Mat = sp.Matrix(g_ind.matrix())
    asym = sum(sp.expand(e) != 0 for e in (Mat - Mat.T))
    R = sp.Matrix.vstack(*[sp.kronecker_product(p.T, M) for p in pts]) / sp.sqrt(K_pts)
    gram = sum(sp.expand(e) != 0 for e in (Mat - R.T * R))
    return asym, gram, Mat.shape[0] ** 2


def _expected_pullback_on_Z(net, w, X, om):
    """``E_a[ψ_a* g]`` on ``W_L`` from per-example ``(a_n, G(z_n))`` with the core."""
    L = net.L
    jac = K.network_jacobians(net, w, X)
    G_out = get_output_metric(om).matrix(jac.outputs_ref)  # reference frames throughout
    WL = net.weight_spaces[L]
    a_prev = jac.abars[L - 1][:, :-1]
    per = []
    for a, G in zip(a_prev, G_out):  # the core's per-point objects (small N)
        g = Metric(net.Z[L].reference_frame, G, check=False)
        per.append(pullback(g, WL.evaluation_map(Point(net.A[L - 1].reference_frame, a))))
    return expectation(per), max(m.rank() for m in per)


def _seed(seed, N):
    net, w, X, rng = problem(seed, widths=(3, 4, 3), activations=("tanh", "identity"), N=N)
    psd_min, sym_max = np.inf, 0.0
    for i in range(1, net.L + 1):
        g = K.independence_metric(net, w, X, "bernoulli", i)
        M = np.asarray(g.matrix(), dtype=float)
        scale = max(1.0, float(np.max(np.abs(M))))
        sym_max = max(sym_max, float(np.max(np.abs(M - M.T))) / scale)
        psd_min = min(psd_min, float(np.linalg.eigvalsh(M).min()) / scale)
    out = {"psd_min": psd_min, "sym_max": sym_max}
    for om in ("bernoulli", "categorical"):
        E, single_rank = _expected_pullback_on_Z(net, w, X, om)
        g_ind = K.independence_metric(net, w, X, om, net.L)
        dh = Covector(g_ind.frame, np.ones(g_ind.space.dim))
        try:
            g_ind.sharp(dh)
            raised = False
        except DegenerateMetricError:
            raised = True
        out[om] = dict(E_nondeg=E.is_nondegenerate(), E_rank=E.rank(), single_rank=single_rank,
                       ind_nondeg=g_ind.is_nondegenerate(), ind_rank=g_ind.rank(),
                       dim=g_ind.space.dim, raised=raised)
    out["expected_degenerate_rank"] = (net.widths[net.L - 1] + 1) * (net.widths[net.L] - 1)
    return out


def check(fast: bool = False) -> dict:
    asym, gram, n_sym = _symbolic()
    seeds = range(1) if fast else range(3)
    N = 8 if fast else 16
    ok, ctrl_ok, psd_min, sym_max, per_seed = asym == 0 and gram == 0, True, np.inf, 0.0, {}
    for seed in seeds:
        r = _seed(seed, N)
        psd_min, sym_max = min(psd_min, r["psd_min"]), max(sym_max, r["sym_max"])
        b, c = r["bernoulli"], r["categorical"]
        ok &= (r["psd_min"] >= -PSD_TOL and r["sym_max"] == 0.0 and b["E_nondeg"]
               and b["ind_nondeg"] and b["ind_rank"] == b["dim"] and not b["raised"])
        ctrl_ok &= (not c["E_nondeg"] and not c["ind_nondeg"] and c["raised"]
                    and c["ind_rank"] == r["expected_degenerate_rank"])
        per_seed[f"seed {seed}"] = (
            f"Bernoulli: E_a[ψ_a*g] rank {b['E_rank']}/{b['dim']} (single ψ_a*g rank "
            f"{b['single_rank']}), g_ind rank {b['ind_rank']}/{b['dim']}; softmax: E_a[ψ_a*g] "
            f"rank {c['E_rank']}, g_ind rank {c['ind_rank']} (expected "
            f"{r['expected_degenerate_rank']}), sharp raised {c['raised']}")
    deficiency = float(r["categorical"]["dim"] - r["categorical"]["ind_rank"])
    return {
        "holds": bool(ok),
        "discrepancy": float(max(0.0, -psd_min) + sym_max + asym + gram),
        "negative_control": ("softmax output: g_ind must be reported degenerate (rank (n+1)(C−1), "
                             "sharp raises DegenerateMetricError)"),
        "negative_discrepancy": deficiency,
        "negative_fails": bool(ctrl_ok),
        "details": {
            "symbolic: g_ind − g_indᵀ, g_ind − RᵀR (exact PSD certificate)":
                f"{asym} and {gram} nonzero of {n_sym}",
            "numeric: smallest eigenvalue / scale over layers and seeds": psd_min,
            "numeric: largest asymmetry / scale": sym_max,
            "discrepancy column": "max(0, −λ_min) + asymmetry + nonzero symbolic entries",
            "negative discrepancy column": "rank deficiency of g_ind (softmax)",
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
