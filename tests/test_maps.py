"""Tests of geomkfac.maps: affine maps (D.2), Aff(A, Z) with column-stacking, smooth maps."""

import numpy as np
import pytest
import sympy

from geomkfac.errors import ConfigurationError, DimensionError, SpaceMismatchError
from geomkfac.maps import AffineMap, AffineMaps, ComposedMap, SmoothMap
from geomkfac.spaces import AffineSpace, Point, Vector

rng = np.random.default_rng(7)


def rand_frame(space, scale=1.0):
    n = space.dim
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return space.reference_frame.derive(Q * rng.uniform(0.5, 2.0, size=n), scale * rng.normal(size=n))


@pytest.fixture
def setup():
    A, Z = AffineSpace(3, "A"), AffineSpace(2, "Z")
    f = AffineMap(A.reference_frame, Z.reference_frame, rng.normal(size=(2, 3)), rng.normal(size=2))
    return A, Z, f


def test_matrix_law_D2_hand_example():
    A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    f = AffineMap(A.reference_frame, Z.reference_frame, [[2.0]], [1.0])  # z = 2a + 1
    kA = A.reference_frame.derive([[4.0]], [1.0])  # a' = 4a + 1  → a = (a' − 1)/4
    kZ = Z.reference_frame.derive([[3.0]], [-1.0])  # z' = 3z − 1
    # z' = 3(2(a' − 1)/4 + 1) − 1 = 1.5 a' + 0.5
    np.testing.assert_allclose(f.matrix(kA, kZ), [[1.5, 0.5]])


def test_matrix_law_is_homogeneous_conjugation(setup):
    A, Z, f = setup
    fA, fZ = rand_frame(A), rand_frame(Z)
    HA = A.reference_frame.change_to(fA).homogeneous()
    HZ = Z.reference_frame.change_to(fZ).homogeneous()
    # tolerance: products/inverses of well-conditioned 3x3/4x4 matrices
    np.testing.assert_allclose(f.homogeneous(fA, fZ), HZ @ f.homogeneous() @ np.linalg.inv(HA), atol=1e-12)


def test_evaluation_and_pushforward_are_frame_free(setup):
    A, Z, f = setup
    fA, fZ = rand_frame(A), rand_frame(Z)
    a = Point(fA, rng.normal(size=3))
    g = AffineMap(fA, fZ, f.linear(fA, fZ), f.offset(fA, fZ))  # the same map, given in other frames
    assert f(a).equals(g(a))
    v = Vector(A.reference_frame, rng.normal(size=3))
    assert f.pushforward(v).equals(g.pushforward(v))
    # negative control: reading the new-frame matrix as if it were in the old frames gives another map
    h = AffineMap(A.reference_frame, Z.reference_frame, f.linear(fA, fZ), f.offset(fA, fZ))
    assert not f(a).equals(h(a))


def test_composition(setup):
    A, Z, f = setup
    Y = AffineSpace(4, "Y")
    g = AffineMap(rand_frame(Z), Y.reference_frame, rng.normal(size=(4, 2)), rng.normal(size=4))
    gf = g @ f
    assert isinstance(gf, AffineMap) and gf.domain is A and gf.codomain is Y
    a = Point(A.reference_frame, rng.normal(size=3))
    assert gf(a).equals(g(f(a)))
    with pytest.raises(SpaceMismatchError, match="cannot compose"):
        f @ g


def test_aff_space_is_cached_and_has_the_right_dimension(setup):
    A, Z, _ = setup
    Aff = AffineMaps(A, Z)
    assert Aff is AffineMaps(A, Z) and Aff.dim == 2 * 4 and Aff.shape == (2, 4)
    fA, fZ = rand_frame(A), rand_frame(Z)
    assert Aff.frame(fA, fZ) is Aff.frame(fA, fZ)
    assert Aff.frame(A.reference_frame, Z.reference_frame) is Aff.reference_frame


def test_induced_coordinates_are_column_stacking(setup):
    A, Z, f = setup
    Aff = AffineMaps(A, Z)
    W, b = f.W, f.b
    x = Aff.point(f).coords(Aff.reference_frame)
    expected = np.concatenate([W[:, 0], W[:, 1], W[:, 2], b])  # columns one after another, bias last
    np.testing.assert_array_equal(x, expected)
    assert not np.allclose(x, np.concatenate([W.reshape(-1), b]))  # row-stacking differs


def test_induced_frame_change_matches_D2(setup):
    """Coordinates of ω in an induced frame = vec of its D.2 matrix there (B = [B_A]_H⁻ᵀ ⊗ B_Z, c = vec(c_Z e_lastᵀ))."""
    A, Z, f = setup
    Aff = AffineMaps(A, Z)
    fA, fZ = rand_frame(A), rand_frame(Z)
    F = Aff.frame(fA, fZ)
    np.testing.assert_allclose(Aff.point(f).coords(F), f.matrix(fA, fZ).reshape(-1, order="F"), atol=1e-12)
    chA = A.reference_frame.change_to(fA)
    chZ = Z.reference_frame.change_to(fZ)
    ch = Aff.reference_frame.change_to(F)
    np.testing.assert_allclose(ch.B, np.kron(np.linalg.inv(chA.homogeneous()).T, chZ.B), atol=1e-12)
    C = np.zeros((2, 4))
    C[:, -1] = chZ.c
    np.testing.assert_allclose(ch.c, C.reshape(-1, order="F"))
    g = Aff.map_of(Point(F, Aff.point(f).coords(F)))
    a = Point(A.reference_frame, rng.normal(size=3))
    assert g(a).equals(f(a))


def test_evaluation_map_jacobian_is_abar_kron_identity(setup):
    """ψ_a(ω) = ω(a) has Jacobian āᵀ ⊗ I in vec([W b]) coordinates, so vec(Dz āᵀ) = ā ⊗ Dz."""
    A, Z, f = setup
    Aff = AffineMaps(A, Z)
    a = Point(A.reference_frame, rng.normal(size=3))
    psi = Aff.evaluation_map(a)
    abar = np.r_[a.coords(), 1.0]
    np.testing.assert_allclose(psi.jacobian(), np.kron(abar[None, :], np.eye(2)))
    assert psi(Aff.point(f)).equals(f(a))
    Dz = rng.normal(size=2)
    np.testing.assert_allclose(psi.jacobian().T @ Dz, np.outer(Dz, abar).reshape(-1, order="F"))
    np.testing.assert_allclose(psi.jacobian().T @ Dz, np.kron(abar, Dz))


def test_smooth_map_symbolic_numeric_and_finite_difference_agree():
    A, Z = AffineSpace(2, "A"), AffineSpace(2, "Z")
    x, y = sympy.symbols("x y")
    exprs = [sympy.tanh(x) * y, x**2 + sympy.sin(y)]
    fs = SmoothMap.from_sympy(A.reference_frame, Z.reference_frame, exprs, [x, y])

    def f(v):
        return np.array([np.tanh(v[0]) * v[1], v[0] ** 2 + np.sin(v[1])])

    def jac(v):
        return np.array([[(1 - np.tanh(v[0]) ** 2) * v[1], np.tanh(v[0])], [2 * v[0], np.cos(v[1])]])

    fn = SmoothMap(A.reference_frame, Z.reference_frame, f, jac)
    fd = SmoothMap(A.reference_frame, Z.reference_frame, f)
    p = Point(A.reference_frame, [0.3, -1.2])
    assert fs(p).equals(fn(p))
    np.testing.assert_allclose(fs.jacobian(p), fn.jacobian(p), atol=1e-12)  # same formulas
    np.testing.assert_allclose(fd.jacobian(p), fn.jacobian(p), atol=1e-8)  # central differences, h ~1e-6
    ps = Point(A.reference_frame, [sympy.Rational(1, 2), 2])
    assert sympy.simplify(fs.jacobian(ps)[1, 0] - 1) == 0


def test_smooth_jacobian_transforms_between_frames():
    A, Z = AffineSpace(2, "A"), AffineSpace(2, "Z")
    fA, fZ = rand_frame(A), rand_frame(Z)

    def f(v):
        return np.array([np.sin(v[0]) + v[1] ** 2, v[0] * v[1]])

    def jac(v):
        return np.array([[np.cos(v[0]), 2 * v[1]], [v[1], v[0]]])

    F = SmoothMap(A.reference_frame, Z.reference_frame, f, jac)
    p = Point(A.reference_frame, [0.1, 0.4])
    # the Jacobian in (fA, fZ) is the derivative of the coordinate expression of f in those frames
    chA, chZ = A.reference_frame.change_to(fA), Z.reference_frame.change_to(fZ)
    g = SmoothMap(fA, fZ, lambda y: chZ.apply_point(f(chA.inverse().apply_point(y))))  # finite differences
    np.testing.assert_allclose(F.jacobian(p, fA, fZ), g.jacobian(p), atol=1e-7)  # FD error ~1e-9
    v = Vector(fA, [1.0, -1.0])
    np.testing.assert_allclose(F.pushforward(v, at=p).coords(fZ), F.jacobian(p, fA, fZ) @ v.coords(fA), atol=1e-12)
    comp = ComposedMap(F, AffineMap(A.reference_frame, A.reference_frame, np.eye(2) * 2, [0.0, 1.0]))
    np.testing.assert_allclose(comp.jacobian(p), jac(2 * p.coords() + [0, 1]) @ (2 * np.eye(2)), atol=1e-12)


def test_map_errors():
    A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
    with pytest.raises(DimensionError, match=r"must be \(1, 2\)"):
        AffineMap(A.reference_frame, Z.reference_frame, np.ones((2, 1)))
    f = AffineMap(A.reference_frame, Z.reference_frame, np.ones((1, 2)))
    with pytest.raises(SpaceMismatchError, match="domain A"):
        f(Point(Z.reference_frame, [0.0]))
    with pytest.raises(DimensionError, match="needs 2 symbols"):
        SmoothMap.from_sympy(A.reference_frame, Z.reference_frame, [sympy.Symbol("x")], [sympy.Symbol("x")])
    with pytest.raises(ConfigurationError, match="needs a callable f"):
        SmoothMap(A.reference_frame, Z.reference_frame, [1.0])
    s = SmoothMap(A.reference_frame, Z.reference_frame, lambda v: v[:1])
    with pytest.raises(ConfigurationError, match="pass at=Point"):
        s.pushforward(Vector(A.reference_frame, [1.0, 0.0]))
