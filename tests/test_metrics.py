"""Tests of geomkfac.metrics: the covariant law, constructions and the natural gradient."""

import numpy as np
import pytest
import sympy

from geomkfac.errors import DegenerateMetricError, NotPSDError, NotSymmetricError, SpaceMismatchError
from geomkfac.maps import AffineMap, AffineMaps, SmoothMap
from geomkfac.metrics import (
    AdditiveMetric,
    KroneckerMetric,
    Metric,
    SecondMoment,
    additive_metric,
    expectation,
    natural_gradient,
    pullback,
    second_moment,
    tensor_product,
)
from geomkfac.spaces import AffineSpace, Covector, Point, Vector, product_frame

rng = np.random.default_rng(3)
# tolerance used below: small well-conditioned products and inverses, errors ~1e-14
TOL = 1e-10


def rand_frame(space):
    n = space.dim
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return space.reference_frame.derive(Q * rng.uniform(0.5, 2.0, size=n), rng.normal(size=n))


def spd(n, rank=None):
    M = rng.normal(size=(n, rank or n))
    return M @ M.T + (1e-1 * np.eye(n) if rank is None else 0)


def test_covariant_law_by_hand():
    A = AffineSpace(1, "A")
    g = Metric(A.reference_frame, [[3.0]])
    k = A.reference_frame.derive([[2.0]], [7.0])  # y = 2x + 7, so G_k = 3 / 4
    np.testing.assert_allclose(g.matrix(k), [[0.75]])
    assert g.matrix(k) is g.matrix(k)  # cached


def test_value_is_the_same_in_every_frame_and_negative_control():
    A = AffineSpace(3, "A")
    g = Metric(A.reference_frame, spd(3))
    k = rand_frame(A)
    u, v = Vector(A.reference_frame, rng.normal(size=3)), Vector(k, rng.normal(size=3))
    gk = Metric(k, g.matrix(k))
    assert abs(g(u, v) - gk(u, v)) < TOL
    # negative control: using the old matrix with new coordinates changes the number
    uk, vk = u.coords(k), v.coords(k)
    assert abs(g(u, v) - uk @ g.matrix() @ vk) > 1e-3


def test_sharp_and_flat_are_inverse_and_frame_free():
    A = AffineSpace(3, "A")
    g = Metric(A.reference_frame, spd(3))
    k = rand_frame(A)
    w = Covector(A.reference_frame, rng.normal(size=3))
    v1 = g.sharp(w)
    v2 = natural_gradient(g, Covector(k, w.coords(k)))
    assert v1.equals(v2)
    assert g.flat(v1).equals(w)
    # ω(g⁻¹ω) = g(v, v) ≥ 0
    assert abs(w(v1) - g(v1, v1)) < TOL and w(v1) > 0


def test_degenerate_metric_refuses_to_invert_with_rank():
    A = AffineSpace(3, "A")
    g = Metric(A.reference_frame, spd(3, rank=2))
    assert g.is_psd() and not g.is_nondegenerate() and g.rank() == 2
    with pytest.raises(DegenerateMetricError, match=r"rank 2 < 3, smallest eigenvalue"):
        g.sharp(Covector(A.reference_frame, [1.0, 0.0, 0.0]))
    damped = g + 1e-3 * Metric.identity(A.reference_frame)
    assert damped.is_nondegenerate()
    damped.sharp(Covector(A.reference_frame, [1.0, 0.0, 0.0]))


def test_bad_matrices_are_refused():
    A = AffineSpace(2, "A")
    with pytest.raises(NotSymmetricError, match="max"):
        Metric(A.reference_frame, [[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(NotPSDError, match="smallest eigenvalue"):
        Metric(A.reference_frame, [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(NotPSDError):
        Metric(A.reference_frame, np.eye(2)) * -1.0


def test_queries():
    A = AffineSpace(2, "A")
    g = Metric(A.reference_frame, [[2.0, 0.0], [0.0, 0.5]])
    assert g.is_symmetric() and g.is_psd() and g.is_nondegenerate() and g.rank() == 2
    assert abs(g.min_eigenvalue() - 0.5) < TOL
    k = A.reference_frame.derive([[2.0, 0.0], [0.0, 1.0]])
    assert abs(g.min_eigenvalue(k) - 0.5) < TOL and abs(np.max(np.linalg.eigvalsh(g.matrix(k))) - 0.5) < TOL


def test_sum_and_scaling():
    A = AffineSpace(2, "A")
    k = rand_frame(A)
    g1, g2 = Metric(A.reference_frame, spd(2)), Metric(k, spd(2))
    u = Vector(k, rng.normal(size=2))
    assert abs((g1 + g2)(u, u) - (g1(u, u) + g2(u, u))) < TOL
    assert abs((2.5 * g1)(u, u) - 2.5 * g1(u, u)) < TOL
    with pytest.raises(SpaceMismatchError):
        g1 + Metric(AffineSpace(2, "Z").reference_frame, np.eye(2))


def test_pullback_affine_and_smooth():
    A, Z = AffineSpace(2, "A"), AffineSpace(3, "Z")
    W = rng.normal(size=(3, 2))
    f = AffineMap(A.reference_frame, Z.reference_frame, W, rng.normal(size=3))
    gZ = Metric(rand_frame(Z), spd(3))
    pb = pullback(gZ, f)
    u = Vector(A.reference_frame, rng.normal(size=2))
    # φ*g(u, u) = g(φ_* u, φ_* u)
    assert abs(pb(u, u) - gZ(f.pushforward(u), f.pushforward(u))) < TOL
    x = sympy.symbols("x0 x1")
    s = SmoothMap.from_sympy(A.reference_frame, Z.reference_frame, [sympy.sin(x[0]), x[0] * x[1], x[1] ** 3], x)
    p = Point(A.reference_frame, [0.2, 0.9])
    pbs = pullback(gZ, s, at=p)
    assert abs(pbs(u, u) - gZ(s.pushforward(u, at=p), s.pushforward(u, at=p))) < TOL
    with pytest.raises(SpaceMismatchError):
        pullback(Metric(A.reference_frame, np.eye(2)), f)


def test_additive_metric_is_block_diagonal_and_inverts_blockwise():
    A, B = AffineSpace(2, "A"), AffineSpace(3, "B")
    gA, gB = Metric(rand_frame(A), spd(2)), Metric(B.reference_frame, spd(3))
    g = additive_metric([gA, gB])
    assert isinstance(g, AdditiveMetric) and g.space is A * B
    kA, kB = rand_frame(A), rand_frame(B)
    F = product_frame([kA, kB])
    M = g.matrix(F)
    np.testing.assert_allclose(M[:2, :2], gA.matrix(kA), atol=TOL)
    np.testing.assert_allclose(M[2:, 2:], gB.matrix(kB), atol=TOL)
    assert np.all(M[:2, 2:] == 0) and np.all(M[2:, :2] == 0)
    w = Covector(F, rng.normal(size=5))
    dense = Metric(F, M)
    assert g.sharp(w).equals(dense.sharp(w))
    # in a frame that mixes the factors, the matrix is not block diagonal (negative control)
    mixed = (A * B).reference_frame.derive(np.eye(5) + 0.5 * np.ones((5, 5)))
    assert np.max(np.abs(g.matrix(mixed)[:2, 2:])) > 1e-3
    assert g.blocks(F)[1] is gB.matrix(kB)


def test_second_moment_law_and_construction():
    A = AffineSpace(2, "A")
    X = rng.normal(size=(10, 2))
    w = rng.uniform(size=10)
    S = SecondMoment.from_coords(A.reference_frame, X, w)
    Xb = np.hstack([X, np.ones((10, 1))])
    np.testing.assert_allclose(S.matrix(), sum(wi * np.outer(x, x) for wi, x in zip(w, Xb)) / w.sum(), atol=TOL)
    k = rand_frame(A)
    pts = [Point(A.reference_frame, x) for x in X]
    Sk = second_moment(pts, w, frame=k)  # built from the coordinates in k
    np.testing.assert_allclose(S.matrix(k), Sk.matrix(), atol=TOL)


def test_kronecker_metric_is_kron_A_G_and_inverts_factorwise():
    A, Z = AffineSpace(2, "A"), AffineSpace(3, "Z")
    S = SecondMoment.from_coords(A.reference_frame, rng.normal(size=(6, 2)))
    gZ = Metric(Z.reference_frame, spd(3))
    K = tensor_product(S, gZ)
    assert isinstance(K, KroneckerMetric) and K.space is AffineMaps(A, Z)
    Am, Gm = K.factors()
    np.testing.assert_allclose(K.matrix(), np.kron(Am, Gm))
    assert not np.allclose(K.matrix(), np.kron(Gm, Am))  # the order matters (A first)
    F = K.space.frame(rand_frame(A), rand_frame(Z))
    dense = Metric(K.frame, np.kron(Am, Gm))
    np.testing.assert_allclose(K.matrix(F), dense.matrix(F), atol=1e-8)  # kron of transformed factors
    w = Covector(F, rng.normal(size=9))
    assert K.sharp(w).equals(dense.sharp(w))
    u, v = Vector(F, rng.normal(size=9)), Vector(K.frame, rng.normal(size=9))
    assert abs(K(u, v) - dense(u, v)) < 1e-8
    assert K.flat(u).equals(dense.flat(u))
    assert abs(K.min_eigenvalue() - np.linalg.eigvalsh(np.kron(Am, Gm))[0]) < TOL


def test_kronecker_degenerate_factor_is_named():
    A, Z = AffineSpace(2, "A"), AffineSpace(2, "Z")
    S = SecondMoment.from_coords(A.reference_frame, rng.normal(size=(2, 2)))  # 2 points: rank 2 < 3
    K = KroneckerMetric(S, Metric(Z.reference_frame, np.eye(2)))
    with pytest.raises(DegenerateMetricError, match=r"the A factor.*rank 2 < 3"):
        K.sharp(Covector(K.frame, np.ones(6)))


def test_expectation_is_weighted_mean():
    A = AffineSpace(2, "A")
    k = rand_frame(A)
    mats = [spd(2) for _ in range(4)]
    w = np.array([1.0, 2.0, 3.0, 4.0])
    gs = [Metric(A.reference_frame, m) for m in mats]
    E = expectation(gs, w)
    np.testing.assert_allclose(E.matrix(), sum(wi * m for wi, m in zip(w, mats)) / w.sum(), atol=TOL)
    gk = [Metric(k, g.matrix(k)) for g in gs]
    np.testing.assert_allclose(expectation(gk, w).matrix(A.reference_frame), E.matrix(), atol=1e-9)
    with pytest.raises(NotPSDError, match="nonnegative"):
        expectation(gs, [1.0, -1.0, 1.0, 1.0])


def test_display():
    A = AffineSpace(2, "A")
    a = sympy.Symbol("a", positive=True)
    g = Metric(A.reference_frame, sympy.Matrix([[a, 0], [0, 1]]))
    assert "a" in sympy.pretty(g) and "Metric" in repr(g)
    assert g._repr_latex_().startswith("$") and "a" in g._repr_latex_()
