"""Appendix B, Eqn. B.2: the additive metric ``(g₁ + g₂)(u, v) = g₁(u₁, v₁) + g₂(u₂, v₂)`` on a
product ``A₁ × A₂`` is block diagonal in product coordinates.

Method: symbolic (exact rational arithmetic).  ``g₁`` on ``A₁`` (dim 2) and ``g₂`` on ``A₂``
(dim 3) are given in their reference frames; each factor gets a second frame κᵢ with a
dense rational change.  Checked exactly: (i) the core's additive metric, asked for its
matrix in the product frame ``(κ₁, κ₂)``, equals ``block_diag(B₁⁻ᵀ G₁ B₁⁻¹, B₂⁻ᵀ G₂ B₂⁻¹)``
computed by hand; (ii) for rational vectors ``u, v``, ``uᵀ G v`` in that frame equals
``g₁(u₁, v₁) + g₂(u₂, v₂)`` evaluated in the reference frames (vectors transformed by hand
with ``B⁻¹``); (iii) its matrix in a *coupled* frame on ``A₁ × A₂``, mapped back to
``(κ₁, κ₂)`` by the transformation law by hand, is block diagonal again.

With free symbols, at a point (B.2 is a statement about ``(g₁ + g₂)(p, q)``): ``g₁`` is a
metric *field* on ``A₁`` (dim 1), the :class:`~geomkfac.metrics.Pullback` of the Euclidean
metric along the smooth map ``x ↦ (x², x)`` (so ``G₁(p) = 4p² + 1`` depends on the point),
``g₂`` a constant metric on ``A₂`` (dim 2) with a free symmetric matrix ``[[m₀, m₁], [m₁, m₂]]``.
The factors get frames with free symbols ``κ₁: y = β x + t₁``, ``κ₂: y = B₂ x + (t₂, t₃)``, and
the product frame ``(κ₁, κ₂)`` orders its coordinates and translations as the paper orders
the factors, ``(p, q)``.  A point ``(p, q)`` with free coordinates, given in the product's
reference frame, is asked for its coordinates in ``(κ₁, κ₂)``, split into its factors, and
the fields are evaluated there (``g₁.at(p)``); the library's additive metric of the two
values, in ``(κ₁, κ₂)``, must equal ``block_diag((4p² + 1)/β², B₂⁻ᵀ G₂ B₂⁻¹)`` written by hand
(difference simplified to zero): a wrong translation puts ``p`` elsewhere and changes
``G₁(p)``.

Negative control: in that coupled frame (a dense change mixing the two factors) the matrix
must not be block diagonal: its off-diagonal block is nonzero.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.maps import SmoothMap
from geomkfac.metrics import Metric, Pullback, additive_metric
from geomkfac.spaces import AffineSpace, Point, Vector, product_frame

ID = "B.2"
STATEMENT = "the additive metric on a product space is block diagonal in product coordinates"
METHOD = "symbolic"
# Tolerance: none; exact rational arithmetic, differences must be the zero matrix.


def _rand_rational(rng, rows, cols):
    return sp.Matrix(rows, cols, lambda i, j: sp.Rational(int(rng.integers(-5, 6)), 2))


def _spd(rng, n):
    M = _rand_rational(rng, n, n)
    return M.T * M + sp.eye(n)


def _invertible(rng, n):
    while True:
        M = _rand_rational(rng, n, n) + 2 * sp.eye(n)
        if M.det() != 0:
            return M


def _symbolic_at_point() -> int:
    """Nonzero entries of the free-symbol comparison at a point ``(p, q)`` (see docstring)."""
    A1, A2 = AffineSpace(1, "A1"), AffineSpace(2, "A2")
    Z1 = AffineSpace(2, "Z1")
    x = sp.Symbol("x")
    phi = SmoothMap.from_sympy(A1.reference_frame, Z1.reference_frame, [x ** 2, x], [x])
    g1 = Pullback(Metric.identity(Z1.reference_frame), phi, at=Point(A1.reference_frame, [0]))
    m0, m1, m2 = sp.symbols("m0:3")
    G2 = sp.Matrix([[m0, m1], [m1, m2]])
    g2 = Metric(A2.reference_frame, G2, check=False)
    beta, t1, t2, t3 = sp.symbols("beta t1:4")
    B2 = sp.Matrix(2, 2, sp.symbols("B0:4"))
    k1 = A1.reference_frame.derive(sp.Matrix([[beta]]), sp.Matrix([t1]), name="κ1")
    k2 = A2.reference_frame.derive(B2, sp.Matrix([t2, t3]), name="κ2")
    P = product_frame([k1, k2])
    p, q0, q1 = sp.symbols("p q0 q1")
    point = Point((A1 * A2).reference_frame, sp.Matrix([p, q0, q1]))
    y1, y2 = (A1 * A2).split(point.coords(P))
    g = additive_metric([g1.at(Point(k1, y1)), g2.at(Point(k2, y2))])
    B2i = B2.inv()
    expected = sp.diag((4 * p ** 2 + 1) / beta ** 2, B2i.T * G2 * B2i)
    # entries are rational functions of the symbols: cancel to a normal form, exact
    return sum(sp.cancel(sp.together(e)) != 0 for e in (sp.Matrix(g.matrix(P)) - expected))


def check(fast: bool = False) -> dict:
    import numpy as np

    seeds = range(1) if fast else range(3)
    bad, off_min, n1, n2 = 0, None, 2, 3
    for seed in seeds:
        rng = np.random.default_rng(seed)
        A1, A2 = AffineSpace(n1, "A1"), AffineSpace(n2, "A2")
        G1, G2 = _spd(rng, n1), _spd(rng, n2)
        g = additive_metric([Metric(A1.reference_frame, G1), Metric(A2.reference_frame, G2)])
        B1, B2 = _invertible(rng, n1), _invertible(rng, n2)
        k1 = A1.reference_frame.derive(B1, _rand_rational(rng, n1, 1))
        k2 = A2.reference_frame.derive(B2, _rand_rational(rng, n2, 1))
        P = product_frame([k1, k2])
        expected = sp.diag(B1.inv().T * G1 * B1.inv(), B2.inv().T * G2 * B2.inv())
        G_P = sp.Matrix(g.matrix(P))
        bad += sum(e != 0 for e in (G_P - expected))

        u, v = _rand_rational(rng, n1 + n2, 1), _rand_rational(rng, n1 + n2, 1)
        lhs = (u.T * G_P * v)[0]
        u1, v1 = B1.inv() * u[:n1, :], B1.inv() * v[:n1, :]
        u2, v2 = B2.inv() * u[n1:, :], B2.inv() * v[n1:, :]
        rhs = (u1.T * G1 * v1)[0] + (u2.T * G2 * v2)[0]
        bad += int(sp.nsimplify(lhs - rhs) != 0)
        # the metric's own evaluation on Vectors agrees too
        bad += int(sp.nsimplify(g(Vector(P, u), Vector(P, v)) - rhs) != 0)

        # a coupled frame on the product: dense change of the stacked coordinates
        C = _invertible(rng, n1 + n2)
        coupled = P.derive(C, _rand_rational(rng, n1 + n2, 1))
        G_C = sp.Matrix(g.matrix(coupled))
        off = sum(e != 0 for e in G_C[:n1, n1:])
        off_min = off if off_min is None else min(off_min, off)
        back = C.T * G_C * C                      # law from coupled back to P
        bad += sum(e != 0 for e in (back - expected))
    sym_bad = _symbolic_at_point()
    bad += sym_bad
    return {
        "holds": bad == 0,
        "discrepancy": float(bad),
        "negative_control": ("in a frame coupling the two factors the matrix is not block "
                             "diagonal (off-diagonal block ≠ 0)"),
        "negative_discrepancy": float(off_min),
        "negative_fails": off_min > 0,
        "details": {
            "seeds": len(seeds),
            "nonzero entries of [G]_(κ₁,κ₂) − block_diag(G₁_κ₁, G₂_κ₂), value and law checks":
                bad,
            "nonzero off-diagonal entries in the coupled frame (smallest over seeds)":
                f"{off_min} of {n1 * n2}",
            "free symbols, point-dependent g₁ at (p, q) in (κ₁, κ₂): nonzero entries": sym_bad,
            "discrepancy column": "number of nonzero entries of the exact differences",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
