"""Losses of geomkfac.nn: values, gradients against central finite differences, output
Fisher (square root, Hessian, expectation over the predictive distribution), sampling, and
target validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DataError
from geomkfac.nn.losses import get_loss

LOSSES = ["softmax_ce", "mse", "bernoulli"]
EPS = 1e-6
# central differences: truncation O(EPS²) ~ 1e-12, round-off O(1e-16·|ℓ|/EPS) ~ 1e-9
FD_TOL = 1e-7


def targets(name, rng, N, C):
    if name == "softmax_ce":
        return rng.integers(0, C, size=N)
    if name == "mse":
        return rng.standard_normal((N, C))
    return rng.random((N, C))


def fd_grad(fun, f):
    out = np.zeros_like(f)
    for idx in np.ndindex(f.shape):
        e = np.zeros_like(f)
        e[idx] = EPS
        out[idx] = (fun(f + e) - fun(f - e)) / (2 * EPS)
    return out


def test_known_values():
    f = np.array([[1.0, 2.0, 0.5]])
    lse = np.log(np.exp(f).sum())
    assert get_loss("ce").value(f, [1]) == pytest.approx(lse - 2.0, rel=1e-15)
    assert get_loss("mse").value(f, np.zeros((1, 3))) == pytest.approx(0.5 * (1 + 4 + 0.25), rel=1e-15)
    y = np.array([[1.0, 0.0, 0.25]])
    p = 1 / (1 + np.exp(-f))
    want = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum()
    assert get_loss("bernoulli").value(f, y) == pytest.approx(want, rel=1e-14)


def test_value_is_mean_of_per_example():
    rng = np.random.default_rng(0)
    for name in LOSSES:
        loss = get_loss(name)
        f = rng.standard_normal((7, 3))
        Y = targets(name, rng, 7, 3)
        per = loss.per_example(f, Y)
        assert per.shape == (7,)
        assert loss.value(f, Y) == pytest.approx(per.sum() / 7, rel=1e-14)


@pytest.mark.parametrize("name", LOSSES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_grad_matches_finite_differences(name, seed):
    """grad is the per-example ∂ℓ/∂f (not divided by N): compare with FD of Σ_n ℓ_n."""
    rng = np.random.default_rng(seed)
    loss = get_loss(name)
    f = rng.standard_normal((4, 3)) * 2
    Y = targets(name, rng, 4, 3)
    want = fd_grad(lambda g: loss.per_example(g, Y).sum(), f)
    np.testing.assert_allclose(loss.grad(f, Y), want, atol=FD_TOL)


def test_grad_negative_control():
    """Dividing by N (a convention error) would be caught by the FD comparison."""
    rng = np.random.default_rng(1)
    loss = get_loss("mse")
    f, Y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    want = fd_grad(lambda g: loss.per_example(g, Y).sum(), f)
    assert np.abs(loss.grad(f, Y) / 4 - want).max() > 1e-2


@pytest.mark.parametrize("name", LOSSES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_fisher_sqrt_and_hessian(name, seed):
    """S Sᵀ = output Fisher = Hessian of ℓ in f (canonical links); FD of the gradient."""
    rng = np.random.default_rng(seed)
    loss = get_loss(name)
    N, C = 3, 4
    f = rng.standard_normal((N, C))
    Y = targets(name, rng, N, C)
    S = loss.fisher_sqrt(f)
    F = loss.output_fisher(f)
    assert S.shape[:2] == (N, C) and F.shape == (N, C, C)
    np.testing.assert_allclose(S @ np.swapaxes(S, 1, 2), F, atol=1e-14)
    H = np.stack([fd_grad(lambda g: loss.grad(g, Y)[:, j].sum(), f) for j in range(C)], axis=-1)
    np.testing.assert_allclose(H, F, atol=FD_TOL)
    K = S.shape[2]
    cols = loss.fisher_sqrt_columns(f, 1, K)
    np.testing.assert_array_equal(cols, np.moveaxis(S[:, :, 1:], 2, 0))


def test_output_fisher_is_expected_outer_product_exact_enumeration():
    """F_out = E_{y~p(·|f)}[∇ℓ ∇ℓᵀ], by summing over every possible target (softmax:
    C labels; Bernoulli: 2^C binary vectors)."""
    rng = np.random.default_rng(2)
    f = rng.standard_normal((2, 3))
    ce = get_loss("softmax_ce")
    p = ce.probs(f)
    want = sum(
        p[:, y, None, None] * np.einsum("ni,nj->nij", g, g)
        for y in range(3)
        for g in [ce.grad(f, np.full(2, y))]
    )
    np.testing.assert_allclose(ce.output_fisher(f), want, atol=1e-15)
    be = get_loss("bernoulli")
    q = 1 / (1 + np.exp(-f))
    want = 0
    for bits in itertools.product([0.0, 1.0], repeat=3):
        y = np.broadcast_to(np.array(bits), f.shape)
        prob = np.prod(np.where(y == 1, q, 1 - q), axis=1)
        g = be.grad(f, y)
        want = want + prob[:, None, None] * np.einsum("ni,nj->nij", g, g)
    np.testing.assert_allclose(be.output_fisher(f), want, atol=1e-15)


def test_softmax_fisher_is_singular_along_ones():
    f = np.random.default_rng(3).standard_normal((4, 5))
    F = get_loss("ce").output_fisher(f)
    np.testing.assert_allclose(F @ np.ones(5), 0, atol=1e-15)


@pytest.mark.parametrize("name", LOSSES)
def test_sampling_matches_predictive_distribution(name):
    """Mean (and for mse the variance) of sampled targets. Tolerance: 6 standard errors of a
    mean of M = 20000 draws (per-draw variance ≤ 1), i.e. 6/√M ≈ 0.042; for the sample
    variance of unit Gaussians the standard error is √(2/M), so 6·√(2/M) ≈ 0.06."""
    loss = get_loss(name)
    f = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -0.5]])
    rng = np.random.default_rng(4)
    M = 20000
    draws = [loss.sample(f, rng) for _ in range(M)]
    tol = 6 / np.sqrt(M)
    if name == "softmax_ce":
        freq = np.stack([np.bincount(d, minlength=3) for d in np.stack(draws).T]) / M
        np.testing.assert_allclose(freq, loss.probs(f), atol=tol)
        assert np.stack(draws).dtype.kind == "i"
    elif name == "bernoulli":
        np.testing.assert_allclose(np.mean(draws, axis=0), 1 / (1 + np.exp(-f)), atol=tol)
        assert set(np.unique(draws)) <= {0.0, 1.0}
    else:
        np.testing.assert_allclose(np.mean(draws, axis=0), f, atol=tol)
        np.testing.assert_allclose(np.var(draws, axis=0), 1.0, atol=6 * np.sqrt(2 / M))
    loss.check_targets(draws[0], 3, 2)  # samples are valid targets


@pytest.mark.parametrize("name", LOSSES)
def test_float32_preserved(name):
    rng = np.random.default_rng(5)
    loss = get_loss(name)
    f = rng.standard_normal((4, 3)).astype(np.float32)
    Y = targets(name, rng, 4, 3)
    assert loss.value(f, Y).dtype == np.float32
    assert loss.per_example(f, Y).dtype == np.float32
    assert loss.grad(f, Y).dtype == np.float32
    assert loss.fisher_sqrt(f).dtype == np.float32
    assert loss.output_fisher(f).dtype == np.float32
    if name != "softmax_ce":
        assert loss.sample(f, rng).dtype == np.float32


def test_extreme_logits_are_finite():
    f = np.array([[1000.0, -1000.0, 0.0]])
    assert np.isfinite(get_loss("ce").value(f, [1]))
    assert get_loss("ce").value(f, [1]) == pytest.approx(2000.0)
    assert np.isfinite(get_loss("bernoulli").value(f, np.array([[0.0, 1.0, 0.5]])))


def test_aliases_and_unknown():
    assert get_loss("cross_entropy").name == get_loss("ce").name == "softmax_ce"
    assert get_loss("squared_error").name == "mse"
    assert get_loss("sigmoid_ce").name == "bernoulli"
    with pytest.raises(ConfigurationError, match="hinge.*softmax_ce"):
        get_loss("hinge")


def test_bad_targets():
    ce, mse, be = get_loss("ce"), get_loss("mse"), get_loss("bernoulli")
    f = np.zeros((3, 4))
    with pytest.raises(DataError, match="0..3.*got labels in 0..4"):
        ce.value(f, [0, 1, 4])
    with pytest.raises(DataError, match="out of range"):
        ce.check_targets(np.array([-1, 0, 1]), 4)
    with pytest.raises(DataError, match="integer"):
        ce.check_targets(np.array([0.5, 1.0, 2.0]), 4)
    with pytest.raises(DataError, match="shape"):
        ce.check_targets(np.zeros((3, 4), dtype=int), 4)
    with pytest.raises(DataError, match="2 labels for 3 examples"):
        ce.grad(f, [0, 1])
    np.testing.assert_array_equal(ce.check_targets(np.array([0.0, 3.0]), 4), [0, 3])
    with pytest.raises(DataError, match=r"\(N, 4\)"):
        mse.value(f, np.zeros((3, 5)))
    with pytest.raises(DataError, match="NaN"):
        mse.check_targets(np.full((3, 4), np.nan), 4)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        be.value(f, np.full((3, 4), 1.5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 5, 11])
def test_bernoulli_targets_with_one_nonfinite_entry_are_refused_as_such(bad, where):
    """One NaN or ±inf among valid soft targets is named as such (not as out of range, and
    never accepted: the range check of [0, 1] alone would pass a NaN), wherever it is."""
    be = get_loss("bernoulli")
    Y = np.linspace(0, 1, 12).reshape(3, 4)
    Y.flat[where] = bad
    with pytest.raises(DataError, match="NaN or inf"):
        be.check_targets(Y, 4, 3)
    Y.flat[where] = 1.0 + 1e-12  # finite and just out of range: the range message
    with pytest.raises(DataError, match=r"\[0, 1\], got values in \[\S+, 1.000000000001\]"):
        be.check_targets(Y, 4, 3)
    Y.flat[where] = 1.0
    assert be.check_targets(Y, 4, 3) is not None  # control: valid targets pass
    assert be.check_targets(Y.astype(bool), 4, 3).dtype == bool  # 0/1 as booleans too


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_value_and_grad_equals_the_two_calls_bit_for_bit(name, dtype, seed, scale):
    """The fused ``value_and_grad`` (shared intermediates, one target check) computes the
    same floating-point operations as ``value`` and ``grad``: equal to the last bit, also at
    logits large enough to saturate the sigmoid and the softmax."""
    rng = np.random.default_rng(seed)
    loss = get_loss(name)
    f = (rng.standard_normal((9, 4)) * scale).astype(dtype)
    Y = targets(name, rng, 9, 4)
    if name != "softmax_ce":
        Y = Y.astype(dtype)
    h, g = loss.value_and_grad(f, Y)
    assert h == loss.value(f, Y) and h.dtype == dtype
    assert g.dtype == dtype and np.array_equal(g, loss.grad(f, Y))


def test_value_and_grad_checks_targets():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        get_loss("bernoulli").value_and_grad(np.zeros((2, 3)), np.full((2, 3), 2.0))
    with pytest.raises(DataError, match="labels out of range"):
        get_loss("ce").value_and_grad(np.zeros((2, 3)), [0, 3])
