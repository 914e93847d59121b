"""Eqn. F.4 (and 4.3): a change of frame ``a‡ = Ω a + γ`` on the local activation space ``A``,
the same at every location, acts on a patch ``A^|Δ|`` (one homogeneous 1 per patch, the
library's offset-major order) as ``[[I_|Δ| ⊗ Ω, 1_|Δ| ⊗ γ], [0, 1]]``, and the weights of a
convolution layer transform as ``[W̄; 0 1] = [Φ]_H [W̄‡; 0 1] [[I ⊗ Ω, 1 ⊗ γ], [0, 1]]``
(F.4 with ``Γ = [Φ]_H``, ``Υ = [Ω]_H``); the zero padding, a point of ``A``, has the
coordinates ``γ`` in the new frame.

Method: symbolic+numeric.  ``J = 2`` channels, a 2×2 kernel (``|Δ| = 4``), ``I = 2``.

* (i) symbolic: the core's change between the power frames ``power_frame(ι, 4)`` →
  ``power_frame(κ, 4)`` of the patch space, in homogeneous form, minus the claimed matrix
  expands to zero (``Ω`` an upper-triangular symbolic 2×2 matrix, ``γ`` symbolic; and a dense
  rational ``Ω`` with symbolic ``γ``, exactly).
* (ii) symbolic: a conv layer's weights given by a symbolic ``W̄‡`` in the frames (κ patch
  frame, ``z = Φ z‡ + τ`` on ``Z``) and read in the reference frames by the core
  (:meth:`~geomkfac.maps.AffineMap.homogeneous`, law D.2 on ``Aff(A^|Δ|, Z)``) minus
  ``[Φ]_H [W̄‡; 0 1] [[I ⊗ Ω, 1 ⊗ γ], [0, 1]]`` is zero (rational functions cancelled).
* (iii) numeric: the patch map ``A^|T_in| → (A^|Δ|)^|T|`` of a 2×2 input with padding 1 (built
  in the reference frames with the padding point), read by the core in the κ power frames,
  equals the patch map built directly in κ with padding coordinates ``γ``; its linear part
  is the same selection matrix.
* (iv) symbolic: in the reference files' channel-major patch order the same change is
  ``Ω ⊗ I_|Δ|`` with translation ``γ ⊗ 1``: ``Π (I ⊗ Ω) Πᵀ − Ω ⊗ I`` expands to zero for the
  order permutation ``Π`` of :func:`~geomkfac.networks.conv.patch_permutation`.

Negative control, the same comparisons: the channel-major matrix ``[[Ω ⊗ I, γ ⊗ 1], [0, 1]]``
used for the library's offset-major coordinates (the other patch order) differs from the
core's change (nonzero entries), and the patch map padded with zeros in κ differs from the
core's (the padding point is not the origin of κ).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac.maps import AffineMap
from geomkfac.networks.conv import AbstractCNN, patch_permutation
from geomkfac.spaces import AffineSpace, power_frame

ID = "F.4"
STATEMENT = ("a change (Ω, γ) shared by all locations acts on a patch as [[I⊗Ω, 1⊗γ],[0,1]] "
             "(offset-major) and W̄ transforms as [Φ]_H [W̄‡]_H (I ⊗ [Ω]_H); padding becomes γ")
METHOD = "symbolic+numeric"

# Tolerances (why): (i), (ii), (iv) exact (differences expanded to zero); (iii) the same
# affine map by two float64 routes (law D.2 vs direct construction) on O(1) entries: 1e-12.
NUM_TOL = 1e-12


def _nonzero(M) -> int:
    return sum(sp.cancel(sp.expand(e)) != 0 for e in M)


def _homogeneous(B, c):
    n = B.shape[0]
    return sp.Matrix(sp.BlockMatrix([[B, c], [sp.zeros(1, n), sp.ones(1, 1)]]))


def check(fast: bool = False) -> dict:
    J, K, I = 2, 4, 2
    A, Z = AffineSpace(J, "A"), AffineSpace(I, "Z")
    o = sp.symbols("o0:3")
    Om = sp.Matrix([[o[0], o[1]], [0, o[2]]])
    g = sp.Matrix(sp.symbols("g0:2"))
    iota = A.reference_frame
    kappa = iota.derive(Om, g, name="κ")
    law = _homogeneous(sp.kronecker_product(sp.eye(K), Om), sp.kronecker_product(sp.ones(K, 1), g))
    core = sp.Matrix(power_frame(iota, K).change_to(power_frame(kappa, K)).homogeneous())
    d1 = _nonzero(core - law)
    # (i-b) a dense Ω, exactly: random rationals (the core's symbolic inverse of a dense
    # symbolic 8×8 block matrix takes seconds; rationals keep the check exact and fast)
    Omq = sp.Matrix([[sp.Rational(3, 2), sp.Rational(-2, 7)], [sp.Rational(5, 3), sp.Rational(1, 4)]])
    kq = iota.derive(Omq, g, name="κq")
    lawq = _homogeneous(sp.kronecker_product(sp.eye(K), Omq), sp.kronecker_product(sp.ones(K, 1), g))
    d1 += _nonzero(sp.Matrix(power_frame(iota, K).change_to(power_frame(kq, K)).homogeneous()) - lawq)

    # (ii) the weight law F.4
    p, t = sp.symbols("p0:4"), sp.symbols("t0:2")
    Phi, tau = sp.Matrix([[p[0], p[1]], [p[2], p[3]]]), sp.Matrix(t)
    Pinv = Phi.adjugate() / Phi.det()
    kZ = Z.reference_frame.derive(Pinv, -Pinv * tau, name="κZ")
    Wd = sp.Matrix(I, J * K + 1, lambda i, j: sp.Symbol(f"w{i}_{j}"))
    omega = AffineMap(power_frame(kappa, K), kZ, Wd[:, :-1], Wd[:, -1])
    H_core = sp.Matrix(omega.homogeneous(power_frame(iota, K), Z.reference_frame))
    Wd_H = sp.Matrix.vstack(Wd, sp.Matrix([[0] * (J * K) + [1]]))
    d2 = _nonzero(H_core - _homogeneous(Phi, tau) * Wd_H * law)

    # (iv) channel-major order: Ω ⊗ I
    perm = patch_permutation(J, K)
    Pi = sp.zeros(J * K, J * K)
    for r, c in enumerate(perm):
        Pi[r, c] = 1
    cm = _homogeneous(sp.kronecker_product(Om, sp.eye(K)), sp.kronecker_product(g, sp.ones(K, 1)))
    Pi_H = sp.diag(Pi, 1)
    d4 = _nonzero(Pi_H * law * Pi_H.T - cm)
    neg_order = _nonzero(core - cm)

    # (iii) the patch map in κ: padding γ (numeric)
    rng = np.random.default_rng(0)
    net = AbstractCNN((J, 2, 2), [{"type": "conv", "out": I, "k": 2, "pad": 1}], name="f4")
    On, gn = rng.normal(size=(J, J)) + 2 * np.eye(J), rng.normal(size=J)
    kn = net.A[0].reference_frame.derive(On, gn, name="κ")
    T_in, T = 4, net.layers[0].T
    fin, fout = power_frame(kn, T_in), power_frame(power_frame(kn, K), T)
    ref_map = net.patch_map(1)
    M_law = np.asarray(ref_map.matrix(fin, fout), float)
    M_gamma = np.asarray(net.patch_map(1, kn).matrix(), float)
    M_zero = np.asarray(net.patch_map(1, kn, padding="zeros").matrix(), float)
    M_ref = np.asarray(ref_map.matrix(), float)
    d3 = float(np.max(np.abs(M_law - M_gamma)))
    d3_linear = float(np.max(np.abs(M_law[:, :-1] - M_ref[:, :-1])))
    neg_zero = float(np.max(np.abs(M_law - M_zero)))
    n_pad = int(np.sum(net.layers[0].geom.source < 0))

    holds = d1 == 0 and d2 == 0 and d4 == 0 and d3 <= NUM_TOL and d3_linear <= NUM_TOL
    return {
        "holds": bool(holds),
        "discrepancy": float(d1 + d2 + d4 + d3 + d3_linear),
        "negative_control": ("the channel-major change [[Ω⊗I, γ⊗1],[0,1]] used on offset-major "
                             "patches, and zero padding in κ, must differ from the core's law"),
        "negative_discrepancy": float(min(neg_order, neg_zero)),
        "negative_fails": bool(neg_order > 0 and neg_zero > 1e-3),
        "details": {
            "sizes": f"J={J}, |Δ|={K} (2×2 kernel), I={I}; Ω upper-triangular symbolic, and dense rational",
            "(i) core patch-frame change − [[I⊗Ω, 1⊗γ],[0,1]]": f"{d1} nonzero entries of {law.rows ** 2}",
            "(ii) core W̄ in ι − [Φ]_H [W̄‡]_H (I⊗[Ω]_H)": f"{d2} nonzero entries of {H_core.rows * H_core.cols}",
            "(iii) patch map by the law vs built in κ with padding γ": d3,
            "(iii) linear part unchanged (selection matrix)": d3_linear,
            "(iii) padded locations (t, δ)": n_pad,
            "(iv) Π (I⊗Ω) Πᵀ − Ω⊗I (channel-major)": f"{d4} nonzero entries",
            "control: channel-major matrix on offset-major patches": f"{neg_order} nonzero entries",
            "control: zero padding in κ vs the law": neg_zero,
            "discrepancy column": "nonzero entries (symbolic) + max abs differences (numeric)",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
