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

The nondegeneracy half, on the core objects alone (:mod:`geomkfac.pipeline`: evaluation maps,
:class:`~geomkfac.metrics.Pullback` s of a metric ``g_k`` given at each point ``a_k``,
expectations, the factored tensor product), in three kinds of cases:

* the hypothesis holds (random points, metrics ``g_k`` of rank 1 with null spaces that vary
  from point to point, ``E_a[ψ_a* g]`` nondegenerate): ``g_ind`` is nondegenerate — the
  implication, over several seeds;
* the hypothesis fails: ``N ≤ n`` points (their ``ā`` span at most ``N < n + 1`` dimensions),
  or metrics that share a null vector; then ``E_a[ψ_a* g]`` and ``g_ind`` are both degenerate,
  with the ranks the factors predict;
* the converse is false: two points with ``g₁ = diag(1, 0)`` and ``g₂ = diag(0, 1)`` —
  ``E_a[ψ_a* g]`` has rank 2 of 4 (degenerate) while ``g_ind = E[ā āᵀ] ⊗ E[g]`` is
  nondegenerate.

Negative control: with a softmax output layer the output Fisher ``diag(p) − ppᵀ`` has rank
``C − 1``: ``E_a[ψ_a* g]`` is degenerate, and Theorem 3.4's check must report ``g_ind``
degenerate: ``is_nondegenerate()`` False, rank ``(n_{L−1}+1)(C−1)``, and ``sharp`` raising
``DegenerateMetricError``; and the false converse ("``g_ind`` nondegenerate ⇒ ``E_a[ψ_a* g]``
nondegenerate") must be refuted by the counterexample above.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from _pipeline import problem

from geomkfac import kfac as K
from geomkfac import pipeline
from geomkfac.errors import DegenerateMetricError
from geomkfac.maps import AffineMap, AffineMaps
from geomkfac.metrics import KroneckerMetric, Metric, Pullback, SecondMoment, expectation
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
    """``E_a[ψ_a* g]`` on ``W_L`` from the per-example points ``α_{L−1}`` and the metric
    ``g(ζ_L) = φ_L* g_out`` on ``Z_L``, with the core's evaluation maps and pullbacks."""
    L = net.L
    smp = K.samples(net, w, X)
    WL = net.weight_spaces[L]
    origin = Point(WL.reference_frame, np.zeros(WL.dim))
    field = get_output_metric(om)
    per = [Pullback(Pullback(field, s.rests[L], at=s.zetas[L]), WL.evaluation_map(s.alphas[L - 1]), at=origin)
           for s in smp]
    return expectation(per), max(m.rank() for m in per)


def _abstract_case(points, metrics):
    """``(E_a[ψ_a* g], g_ind)`` for points ``a_k`` of A and metrics ``g_k`` on Z given there."""
    A = points[0].space
    Z = metrics[0].space
    W = AffineMaps(A, Z)
    origin = Point(W.reference_frame, np.zeros(W.dim))
    E = pipeline.expected_pullback([W.evaluation_map(a) for a in points], [origin] * len(points), metrics)
    ident = AffineMap.identity(Z.reference_frame)
    zeta = Point(Z.reference_frame, np.zeros(Z.dim))
    g_ind = pipeline.independence_metric(points, [ident] * len(points), [zeta] * len(points), metrics)
    return E, g_ind


def _rank1(rng, m):
    v = rng.normal(size=m)
    return np.outer(v, v)


def _nondegeneracy_cases(seeds):
    """The implication where the hypothesis holds, degenerate cases where it fails, and the
    counterexample to the converse; returns a dict of booleans and a text per case."""
    out = {"implication": True, "fails_degenerate": True, "rows": {}}
    n, m = 2, 2
    for seed in seeds:
        rng = np.random.default_rng(100 + seed)
        A, Z = AffineSpace(n, f"A{seed}"), AffineSpace(m, f"Z{seed}")
        # hypothesis holds: 6 points, rank-1 metrics with varying null spaces
        pts = [Point(A.reference_frame, rng.normal(size=n)) for _ in range(6)]
        gs = [Metric(Z.reference_frame, _rank1(rng, m)) for _ in pts]
        E, g = _abstract_case(pts, gs)
        hyp = E.is_nondegenerate()
        out["implication"] &= bool(hyp and g.is_nondegenerate() and g.rank() == g.space.dim)
        out["rows"][f"seed {seed}, 6 points, rank-1 g_k"] = (
            f"E[ψ*g] rank {E.rank()}/{E.space.dim}, g_ind rank {g.rank()}/{g.space.dim}")
        # hypothesis fails: N ≤ n points
        few = pts[:n]
        E2, g2 = _abstract_case(few, [Metric(Z.reference_frame, np.eye(m))] * len(few))
        expected = len(few) * m                                        # rank E[ā āᵀ] · rank E[g]
        out["fails_degenerate"] &= bool(not E2.is_nondegenerate() and not g2.is_nondegenerate()
                                        and g2.rank() == expected)
        # hypothesis fails: every g_k shares the null vector u
        u = rng.normal(size=m)
        P = np.eye(m) - np.outer(u, u) / (u @ u)
        gs3 = [Metric(Z.reference_frame, P @ _rank1(rng, m) @ P + P) for _ in pts]
        E3, g3 = _abstract_case(pts, gs3)
        out["fails_degenerate"] &= bool(not E3.is_nondegenerate() and not g3.is_nondegenerate()
                                        and g3.rank() == (n + 1) * (m - 1))
        out["rows"][f"seed {seed}, hypothesis fails"] = (
            f"N = {len(few)} ≤ n: E[ψ*g] rank {E2.rank()}, g_ind rank {g2.rank()} (expected {expected}); "
            f"common null vector: E[ψ*g] rank {E3.rank()}, g_ind rank {g3.rank()} "
            f"(expected {(n + 1) * (m - 1)}) of {g3.space.dim}")
    # the converse is false: A of dim 1, two points, g₁ = diag(1, 0), g₂ = diag(0, 1)
    A, Z = AffineSpace(1, "A_conv"), AffineSpace(2, "Z_conv")
    pts = [Point(A.reference_frame, [0.0]), Point(A.reference_frame, [1.0])]
    gs = [Metric(Z.reference_frame, np.diag([1.0, 0.0])), Metric(Z.reference_frame, np.diag([0.0, 1.0]))]
    E, g = _abstract_case(pts, gs)
    out["converse_refuted"] = bool(g.is_nondegenerate() and not E.is_nondegenerate())
    out["rows"]["converse"] = (f"g₁ = diag(1, 0), g₂ = diag(0, 1): E[ψ*g] rank {E.rank()}/{E.space.dim}, "
                               f"g_ind rank {g.rank()}/{g.space.dim}")
    return out


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
    nd = _nondegeneracy_cases(seeds)
    ok &= nd["implication"] and nd["fails_degenerate"]
    ctrl_ok &= nd["converse_refuted"]
    return {
        "holds": bool(ok),
        "discrepancy": float(max(0.0, -psd_min) + sym_max + asym + gram),
        "negative_control": ("softmax output: g_ind must be reported degenerate (rank (n+1)(C−1), "
                             "sharp raises DegenerateMetricError); the converse (g_ind "
                             "nondegenerate ⇒ E[ψ*g] nondegenerate) must be refuted"),
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
            "nondegeneracy: implication where the hypothesis holds": nd["implication"],
            "nondegeneracy: degenerate where the hypothesis fails": nd["fails_degenerate"],
            "converse refuted (g_ind nondegenerate, E[ψ*g] degenerate)": nd["converse_refuted"],
            "nondegeneracy cases": nd["rows"],
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
