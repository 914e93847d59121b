"""Appendix B, Eqn. B.1: on a power ``Aᴷ`` with the frame induced by one frame on ``A``, the
change of frame in stacked homogeneous coordinates ``[x₁; 1; …; x_K; 1]`` is ``I ⊗ [B]_H``.

Method: symbolic.  ``A`` has dimension 2 and a second frame κ with a fully symbolic change
``y = B x + c`` (4 + 2 symbols); ``K = 3``.  Checked exactly, two ways: (i) the core's
``FrameChange.stacked_homogeneous()`` between the power frames minus ``kron(I₃, [B]_H)``
simplifies to the zero matrix; (ii) a point of ``A³`` with symbolic coordinates, asked for
its coordinates in the κ power frame, has stacked homogeneous coordinates
``(I ⊗ [B]_H)`` times its old ones (difference expands to zero).

Negative control: the product frame ``(κ, ι, κ)`` on ``A³`` (a different frame on the second
factor) is not a power frame; its change in stacked homogeneous coordinates is not
``I ⊗ [B]_H``: the difference has nonzero entries.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.spaces import AffineSpace, Point, power_frame, product_frame, stack_homogeneous

ID = "B.1"
STATEMENT = ("on Aᴷ with the induced frame, a change of frame in stacked homogeneous "
             "coordinates is I ⊗ [B]_H")
METHOD = "symbolic"
# Tolerance: none; exact symbolic equality (difference simplified to the zero matrix).


def _nonzero(M) -> int:
    return sum(sp.simplify(e) != 0 for e in M)


def check(fast: bool = False) -> dict:
    K, n = 3, 2
    A = AffineSpace(n, "A")
    B = sp.Matrix(n, n, sp.symbols(f"b0:{n * n}"))
    c = sp.Matrix(sp.symbols(f"c0:{n}"))
    iota = A.reference_frame
    kappa = iota.derive(B, c, name="κ")
    BH = sp.Matrix(iota.change_to(kappa).homogeneous())
    law = sp.kronecker_product(sp.eye(K), BH)

    change = power_frame(iota, K).change_to(power_frame(kappa, K))
    d1 = _nonzero(sp.Matrix(change.stacked_homogeneous()) - law)

    x = sp.Matrix(sp.symbols(f"x0:{n * K}"))
    p = Point(power_frame(iota, K), x)
    y_bar = sp.Matrix(stack_homogeneous(A ** K, p.coords(power_frame(kappa, K))))
    x_bar = sp.Matrix(stack_homogeneous(A ** K, x))
    d2 = sum(sp.expand(e) != 0 for e in (y_bar - law * x_bar))

    mixed = product_frame([kappa, iota, kappa])
    y_mixed = sp.Matrix(stack_homogeneous(A ** K, p.coords(mixed)))
    neg = sum(sp.expand(e) != 0 for e in (y_mixed - law * x_bar))

    return {
        "holds": d1 == 0 and d2 == 0,
        "discrepancy": float(d1 + d2),
        "negative_control": ("the mixed product frame (κ, ι, κ) on A³ is not a power frame: "
                             "its change is not I ⊗ [B]_H"),
        "negative_discrepancy": float(neg),
        "negative_fails": neg > 0,
        "details": {
            "[B]_H": str(BH.tolist()),
            "stacked_homogeneous() − kron(I₃, [B]_H)": f"{d1} nonzero entries of {law.rows ** 2}",
            "point of A³: ȳ − (I ⊗ [B]_H) x̄": f"{d2} nonzero entries of {len(x_bar)}",
            "(κ, ι, κ): ȳ − (I ⊗ [B]_H) x̄": f"{neg} nonzero entries of {len(x_bar)}",
            "discrepancy column": "number of entries of the difference that are not zero",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
