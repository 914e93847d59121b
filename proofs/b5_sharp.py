"""Appendix B.5 with Thm 3.2's update: the musical isomorphism ``♯`` (natural gradient
``g⁻¹ ω``) is coordinate-free — the vector ``ω♯`` with ``g(ω♯, ·) = ω`` does not depend on the
frame the covector or the metric is given in.

Method: symbolic (exact rational arithmetic).  Every frame is derived from its space's
reference frame by a dense rational change written down here, and the reference value is
computed by hand in the reference frame: ``G_ref = Bᵀ G B`` for a metric given in a frame
``y = B x + c``, ``w_ref = Bᵀ w`` for a covector, ``v_ref = G_ref⁻¹ w_ref``, ``v = B v_ref`` in
the frame asked for.  Checked exactly:

(i) a :class:`Metric` given in ι (dim 3), the covector given in κ: ``g.sharp(ω)`` and
    ``natural_gradient(g, ω)`` equal the hand value (compared in κ and in the reference
    frame), and ``g(ω♯, eⱼ) = ω(eⱼ)`` for the basis vectors of a third frame λ;
(ii) an :class:`AdditiveMetric` of metrics given in ι₁, ι₂: covectors given in the product
     frame (κ₁, κ₂) (blockwise ♯) and in a frame coupling the factors (dense ♯);
(iii) a :class:`KroneckerMetric` ``E[α ⊗ α] ⊗ g`` with factors given in (ι_A, ι_Z), the
      covector given in the induced frame (κ_A, κ_Z): its factored ♯ ``vec(G⁻¹ V A⁻¹)``
      equals the dense solve with ``kron(A_κ, G_κ)``, the factors moved to κ by hand
      (``[B]_H A [B]_Hᵀ`` and ``B⁻ᵀ G B⁻¹``).

Negative control (the same comparison as (i)): the metric's own matrix ``G_ι`` applied to the
covector's κ coordinates (``G_ι⁻¹ w_κ`` read in κ) is not ``ω♯``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac.metrics import KroneckerMetric, Metric, SecondMoment, additive_metric, natural_gradient
from geomkfac.maps import AffineMaps
from geomkfac.spaces import AffineSpace, Covector, Vector, product_frame

ID = "B.5 sharp"
STATEMENT = ("♯ (natural gradient g⁻¹ω) is coordinate-free: the same vector whatever frames "
             "the covector and the metric are given in")
METHOD = "symbolic"
# Tolerance: none; exact rational arithmetic (differences must be exactly zero).


def _rat(rng, rows, cols):
    return sp.Matrix(rows, cols, lambda i, j: sp.Rational(int(rng.integers(-5, 6)), 2))


def _invertible(rng, n):
    while True:
        M = _rat(rng, n, n) + sp.eye(n)
        if M.det() != 0:
            return M


def _spd(rng, n):
    M = _rat(rng, n, n)
    return M.T * M + sp.eye(n)


def _hom(B, c):
    n = B.rows
    return sp.Matrix.vstack(sp.Matrix.hstack(B, c), sp.Matrix([[0] * n + [1]]))


def _nz(M) -> int:
    return sum(e != 0 for e in sp.Matrix(M))


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(2)
    bad = {"(i) Metric": 0, "(ii) AdditiveMetric": 0, "(iii) KroneckerMetric": 0}
    neg_min = None
    for seed in seeds:
        rng = np.random.default_rng(seed)
        # (i)
        n = 3
        A = AffineSpace(n, f"A{seed}")
        Bi, Bk, Bl = (_invertible(rng, n) for _ in range(3))
        iota = A.reference_frame.derive(Bi, _rat(rng, n, 1), name="ι")
        kappa = A.reference_frame.derive(Bk, _rat(rng, n, 1), name="κ")
        lam = A.reference_frame.derive(Bl, _rat(rng, n, 1), name="λ")
        G_i, w_k = _spd(rng, n), _rat(rng, n, 1)
        g, omega = Metric(iota, G_i), Covector(kappa, w_k)
        v_ref = (Bi.T * G_i * Bi).solve(Bk.T * w_k)
        v_k = Bk * v_ref
        for v in (g.sharp(omega), natural_gradient(g, omega)):
            bad["(i) Metric"] += _nz(sp.Matrix(v.coords(kappa)) - v_k)
            bad["(i) Metric"] += _nz(sp.Matrix(v.coords(A.reference_frame)) - v_ref)
        sharp = g.sharp(omega)
        for j in range(n):
            e = Vector(lam, sp.Matrix([int(i == j) for i in range(n)]))
            bad["(i) Metric"] += int(sp.nsimplify(g(sharp, e) - omega(e)) != 0)
        # control: G_ι applied to the κ coordinates
        wrong = Vector(kappa, G_i.solve(w_k))
        neg = _nz(sp.Matrix(wrong.coords(kappa)) - v_k)
        neg_min = neg if neg_min is None else min(neg_min, neg)

        # (ii) additive metric
        A1, A2 = AffineSpace(1, f"P{seed}"), AffineSpace(2, f"Q{seed}")
        B1, B2, C1, C2 = (_invertible(rng, 1), _invertible(rng, 2), _invertible(rng, 1),
                          _invertible(rng, 2))
        i1 = A1.reference_frame.derive(B1, _rat(rng, 1, 1))
        i2 = A2.reference_frame.derive(B2, _rat(rng, 2, 1))
        k1 = A1.reference_frame.derive(C1, _rat(rng, 1, 1))
        k2 = A2.reference_frame.derive(C2, _rat(rng, 2, 1))
        G1, G2 = _spd(rng, 1), _spd(rng, 2)
        ga = additive_metric([Metric(i1, G1), Metric(i2, G2)])
        G_ref = sp.diag(B1.T * G1 * B1, B2.T * G2 * B2)
        P = product_frame([k1, k2])
        D = _invertible(rng, 3)
        coupled = P.derive(D, _rat(rng, 3, 1))
        C_P = sp.diag(C1, C2)
        for F, Bf in ((P, C_P), (coupled, D * C_P)):
            w = _rat(rng, 3, 1)
            v_ref = G_ref.solve(Bf.T * w)
            v = ga.sharp(Covector(F, w))
            bad["(ii) AdditiveMetric"] += _nz(sp.Matrix(v.coords(F)) - Bf * v_ref)

        # (iii) Kronecker metric in an induced frame other than its own
        dA, dZ = 2, 2
        SA, SZ = AffineSpace(dA, f"S{seed}"), AffineSpace(dZ, f"T{seed}")
        BA, cA, BZ = _invertible(rng, dA), _rat(rng, dA, 1), _invertible(rng, dZ)
        iA, iZ = SA.reference_frame.derive(_invertible(rng, dA)), SZ.reference_frame.derive(
            _invertible(rng, dZ))
        kA, kZ = iA.derive(BA, cA), iZ.derive(BZ, _rat(rng, dZ, 1))
        Am, Gm = _spd(rng, dA + 1), _spd(rng, dZ)
        gk = KroneckerMetric(SecondMoment(iA, Am), Metric(iZ, Gm))
        H = _hom(BA, cA)
        A_k = H * Am * H.T
        G_k = BZ.inv().T * Gm * BZ.inv()
        F = AffineMaps(SA, SZ).frame(kA, kZ)
        w = _rat(rng, dZ * (dA + 1), 1)
        v_dense = sp.kronecker_product(A_k, G_k).solve(w)
        v = gk.sharp(Covector(F, w))
        bad["(iii) KroneckerMetric"] += _nz(sp.Matrix(v.coords(F)) - v_dense)

    total = sum(bad.values())
    return {
        "holds": total == 0,
        "discrepancy": float(total),
        "negative_control": ("the metric's own matrix G_ι applied to the covector's κ "
                             "coordinates gives ω♯ (must not)"),
        "negative_discrepancy": float(neg_min),
        "negative_fails": neg_min > 0,
        "details": {
            "seeds": len(seeds),
            **{f"{k}: nonzero entries": v for k, v in bad.items()},
            "control: G_ι⁻¹ w_κ − ω♯ in κ: nonzero entries (smallest over seeds)":
                f"{neg_min} of 3",
            "discrepancy column": "number of nonzero entries of the exact differences",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
