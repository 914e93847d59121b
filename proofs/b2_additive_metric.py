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

Negative control: in that coupled frame (a dense change mixing the two factors) the matrix
must not be block diagonal: its off-diagonal block is nonzero.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.metrics import Metric, additive_metric
from geomkfac.spaces import AffineSpace, Vector, product_frame

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
            "discrepancy column": "number of nonzero entries of the exact differences",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
