"""Appendix C, Prop. C.1 / Cor. C.2: the tangent space of an affine space at any point is
canonically its vector space, so tangent vectors transform by ``B`` only (no ``c``) and
their coordinates do not depend on the base point.

Method: symbolic.  ``A`` has dimension 3; a second frame κ has a fully symbolic change
``y = B x + c`` (9 + 3 symbols).  A tangent vector at ``p`` is the velocity of the curve
``t ↦ p + t v`` (built with the core's ``Point + Vector``).  Checked exactly:
(i) ``d/dt (p + t v).coords(κ)`` minus ``B v`` is zero; (ii) the core's
``Vector(ι, v).coords(κ)`` minus that velocity is zero; (iii) the velocity's derivatives
with respect to the base-point symbols ``p`` and to the translation symbols ``c`` are zero
(base-point and translation independent).

Negative control: in a *nonlinear* chart ``y = x + x³`` (componentwise) the velocity's
coordinates ``J(p) v`` depend on the base point, and transforming a vector like a point
(``B v + c``) depends on ``c``: both differences must be nonzero.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.spaces import AffineSpace, Point, Vector

ID = "C.1/C.2"
STATEMENT = ("tangent vectors of an affine space are its vectors: they transform by B only, "
             "independent of the base point")
METHOD = "symbolic"
# Tolerance: none; exact symbolic equality (entries simplified to 0).


def check(fast: bool = False) -> dict:
    n = 2 if fast else 3
    A = AffineSpace(n, "A")
    B = sp.Matrix(n, n, sp.symbols(f"b0:{n * n}"))
    c_syms = sp.symbols(f"c0:{n}")
    c = sp.Matrix(c_syms)
    iota = A.reference_frame
    kappa = iota.derive(B, c, name="κ")
    p_syms, v_syms = sp.symbols(f"p0:{n}"), sp.symbols(f"v0:{n}")
    p, v, t = sp.Matrix(p_syms), sp.Matrix(v_syms), sp.Symbol("t")

    curve = Point(iota, p) + Vector(iota, t * v)
    velocity = sp.Matrix(curve.coords(kappa)).diff(t)
    d_law = sum(sp.simplify(e) != 0 for e in (velocity - B * v))
    d_core = sum(sp.simplify(e) != 0 for e in (sp.Matrix(Vector(iota, v).coords(kappa)) - velocity))
    d_base = sum(sp.simplify(velocity.diff(s)[k]) != 0 for s in p_syms + c_syms for k in range(n))

    # negative control: a nonlinear chart y = x + x³, and "vector transformed like a point"
    chart = sp.Matrix([pk + t * vk + (pk + t * vk) ** 3 for pk, vk in zip(p, v)])
    vel_chart = chart.diff(t).subs(t, 0)
    neg_base = sum(sp.simplify(vel_chart.diff(s)[k]) != 0 for s in p_syms for k in range(n))
    as_point = sp.Matrix(Point(iota, v).coords(kappa))
    neg_c = sum(sp.simplify(e) != 0 for e in (as_point - velocity.subs(t, 0)))

    bad = d_law + d_core + d_base
    return {
        "holds": bad == 0,
        "discrepancy": float(bad),
        "negative_control": ("a nonlinear chart y = x + x³ (velocity depends on the base "
                             "point) and a vector transformed like a point (depends on c)"),
        "negative_discrepancy": float(min(neg_base, neg_c)),
        "negative_fails": neg_base > 0 and neg_c > 0,
        "details": {
            "velocity of t ↦ p + t v in κ": str(velocity.T.tolist()[0]),
            "nonzero entries: velocity − B v": d_law,
            "nonzero entries: Vector(ι, v).coords(κ) − velocity": d_core,
            "nonzero ∂(velocity)/∂(p, c)": d_base,
            "nonlinear chart: nonzero ∂(J(p) v)/∂p": neg_base,
            "vector as point: nonzero entries of (B v + c) − B v": neg_c,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
