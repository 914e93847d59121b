"""Appendix B.3: changes of affine frame compose and invert — ``y = B x + c`` from ι to κ
followed by ``z = C y + d`` from κ to λ is ``z = (C B) x + (C c + d)``, and the change back
from λ to ι is its inverse — so coordinates obtained through any chain of changes are the
coordinates computed directly.

Method: symbolic (exact rational arithmetic, several random seeds).  ``A`` has dimension 3;
three frames ι, κ, λ are derived *independently* from the reference frame with dense
rational changes ``(Bι, cι)``, ``(Bκ, cκ)``, ``(Bλ, cλ)`` (non-commuting matrices), and a
fourth frame μ is derived from λ.  A point with rational reference coordinates ``r`` has the
directly computed coordinates ``x_ι = Bι r + cι`` etc. (written by hand, no library code).
Checked exactly:

(i) ``ι.change_to(κ).then(κ.change_to(λ))`` applied to ``x_ι`` gives ``x_λ``, and its
    ``B`` is ``Bλ Bι⁻¹``;
(ii) the chain ι → κ → λ → μ with ``then``, and its ``inverse()``, map ``x_ι`` to ``x_μ`` and
     ``x_μ`` back to ``x_ι``;
(iii) vectors (``B`` only) and covectors (``B⁻ᵀ``) through the inverted chain match the
      direct ``B⁻¹``-products, and ``ω(v)`` is unchanged;
(iv) the core's ``Point.coords`` along the tree of frames agrees with the direct values.

Negative control (the same comparison with the direct coordinates): the two changes applied
in the wrong order, ``x ↦ (κ → λ)((ι → κ)…)`` swapped, i.e. first ``κ → λ`` then ``ι → κ`` on
``x_ι``, do not give ``x_λ``.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac.spaces import AffineSpace, Point

ID = "B.3 composition"
STATEMENT = ("changes of frame compose (then) and invert: chained coordinates equal the "
             "coordinates computed directly")
METHOD = "symbolic"
# Tolerance: none; exact rational arithmetic (differences must be exactly zero).


def _rat(rng, rows, cols):
    return sp.Matrix(rows, cols, lambda i, j: sp.Rational(int(rng.integers(-6, 7)), 3))


def _invertible(rng, n):
    while True:
        M = _rat(rng, n, n) + sp.eye(n)
        if M.det() != 0:
            return M


def _nz(M) -> int:
    return sum(e != 0 for e in sp.Matrix(M))


def check(fast: bool = False) -> dict:
    n = 3
    seeds = range(1) if fast else range(3)
    bad, neg_min = 0, None
    for seed in seeds:
        rng = np.random.default_rng(seed)
        A = AffineSpace(n, f"A{seed}")
        ref = A.reference_frame
        (Bi, ci), (Bk, ck), (Bl, cl), (Bm, cm) = [(_invertible(rng, n), _rat(rng, n, 1))
                                                  for _ in range(4)]
        iota = ref.derive(Bi, ci, name="ι")
        kappa = ref.derive(Bk, ck, name="κ")
        lam = ref.derive(Bl, cl, name="λ")
        mu = lam.derive(Bm, cm, name="μ")
        r = _rat(rng, n, 1)
        x_i, x_k, x_l = Bi * r + ci, Bk * r + ck, Bl * r + cl
        x_m = Bm * x_l + cm

        ik, kl, lm = iota.change_to(kappa), kappa.change_to(lam), lam.change_to(mu)
        chain = ik.then(kl)
        bad += _nz(sp.Matrix(chain.apply_point(x_i)) - x_l)
        bad += _nz(sp.Matrix(chain.B) - Bl * Bi.inv())
        long = ik.then(kl).then(lm)
        bad += _nz(sp.Matrix(long.apply_point(x_i)) - x_m)
        back = long.inverse()
        bad += _nz(sp.Matrix(back.apply_point(x_m)) - x_i)
        # vectors and covectors through the inverted chain
        v_m, w_m = _rat(rng, n, 1), _rat(rng, n, 1)
        M_im = Bm * Bl * Bi.inv()                       # linear part ι → μ, by hand
        v_i = sp.Matrix(back.apply_vector(v_m))
        w_i = sp.Matrix(back.apply_covector(w_m))
        bad += _nz(v_i - M_im.inv() * v_m)
        bad += _nz(w_i - M_im.T * w_m)
        bad += int((w_i.T * v_i)[0] != (w_m.T * v_m)[0])
        # the core's own path through the tree of frames
        p = Point(iota, x_i)
        bad += _nz(sp.Matrix(p.coords(mu)) - x_m) + _nz(sp.Matrix(p.coords(kappa)) - x_k)

        # control: the two changes in the wrong order
        wrong = sp.Matrix(ik.apply_point(kl.apply_point(x_i)))
        neg = _nz(wrong - x_l)
        neg_min = neg if neg_min is None else min(neg_min, neg)
    return {
        "holds": bad == 0,
        "discrepancy": float(bad),
        "negative_control": ("the changes ι → κ and κ → λ applied in the wrong order give "
                             "the λ coordinates (must not)"),
        "negative_discrepancy": float(neg_min),
        "negative_fails": neg_min > 0,
        "details": {
            "seeds": len(seeds),
            "frames": "ι, κ, λ derived independently from the reference frame, μ from λ "
                      "(dense rational changes, dim 3)",
            "nonzero entries over all comparisons (points, B, chain, inverse, vectors, "
            "covectors, pairing, Point.coords)": bad,
            "wrong order: nonzero entries of the difference (smallest over seeds)":
                f"{neg_min} of {n}",
            "discrepancy column": "number of nonzero entries of the exact differences",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
