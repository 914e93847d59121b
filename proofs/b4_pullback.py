"""Appendix B.4: the pullback ``φ*g(p)(u, v) = g(φ(p))(φ_* u, φ_* v)`` of a metric along a map
— affine or smooth — has matrix ``Jᵀ G J`` in any frames, whatever frame ``g`` is given in;
it is functorial, ``(h ∘ f)*g = f*(h*g)`` and ``id*g = g``.

Method: symbolic (exact rational arithmetic).  Spaces ``A``, ``M``, ``Z`` of dimension 2,
each with a reference frame and rational frames derived from it.  ``f : A → M`` is a smooth
map (``SmoothMap.from_sympy``, ``f(x) = (x₀ + x₁², x₀ x₁ − x₁)`` in the reference frames);
``h : M → Z`` an ``AffineMap`` given in (κ_M, ι_Z); the metric ``g`` on ``Z`` is given in a
third frame κ_Z.  The reference value is computed by a different route, a **Hessian**:
with ``q(z) = ½ (z − z₀)ᵀ G (z − z₀)`` in κ_Z coordinates and ``z₀ = φ(p)``, the Hessian of
``q ∘ φ`` at ``p`` is ``Jᵀ G J`` (the term with ``∇q(z₀) = 0`` drops).  ``q ∘ φ`` is written
in the coordinates of the frame asked for, every change of coordinates written by hand
(``x = B⁻¹(y − c)``), and differentiated twice by sympy.  Checked exactly:

(i) ``Pullback(g, h)`` (affine: a constant metric) in a frame λ_M ≠ κ_M equals the Hessian
    of ``q ∘ h`` in λ_M coordinates;
(ii) the pullback along the smooth ``f`` of ``h*g``, ``Pullback(Pullback(g, h), f, at=p)``,
     with ``p`` given in κ_A, equals the Hessian of ``q ∘ h ∘ f`` in κ_A coordinates at
     ``p``; so does ``Pullback(g, h ∘ f, at=p)`` (functoriality, both sides against the
     Hessian and against each other); the same with a smooth ``s : M → Z`` (given in
     (κ_M, ι_Z)) in place of ``h``, where ``s*g`` is a genuine field: both sides are built at
     other base points and moved to ``p`` with ``.at``;
(iii) ``Pullback(g, AffineMap.identity(λ_Z))`` has ``g``'s matrix in three frames
      (``id*g = g``), and pulling back along ``f`` then along the identity of ``A`` changes
      nothing;
(iv) the pullback of the covector ``ω = d(wᵀ z_κ)`` given in κ_Z along ``h ∘ f``
     (``Map.pullback_covector``) is the gradient of ``wᵀ z_κ(h(f(x)))`` in κ_A coordinates.

Negative control (the same Hessian comparison as (i)): reading ``G`` as if it were given in
the map's codomain frame ι_Z (``Pullback(Metric(ι_Z, G), h)``) does not give the Hessian.
"""

from __future__ import annotations

import sympy as sp

from geomkfac.maps import AffineMap, SmoothMap
from geomkfac.metrics import Metric, Pullback
from geomkfac.spaces import AffineSpace, Covector, Point

ID = "B.4"
STATEMENT = ("the pullback φ*g of a metric along an affine or smooth map is Jᵀ G J in any "
             "frames; (h ∘ f)*g = f*(h*g) and id*g = g")
METHOD = "symbolic"
# Tolerance: none; exact rational arithmetic (differences must be exactly zero).

R = sp.Rational


def _nz(M) -> int:
    return sum(sp.expand(e) != 0 for e in sp.Matrix(M))


class _Hand:
    """A frame derived from the reference frame by ``y = B r + c``, with the coordinate
    conversions written by hand (no library code)."""

    def __init__(self, space, B, c, name):
        self.B, self.c = sp.Matrix(B), sp.Matrix(c)
        self.frame = space.reference_frame.derive(self.B, self.c, name=name)

    def to_ref(self, y):
        return self.B.inv() * (sp.Matrix(y) - self.c)

    def from_ref(self, r):
        return self.B * sp.Matrix(r) + self.c


def _hessian(expr, syms, at):
    """Hessian of a polynomial at a rational point (sympy Poly arithmetic, exact)."""
    P = sp.Poly(sp.expand(expr), *syms)
    pt = list(at)
    return sp.Matrix(len(syms), len(syms),
                     lambda i, j: P.diff(syms[i]).diff(syms[j]).eval(dict(zip(syms, pt))))


def check(fast: bool = False) -> dict:
    A, M, Z = AffineSpace(2, "A"), AffineSpace(2, "M"), AffineSpace(2, "Z")
    kA = _Hand(A, [[2, 1], [0, 1]], [1, -1], "κ_A")
    kM = _Hand(M, [[1, 0], [3, 1]], [0, 2], "κ_M")
    lM = _Hand(M, [[0, 1], [-1, 2]], [R(1, 2), 1], "λ_M")
    kZ = _Hand(Z, [[1, 2], [1, 3]], [-1, 0], "κ_Z")
    lZ = _Hand(Z, [[2, 0], [1, -1]], [0, 5], "λ_Z")
    G = sp.Matrix([[3, 1], [1, 2]])
    g = Metric(kZ.frame, G)

    x = sp.Matrix(sp.symbols("x0:2"))                     # reference coordinates on A
    f_ref = sp.Matrix([x[0] + x[1] ** 2, x[0] * x[1] - x[1]])
    f = SmoothMap.from_sympy(A.reference_frame, M.reference_frame, f_ref, list(x))
    W, b = sp.Matrix([[1, -2], [R(1, 2), 1]]), sp.Matrix([3, -1])
    h = AffineMap(kM.frame, Z.reference_frame, W, b)      # z_ref = W m_κ + b

    def h_ref(m_ref):                                     # z in κ_Z from m in M's reference
        return kZ.from_ref(W * kM.from_ref(m_ref) + b)

    bad = {}
    # (i) affine pullback in λ_M, against the Hessian of q ∘ h in λ_M coordinates
    y = sp.Matrix(sp.symbols("y0:2"))
    m0 = sp.Matrix([R(1, 3), -2])                         # λ_M coordinates of a point
    z_of_y = h_ref(lM.to_ref(y))
    z0 = z_of_y.subs(dict(zip(y, m0)))
    q = ((z_of_y - z0).T * G * (z_of_y - z0))[0] / 2
    H_i = _hessian(q, list(y), m0)
    hg = Pullback(g, h)
    bad["(i) affine, metric in κ_Z, matrix in λ_M"] = _nz(sp.Matrix(hg.matrix(lM.frame)) - H_i)

    # (ii) smooth map, point in κ_A, functoriality
    p_k = sp.Matrix([R(1, 2), R(-3, 2)])
    x_of_y = kA.to_ref(y)
    z_hf = h_ref(f_ref.subs(dict(zip(x, x_of_y)), simultaneous=True)).applyfunc(sp.expand)
    z0 = z_hf.subs(dict(zip(y, p_k)))
    q = ((z_hf - z0).T * G * (z_hf - z0))[0] / 2
    H_ii = _hessian(q, list(y), p_k)
    p = Point(kA.frame, p_k)
    f_star_h_star_g = Pullback(hg, f, at=p)
    hf_star_g = Pullback(g, h @ f, at=p)
    bad["(ii) f*(h*g) at p, in κ_A"] = _nz(sp.Matrix(f_star_h_star_g.matrix(kA.frame)) - H_ii)
    bad["(ii) (h∘f)*g at p, in κ_A"] = _nz(sp.Matrix(hf_star_g.matrix(kA.frame)) - H_ii)
    bad["(ii) (h∘f)*g − f*(h*g) in the reference frame"] = _nz(
        sp.Matrix(hf_star_g.matrix(A.reference_frame))
        - sp.Matrix(f_star_h_star_g.matrix(A.reference_frame)))

    # (ii') a smooth second map s : M → Z given in (κ_M, ι_Z): s*g is a field, evaluated by
    # f*(s*g) at f(p); the fields are built at other base points and moved with .at
    mk = sp.Matrix(sp.symbols("m0:2"))                   # κ_M coordinates
    s_k = sp.Matrix([mk[0] + mk[1] ** 3 / 3, mk[0] * mk[1] + 2 * mk[1]])
    smap = SmoothMap.from_sympy(kM.frame, Z.reference_frame, s_k, list(mk))
    z_of_y = kZ.from_ref(s_k.subs(dict(zip(mk, kM.from_ref(
        f_ref.subs(dict(zip(x, x_of_y)), simultaneous=True)))), simultaneous=True)).applyfunc(sp.expand)
    z0 = z_of_y.subs(dict(zip(y, p_k)))
    q = ((z_of_y - z0).T * G * (z_of_y - z0))[0] / 2
    H_s = _hessian(q, list(y), p_k)
    sg = Pullback(g, smap, at=Point(M.reference_frame, [0, 0]))
    f_s = Pullback(sg, f, at=Point(A.reference_frame, [1, 1])).at(p)
    sf = Pullback(g, smap @ f, at=Point(kA.frame, [0, 1])).at(p)
    bad["(ii') f*(s*g) at p (fields moved with .at), in κ_A"] = _nz(
        sp.Matrix(f_s.matrix(kA.frame)) - H_s)
    bad["(ii') (s∘f)*g at p, in κ_A"] = _nz(sp.Matrix(sf.matrix(kA.frame)) - H_s)

    # (iii) identities
    idg = Pullback(g, AffineMap.identity(lZ.frame))
    bad["(iii) id*g = g in κ_Z, λ_Z, reference"] = sum(
        _nz(sp.Matrix(idg.matrix(F)) - sp.Matrix(g.matrix(F)))
        for F in (kZ.frame, lZ.frame, Z.reference_frame))
    twice = Pullback(f_star_h_star_g, AffineMap.identity(kA.frame), at=p)
    bad["(iii) id*(f*(h*g)) = f*(h*g)"] = _nz(
        sp.Matrix(twice.matrix(kA.frame)) - sp.Matrix(f_star_h_star_g.matrix(kA.frame)))

    # (iv) covector pullback along h ∘ f: gradient of wᵀ z_κ(h(f(x))) in κ_A coordinates
    w = sp.Matrix([2, -1])
    omega = Covector(kZ.frame, w)
    pulled = (h @ f).pullback_covector(omega, at=p)
    grad = sp.Matrix([(w.T * z_hf)[0].diff(yi) for yi in y]).subs(dict(zip(y, p_k)))
    bad["(iv) (h∘f)*ω in κ_A vs gradient"] = _nz(sp.Matrix(pulled.coords(kA.frame)) - grad)

    # control: G read as if it were given in the map's codomain frame
    wrong = Pullback(Metric(Z.reference_frame, G), h)
    neg = _nz(sp.Matrix(wrong.matrix(lM.frame)) - H_i)

    total = sum(bad.values())
    return {
        "holds": total == 0,
        "discrepancy": float(total),
        "negative_control": ("G read in the map's codomain frame ι_Z instead of its own κ_Z "
                             "gives the Hessian (must not)"),
        "negative_discrepancy": float(neg),
        "negative_fails": neg > 0,
        "details": {
            **{k: f"{v} nonzero entries" for k, v in bad.items()},
            "control: Pullback(Metric(ι_Z, G), h) − Hessian in λ_M": f"{neg} nonzero entries",
            "discrepancy column": "number of nonzero entries of the exact differences",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
