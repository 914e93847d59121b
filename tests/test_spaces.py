"""Tests of geomkfac.spaces: spaces, frames, changes of frame, points/vectors/covectors."""

import numpy as np
import pytest
import sympy

from geomkfac.errors import DimensionError, SingularFrameChangeError, SpaceMismatchError
from geomkfac.spaces import (
    AffineSpace,
    Covector,
    Frame,
    Point,
    ProductSpace,
    Vector,
    power_frame,
    product_frame,
    stack_homogeneous,
)

B1 = np.array([[2.0, 1.0], [0.0, 1.0]])
C1 = np.array([1.0, -1.0])


@pytest.fixture
def A():
    return AffineSpace(2, "A")


def test_space_structure(A):
    assert (A.dim, A.vector_space.dim, A.dual.dim) == (2, 2, 2)
    assert A.vector_space.affine_space is A and A.dual.vector_space is A.vector_space
    assert isinstance(A.reference_frame, Frame) and A.reference_frame.space is A
    assert A != AffineSpace(2, "A")  # compared by identity


def test_transformation_laws_by_hand(A):
    k = A.reference_frame.derive(B1, C1, name="k")
    x = np.array([1.0, 2.0])
    # points: B x + c = [2+2+1, 2-1]
    np.testing.assert_array_equal(Point(A.reference_frame, x).coords(k), [5.0, 1.0])
    # vectors: B x only
    np.testing.assert_array_equal(Vector(A.reference_frame, x).coords(k), [4.0, 2.0])
    # covectors: B^-T w ; B^-1 = [[1/2, -1/2], [0, 1]]
    np.testing.assert_allclose(Covector(A.reference_frame, x).coords(k), [0.5, 1.5])


def test_coordinates_are_cached_per_frame(A):
    k = A.reference_frame.derive(B1, C1)
    p = Point(A.reference_frame, [1.0, 2.0])
    assert p.coords(k) is p.coords(k)
    assert A.reference_frame.change_to(k) is A.reference_frame.change_to(k)


def test_changes_chain_and_invert_through_the_tree(A):
    r = A.reference_frame
    k1 = r.derive(B1, C1, name="k1")
    k2 = k1.derive([[1.0, 0.0], [3.0, 1.0]], [0.0, 2.0], name="k2")
    k3 = r.derive([[0.0, 1.0], [1.0, 0.0]], [5.0, 5.0], name="k3")
    x = np.array([0.3, -0.7])
    # by hand: k2 coords of x, then back to ref, then into k3
    y2 = np.array([[1.0, 0.0], [3.0, 1.0]]) @ (B1 @ x + C1) + [0.0, 2.0]
    y3 = np.array([[0.0, 1.0], [1.0, 0.0]]) @ x + [5.0, 5.0]
    ch = k2.change_to(k3)
    np.testing.assert_allclose(ch.apply_point(y2), y3, atol=1e-12)  # 2x2 products of O(1) numbers
    np.testing.assert_allclose(ch.inverse().apply_point(y3), y2, atol=1e-12)
    both = ch.then(k3.change_to(k1))
    np.testing.assert_allclose(both.B, k2.change_to(k1).B, atol=1e-12)
    np.testing.assert_allclose(both.c, k2.change_to(k1).c, atol=1e-12)
    H = ch.homogeneous()
    np.testing.assert_allclose(H @ np.r_[y2, 1.0], np.r_[y3, 1.0], atol=1e-12)
    assert ch.inverse().inverse() is ch


def test_point_vector_covector_algebra(A):
    r = A.reference_frame
    k = r.derive(B1, C1)
    p, q = Point(r, [1.0, 2.0]), Point(k, [0.0, 0.0])
    v = p - q
    assert isinstance(v, Vector)
    assert (q + v).equals(p) and (p - v).equals(q)
    u = Vector(k, [1.0, 1.0])
    np.testing.assert_allclose((2 * u + v - u).coords(r), (u + v).coords(r))
    np.testing.assert_allclose((-u / 2).coords(k), [-0.5, -0.5])
    w = Covector(r, [1.0, -2.0])
    assert np.isclose(w(v + u), w(v) + w(u))  # linearity
    assert np.isclose((3 * w)(u), 3 * w(u))
    with pytest.raises(SpaceMismatchError, match="points cannot be added"):
        p + q


def test_mixing_spaces_is_refused(A):
    Z = AffineSpace(2, "Z")
    with pytest.raises(SpaceMismatchError, match="of A and a vector of Z"):
        Vector(A.reference_frame, [1.0, 0.0]) + Vector(Z.reference_frame, [1.0, 0.0])
    with pytest.raises(SpaceMismatchError):
        Point(A.reference_frame, [0.0, 0.0]).coords(Z.reference_frame)
    with pytest.raises(SpaceMismatchError, match="different spaces"):
        A.reference_frame.change_to(Z.reference_frame)


def test_wrong_lengths_are_refused(A):
    with pytest.raises(DimensionError, match="needs 2 coordinates"):
        Point(A.reference_frame, [1.0, 2.0, 3.0])
    with pytest.raises(DimensionError, match=r"\(2, 2\)"):
        A.reference_frame.derive(np.eye(3))


def test_singular_change_refused_with_rank(A):
    with pytest.raises(SingularFrameChangeError, match="rank 1 < 2"):
        A.reference_frame.derive([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(SingularFrameChangeError):
        A.reference_frame.derive([[1.0, 1.0], [1.0, 1.0 + 1e-18]])  # numerically singular


def test_products_and_powers(A):
    B = AffineSpace(1, "B")
    P = A * B
    assert P is ProductSpace([A, B]) and P.factors == (A, B) and P.dim == 3
    assert (A**3).factors == (A, A, A)
    kA = A.reference_frame.derive(B1, C1)
    kB = B.reference_frame.derive([[3.0]], [1.0])
    F = product_frame([kA, kB])
    assert F is P.frame_from([kA, kB]) and F.factor_frames == (kA, kB)
    x = np.array([1.0, 2.0, 3.0])
    # stacked coordinates transform factor by factor
    y = P.reference_frame.change_to(F).apply_point(x)
    np.testing.assert_allclose(y, np.r_[B1 @ x[:2] + C1, 3.0 * x[2] + 1.0])
    with pytest.raises(SpaceMismatchError):
        P.frame_from([kB, kA])


def test_power_frame_is_identity_kron_homogeneous_B1(A):
    """Eqn. B.1 with a hand-made example; negative control: without the homogeneous 1s."""
    k = A.reference_frame.derive(B1, C1)
    K = 3
    F = power_frame(k, K)
    ch = (A**K).reference_frame.change_to(F)
    H = np.block([[B1, C1[:, None]], [np.zeros((1, 2)), np.ones((1, 1))]])
    np.testing.assert_allclose(ch.stacked_homogeneous(), np.kron(np.eye(K), H))
    x = np.arange(6.0)
    xs = stack_homogeneous(A**K, x)
    np.testing.assert_allclose(np.kron(np.eye(K), H) @ xs, stack_homogeneous(A**K, ch.apply_point(x)))
    # negative control: I ⊗ B (linear part only) misses the translation
    assert not np.allclose(np.kron(np.eye(K), B1) @ x, ch.apply_point(x))


def test_symbolic_frames_and_values(A):
    a = sympy.Symbol("a", positive=True)
    k = A.reference_frame.derive(sympy.Matrix([[a, 0], [1, 1]]), [0, 1])
    v = Vector(A.reference_frame, [1, 2])
    w = Covector(A.reference_frame, [3, 4])
    assert k.field.symbolic
    assert v.coords(k) == sympy.Matrix([a, 3])
    assert sympy.simplify(Covector(k, w.coords(k))(Vector(k, v.coords(k))) - 11) == 0
    with pytest.raises(SingularFrameChangeError):
        A.reference_frame.derive(sympy.Matrix([[a, a], [1, 1]]))


def test_repr_is_readable(A):
    k = A.reference_frame.derive(B1, C1, name="κ")
    assert "κ" in repr(k) and "A" in repr(k)
    assert "Point(A" in repr(Point(k, [1.0, 2.0]))
    assert "ι_A → κ" in repr(A.reference_frame.change_to(k))
