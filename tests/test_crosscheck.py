"""Cross-check of the fast NumPy backend (:mod:`geomkfac.nn`) against the abstract
geometric pipeline (:mod:`geomkfac.kfac` on :mod:`geomkfac.networks`).

The two code paths share nothing numeric: ``geomkfac.nn`` backpropagates batches of output
directions through its own layers, the abstract pipeline builds per-example Jacobians
``āᵀ ⊗ D_i`` from the core's frames and reads every metric through the core's
transformation laws.  Name map:

==============================================  ================================================
``geomkfac.nn``                                 abstract pipeline
==============================================  ================================================
loss ``"softmax_ce"``                           output metric ``CategoricalFisher``
loss ``"mse"``                                  ``GaussianFisher`` (unit variance) / ``Euclidean``
loss ``"bernoulli"``                            ``BernoulliFisher``
θ = ``[vec W̄_1; …]`` (column-stacking)          coordinates of a Point of ``net.weight_space``
                                                in the induced (reference) weight frame
``kfac_factors(fisher="exact")[i] = (A, G)``    ``kfac_metric(...).metrics[i]`` factors
                                                (``to_arrays``: ``(A_{i-1}, G_i)``, A first)
``kfac_matrix(factors)``                        ``kfac_metric(...).matrix(weight frame)``
``ggn``                                         ``expected_pullback`` (Eqn. 3.2)
``empirical_fisher``                            ``empirical_fisher_metric``
``loss_and_grad``                               ``loss_value``, ``loss_differential`` (dh)
K-FAC / NGD optimizer step (undamped)           ``natural_gradient_update`` (Thm 3.2)
``nn.model.reparameterize``                     ``FrameChoice.derive`` (D.2/D.3)
==============================================  ================================================

Tolerances.  Every compared quantity is an O(1) float64 number built from at most a few
hundred multiply-adds (N ≤ 64 examples, ≤ 40 parameters, ≤ 4 layers), so two correct
summation orders agree to ~N·P·eps ≈ 1e-12 relative; ``RTOL = 1e-10`` leaves a hundredfold
margin and is still ~1e6 below any real convention error (wrong vec order, A/G swapped, a
missing 1/N, a transposed factor each change entries by O(1e-2) or more).  Quantities that
need a linear solve (natural-gradient steps) are compared relative to their own scale with
a tolerance of ``100 · cond · eps`` (at least ``RTOL``), ``cond`` the condition number of
the solve, which bounds how much it amplifies round-off.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import DegenerateMetricError
from geomkfac.kfac import (
    empirical_fisher_metric,
    expected_pullback,
    kfac_metric,
    loss_differential,
    loss_value,
    natural_gradient_update,
    samples,
    to_arrays,
)
from geomkfac.metrics import KroneckerMetric, Metric, SecondMoment, additive_metric
from geomkfac.networks import AbstractMLP
from geomkfac.nn import (
    MLP,
    empirical_fisher,
    ggn,
    kfac_factors,
    kfac_matrix,
    loss_and_grad,
    reparameterize as nn_reparameterize,
)
from geomkfac.nn.optim import get_optimizer
from geomkfac.output_metrics import get_output_metric
from geomkfac.reparam import random_affine

#: float64 round-off on O(1) sums of a few hundred products (see the module docstring)
RTOL = 1e-10

#: (nn loss, abstract output metric); mse is checked against both the Gaussian Fisher and
#: the Euclidean metric (Fisher = Gauss-Newton for unit variance)
PAIRS = [
    ("softmax_ce", "categorical"),
    ("mse", "gaussian"),
    ("mse", "euclidean"),
    ("bernoulli", "bernoulli"),
]
ARCHS = [((3, 4, 2), "tanh"), ((2, 3, 3, 2), "sigmoid"), ((3, 4, 2), "softplus")]


# ----------------------------------------------------------------------------- building blocks
def _targets(loss, N, C, rng):
    if loss == "softmax_ce":
        return rng.integers(0, C, size=N)
    if loss == "bernoulli":
        return rng.integers(0, 2, size=(N, C)).astype(float)
    return rng.standard_normal((N, C))


def make_case(sizes, act, loss, seed=0, N=16):
    """An nn MLP with random (nonzero-bias) weights, the same abstract MLP and weights Point,
    inputs X and data targets Y."""
    rng = np.random.default_rng(seed)
    model = MLP(sizes, act, seed=seed)
    Wbars = [rng.standard_normal(l.Wbar.shape) / np.sqrt(l.in_dim + 1) for l in model.layers]
    model.set_Wbars(Wbars)
    L = len(sizes) - 1
    anet = AbstractMLP(sizes, [act] * (L - 1) + ["identity"], name=f"x{seed}")
    w = anet.weights_from(model.get_Wbars())
    X = rng.standard_normal((N, sizes[0]))
    Y = _targets(loss, N, sizes[-1], rng)
    return model, anet, w, X, Y


def assert_close(actual, expected, rtol=RTOL, what=""):
    """``max |actual − expected| ≤ rtol · max(1, max |expected|)`` (entries are O(1))."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, f"{what}: shapes {actual.shape} vs {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:.1g} · {scale:.3g}"


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))))


def weight_frame(anet, frames=None):
    """The weight-space frame induced by ``frames`` (default: the reference frames)."""
    return (frames or anet.reference_frames()).weight_space_frame


# ----------------------------------------------------------------------------- factors
@pytest.mark.parametrize("sizes,act", ARCHS)
@pytest.mark.parametrize("loss,om", PAIRS)
def test_exact_factors_equal_abstract_kfac_metric(sizes, act, loss, om):
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=1)
    fac = kfac_factors(model, X, Y, loss, fisher="exact")
    g = kfac_metric(anet, w, X, om)
    abstract = to_arrays(g, anet)  # [(A_{i-1}, G_i)] in the induced reference frame
    assert len(fac) == len(abstract) == anet.L
    for i, ((A, G), (A_abs, G_abs)) in enumerate(zip(fac, abstract), start=1):
        assert_close(A, A_abs, what=f"A of layer {i}")
        assert_close(G, G_abs, what=f"G of layer {i}")
        # the same factors straight from the layer's KroneckerMetric (A first, G second)
        A2, G2 = g.metrics[i - 1].factors()
        assert_close(A, A2, what=f"A of layer {i} (factors())")
        assert_close(G, G2, what=f"G of layer {i} (factors())")
    # the dense block diagonal against the abstract metric's matrix in the weight frame
    assert_close(kfac_matrix(fac), g.matrix(weight_frame(anet)), what="dense K-FAC")


@pytest.mark.parametrize("loss,om", PAIRS)
def test_swapped_or_row_stacked_factors_do_not_match(loss, om):
    # negative control: the conventions matter at this tolerance (A ⊗ G, not G ⊗ A;
    # column-stacking, not row-stacking)
    model, anet, w, X, Y = make_case((3, 4, 2), "tanh", loss, seed=2)
    fac = kfac_factors(model, X, Y, loss, fisher="exact")
    M = kfac_matrix(fac)
    assert max_diff(kfac_matrix([(G, A) for A, G in fac]), M) > 1e-3
    g_abs = kfac_metric(anet, w, X, om).matrix(weight_frame(anet))
    assert max_diff(kfac_matrix([(G, A) for A, G in fac]), g_abs) > 1e-3


@pytest.mark.parametrize("sizes,act", ARCHS)
@pytest.mark.parametrize("loss,om", PAIRS)
def test_ggn_equals_expected_pullback(sizes, act, loss, om):
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=3)
    F_nn = ggn(model, X, Y, loss)
    F_abs = expected_pullback(anet, w, X, om).matrix(weight_frame(anet))
    assert_close(F_nn, F_abs, what="GGN / Fisher")
    # control: K-FAC is an approximation — its block diagonal is not the Fisher here
    fac = kfac_factors(model, X, Y, loss, fisher="exact")
    assert max_diff(kfac_matrix(fac), F_abs) > 1e-3


@pytest.mark.parametrize("sizes,act", ARCHS)
@pytest.mark.parametrize("loss,om", PAIRS)
def test_empirical_fisher_and_gradient_equal_abstract(sizes, act, loss, om):
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=4)
    assert_close(
        empirical_fisher(model, X, Y, loss),
        empirical_fisher_metric(anet, w, X, Y, om).matrix(weight_frame(anet)),
        what="empirical Fisher",
    )
    value, grad = loss_and_grad(model, X, Y, loss)
    assert_close(value, loss_value(anet, w, X, Y, om), what="loss value")
    dh = loss_differential(anet, w, X, Y, om)
    assert_close(grad, dh.coords(weight_frame(anet)), what="dh")
    # control: the data-target empirical Fisher is not the (true) Fisher
    F_abs = expected_pullback(anet, w, X, om).matrix(weight_frame(anet))
    assert max_diff(empirical_fisher(model, X, Y, loss), F_abs) > 1e-3


# ----------------------------------------------------------------------------- empirical factors
def abstract_arrays(anet, w, X):
    """Arrays read off the pipeline's per-example core objects (reference frames):
    ``abars[i-1]`` (N, n_{i-1}+1) from the points ``α_{i-1}``, ``D[i]`` (N, n_L, n_i) the
    Jacobians of the rest-of-network maps ``ϕ^i`` at ``ζ_i``, and the outputs (N, n_L)."""
    smp = samples(anet, w, X)
    abars = [np.stack([np.append(s.alphas[i - 1].coords(), 1.0) for s in smp]) for i in range(1, anet.L + 1)]
    D = [None] + [np.stack([s.rests[i].jacobian(s.zetas[i]) for s in smp]) for i in range(1, anet.L + 1)]
    return abars, D, np.stack([s.output.coords() for s in smp])


def empirical_kfac_metric(anet, w, X, Y, om):
    """The K-FAC metric with data targets, built from public core objects: per layer
    ``SecondMoment(E[ā āᵀ]) ⊗ Metric(E[Dz Dzᵀ])`` with ``Dz_n = D_{i,n}ᵀ ∇_z ℓ(z_n, y_n)``
    from the abstract Jacobians (the pipeline has no empirical K-FAC accessor)."""
    om = get_output_metric(om)
    abars, D, out = abstract_arrays(anet, w, X)
    N = X.shape[0]
    gz = om.loss().grad(out, Y)  # (N, C), reference output frame
    frames = anet.reference_frames()
    blocks = []
    for i in range(1, anet.L + 1):
        ab = abars[i - 1]
        Dz = np.einsum("nlk,nl->nk", D[i], gz)
        blocks.append(
            KroneckerMetric(
                SecondMoment(frames.A[i - 1], ab.T @ ab / N, check=False),
                Metric(frames.Z[i], Dz.T @ Dz / N, check=False),
            )
        )
    return additive_metric(blocks, product_space=anet.weight_space)


@pytest.mark.parametrize("sizes,act", ARCHS)
@pytest.mark.parametrize("loss,om", PAIRS)
def test_empirical_factors_equal_abstract_with_data_targets(sizes, act, loss, om):
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=5)
    fac = kfac_factors(model, X, Y, loss, fisher="empirical")
    g = empirical_kfac_metric(anet, w, X, Y, om)
    for i, ((A, G), (A_abs, G_abs)) in enumerate(zip(fac, to_arrays(g, anet)), start=1):
        assert_close(A, A_abs, what=f"A of layer {i}")
        assert_close(G, G_abs, what=f"G of layer {i}")
    # control: with data targets G differs from the exact (expected) factor
    exact = kfac_factors(model, X, Y, loss, fisher="exact")
    assert max(max_diff(G, Ge) for (_, G), (_, Ge) in zip(fac, exact)) > 1e-3


@pytest.mark.parametrize("loss,om", PAIRS)
def test_single_example_empirical_kfac_is_the_empirical_fisher_block(loss, om):
    # with N = 1, vec(Dz āᵀ) vec(Dz āᵀ)ᵀ = ā āᵀ ⊗ Dz Dzᵀ exactly: the empirical K-FAC blocks
    # must be the diagonal blocks of the abstract empirical Fisher metric
    model, anet, w, X, Y = make_case((2, 3, 3, 2), "tanh", loss, seed=6, N=1)
    fac = kfac_factors(model, X, Y, loss, fisher="empirical")
    E = empirical_fisher_metric(anet, w, X, Y, om).matrix(weight_frame(anet))
    o, swapped = 0, []
    for A, G in fac:
        n = A.shape[0] * G.shape[0]
        assert_close(np.kron(A, G), E[o : o + n, o : o + n], what="block")
        swapped.append(max_diff(np.kron(G, A), E[o : o + n, o : o + n]))
        o += n
    # control: the swapped order G ⊗ A (row-stacking convention) does not fit
    assert max(swapped) > 1e-6


# ----------------------------------------------------------------------------- Monte Carlo
def _mc_moments(anet, w, X, loss, layer):
    """Exact per-example mean and variance (entrywise) of ``X_n = Dz Dzᵀ`` for
    ``Dz = D_nᵀ ∇_z ℓ(z_n, y)``, ``y ~ p(y | z_n)``: enumeration of the outcomes for the
    categorical (C outcomes) and Bernoulli (2^C outcomes) models, Isserlis' theorem for the
    Gaussian (``Var[u_j u_k] = Σ_jj Σ_kk + Σ_jk²``, ``Σ = D_nᵀ D_n``)."""
    _, D_all, z = abstract_arrays(anet, w, X)
    D = D_all[layer]  # (N, C, n_i)
    N, C = z.shape
    if loss == "mse":
        S = np.einsum("nlj,nlk->njk", D, D)
        d = np.einsum("njj->nj", S)
        return S, d[:, :, None] * d[:, None, :] + S**2
    if loss == "softmax_ce":
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        outcomes = [(p[:, k], p - np.eye(C)[k]) for k in range(C)]  # (prob, ∇_z ℓ)
    else:
        p = 1.0 / (1.0 + np.exp(-z))
        outcomes = []
        for bits in np.ndindex(*(2,) * C):
            y = np.array(bits, float)
            prob = np.prod(np.where(y == 1, p, 1 - p), axis=1)
            outcomes.append((prob, p - y))
    m1 = m2 = 0.0
    for prob, gz in outcomes:
        u = np.einsum("nlk,nl->nk", D, gz)
        Xn = u[:, :, None] * u[:, None, :]
        m1 = m1 + prob[:, None, None] * Xn
        m2 = m2 + prob[:, None, None] * Xn**2
    return m1, m2 - m1**2


@pytest.mark.parametrize("loss,om", [("softmax_ce", "categorical"), ("mse", "gaussian"),
                                     ("bernoulli", "bernoulli")])
def test_mc_factors_match_exact_within_clt_bounds(loss, om):
    """``G_mc = (1/(N M)) Σ_{n,m} X_{n,m}`` is a mean of independent draws with
    ``E[G_mc] = (1/N) Σ_n E[X_n] = G_exact`` and ``Var[G_mc] = Σ_n Var[X_n] / (N² M)``
    (exact, from :func:`_mc_moments`).  By the CLT each entry is ≈ normal, so
    ``|G_mc − G_exact| ≤ 5 σ`` fails with probability < 6e-7 per entry (< 1e-4 over all the
    entries here; the seed is fixed, so the test is deterministic)."""
    N, M = 24, 200
    model, anet, w, X, Y = make_case((3, 4, 2), "tanh", loss, seed=7, N=N)
    exact = kfac_factors(model, X, Y, loss, fisher="exact")
    mc = kfac_factors(model, X, None, loss, fisher="mc", mc_samples=M, seed=11)
    g_abs = to_arrays(kfac_metric(anet, w, X, om), anet)
    worst = 0.0
    for i, ((A_mc, G_mc), (A_ex, G_ex), (_, G_abs)) in enumerate(zip(mc, exact, g_abs), start=1):
        assert_close(A_mc, A_ex, what=f"A of layer {i} (targets do not enter A)")
        mean, var = _mc_moments(anet, w, X, loss, i)
        # the enumerated expectation is the abstract G (an independent route to it)
        assert_close(mean.mean(axis=0), G_abs, what=f"E[G] of layer {i}")
        sigma = np.sqrt(var.sum(axis=0) / (N**2 * M))
        z = np.abs(G_mc - G_ex) / sigma
        assert np.all(z < 5.0), f"layer {i}: |z| up to {z.max():.2f}"
        worst = max(worst, float(z.max()))
        # control: a 30 % error in the expectation is far outside the bound
        assert np.any(np.abs(G_mc - 1.3 * G_ex) / sigma > 5.0)
    # the bound is not vacuous: the estimator does fluctuate at the σ scale
    assert worst > 0.3


@pytest.mark.parametrize("loss", ["softmax_ce", "mse", "bernoulli"])
def test_mc_standardized_errors_have_unit_variance(loss):
    """Calibration of the CLT bound above: over 20 independent seeds the standardized errors
    ``(G_mc − G_exact)/σ`` (upper triangles) have mean ≈ 0 and variance ≈ 1.  With 20 seeds
    the sample variance of these (within a seed correlated) z's lies in [0.5, 1.7] unless σ is
    mis-derived; a σ off by √2 either way would put it at 0.5 or 2."""
    N, M = 24, 100
    model, anet, w, X, Y = make_case((3, 4, 2), "tanh", loss, seed=7, N=N)
    exact = kfac_factors(model, X, Y, loss, fisher="exact")
    sigmas = [np.sqrt(_mc_moments(anet, w, X, loss, i)[1].sum(axis=0) / (N**2 * M))
              for i in range(1, anet.L + 1)]
    zs = []
    for seed in range(20):
        mc = kfac_factors(model, X, None, loss, fisher="mc", mc_samples=M, seed=100 + seed)
        for (_, G_mc), (_, G_ex), sig in zip(mc, exact, sigmas):
            iu = np.triu_indices(G_ex.shape[0])
            zs.append(((G_mc - G_ex) / sig)[iu])
    z = np.concatenate(zs)
    assert abs(z.mean()) < 0.3, z.mean()
    assert 0.5 < z.var() < 1.7, z.var()


# ----------------------------------------------------------------------------- NG steps
def _kfac_opt(model, loss, lr):
    return get_optimizer(
        "kfac", model, loss, lr=lr, damping=0.0, damping_mode="exact", momentum=0.0,
        ema_decay=0.0, kl_clip=None, fisher="exact", factor_update_period=1,
        inverse_update_period=1, eig_floor=None, weight_decay=0.0,
    )


def solve_tol(cond):
    """Tolerance for a result of a linear solve: its relative round-off is ≲ cond · eps
    (standard backward-error bound); allow 100 · cond · eps, and never less than RTOL."""
    return max(RTOL, 100 * np.finfo(float).eps * cond)


def _cond_kfac(anet, w, X, om):
    return max(np.linalg.cond(A) * np.linalg.cond(G) for A, G in to_arrays(kfac_metric(anet, w, X, om), anet))


@pytest.mark.parametrize("sizes,act", [((3, 4, 2), "tanh"), ((2, 3, 3, 2), "tanh")])
@pytest.mark.parametrize("loss,om", [("mse", "gaussian"), ("mse", "euclidean"),
                                     ("bernoulli", "bernoulli")])
def test_kfac_step_equals_abstract_natural_gradient_update(sizes, act, loss, om):
    # (undamped K-FAC with lr 0.1 stays well conditioned on these nets for 3 steps; a
    # sigmoid 2-3-3-2 net saturates after one undamped step and its G factors degenerate)
    lr = 0.1
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=8, N=32)
    opt = _kfac_opt(model, loss, lr)
    for step in range(3):
        g = kfac_metric(anet, w, X, om)
        dh = loss_differential(anet, w, X, Y, om)
        w_next = natural_gradient_update(g, w, dh, lr)
        tol = solve_tol(_cond_kfac(anet, w, X, om))
        info = opt.step(X, Y)
        assert_close(info.loss, loss_value(anet, w, X, Y, om), what=f"loss at step {step}")
        for i, (W_nn, W_abs) in enumerate(zip(model.get_Wbars(), to_arrays(w_next, anet)), 1):
            assert_close(W_nn, W_abs, rtol=tol, what=f"W̄_{i} after step {step}")
        # control: the abstract SGD step (Euclidean metric of the reference frame) differs
        if step == 0:
            w_sgd = natural_gradient_update(Metric.identity(weight_frame(anet)), w, dh, lr)
            assert max(max_diff(a, b) for a, b in zip(model.get_Wbars(), to_arrays(w_sgd, anet))) > 1e-3
        w = w_next


def test_undamped_kfac_with_softmax_is_degenerate():
    # the softmax output Fisher has rank C−1, so the last G is singular and the abstract
    # undamped update refuses (paper-notes §5); K-FAC steps are compared on mse/bernoulli
    model, anet, w, X, Y = make_case((3, 4, 2), "tanh", "softmax_ce", seed=9, N=32)
    g = kfac_metric(anet, w, X, "categorical")
    G_last = to_arrays(g, anet)[-1][1]
    assert np.linalg.eigvalsh(G_last)[0] < 1e-12 * np.linalg.eigvalsh(G_last)[-1]
    with pytest.raises(DegenerateMetricError):
        natural_gradient_update(g, w, loss_differential(anet, w, X, Y, "categorical"), 0.1)


@pytest.mark.parametrize("loss,om", [("mse", "gaussian"), ("bernoulli", "bernoulli")])
@pytest.mark.parametrize("metric", ["ggn", "empirical"])
def test_ngd_step_equals_abstract_update_with_fisher(loss, om, metric):
    # one undamped step: exact NGD without damping is ill-conditioned (cond ~1e5–1e6 here)
    # and its second step already leaves the region where the dense metric is invertible
    lr = 0.1
    model, anet, w, X, Y = make_case((3, 4, 2), "tanh", loss, seed=10, N=64)
    opt = get_optimizer("ngd", model, loss, lr=lr, damping=0.0, metric=metric, momentum=0.0)
    F = (expected_pullback(anet, w, X, om) if metric == "ggn"
         else empirical_fisher_metric(anet, w, X, Y, om))
    dh = loss_differential(anet, w, X, Y, om)
    w_next = natural_gradient_update(F, w, dh, lr)
    tol = solve_tol(np.linalg.cond(F.matrix(weight_frame(anet))))
    opt.step(X, Y)
    for i, (W_nn, W_abs) in enumerate(zip(model.get_Wbars(), to_arrays(w_next, anet)), 1):
        assert_close(W_nn, W_abs, rtol=tol, what=f"W̄_{i}")
    # control: the K-FAC update with the same dh is a different step
    w_kfac = natural_gradient_update(kfac_metric(anet, w, X, om), w, dh, lr)
    assert max(max_diff(a, b) for a, b in zip(model.get_Wbars(), to_arrays(w_kfac, anet))) > 1e-4


# ----------------------------------------------------------------------------- changed frames
@pytest.mark.parametrize("sizes,act,hidden", [((3, 4, 2), "tanh", (1,)),
                                              ((2, 3, 3, 2), "softplus", (1, 2)),
                                              ((2, 3, 3, 2), "sigmoid", (2,))])
@pytest.mark.parametrize("loss,om", PAIRS)
def test_factors_in_a_changed_frame_equal_nn_on_reparameterized_net(sizes, act, hidden, loss, om):
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=12)
    rng = np.random.default_rng(13)
    changes = {i: random_affine(sizes[i], rng) for i in hidden}
    kappa = anet.reference_frames().derive(changes)
    # the abstract metric is computed once, in the reference frames; its factors in κ
    # follow from the core's transformation laws (A‡ = [Ω]_H A [Ω]_Hᵀ, G‡ = Φᵀ G Φ)
    g = kfac_metric(anet, w, X, om)
    in_kappa = to_arrays(g, anet, frames=kappa)
    model2 = nn_reparameterize(model, changes)
    assert_close(model2.forward(X), model.forward(X), what="same function")
    fac2 = kfac_factors(model2, X, Y, loss, fisher="exact")
    # the pipeline run directly in κ (D.3 activations, κ's Jacobians) agrees as well
    direct = to_arrays(kfac_metric(anet, w, X, om, frames=kappa), anet, frames=kappa)
    for i, ((A, G), (A_k, G_k), (A_d, G_d)) in enumerate(zip(fac2, in_kappa, direct), start=1):
        assert_close(A, A_k, what=f"A‡ of layer {i}")
        assert_close(G, G_k, what=f"G‡ of layer {i}")
        assert_close(A, A_d, what=f"A‡ of layer {i} (computed in κ)")
        assert_close(G, G_d, what=f"G‡ of layer {i} (computed in κ)")
    # negative control: the unchanged network's factors do not match κ's where a changed
    # space enters (A of the layer after a changed A_i, G of a changed Z_i)
    fac = kfac_factors(model, X, Y, loss, fisher="exact")
    for i in hidden:
        assert max_diff(fac[i][0], in_kappa[i][0]) > 1e-3  # A_i of layer i+1
        assert max_diff(fac[i - 1][1], in_kappa[i - 1][1]) > 1e-3  # G_i of layer i
    # and the dense matrices follow the metric law: the κ matrix from the abstract metric
    assert_close(kfac_matrix(fac2), g.matrix(weight_frame(anet, kappa)), what="dense K-FAC in κ")


@pytest.mark.parametrize("loss,om", [("mse", "gaussian"), ("bernoulli", "bernoulli")])
def test_changed_frame_input_and_hidden(loss, om):
    # an input change (Ω_0, γ_0) as well: the reparameterized net reads X‡ = X Ω_0ᵀ + γ_0
    sizes = (3, 4, 2)
    model, anet, w, X, Y = make_case(sizes, "tanh", loss, seed=14)
    rng = np.random.default_rng(15)
    ch0 = random_affine(sizes[0], rng).on_A_only()
    changes = {0: ch0, 1: random_affine(sizes[1], rng)}
    kappa = anet.reference_frames().derive(changes)
    in_kappa = to_arrays(kfac_metric(anet, w, X, om), anet, frames=kappa)
    model2 = nn_reparameterize(model, changes)
    X2 = X @ ch0.Omega.T + ch0.gamma
    fac2 = kfac_factors(model2, X2, Y, loss, fisher="exact")
    for i, ((A, G), (A_k, G_k)) in enumerate(zip(fac2, in_kappa), start=1):
        assert_close(A, A_k, what=f"A‡ of layer {i}")
        assert_close(G, G_k, what=f"G‡ of layer {i}")
    # control: feeding the untransformed inputs to the reparameterized net breaks A_0
    bad = kfac_factors(model2, X, Y, loss, fisher="exact")
    assert max_diff(bad[0][0], in_kappa[0][0]) > 1e-3


# ----------------------------------------------------------------------------- property-based
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    widths=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    n_in=st.integers(1, 3),
    n_out=st.integers(1, 3),
    act=st.sampled_from(["tanh", "sigmoid", "softplus"]),
    pair=st.sampled_from(PAIRS),
    N=st.integers(1, 12),
)
def test_property_factors_ggn_grad_agree(seed, widths, n_in, n_out, act, pair, N):
    loss, om = pair
    sizes = (n_in, *widths, n_out)
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=seed, N=N)
    wf = weight_frame(anet)
    fac = kfac_factors(model, X, Y, loss, fisher="exact")
    g = kfac_metric(anet, w, X, om)
    for (A, G), (A_abs, G_abs) in zip(fac, to_arrays(g, anet)):
        assert_close(A, A_abs, what="A")
        assert_close(G, G_abs, what="G")
    assert_close(ggn(model, X, Y, loss), expected_pullback(anet, w, X, om).matrix(wf), what="GGN")
    _, grad = loss_and_grad(model, X, Y, loss)
    assert_close(grad, loss_differential(anet, w, X, Y, om).coords(wf), what="dh")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.integers(2, 4),
       pair=st.sampled_from(PAIRS), act=st.sampled_from(["tanh", "sigmoid", "softplus"]))
def test_property_changed_frame_factors(seed, width, pair, act):
    loss, om = pair
    sizes = (2, width, 2)
    model, anet, w, X, Y = make_case(sizes, act, loss, seed=seed, N=10)
    changes = {1: random_affine(width, np.random.default_rng(seed + 1))}
    kappa = anet.reference_frames().derive(changes)
    in_kappa = to_arrays(kfac_metric(anet, w, X, om), anet, frames=kappa)
    fac2 = kfac_factors(nn_reparameterize(model, changes), X, Y, loss)
    for (A, G), (A_k, G_k) in zip(fac2, in_kappa):
        # the frame change has condition number ≤ 4 per factor, so entries stay O(10)
        assert_close(A, A_k, what="A‡")
        assert_close(G, G_k, what="G‡")
    # negative control: the reference-frame factors of layer 2's A are not κ's
    fac = kfac_factors(model, X, Y, loss)
    assert max_diff(fac[1][0], in_kappa[1][0]) > 1e-6


# ----------------------------------------------------------------------------- the example
def test_example_crosscheck_reports_round_off_and_a_failing_control(capsys):
    path = Path(__file__).resolve().parents[1] / "examples" / "crosscheck.py"
    spec = importlib.util.spec_from_file_location("example_crosscheck", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = mod.main()
    assert "GGN/Fisher" in capsys.readouterr().out
    assert len(results) == 6
    for d in results.values():
        control = d.pop("control: A, G vs κ")
        assert max(d.values()) < RTOL  # entries O(1): round-off only
        assert control > 1e-3
