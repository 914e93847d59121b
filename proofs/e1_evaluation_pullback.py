"""Lemma E.1: the pullback of a metric ``g`` on ``Z`` along the evaluation map
``ψ_a : Aff(A, Z) → Z, ω ↦ ω(a)`` is ``a ⊗ g ⊗ a`` (``E[a ⊗ φ ⊗ a ⊗ φ]`` for a point
mass), whose matrix in the induced frame is ``ā āᵀ ⊗ G``.

Method: symbolic (exact).  ``A`` and ``Z`` of dimension 2, a point ``a`` with symbolic
coordinates and a metric with a symbolic symmetric matrix ``G``.  The core's
``AffineMaps.evaluation_map`` and :class:`~geomkfac.metrics.Pullback` give ``ψ_a* g``; checked
exactly:
(o) the evaluation map is what its definition says: for a point ``ω`` of ``Aff(A, Z)`` with
symbolic coordinates, ``ψ_a(ω)`` equals ``ω(a)`` computed by the affine map ``ω`` itself
(``AffineMaps.map_of(ω)(a)``), and the Jacobian of ``ω ↦ ω(a)`` obtained by differentiating
that expression (sympy) equals the evaluation map's matrix — in the reference frames and in
a second pair of frames;
(i) in the reference frames its matrix minus ``kron(ā āᵀ, G)`` is the zero matrix, also when
the metric is *given in another frame* of ``Z`` than the map's (a metric made in κ_Z, pulled
back along ``ψ_a`` written in the reference frames);
(ii) in a second pair of frames κ_A, κ_Z (dense rational changes) the pullback computed
there equals ``kron(ā_κ ā_κᵀ, G_κ)`` with ``ā_κ = [B_A]_H ā``, ``G_κ = B_Z⁻ᵀ G B_Z⁻¹``, and
equals the reference result carried to the induced frame by the covariant law (one
coordinate-free object); (iii) for several points the expectation of the pullbacks is
``E[ā āᵀ] ⊗ G`` (the form used by Eqn. 3.3).

Negative control: the row-stacking order ``kron(G, ā āᵀ)`` (the wrong vec convention) must
differ from ``ψ_a* g``: its difference has nonzero entries.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.maps import AffineMaps
from geomkfac.metrics import Metric, Pullback, expectation
from geomkfac.spaces import AffineSpace, Point

ID = "Lemma E.1"
STATEMENT = "ψ_a* g = a ⊗ g ⊗ a: in the induced frame ā āᵀ ⊗ G"
METHOD = "symbolic"
# Tolerance: none; every difference must simplify to the zero matrix.


def _nonzero(M) -> int:
    """Entries that are not identically zero.  Every entry here is a polynomial in the
    symbols with rational coefficients (the changes of frame are rational), so ``expand``
    decides it exactly (the expanded polynomial is canonical)."""
    return sum(sp.expand(e) != 0 for e in sp.Matrix(M))


def _homog(x):
    return sp.Matrix(list(x) + [1])


def check(fast: bool = False) -> dict:
    nA, nZ = 2, 2
    A, Z = AffineSpace(nA, "A"), AffineSpace(nZ, "Z")
    W = AffineMaps(A, Z)
    a_sym = sp.Matrix(sp.symbols(f"a0:{nA}"))
    g0, g1, g2 = sp.symbols("g0:3")
    G = sp.ImmutableMatrix([[g0, g1], [g1, g2]])
    g = Metric(Z.reference_frame, G, check=False)
    a = Point(A.reference_frame, a_sym)

    BA, cA = sp.Matrix([[2, 1], [-1, 1]]), sp.Matrix([sp.Rational(1, 2), -3])
    BZ, cZ = sp.Matrix([[1, 3], [1, -1]]), sp.Matrix([2, sp.Rational(-1, 3)])
    kA = A.reference_frame.derive(BA, cA, name="κA")
    kZ = Z.reference_frame.derive(BZ, cZ, name="κZ")

    # (o) the evaluation map against its definition ω ↦ ω(a)
    w_sym = sp.Matrix(sp.symbols(f"w0:{W.dim}"))
    bad_def = 0
    for fA, fZ in ((A.reference_frame, Z.reference_frame), (kA, kZ)):
        omega = Point(W.frame(fA, fZ), w_sym)
        psi = W.evaluation_map(a, fA, fZ)
        by_map = sp.Matrix(W.map_of(omega)(a).coords(fZ))
        bad_def += _nonzero(sp.Matrix(psi(omega).coords(fZ)) - by_map)
        bad_def += _nonzero(sp.Matrix(psi.matrix())[:, :-1] - by_map.jacobian(w_sym))

    # (i) reference frames; the metric also given in another frame than the map's
    m_ref = Pullback(g, W.evaluation_map(a))
    ab = _homog(a_sym)
    bad_ref = _nonzero(sp.Matrix(m_ref.matrix()) - sp.kronecker_product(ab * ab.T, G))
    G_kZ = BZ.inv().T * G * BZ.inv()                       # g's matrix in κ_Z, from the arrays
    m_other = Pullback(Metric(kZ, sp.ImmutableMatrix(G_kZ), check=False), W.evaluation_map(a))
    bad_ref += _nonzero(sp.Matrix(m_other.matrix()) - sp.kronecker_product(ab * ab.T, G))

    # (ii) second frames
    g_k = Metric(kZ, sp.ImmutableMatrix(G_kZ), check=False)
    m_k = Pullback(g_k, W.evaluation_map(Point(kA, BA * a_sym + cA), kA, kZ))
    ab_k = _homog(BA * a_sym + cA)
    G_k = BZ.inv().T * G * BZ.inv()
    bad_k = _nonzero(sp.Matrix(m_k.matrix()) - sp.kronecker_product(ab_k * ab_k.T, G_k))
    induced = W.frame(kA, kZ)
    bad_law = _nonzero(sp.Matrix(m_ref.matrix(induced)) - sp.Matrix(m_k.matrix(induced)))

    # (iii) expectation over several rational points
    pts = [sp.Matrix([1, 2]), sp.Matrix([sp.Rational(-1, 2), 3]), sp.Matrix([0, -1])]
    if not fast:
        pts.append(sp.Matrix([sp.Rational(5, 3), sp.Rational(1, 4)]))
    E = expectation([Pullback(g, W.evaluation_map(Point(A.reference_frame, p))) for p in pts])
    Abar = sum((_homog(p) * _homog(p).T for p in pts), sp.zeros(nA + 1)) / len(pts)
    bad_exp = _nonzero(sp.Matrix(E.matrix()) - sp.kronecker_product(Abar, G))

    wrong = _nonzero(sp.Matrix(m_ref.matrix()) - sp.kronecker_product(G, ab * ab.T))
    bad = bad_def + bad_ref + bad_k + bad_law + bad_exp
    n = ((nA + 1) * nZ) ** 2
    return {
        "holds": bad == 0,
        "discrepancy": float(bad),
        "negative_control": "the row-stacking order kron(G, ā āᵀ) equals ψ_a* g (must not)",
        "negative_discrepancy": float(wrong),
        "negative_fails": wrong > 0,
        "details": {
            "ψ_a(ω) − ω(a) and J(ψ_a) − ∂ω(a)/∂ω, two pairs of frames": f"{bad_def} nonzero",
            "ψ_a* g − kron(ā āᵀ, G), reference frames, g given in ι_Z and in κ_Z":
                f"{bad_ref} nonzero of {2 * n}",
            "in κ_A, κ_Z: ψ_a* g − kron(ā_κ ā_κᵀ, G_κ)": f"{bad_k} nonzero of {n}",
            "reference result by the law − κ result": f"{bad_law} nonzero of {n}",
            f"E over {len(pts)} points − E[ā āᵀ] ⊗ G": f"{bad_exp} nonzero of {n}",
            "ψ_a* g − kron(G, ā āᵀ) (control)": f"{wrong} nonzero of {n}",
            "discrepancy column": "number of nonzero entries of the exact differences",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
