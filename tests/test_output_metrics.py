"""Output metrics against their closed forms (paper Example 3.3; paper-notes §1).

The Fisher of each predictive distribution is checked against ``E_y[∇ℓ ∇ℓᵀ]`` computed
independently (exact enumeration over outcomes, or Monte Carlo for the Gaussian), and
against the Hessian of the NLL by finite differences (canonical links).
"""

import itertools

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.output_metrics import (
    BernoulliFisher,
    BregmanMetric,
    CategoricalFisher,
    Euclidean,
    GaussianFisher,
    get_output_metric,
    loss_for,
)

logits = st.lists(st.floats(-4, 4), min_size=2, max_size=5).map(np.array)


def fd_hessian(f, z, h=1e-4):
    """Central-difference Hessian of a scalar function of one vector."""
    C = z.size
    E = np.eye(C) * h
    H = np.empty((C, C))
    for i in range(C):
        for j in range(C):
            H[i, j] = (
                f(z + E[i] + E[j]) - f(z + E[i] - E[j]) - f(z - E[i] + E[j]) + f(z - E[i] - E[j])
            ) / (4 * h * h)
    return H


# --------------------------------------------------------------------------- categorical
@settings(max_examples=30, deadline=None)
@given(z=logits)
def test_categorical_fisher_is_expected_outer_gradient_and_rank_c_minus_1(z):
    C = z.size
    G = CategoricalFisher().matrix(z)
    loss = loss_for("categorical")
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    grads = loss.grad(np.tile(z, (C, 1)), np.arange(C))  # one row per possible label
    F = np.einsum("c,ci,cj->ij", p, grads, grads)  # exact E_y over the C outcomes
    assert np.abs(G - F).max() < 1e-12  # two float64 formulas of the same numbers
    assert np.linalg.matrix_rank(G, tol=1e-10) == C - 1
    assert np.abs(G @ np.ones(C)).max() < 1e-12  # the all-ones direction is the kernel


def test_categorical_empirical_outer_product_is_not_the_fisher():
    """Negative control: one data label's ∇ℓ∇ℓᵀ (empirical Fisher) ≠ the output Fisher."""
    z = np.array([0.5, -1.0, 2.0])
    loss = loss_for("categorical")
    G = CategoricalFisher().matrix(z)
    for label in range(3):
        g = loss.grad(z, np.array(label))
        assert np.abs(np.outer(g, g) - G).max() > 1e-2


def test_categorical_fisher_symbolic_exact():
    # symbolic logits: entries are rational functions of exp(z_j); cancel decides zero
    z = sp.Matrix(sp.symbols("z1:4"))
    G = CategoricalFisher().matrix(z)
    loss = loss_for("softmax")
    p = [sp.exp(zj) / sum(sp.exp(zk) for zk in z) for zj in z]
    F = sp.zeros(3, 3)
    for c in range(3):
        g = loss.grad(z, c)
        F += p[c] * g * g.T
    assert all(sp.cancel(e) == 0 for e in (G - F))
    # at logits (log 2, 0, log 3) the probabilities are the rationals (1/3, 1/6, 1/2)
    zr = sp.Matrix([sp.log(2), 0, sp.log(3)])
    Gr = CategoricalFisher().matrix(zr)
    assert Gr == sp.diag(*[sp.Rational(1, 3), sp.Rational(1, 6), sp.Rational(1, 2)]) - sp.Matrix(
        [sp.Rational(1, 3), sp.Rational(1, 6), sp.Rational(1, 2)]
    ) * sp.Matrix([[sp.Rational(1, 3), sp.Rational(1, 6), sp.Rational(1, 2)]])
    assert Gr.rank() == 2  # exact rank C − 1
    # same numbers as the numeric formula
    zf = np.array([np.log(2), 0.0, np.log(3)])
    assert np.allclose(np.array(Gr, dtype=float), CategoricalFisher().matrix(zf), atol=1e-15)


def test_categorical_fisher_is_hessian_of_cross_entropy():
    z = np.array([0.3, -1.2, 0.7, 2.0])
    loss = loss_for("categorical")
    H = fd_hessian(lambda v: loss.value(v, np.array(2))[()], z)
    # 4-point FD Hessian: truncation O(h²) ≈ 1e-8, round-off ≈ ε/h² ≈ 2e-8
    assert np.abs(H - CategoricalFisher().matrix(z)).max() < 1e-6


# --------------------------------------------------------------------------- Bernoulli
@settings(max_examples=25, deadline=None)
@given(z=logits)
def test_bernoulli_fisher_exact_enumeration(z):
    C = z.size
    G = BernoulliFisher().matrix(z)
    loss = loss_for("bernoulli")
    p = 1 / (1 + np.exp(-z))
    ys = np.array(list(itertools.product([0.0, 1.0], repeat=C)))  # all 2^C outcomes
    probs = np.prod(np.where(ys == 1, p, 1 - p), axis=1)
    grads = loss.grad(np.tile(z, (len(ys), 1)), ys)
    F = np.einsum("k,ki,kj->ij", probs, grads, grads)
    assert np.abs(G - F).max() < 1e-12  # exact expectation, float64
    assert np.allclose(G, np.diag(np.diag(G)))  # independent outputs: diagonal
    # negative control: the categorical Fisher is a different metric
    assert np.abs(CategoricalFisher().matrix(z) - G).max() > 1e-4


def test_bernoulli_fisher_is_hessian_of_nll():
    z = np.array([0.4, -2.0, 1.5])
    y = np.array([1.0, 0.0, 1.0])
    loss = loss_for("bernoulli")
    H = fd_hessian(lambda v: loss.value(v, y)[()], z)
    assert np.abs(H - BernoulliFisher().matrix(z)).max() < 1e-6  # FD error as above


# --------------------------------------------------------------------------- Gaussian
def test_gaussian_fisher_unit_and_covariance_monte_carlo():
    rng = np.random.default_rng(0)
    Sigma = np.array([[2.0, 0.6], [0.6, 1.0]])
    z = np.array([0.3, -0.4])
    for cov, expected in ((None, np.eye(2)), (Sigma, np.linalg.inv(Sigma))):
        om = GaussianFisher(cov)
        assert np.allclose(om.matrix(z), expected)
        loss = om.loss()
        N = 200_000
        zs = np.tile(z, (N, 1))
        ys = loss.sample(zs, rng)
        g = loss.grad(zs, ys)
        F = g.T @ g / N
        # Monte Carlo: entries of F have std ≈ ‖Σ⁻¹‖·√(2/N) ≈ 0.005; 5 std
        assert np.abs(F - expected).max() < 0.03
    # negative control: ignoring the covariance (unit Fisher) is wrong for Σ ≠ I
    assert np.abs(GaussianFisher().matrix(z) - np.linalg.inv(Sigma)).max() > 0.1


def test_gaussian_fisher_is_hessian_of_nll_and_symbolic():
    Sigma = np.array([[2.0, 0.6], [0.6, 1.0]])
    loss = loss_for(GaussianFisher(Sigma))
    z, y = np.array([0.1, 0.2]), np.array([1.0, -1.0])
    H = fd_hessian(lambda v: loss.value(v, y)[()], z)
    assert np.abs(H - np.linalg.inv(Sigma)).max() < 1e-6  # FD error as above
    s = sp.Symbol("s", positive=True)
    Gs = GaussianFisher(sp.Matrix([[s, 0], [0, 1]])).matrix(sp.Matrix([0, 0]))
    assert sp.simplify(Gs - sp.Matrix([[1 / s, 0], [0, 1]])) == sp.zeros(2, 2)


def test_euclidean_metric_and_squared_error():
    z = np.array([[0.5, -1.0], [2.0, 0.0]])
    assert np.array_equal(Euclidean().matrix(z), np.broadcast_to(np.eye(2), (2, 2, 2)))
    loss = loss_for("euclidean")
    y = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert np.allclose(loss.grad(z, y), z - y)
    assert np.allclose(loss.value(z, y), 0.5 * ((z - y) ** 2).sum(1))
    with pytest.raises(ConfigurationError):
        loss.sample(z, np.random.default_rng(0))


# --------------------------------------------------------------------------- Bregman / GGN
def test_bregman_from_sympy_recovers_known_metrics():
    z1, z2, z3 = sp.symbols("z1 z2 z3")
    lse = sp.log(sp.exp(z1) + sp.exp(z2) + sp.exp(z3))
    zb = np.array([[0.2, -0.5, 1.0], [1.0, 1.0, -2.0]])
    # log-sum-exp → categorical Fisher (softmax cross-entropy is its matching loss)
    g = BregmanMetric(lse, [z1, z2, z3])
    assert np.abs(g.matrix(zb) - CategoricalFisher().matrix(zb)).max() < 1e-12
    # ½‖z‖² → Euclidean
    q = BregmanMetric((z1**2 + z2**2 + z3**2) / 2)
    assert np.allclose(q.matrix(zb), Euclidean().matrix(zb))
    # symbolic evaluation agrees exactly with the categorical formula
    zs = sp.Matrix([z1, z2, z3])
    assert all(sp.cancel(e) == 0 for e in g.matrix(zs) - CategoricalFisher().matrix(zs))
    # the Bregman loss has that Hessian and vanishes at z = y
    loss = g.loss()
    y = np.array([0.0, 1.0, 0.5])
    H = fd_hessian(lambda v: loss.value(v, y)[()], zb[0])
    assert np.abs(H - g.matrix(zb[0])).max() < 1e-6  # FD error as above
    assert abs(loss.value(y, y)) < 1e-12
    # negative control: a non-quadratic φ is not the Euclidean metric
    assert np.abs(g.matrix(zb) - Euclidean().matrix(zb)).max() > 0.1


def test_bregman_numeric_callable():
    hess = lambda z: np.exp(z)[:, :, None] * np.eye(z.shape[1])  # φ = Σ exp(z_j)  # noqa: E731
    grad = lambda z: np.exp(z)  # noqa: E731
    g = BregmanMetric(hess, gradient=grad)
    z = np.array([[0.0, 1.0]])
    assert np.allclose(g.matrix(z)[0], np.diag(np.exp([0.0, 1.0])))
    assert np.allclose(g.loss().grad(z, np.zeros((1, 2))), np.exp(z) - 1)
    with pytest.raises(ConfigurationError):
        BregmanMetric(hess).loss().grad(z, np.zeros((1, 2)))


# --------------------------------------------------------------------------- with the core
def test_at_point_gives_a_metric_that_transforms():
    spaces = pytest.importorskip("geomkfac.spaces")
    pytest.importorskip("geomkfac.metrics")
    Y = spaces.AffineSpace(3, "Y")
    z = np.array([0.2, -1.0, 0.5])
    p = spaces.Point(Y.reference_frame, z)
    g = BernoulliFisher().at(p)
    assert np.allclose(g.matrix(Y.reference_frame), BernoulliFisher().matrix(z))
    rng = np.random.default_rng(5)
    kappa = Y.reference_frame.derive(rng.normal(size=(3, 3)) + 2 * np.eye(3), rng.normal(size=3))
    # the point given in another frame: the metric is the same object
    g2 = BernoulliFisher().at(spaces.Point(kappa, p.coords(kappa)))
    assert np.allclose(g2.matrix(kappa), g.matrix(kappa), atol=1e-12)
    u = spaces.Vector(Y.reference_frame, rng.normal(size=3))
    v = spaces.Vector(Y.reference_frame, rng.normal(size=3))
    assert abs(float(g(u, v)) - float(g2(u, v))) < 1e-12
    # negative control: evaluating the formula on κ-coordinates is a different metric
    wrong = BernoulliFisher().matrix(p.coords(kappa))
    assert np.abs(wrong - g.matrix(kappa)).max() > 1e-3


def test_categorical_at_point_is_degenerate():
    spaces = pytest.importorskip("geomkfac.spaces")
    pytest.importorskip("geomkfac.metrics")
    Y = spaces.AffineSpace(4, "Ycat")
    g = CategoricalFisher().at(spaces.Point(Y.reference_frame, np.array([0.0, 1.0, -1.0, 2.0])))
    assert g.rank() == 3
    assert not g.is_nondegenerate()
    assert g.is_psd()


# --------------------------------------------------------------------------- errors
def test_names_and_errors():
    assert isinstance(get_output_metric("mse"), GaussianFisher)
    assert isinstance(get_output_metric("ce"), CategoricalFisher)
    assert isinstance(get_output_metric("bce"), BernoulliFisher)
    assert isinstance(get_output_metric("gn"), Euclidean)
    with pytest.raises(ConfigurationError):
        get_output_metric("poisson")
    with pytest.raises(DataError):
        loss_for("ce").grad(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(DataError):
        loss_for("mse").grad(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(DimensionError):
        GaussianFisher(np.eye(2)).matrix(np.zeros(3))
    with pytest.raises(ConfigurationError):
        GaussianFisher(np.array([[1.0, 2.0], [2.0, 1.0]]))  # not positive definite
