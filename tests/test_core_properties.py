"""Property-based tests of the geometry core over random dimensions, frames and values.

Every invariance property has a negative control beside it: the same computation
with a wrong transformation law must show a difference.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.maps import AffineMap, AffineMaps
from geomkfac.metrics import Metric, additive_metric, pullback
from geomkfac.spaces import AffineSpace, Covector, Point, Vector, power_frame, product_frame, stack_homogeneous

SETTINGS = settings(max_examples=30, deadline=None)
# Tolerance for all numeric comparisons here: frames have singular values in [0.5, 2]
# and values are O(1), so float64 rounding stays below ~1e-12; 1e-8 leaves a margin,
# while the negative controls differ by O(0.1) or more.
TOL = 1e-8
dims = st.integers(min_value=1, max_value=5)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def frame(rng, space, parent=None):
    """A random well-conditioned frame: B = Q diag(s) with s in [0.5, 2], c ~ N(0, 1)."""
    n = space.dim
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    s = rng.uniform(0.5, 2.0, size=n)
    s[0] = 2.0  # keep B away from an orthogonal matrix, so that B ≠ B⁻ᵀ (negative controls)
    return (parent or space.reference_frame).derive(Q * s, rng.normal(size=n) + 1.0)


def spd(rng, n):
    M = rng.normal(size=(n, n))
    return M @ M.T + 0.5 * np.eye(n)


@SETTINGS
@given(n=dims, seed=seeds)
def test_pairing_is_frame_independent(n, seed):
    rng = np.random.default_rng(seed)
    A = AffineSpace(n)
    k1, k2 = frame(rng, A), frame(rng, A)
    k3 = frame(rng, A, parent=k1)
    w, v = Covector(k1, rng.normal(size=n)), Vector(k2, rng.normal(size=n))
    values = [Covector(f, w.coords(f)) (Vector(f, v.coords(f))) for f in (A.reference_frame, k1, k2, k3)]
    assert np.ptp(values) < TOL * (1 + abs(values[0]))
    # negative control: transforming the covector with B instead of B⁻ᵀ (B = Q diag(s), s₀ = 2)
    ch = A.reference_frame.change_to(k1)
    w0, v0 = w.coords(A.reference_frame), v.coords(A.reference_frame)
    right = w0 @ v0
    wrong = (ch.B @ w0) @ ch.apply_vector(v0)
    assert abs(wrong - right) > 1e-6 * (1 + abs(right))


@SETTINGS
@given(n=dims, seed=seeds)
def test_metric_value_is_frame_independent(n, seed):
    rng = np.random.default_rng(seed)
    A = AffineSpace(n)
    k1, k2 = frame(rng, A), frame(rng, A)
    g = Metric(k1, spd(rng, n))
    u, v = Vector(A.reference_frame, rng.normal(size=n)), Vector(k2, rng.normal(size=n))
    ref = g(u, v)
    for f in (A.reference_frame, k1, k2):
        assert abs(Metric(f, g.matrix(f))(u, v) - ref) < TOL * (1 + abs(ref))
    # negative control: transforming a vector like a point (with the translation c)
    ch = A.reference_frame.change_to(k2)
    u_wrong = ch.apply_point(u.coords(A.reference_frame))
    good = u.coords(k2) @ g.matrix(k2) @ v.coords(k2)
    bad = u_wrong @ g.matrix(k2) @ v.coords(k2)
    assert abs(good - ref) < TOL * (1 + abs(ref))
    assert abs(bad - good) > 1e-6 or abs(ch.c @ g.matrix(k2) @ v.coords(k2)) < 1e-6


@SETTINGS
@given(n=dims, seed=seeds)
def test_point_vector_laws(n, seed):
    rng = np.random.default_rng(seed)
    A = AffineSpace(n)
    k = frame(rng, A)
    p, q = Point(A.reference_frame, rng.normal(size=n)), Point(k, rng.normal(size=n))
    u, v = Vector(k, rng.normal(size=n)), Vector(A.reference_frame, rng.normal(size=n))
    # (p − q) has the same coordinates computed in either frame
    np.testing.assert_allclose((p - q).coords(k), p.coords(k) - q.coords(k), atol=TOL)
    assert (q + (p - q)).equals(p)
    assert ((p + u) + v).equals(p + (u + v))
    assert (u + v).equals(v + u) and (2.0 * (u - v)).equals(u + u - v - v)
    # negative control: transforming a point like a vector (without c) misses the origin shift
    ch = A.reference_frame.change_to(k)
    assert not np.allclose(ch.apply_vector(p.coords(A.reference_frame)), p.coords(k), atol=1e-6)


@SETTINGS
@given(n=dims, seed=seeds)
def test_changes_compose_and_invert(n, seed):
    rng = np.random.default_rng(seed)
    A = AffineSpace(n)
    k1 = frame(rng, A)
    k2 = frame(rng, A, parent=k1)
    k3 = frame(rng, A)
    a, b, c = k1.change_to(k2), k2.change_to(k3), k1.change_to(k3)
    ab = a.then(b)
    np.testing.assert_allclose(ab.B, c.B, atol=TOL)
    np.testing.assert_allclose(ab.c, c.c, atol=TOL)
    np.testing.assert_allclose(a.homogeneous() @ a.inverse().homogeneous(), np.eye(n + 1), atol=TOL)
    np.testing.assert_allclose(b.homogeneous() @ a.homogeneous(), c.homogeneous(), atol=TOL)
    # negative control: composing in the wrong order is different
    assert not np.allclose(a.homogeneous() @ b.homogeneous(), c.homogeneous(), atol=1e-6)


@SETTINGS
@given(n=dims, K=st.integers(min_value=1, max_value=4), seed=seeds)
def test_B1_power_frame_change_is_identity_kron_homogeneous(n, K, seed):
    rng = np.random.default_rng(seed)
    A = AffineSpace(n)
    k1, k2 = frame(rng, A), frame(rng, A)
    ch1 = k1.change_to(k2)
    F1, F2 = power_frame(k1, K), power_frame(k2, K)
    P = A**K
    x = rng.normal(size=n * K)
    y = F1.change_to(F2).apply_point(x)
    M = np.kron(np.eye(K), ch1.homogeneous())
    np.testing.assert_allclose(M @ stack_homogeneous(P, x), stack_homogeneous(P, y), atol=TOL)
    np.testing.assert_allclose(F1.change_to(F2).stacked_homogeneous(), M, atol=TOL)
    # negative control: I ⊗ B (the linear part only) misses the translations
    if np.linalg.norm(ch1.c) > 1e-3:
        assert not np.allclose(np.kron(np.eye(K), ch1.B) @ x, y, atol=1e-6)


@SETTINGS
@given(n1=dims, n2=dims, seed=seeds)
def test_B2_additive_metric_block_diagonal(n1, n2, seed):
    rng = np.random.default_rng(seed)
    A, B = AffineSpace(n1), AffineSpace(n2)
    g1, g2 = Metric(frame(rng, A), spd(rng, n1)), Metric(frame(rng, B), spd(rng, n2))
    g = additive_metric([g1, g2])
    kA, kB = frame(rng, A), frame(rng, B)
    F = product_frame([kA, kB])
    M = g.matrix(F)
    np.testing.assert_allclose(M, np.block([[g1.matrix(kA), np.zeros((n1, n2))], [np.zeros((n2, n1)), g2.matrix(kB)]]), atol=TOL)
    u = Vector(F, rng.normal(size=n1 + n2))
    uA, uB = Vector(kA, u.coords(F)[:n1]), Vector(kB, u.coords(F)[n1:])
    assert abs(g(u, u) - g1(uA, uA) - g2(uB, uB)) < TOL * (1 + g(u, u))
    # negative control: dropping a block changes the value
    assert abs(g(u, u) - g1(uA, uA)) > 1e-9


@SETTINGS
@given(n_in=dims, n_out=dims, seed=seeds)
def test_D2_affine_map_law(n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    A, Z = AffineSpace(n_in), AffineSpace(n_out)
    f = AffineMap(frame(rng, A), frame(rng, Z), rng.normal(size=(n_out, n_in)), rng.normal(size=n_out))
    kA, kZ = frame(rng, A), frame(rng, Z)
    a = Point(A.reference_frame, rng.normal(size=n_in))
    Wb = f.matrix(kA, kZ)
    z_new = Wb @ np.r_[a.coords(kA), 1.0]
    np.testing.assert_allclose(z_new, f(a).coords(kZ), atol=TOL)
    HA = f.domain_frame.change_to(kA).homogeneous()
    HZ = f.codomain_frame.change_to(kZ).homogeneous()
    np.testing.assert_allclose(f.homogeneous(kA, kZ), HZ @ f.homogeneous() @ np.linalg.inv(HA), atol=TOL)
    # coordinates in the induced frame are vec([W b]) (column-stacking)
    Aff = AffineMaps(A, Z)
    np.testing.assert_allclose(Aff.point(f).coords(Aff.frame(kA, kZ)), Wb.reshape(-1, order="F"), atol=TOL)
    # negative control: applying the old [W b] to the new coordinates gives another point
    z_wrong = f.matrix() @ np.r_[a.coords(kA), 1.0]
    assert not np.allclose(z_wrong, f(a).coords(f.codomain_frame), atol=1e-6)


@SETTINGS
@given(n=dims, m=dims, p=dims, seed=seeds)
def test_pullback_of_composition_is_composition_of_pullbacks(n, m, p, seed):
    rng = np.random.default_rng(seed)
    A, Y, Z = AffineSpace(n), AffineSpace(m), AffineSpace(p)
    f = AffineMap(frame(rng, A), frame(rng, Y), rng.normal(size=(m, n)), rng.normal(size=m))
    h = AffineMap(frame(rng, Y), frame(rng, Z), rng.normal(size=(p, m)), rng.normal(size=p))
    g = Metric(frame(rng, Z), spd(rng, p))
    kA = frame(rng, A)
    lhs = pullback(g, h @ f).matrix(kA)
    rhs = pullback(pullback(g, h), f).matrix(kA)
    np.testing.assert_allclose(lhs, rhs, atol=TOL * (1 + np.abs(lhs).max()))
    # negative control: Jᵀ G J with f's Jacobian in its own frames but G in another frame of Y (a frame bug)
    Jf = f.linear()  # in (f.domain_frame, f.codomain_frame)
    kY = f.codomain_frame.derive(3.0 * np.eye(m), np.zeros(m))  # a frame of Y other than f's
    Gh = pullback(g, h).matrix(kY)
    right = pullback(g, h @ f).matrix(f.domain_frame)
    assert not np.allclose(Jf.T @ Gh @ Jf, right, atol=1e-6)
