"""Appendix B, Eqn. B.1: on a power ``Aᴷ`` with the frame induced by one frame on ``A``, the
change of frame in stacked homogeneous coordinates ``[x₁; 1; …; x_K; 1]`` is ``I ⊗ [B]_H``.

Method: symbolic.  ``A`` has dimension 2, a rational frame ι (itself derived from the
reference frame, so the changes are chained through it) and a second frame κ with a fully
symbolic change ``y = B x + c`` from ι (4 + 2 free symbols); ``K = 3``.

The change on ``Aᴷ`` is found *point by point*, not read off its construction:
``K·(n+1) = 9`` affinely independent points of ``A³`` with rational coordinates in the power
frame ι³ are asked (through the core's ``Point.coords``) for their coordinates in κ³.  The
affine change ``ȳ = H x̄`` (``H`` of size ``Kn + 1``) is solved exactly from these
points (least-squares normal equations; the points span, so the solution is unique, and
the residual at all 9 points is checked to be zero).  ``E`` embeds ``[x₁; …; x_K; 1]``
into stacked homogeneous coordinates ``[x₁; 1; …; x_K; 1]`` (built from unit vectors).
Checked exactly:

(i) ``E H − (I ⊗ [B]_H) E`` is the zero matrix (B.1 for the power frame), with
    ``[B]_H`` written from the symbols, not asked of the library;
(ii) the same point-by-point solve for the product frame ``(κ₁, κ₂, κ₃)`` of three
     *different* symbolic frames (its own symbols ``Bₖ, cₖ`` each) gives
     ``E H − block_diag([B₁]_H, [B₂]_H, [B₃]_H) E = 0``: every factor's translation sits
     in its own slot, in the order of the factors (the paper's order ``(a₁, …, a_K)``);
(iii) the core's ``FrameChange.stacked_homogeneous()`` equals the point-solved ``E H``
      restricted to stacked coordinates (entrywise ``stacked_homogeneous() E = E H``), for
      the power frame and for the product of three different frames.

Negative control (the same point-by-point check): the product frame ``(κ, ι, κ)`` on
``A³`` is not a power frame; its point-solved change is not ``I ⊗ [B]_H``: the
difference has nonzero entries.
"""

from __future__ import annotations

import itertools

import sympy as sp
from sympy.polys.matrices import DomainMatrix

from geomkfac.spaces import AffineSpace, Point, power_frame, product_frame

ID = "B.1"
STATEMENT = ("on Aᴷ with the induced frame, a change of frame in stacked homogeneous "
             "coordinates is I ⊗ [B]_H")
METHOD = "symbolic"
# Tolerance: none; exact symbolic equality (every entry is a polynomial in the symbols;
# the difference expands to the zero polynomial).

K, N_DIM = 3, 2


def _dm(M):
    """``M`` as a DomainMatrix over polynomials with rational coefficients (fast, exact)."""
    return DomainMatrix.from_Matrix(sp.Matrix(M).applyfunc(sp.expand))


def _mul(*mats):
    """Exact product of sympy matrices of polynomials (DomainMatrix arithmetic)."""
    dms = [_dm(M) for M in mats]
    dom = dms[0].domain
    for d in dms[1:]:
        dom = dom.unify(d.domain)
    out = dms[0].convert_to(dom)
    for d in dms[1:]:
        out = out * d.convert_to(dom)
    return out.to_Matrix()


def _nonzero(M) -> int:
    return sum(sp.expand(e) != 0 for e in M)


def _points(K: int, n: int) -> list[sp.Matrix]:
    """``K·(n+1)`` affinely independent rational points of ``(Rⁿ)ᴷ`` (stacked coordinates).

    Slot ``k`` runs through the ``n + 1`` vertices of a simplex while the other slots sit
    at fixed rational points: these points affinely span ``Rᴷⁿ``.
    """
    base = [sp.Rational(2 * k + 1, 3) for k in range(K * n)]
    pts = []
    for k in range(K):
        for j in range(n + 1):
            x = list(base)
            if j > 0:
                x[k * n + j - 1] += sp.Rational(j + 2, 2)
            else:
                x[k * n] -= sp.Rational(1, 5)
            pts.append(sp.Matrix(x))
    return pts


def _embedding(K: int, n: int) -> sp.Matrix:
    """``E``: ``[x₁; …; x_K; 1] ↦ [x₁; 1; …; x_K; 1]`` (unit vectors, no library code)."""
    E = sp.zeros(K * (n + 1), K * n + 1)
    for k, i in itertools.product(range(K), range(n)):
        E[k * (n + 1) + i, k * n + i] = 1
    for k in range(K):
        E[k * (n + 1) + n, K * n] = 1
    return E


def _solve_change(source, target, pts) -> tuple[sp.Matrix, int]:
    """The homogeneous affine change ``H`` with ``ȳ = H x̄`` at every point, solved from the
    coordinates of the points in ``source`` and ``target``; also the residual count."""
    Xb = sp.Matrix.hstack(*[x.col_join(sp.Matrix([1])) for x in pts])
    Yb = sp.Matrix.hstack(*[sp.Matrix(Point(source, x).coords(target)).col_join(sp.Matrix([1]))
                            for x in pts])
    H = _mul(Yb, Xb.T * (Xb * Xb.T).inv())     # exact normal equations (Xb has full row rank)
    residual = _nonzero(_mul(H, Xb) - Yb)
    return H, residual


def _hom(B, c) -> sp.Matrix:
    n = B.rows
    return sp.Matrix.vstack(sp.Matrix.hstack(B, c), sp.Matrix([[0] * n + [1]]))


def check(fast: bool = False) -> dict:
    n = N_DIM
    A = AffineSpace(n, "A")
    iota = A.reference_frame.derive(sp.Matrix([[2, 1], [-1, 1]]), sp.Matrix([1, -3]), name="ι")

    def symbolic_frame(tag):
        B = sp.Matrix(n, n, sp.symbols(f"b{tag}_0:{n * n}"))
        c = sp.Matrix(sp.symbols(f"c{tag}_0:{n}"))
        return iota.derive(B, c, name=f"κ{tag}"), B, c

    kappa, B, c = symbolic_frame("")
    law = sp.kronecker_product(sp.eye(K), _hom(B, c))
    E = _embedding(K, n)
    pts = _points(K, n)
    Xb = sp.Matrix.hstack(*[x.col_join(sp.Matrix([1])) for x in pts])
    rank = Xb.rank()

    # (i) the power frame
    H, r1 = _solve_change(power_frame(iota, K), power_frame(kappa, K), pts)
    d1 = _nonzero(_mul(E, H) - _mul(law, E))

    # (ii) a product of three different symbolic frames, in the factors' order
    frames = [symbolic_frame(str(k + 1)) for k in range(K)]
    Hp, r2 = _solve_change(power_frame(iota, K), product_frame([f for f, _, _ in frames]), pts)
    law_p = sp.diag(*[_hom(Bk, ck) for _, Bk, ck in frames])
    d2 = _nonzero(_mul(E, Hp) - _mul(law_p, E))

    # (iii) the core's stacked_homogeneous agrees with the point-solved change, for the
    # power frame and for the product of three different frames (where the order of the
    # factors' blocks shows)
    stacked = sp.Matrix(power_frame(iota, K).change_to(power_frame(kappa, K)).stacked_homogeneous())
    d3 = _nonzero(_mul(stacked, E) - _mul(E, H))
    stacked_p = sp.Matrix(power_frame(iota, K).change_to(product_frame([f for f, _, _ in frames]))
                          .stacked_homogeneous())
    d3 += _nonzero(_mul(stacked_p, E) - _mul(E, Hp))

    # negative control: the mixed product frame (κ, ι, κ), same point-by-point check
    Hm, r3 = _solve_change(power_frame(iota, K), product_frame([kappa, iota, kappa]), pts)
    neg = _nonzero(_mul(E, Hm) - _mul(law, E))

    bad = d1 + d2 + d3 + r1 + r2 + r3 + (rank != K * n + 1)
    return {
        "holds": bad == 0,
        "discrepancy": float(bad),
        "negative_control": ("the mixed product frame (κ, ι, κ) on A³ is not a power frame: "
                             "its point-by-point change is not I ⊗ [B]_H"),
        "negative_discrepancy": float(neg),
        "negative_fails": neg > 0,
        "details": {
            "points": f"{len(pts)} = K(n+1) points of A³, affine rank {rank} (need {K * n + 1})",
            "residual of ȳ = H x̄ at the points (power, product, mixed)": (r1, r2, r3),
            "(i) E H − (I ⊗ [B]_H) E, power frame": f"{d1} nonzero entries of {len(law * E)}",
            "(ii) E H − block_diag([Bₖ]_H) E, frame (κ₁, κ₂, κ₃)":
                f"{d2} nonzero entries of {len(law_p * E)}",
            "(iii) stacked_homogeneous() E − E H (power and product frames)": f"{d3} nonzero entries",
            "(κ, ι, κ): E H − (I ⊗ [B]_H) E": f"{neg} nonzero entries",
            "discrepancy column": "number of entries of the differences that are not zero",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
