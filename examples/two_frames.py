"""One metric shown in two frames, exactly (sympy) and in floats (NumPy).

A metric g on a 2-dimensional affine space is given by its matrix in the
reference frame ι. A second frame κ has coordinates y = B x + c. The matrix of g
in κ follows the covariant law G_κ = B⁻ᵀ G_ι B⁻¹; the translation c plays no
role. The number g(u, v) is the same whichever frame computes it, and so is the
natural gradient g⁻¹ω as a vector.

Run:  python examples/two_frames.py
"""

import numpy as np
import sympy

from geomkfac.core import AffineSpace, Covector, Metric, Vector


def show(title, obj):
    print(title)
    print(sympy.pretty(obj) if isinstance(obj, sympy.MatrixBase) else obj)
    print()


def symbolic():
    print("=== symbolic (exact) ===")
    A = AffineSpace(2, "A")
    s = sympy.Symbol("s", positive=True)
    iota = A.reference_frame
    kappa = iota.derive(sympy.Matrix([[s, 0], [1, 1]]), sympy.Matrix([3, 0]), name="κ")
    g = Metric(iota, sympy.Matrix([[2, 1], [1, 1]]))
    show("G in ι:", g.matrix(iota))
    show("G in κ (B⁻ᵀ G B⁻¹):", sympy.simplify(g.matrix(kappa)))
    u = Vector(iota, sympy.Matrix([1, 2]))
    show("u in ι and in κ (B u, no translation):", sympy.Matrix.hstack(u.coords(iota), u.coords(kappa)))
    in_kappa = Metric(kappa, g.matrix(kappa))(Vector(kappa, u.coords(kappa)), Vector(kappa, u.coords(kappa)))
    print("g(u, u) in ι:", g(u, u), "  in κ:", sympy.simplify(in_kappa))
    w = Covector(iota, sympy.Matrix([1, 0]))
    v = g.sharp(w)
    show("natural gradient g⁻¹ω in ι:", v.coords(iota))
    v_k = g.sharp(Covector(kappa, w.coords(kappa)))
    print("computed in κ and read back in ι equals it:", v_k.equals(v, iota))
    print()


def numeric():
    print("=== numeric (float64) ===")
    A = AffineSpace(2, "A")
    iota = A.reference_frame
    kappa = iota.derive(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([3.0, 0.0]), name="κ")
    g = Metric(iota, np.array([[2.0, 1.0], [1.0, 1.0]]))
    print("G in ι:\n", g.matrix(iota))
    print("G in κ:\n", g.matrix(kappa))
    u = Vector(iota, [1.0, 2.0])
    gk = Metric(kappa, g.matrix(kappa))
    print("g(u, u) in ι:", g(u, u), "  in κ:", gk(u, u))
    print("natural gradient in ι:", g.sharp(Covector(iota, [1.0, 0.0])).coords(iota))


if __name__ == "__main__":
    symbolic()
    numeric()
