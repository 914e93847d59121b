"""The Pullback class and the generic abstract pipeline (geomkfac.metrics.Pullback,
geomkfac.pipeline), checked against independent computations.

References are computed by hand-written NumPy from the coordinate formulas (Jacobians
by central finite differences of the coordinate expressions, Kronecker products by
``np.kron``), never by the code under test.  Tolerances: exact symbolic identities are
decided by ``cancel``/``expand`` of a difference; float64 comparisons of O(1) quantities
computed by different summation orders use 1e-10 relative; central differences with
h = 1e-6 have error ~1e-9 on O(1) second derivatives, so 1e-7 there.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import geomkfac
from geomkfac import pipeline
from geomkfac.activations_sym import get_activation
from geomkfac.errors import ConfigurationError, DataError, DimensionError, SpaceMismatchError
from geomkfac.maps import AffineMap, AffineMaps, SmoothMap
from geomkfac.metrics import KroneckerMetric, Metric, Pullback, pullback
from geomkfac.output_metrics import get_output_metric
from geomkfac.spaces import AffineSpace, Covector, Point, Vector

TOL = 1e-10


def _frame(rng, space, name=None):
    n = space.dim
    B = rng.normal(size=(n, n)) + 2 * np.eye(n)
    return space.reference_frame.derive(B, rng.normal(size=n), name=name)


def _spd(rng, n):
    M = rng.normal(size=(n, n))
    return M @ M.T + 0.5 * np.eye(n)


def _smooth(fA, fZ, rng):
    """z = tanh(W a + b) between two frames, with its analytic Jacobian."""
    W = rng.normal(size=(fZ.space.dim, fA.space.dim))
    b = rng.normal(size=fZ.space.dim)

    def f(x):
        return np.tanh(W @ x + b)

    def jac(x):
        return (1 - np.tanh(W @ x + b) ** 2)[:, None] * W

    return SmoothMap(fA, fZ, f, jac), f


def _fd_jac(f, x, h=1e-6):
    return np.stack([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)], axis=1)


# ------------------------------------------------------------------ Pullback
def test_top_level_imports_of_the_core():
    for name in ("AffineSpace", "AffineMap", "Metric", "Pullback", "SmoothMap", "KroneckerMetric",
                 "Frame", "Point", "Vector", "Covector", "expectation", "second_moment"):
        assert getattr(geomkfac, name) is not None
    assert geomkfac.Pullback is Pullback


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 10**6))
def test_pullback_along_smooth_maps_is_functorial_and_matches_finite_differences(n, m, p, seed):
    rng = np.random.default_rng(seed)
    A, Y, Z = AffineSpace(n), AffineSpace(m), AffineSpace(p)
    fA, fY, fZ = _frame(rng, A), _frame(rng, Y), _frame(rng, Z)
    f, f_num = _smooth(fA, fY, rng)
    h, h_num = _smooth(fY, fZ, rng)
    gZ = _frame(rng, Z)                       # the metric is given in yet another frame of Z
    g = Metric(gZ, _spd(rng, p))
    x = rng.normal(size=n)
    pt = Point(fA, x)
    lhs = Pullback(g, h @ f, at=pt).matrix()
    rhs = Pullback(Pullback(g, h), f, at=pt).matrix()
    np.testing.assert_allclose(lhs, rhs, rtol=TOL, atol=TOL * np.abs(lhs).max())
    # independent: finite-difference Jacobian of the coordinate map (fA → gZ) and G in gZ
    ch = fZ.change_to(gZ)

    def comp(xx):
        return np.asarray(ch.B) @ h_num(f_num(xx)) + np.asarray(ch.c)

    J = _fd_jac(comp, x)
    ref = J.T @ g.matrix(gZ) @ J
    np.testing.assert_allclose(lhs, ref, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(ref).max()))
    # identity (two random frame changes of condition up to ~1e2 each: round-off ≲ 1e-12·cond²)
    ident = AffineMap.identity(fZ)
    ref_g = g.matrix(gZ)
    np.testing.assert_allclose(Pullback(g, ident).matrix(gZ), ref_g, rtol=1e-8, atol=1e-8 * np.abs(ref_g).max())


def test_pullback_of_pullback_at_another_point_is_not_the_composition():
    # control: evaluating the inner field at the wrong point (p instead of f(p)) is visible
    rng = np.random.default_rng(3)
    A, Y, Z = AffineSpace(2), AffineSpace(2), AffineSpace(2)
    fA, fY, fZ = A.reference_frame, Y.reference_frame, Z.reference_frame
    f = AffineMap(fA, fY, rng.normal(size=(2, 2)), 5 + rng.normal(size=2))
    h, _ = _smooth(fY, fZ, rng)
    g = Metric(fZ, np.eye(2))
    pt = Point(fA, rng.normal(size=2))
    good = Pullback(Pullback(g, h), f, at=pt).matrix()
    wrong_inner = Pullback(g, h, at=Point(fY, pt.coords()))          # evaluated at p, not f(p)
    frozen = Metric(wrong_inner.frame, wrong_inner.matrix())          # ... and used as a constant
    wrong = Pullback(frozen, f).matrix()
    assert np.abs(good - wrong).max() > 1e-3


def test_pullback_symbolic_exact_in_two_frames():
    a, b = sp.symbols("a b")
    A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
    s = SmoothMap.from_sympy(A.reference_frame, Z.reference_frame, [a ** 2 + a * b], [a, b])
    g = Metric(Z.reference_frame, sp.Matrix([[3]]))
    pt = Point(A.reference_frame, [sp.Integer(1), sp.Integer(2)])
    P = Pullback(g, s, at=pt)
    J = sp.Matrix([[2 * 1 + 2, 1]])                        # ∂(a² + ab) at (1, 2)
    assert sp.Matrix(P.matrix()) - 3 * J.T * J == sp.zeros(2)
    kappa = A.reference_frame.derive(sp.Matrix([[2, 0], [1, 1]]), sp.Matrix([0, 1]))
    Binv = sp.Matrix([[2, 0], [1, 1]]).inv()
    assert all(sp.cancel(e) == 0 for e in sp.Matrix(P.matrix(kappa)) - Binv.T * 3 * J.T * J * Binv)


def test_pullback_is_a_field_and_checks_its_inputs():
    rng = np.random.default_rng(0)
    A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    s, _ = _smooth(A.reference_frame, Z.reference_frame, rng)
    g = Metric(Z.reference_frame, [[1.0]])
    field = Pullback(g, s)                     # a field: no matrix until evaluated at a point
    with pytest.raises(ConfigurationError, match="at"):
        field.matrix()
    assert "field" in repr(field)
    p0, p1 = Point(A.reference_frame, [0.0]), Point(A.reference_frame, [2.0])
    P = Pullback(g, s, at=p0)
    assert not P.is_constant
    assert P.at(p1).base_point is p1
    assert not np.allclose(P.matrix(), P.at(p1).matrix())
    lin = AffineMap(A.reference_frame, Z.reference_frame, [[2.0]])
    assert Pullback(g, lin).is_constant
    with pytest.raises(SpaceMismatchError):
        Pullback(Metric(A.reference_frame, [[1.0]]), lin)
    with pytest.raises(SpaceMismatchError):
        Pullback(g, "not a map")
    with pytest.raises(SpaceMismatchError):
        Pullback(g, s, at=Point(Z.reference_frame, [0.0]))
    assert isinstance(pullback(g, lin), Pullback)


def test_pullback_of_an_output_metric_field():
    # an output Fisher metric is a field: evaluated at φ(p)
    A, Y = AffineSpace(2, "A"), AffineSpace(2, "Y")
    f = AffineMap(A.reference_frame, Y.reference_frame, np.eye(2), [0.5, -0.5])
    pt = Point(A.reference_frame, [1.0, 0.0])
    P = Pullback(get_output_metric("categorical"), f, at=pt)
    z = np.array([1.5, -0.5])
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(P.matrix(), np.diag(p) - np.outer(p, p), rtol=TOL)


def test_covector_pullback_pairs_with_pushforward():
    rng = np.random.default_rng(5)
    A, Z = AffineSpace(3), AffineSpace(2)
    fA, fZ = _frame(rng, A), _frame(rng, Z)
    s, _ = _smooth(fA, fZ, rng)
    pt = Point(fA, rng.normal(size=3))
    w = Covector(_frame(rng, Z), rng.normal(size=2))
    v = Vector(_frame(rng, A), rng.normal(size=3))
    lhs = s.pullback_covector(w, at=pt)(v)
    rhs = w(s.pushforward(v, at=pt))
    assert abs(float(lhs) - float(rhs)) < TOL * (1 + abs(float(rhs)))


def test_metric_outer_and_at():
    A = AffineSpace(2)
    w = Covector(A.reference_frame, [1.0, -2.0])
    g = Metric.outer(w)
    u = Vector(A.reference_frame, [3.0, 1.0])
    assert float(g(u, u)) == pytest.approx(float(w(u)) ** 2)
    assert g.at(Point(A.reference_frame, [0.0, 0.0])) is g
    with pytest.raises(SpaceMismatchError):
        g.at(Point(AffineSpace(2).reference_frame, [0.0, 0.0]))


# ------------------------------------------------------------------ pipeline
def test_independence_metric_equals_closed_form_with_per_sample_metrics():
    rng = np.random.default_rng(1)
    A, Z = AffineSpace(2), AffineSpace(3)
    pts = [Point(A.reference_frame, rng.normal(size=2)) for _ in range(5)]
    Gs = [_spd(rng, 3) for _ in pts]
    ident = AffineMap.identity(Z.reference_frame)
    zeta = Point(Z.reference_frame, np.zeros(3))
    g = pipeline.independence_metric(pts, [ident] * 5, [zeta] * 5,
                                     [Metric(Z.reference_frame, G) for G in Gs], scale=4)
    assert isinstance(g, KroneckerMetric)
    ab = np.array([np.append(p.coords(), 1.0) for p in pts])
    ref = 4 * np.kron(ab.T @ ab / 5, sum(Gs) / 5)
    np.testing.assert_allclose(g.matrix(g.frame), ref, rtol=TOL)
    # the exact expectation E[ψ_a* g] differs (independence is an approximation)
    W = AffineMaps(A, Z)
    E = pipeline.expected_pullback([W.evaluation_map(p) for p in pts],
                                   [Point(W.reference_frame, np.zeros(W.dim))] * 5,
                                   [Metric(Z.reference_frame, G) for G in Gs])
    exact = sum(np.kron(np.outer(a, a), G) for a, G in zip(ab, Gs)) / 5
    np.testing.assert_allclose(E.matrix(), exact, rtol=TOL)
    assert np.abs(E.matrix() - ref / 4).max() > 1e-3


def test_pipeline_refuses_empty_and_mismatched_batches():
    A, Z = AffineSpace(1), AffineSpace(1)
    ident = AffineMap.identity(Z.reference_frame)
    g = Metric(Z.reference_frame, [[1.0]])
    with pytest.raises(DataError, match="empty"):
        pipeline.independence_metric([], [], [], g)
    with pytest.raises(DimensionError):
        pipeline.independence_metric([Point(A.reference_frame, [0.0])], [ident, ident],
                                     [Point(Z.reference_frame, [0.0])], g)
    with pytest.raises(DimensionError):
        pipeline.expected_pullback([ident], [Point(Z.reference_frame, [0.0])], [g, g])
    with pytest.raises(DataError):
        pipeline.mean_covector([])
    with pytest.raises(DataError):
        pipeline.empirical_fisher([])


def test_activation_map_is_a_smooth_map_with_the_activation_jacobian():
    Z, A = AffineSpace(3, "Z"), AffineSpace(3, "A")
    phi = pipeline.activation_map(Z.reference_frame, A.reference_frame, get_activation("sigmoid"))
    z = np.array([0.3, -1.0, 2.0])
    J = phi.jacobian(Point(Z.reference_frame, z))
    np.testing.assert_allclose(J, _fd_jac(lambda x: 1 / (1 + np.exp(-x)), z), rtol=1e-7, atol=1e-9)
    with pytest.raises(DimensionError):
        pipeline.activation_map(Z.reference_frame, AffineSpace(2).reference_frame, get_activation("tanh"))
