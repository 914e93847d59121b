"""Appendix B.3/B.4: a covector (a differential ``dh``) transforms by ``B⁻ᵀ``, so a covector
given in one frame paired with a vector given in another is the same number in every frame.

Method: symbolic.  ``A`` has dimension 2; three frames: the reference frame ι, κ with a
fully symbolic change ``y = B x + c`` from ι (4 + 2 free symbols) and λ with a rational
change ``y = L x + l`` derived from κ (so the changes ι → λ are chained through κ).

The covector is the differential of a polynomial ``h(x) = x₀² x₁ + 3 x₀ − x₁³`` at the point
``p = (3/2, −2)``.  Its coordinates in κ are obtained *without the covector law*:
``h`` is written as a function of the κ coordinates, ``h(B⁻¹(y − c))`` (as
``h(p + B⁻¹(y − y₀))``, ``y₀ = B p + c``, the same function), and differentiated in ``y`` by
sympy at ``y = y₀``.  Checked exactly (differences simplified to zero):

(i) the core's ``Covector(ι, ∇h(p)).coords(κ)`` equals that gradient (the law ``B⁻ᵀ``);
(ii) the core's ``ω(v)`` for ``ω`` given in κ and a vector ``v`` given in λ (free
     coordinates ``v_λ``) equals the directional derivative ``d/dt h(p + t v)`` at ``t = 0``
     with ``v``'s ι coordinates written by hand, ``B⁻¹ L⁻¹ v_λ``;
(iii) ``ω.coords(λ)`` equals the gradient of ``h`` written in λ coordinates.

Negative control (the same comparison as (i)): transforming the gradient like a vector,
``Vector(ι, ∇h(p)).coords(κ) = B ∇h``, does not give the gradient in κ: the difference has
nonzero entries.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.spaces import AffineSpace, Covector, Vector

ID = "B.3 covectors"
STATEMENT = ("covectors transform by B⁻ᵀ: a covector in one frame paired with a vector in "
             "another gives the same number as in any frame")
METHOD = "symbolic"
# Tolerance: none; exact symbolic equality (differences, rational functions of the
# symbols, cancelled to the zero polynomial).


def _zero(e) -> bool:
    """Exact zero test of a rational function of the symbols (cancel to a normal form)."""
    return sp.cancel(sp.together(e)) == 0


def _nonzero(M) -> int:
    return sum(not _zero(e) for e in sp.Matrix(M))


def check(fast: bool = False) -> dict:
    n = 2
    A = AffineSpace(n, "A")
    iota = A.reference_frame
    B = sp.Matrix(n, n, sp.symbols(f"b0:{n * n}"))
    c = sp.Matrix(sp.symbols(f"c0:{n}"))
    kappa = iota.derive(B, c, name="κ")
    L = sp.Matrix([[1, 2], [-1, 3]])
    ell = sp.Matrix([sp.Rational(1, 2), -2])
    lam = kappa.derive(L, ell, name="λ")

    x = sp.Matrix(sp.symbols(f"x0:{n}"))
    h = x[0] ** 2 * x[1] + 3 * x[0] - x[1] ** 3
    p = sp.Matrix([sp.Rational(3, 2), -2])
    grad_iota = sp.Matrix([h.diff(xi) for xi in x]).subs(dict(zip(x, p)))

    # h in κ coordinates, differentiated there (no covector law used).  x = B⁻¹(y − c) is
    # written as p + B⁻¹(y − y₀) with y₀ = B p + c (the same affine function of y), so that
    # at y = y₀ the argument is p without simplification.
    y = sp.Matrix(sp.symbols(f"y0:{n}"))
    Binv = B.adjugate() / B.det()
    y0 = B * p + c
    h_kappa = h.subs(dict(zip(x, p + Binv * (y - y0))), simultaneous=True)
    grad_kappa = sp.Matrix([h_kappa.diff(yi) for yi in y]).subs(dict(zip(y, y0)),
                                                                  simultaneous=True)

    omega = Covector(iota, grad_iota)
    d1 = _nonzero(sp.Matrix(omega.coords(kappa)) - grad_kappa)

    # (ii) ω given in κ, v given in λ: pairing vs directional derivative
    omega_k = Covector(kappa, grad_kappa)
    v_lam = sp.Matrix(sp.symbols(f"v0:{n}"))
    v_iota = Binv * L.inv() * v_lam             # by hand: λ = L κ + l, κ = B ι + c
    t = sp.Symbol("t")
    dirderiv = h.subs(dict(zip(x, p + t * v_iota)), simultaneous=True).diff(t).subs(t, 0)
    d2 = int(not _zero(omega_k(Vector(lam, v_lam)) - dirderiv))

    # (iii) λ coordinates: gradient of h written in λ coordinates
    z = sp.Matrix(sp.symbols(f"z0:{n}"))
    z0 = L * y0 + ell                            # λ coordinates of p
    h_lam = h.subs(dict(zip(x, p + Binv * L.inv() * (z - z0))), simultaneous=True)
    grad_lam = sp.Matrix([h_lam.diff(zi) for zi in z]).subs(dict(zip(z, z0)), simultaneous=True)
    d3 = _nonzero(sp.Matrix(omega_k.coords(lam)) - grad_lam)

    # negative control: the gradient transformed like a vector
    neg = _nonzero(sp.Matrix(Vector(iota, grad_iota).coords(kappa)) - grad_kappa)

    bad = d1 + d2 + d3
    return {
        "holds": bad == 0,
        "discrepancy": float(bad),
        "negative_control": ("the gradient transformed like a vector (B ∇h) equals the "
                             "gradient in κ (must not)"),
        "negative_discrepancy": float(neg),
        "negative_fails": neg > 0,
        "details": {
            "h": str(h),
            "(i) Covector(ι, ∇h).coords(κ) − ∇_y h(B⁻¹(y − c))": f"{d1} nonzero entries of {n}",
            "(ii) ω_κ(v_λ) − d/dt h(p + t v)": f"{d2} nonzero",
            "(iii) ω.coords(λ) − ∇_z h in λ": f"{d3} nonzero entries of {n}",
            "control: B ∇h − ∇_y h": f"{neg} nonzero entries of {n}",
            "discrepancy column": "number of entries of the differences that are not zero",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
