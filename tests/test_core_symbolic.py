"""The same constructions in exact arithmetic (Rationals, symbols) and in floats agree."""

import numpy as np
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.maps import AffineMap, AffineMaps
from geomkfac.metrics import KroneckerMetric, Metric, SecondMoment, additive_metric, pullback
from geomkfac.spaces import AffineSpace, Covector, Point, Vector, product_frame

# numeric side vs exact values converted to float: small rational matrices, errors ~1e-14
TOL = 1e-9


def rational_frame(rng, space, sym=False):
    """A frame with a unit-triangular-times-diagonal (hence invertible) rational B."""
    n = space.dim
    L = np.tril(rng.integers(-2, 3, size=(n, n)), -1) + np.diag(rng.integers(1, 4, size=n))
    U = np.triu(rng.integers(-1, 2, size=(n, n)), 1) + np.eye(n, dtype=int)
    B = L @ U
    c = rng.integers(-3, 4, size=n)
    if sym:
        return space.reference_frame.derive(sympy.Matrix(B.tolist()), sympy.Matrix(c.tolist())), B, c
    return space.reference_frame.derive(B.astype(float), c.astype(float)), B, c


def as_float(M):
    return np.array(sympy.Matrix(M).evalf(), dtype=float).reshape(np.shape(M) if not isinstance(M, sympy.MatrixBase) else M.shape)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_metric_change_of_frame_agrees(n, seed):
    rng = np.random.default_rng(seed)
    A = AffineSpace(n)
    M = rng.integers(-2, 3, size=(n, n))
    G = M @ M.T + np.eye(n, dtype=int)
    ks, B, c = rational_frame(rng, A, sym=True)
    kn = A.reference_frame.derive(B.astype(float), c.astype(float))
    gs = Metric(A.reference_frame, sympy.Matrix(G.tolist()))
    gn = Metric(A.reference_frame, G.astype(float))
    Gs = gs.matrix(ks)
    assert all(e.is_Rational for e in Gs)  # exact
    np.testing.assert_allclose(as_float(Gs), gn.matrix(kn), atol=TOL)
    w = [int(x) for x in rng.integers(-3, 4, size=n)]
    vs = gs.sharp(Covector(ks, w)).coords(ks)
    vn = gn.sharp(Covector(kn, np.array(w, float))).coords(kn)
    np.testing.assert_allclose(as_float(vs).ravel(), vn, atol=TOL)


def test_symbolic_invariance_is_exact_with_symbols():
    A = AffineSpace(2, "A")
    a, b, t = sympy.symbols("a b t", positive=True)
    k = A.reference_frame.derive(sympy.Matrix([[a, 1], [0, b]]), [t, 0])
    g = Metric(A.reference_frame, sympy.Matrix([[2, 1], [1, 3]]))
    u, v = Vector(A.reference_frame, [1, t]), Vector(A.reference_frame, [a, 2])
    gk = Metric(k, g.matrix(k))
    assert sympy.simplify(gk(Vector(k, u.coords(k)), Vector(k, v.coords(k))) - g(u, v)) == 0
    w = Covector(A.reference_frame, [1, -1])
    assert sympy.simplify(Covector(k, w.coords(k))(Vector(k, v.coords(k))) - w(v)) == 0
    # negative control: a covector transformed with B instead of B⁻ᵀ
    ch = A.reference_frame.change_to(k)
    wrong = (ch.B * w.coords()).T * v.coords(k)
    assert sympy.simplify(wrong[0, 0] - w(v)) != 0


def test_affine_map_and_induced_frame_agree():
    rng = np.random.default_rng(5)
    A, Z = AffineSpace(2, "A"), AffineSpace(2, "Z")
    ksA, BA, cA = rational_frame(rng, A, sym=True)
    ksZ, BZ, cZ = rational_frame(rng, Z, sym=True)
    knA = A.reference_frame.derive(BA.astype(float), cA.astype(float))
    knZ = Z.reference_frame.derive(BZ.astype(float), cZ.astype(float))
    W, b = [[1, 2], [3, -1]], [1, 0]
    fs = AffineMap(A.reference_frame, Z.reference_frame, sympy.Matrix(W), sympy.Matrix(b))
    fn = AffineMap(A.reference_frame, Z.reference_frame, np.array(W, float), np.array(b, float))
    np.testing.assert_allclose(as_float(fs.matrix(ksA, ksZ)), fn.matrix(knA, knZ), atol=TOL)
    Aff = AffineMaps(A, Z)
    xs = Aff.point(fs).coords(Aff.frame(ksA, ksZ))
    xn = Aff.point(fn).coords(Aff.frame(knA, knZ))
    np.testing.assert_allclose(as_float(xs).ravel(), xn, atol=TOL)
    assert xs == sympy.ImmutableMatrix(fs.matrix(ksA, ksZ)).T.reshape(6, 1)  # column-stacking, exactly


def test_kronecker_metric_exact_sharp_is_inverse_of_kron():
    A, Z = AffineSpace(1, "A"), AffineSpace(2, "Z")
    pts = [Point(A.reference_frame, [sympy.Integer(x)]) for x in (1, 2, 4)]
    from geomkfac.metrics import second_moment

    S = second_moment(pts)
    assert S.matrix() == sympy.Matrix([[sympy.Rational(21, 3), sympy.Rational(7, 3)], [sympy.Rational(7, 3), 1]])
    g = Metric(Z.reference_frame, sympy.Matrix([[2, 1], [1, 1]]))
    K = KroneckerMetric(S, g)
    w = Covector(K.frame, [1, 0, -1, 2])
    v = K.sharp(w).coords()
    dense = sympy.Matrix(K.matrix())
    assert dense * v == sympy.Matrix([1, 0, -1, 2])  # exact
    # same construction numerically
    Sn = SecondMoment.from_coords(A.reference_frame, np.array([[1.0], [2.0], [4.0]]))
    Kn = KroneckerMetric(Sn, Metric(Z.reference_frame, np.array([[2.0, 1.0], [1.0, 1.0]])))
    vn = Kn.sharp(Covector(Kn.frame, np.array([1.0, 0.0, -1.0, 2.0]))).coords()
    np.testing.assert_allclose(as_float(v).ravel(), vn, atol=TOL)


def test_symbolic_pullback_and_additive():
    A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
    x, y = sympy.symbols("x y")
    from geomkfac.maps import SmoothMap

    f = SmoothMap.from_sympy(A.reference_frame, Z.reference_frame, [x * y], [x, y])
    p = Point(A.reference_frame, [2, 3])
    pb = pullback(Metric(Z.reference_frame, sympy.Matrix([[1]])), f, at=p)
    assert pb.matrix() == sympy.Matrix([[9, 6], [6, 4]])
    assert pb.is_psd() is True and pb.rank() == 1 and not pb.is_nondegenerate()
    g = additive_metric([pb, Metric(Z.reference_frame, sympy.Matrix([[5]]))])
    assert g.matrix(product_frame([A.reference_frame, Z.reference_frame])) == sympy.diag(sympy.Matrix([[9, 6], [6, 4]]), 5)


def test_symbolic_display():
    A = AffineSpace(1, "A")
    a = sympy.Symbol("a", positive=True)
    g = Metric(A.reference_frame, sympy.Matrix([[a]]))
    k = A.reference_frame.derive(sympy.Matrix([[2]]), [0], name="κ")
    assert "a/4" in str(g.matrix(k)) and "a" in sympy.pretty(g)
    assert r"\frac{a}{4}" in Metric(k, g.matrix(k))._repr_latex_()
