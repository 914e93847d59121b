"""Temporally correlated K-FAC (Martens, Ba & Johnson 2018, Options 1 and 2): each solve
against its defining formula built densely (sums of lagged cross-moments with matrix powers,
Kronecker products formed), the lag-one moments against explicit loops, the reduction to
independent K-FAC when the lag moments vanish, and the optimizer's step on an RNN.

Tolerance 1e-9 relative: the dense route (matrix powers, a dense solve of size ≤ 60) and
the factored route (eigendecompositions of the small factors) differ by round-off times
condition numbers ≲ 1e3; a wrong weight (T − |d|), a transposed Ψ or a missing T is O(1)."""

from __future__ import annotations

import numpy as np
import pytest

import geomkfac.nn as gnn
from geomkfac.errors import ConfigurationError
from geomkfac.nn import kfac_factors, loss_and_grad
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.optim.temporal import MAX_CORR, lag_moment, temporal_block, temporal_solve, zeta

RTOL = 1e-9


def spd(rng, n):
    M = rng.standard_normal((n, n + 3))
    return M @ M.T / (n + 3) + 0.1 * np.eye(n)


def factors(seed, na=4, ng=3, corr=0.3):
    rng = np.random.default_rng(seed)
    A0, G0 = spd(rng, na), spd(rng, ng)
    # lag moments of moderate size: the whitened correlations stay well inside MAX_CORR
    A1 = corr * np.linalg.cholesky(A0) @ rng.uniform(-0.4, 0.4, (na, na)) @ np.linalg.cholesky(A0).T
    G1 = corr * np.linalg.cholesky(G0) @ rng.uniform(-0.4, 0.4, (ng, ng)) @ np.linalg.cholesky(G0).T
    return A0, G0, A1, G1


def dense_FT(V0, V1, T, infinite=False, D=400):
    """Σ_{|d|<T} (T − |d|) V_d, V_d = V_0 (Ψᵀ)^d, V_{−d} = V_dᵀ, Ψ = V_1ᵀ V_0⁻¹; with
    ``infinite`` the weights are T for every |d| ≤ D (Option 2's T → ∞ limit)."""
    PsiT = np.linalg.solve(V0, V1)  # Ψᵀ = V_0⁻¹ V_1
    F = T * V0
    Vd = V0
    for d in range(1, D + 1 if infinite else T):
        Vd = Vd @ PsiT
        w = T if infinite else T - d
        F = F + w * (Vd + Vd.T)
    return F


def vec(V):
    return V.reshape(-1, order="F")


@pytest.mark.parametrize("T", [1, 2, 5, 9])
def test_zeta_closed_form(T):
    for x in (-0.7, -0.1, 0.0, 0.4, 0.95):
        direct = sum((T - abs(d)) * x ** abs(d) for d in range(-(T - 1), T))
        assert zeta(x, T) == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("seed, T", [(0, 3), (1, 6), (2, 10)])
def test_option1_is_its_defining_formula(seed, T):
    A0, G0, A1, G1 = factors(seed)
    V = np.random.default_rng(seed + 10).standard_normal((3, 4))
    blk = temporal_block("option1", A0, G0, A1, G1, T)
    sym = lambda M: 0.5 * (M + M.T)  # noqa: E731 — Option 1: V_1 symmetric
    F = dense_FT(np.kron(A0, G0), np.kron(sym(A1), sym(G1)), T)
    np.testing.assert_allclose(vec(temporal_solve(V, blk)), np.linalg.solve(F, vec(V)), rtol=RTOL)
    # negative control: the independence approximation T·A0⊗G0 is a different metric here
    indep = np.linalg.solve(T * np.kron(A0, G0), vec(V))
    if T > 1:
        assert np.abs(indep - vec(temporal_solve(V, blk))).max() > 1e-3 * np.abs(indep).max()


@pytest.mark.parametrize("seed, T", [(0, 3), (3, 7)])
def test_option2_is_its_defining_formula(seed, T):
    A0, G0, A1, G1 = factors(seed)
    V = np.random.default_rng(seed + 20).standard_normal((3, 4))
    blk = temporal_block("option2", A0, G0, A1, G1, T)
    V0, V1 = np.kron(A0, G0), np.kron(A1, G1)
    F = dense_FT(V0, V1, T, infinite=True)  # the series, truncated where Ψ^d < 1e-16
    np.testing.assert_allclose(vec(temporal_solve(V, blk)), np.linalg.solve(F, vec(V)), rtol=RTOL)
    # negative control: the finite-T chain (Option 1's weights, nonsymmetric V_1) differs
    finite = np.linalg.solve(dense_FT(V0, V1, T), vec(V))
    assert np.abs(finite - vec(temporal_solve(V, blk))).max() > 1e-3 * np.abs(finite).max()


@pytest.mark.parametrize("option", ["option1", "option2"])
def test_zero_lag_moments_give_factored_kfac(option):
    """With A_1 = G_1 = 0 both options are the π-corrected factored K-FAC block of
    T·A_0 ⊗ G_0: (G_0 + √λ/π)⁻¹ V (T A_0 + π√λ)⁻¹."""
    A0, G0, _, _ = factors(4)
    T, lam, pi = 6, 0.3, 1.7
    V = np.random.default_rng(5).standard_normal((3, 4))
    blk = temporal_block(option, A0, G0, 0 * A0, 0 * G0, T, damping=lam, pi=pi)
    r = np.sqrt(lam)
    want = np.linalg.solve(G0 + r / pi * np.eye(3), V) @ np.linalg.inv(T * A0 + pi * r * np.eye(4))
    np.testing.assert_allclose(temporal_solve(V, blk), want, rtol=RTOL)


def test_correlations_are_clipped():
    A0 = np.eye(2)
    blk = temporal_block("option1", A0, A0, 5 * A0, 5 * A0, 4)
    assert np.allclose(blk.mats["inv_zeta"], 1 / zeta(MAX_CORR, 4))


def test_lag_moment_by_loops():
    rng = np.random.default_rng(0)
    N, T, d = 3, 5, 2
    R = rng.standard_normal((N * T, d))
    want = sum(np.outer(R[n * T + t], R[n * T + t + 1]) for n in range(N) for t in range(T - 1))
    np.testing.assert_allclose(lag_moment(R, T), want / (N * (T - 1)), rtol=1e-13)
    K = rng.standard_normal((2, N * T, d))
    np.testing.assert_allclose(lag_moment(K, T, K_axis=True),
                               (lag_moment(K[0], T) + lag_moment(K[1], T)), rtol=1e-13)


def rnn_problem(seed=0, N=16, T=6):
    rng = np.random.default_rng(seed)
    net = gnn.Sequential([gnn.RNN(0.6 * rng.standard_normal((4, 6)), np.zeros(4), "tanh"),
                          gnn.Dense(0.6 * rng.standard_normal((3, 4)), np.zeros(3))])
    X = rng.standard_normal((N, T, 2))
    return net, X, (X[..., 0] > 0).astype(int) + (X[..., 1] > 0.5)


@pytest.mark.parametrize("option", ["option1", "option2"])
def test_kfac_step_uses_the_temporal_blocks(option):
    """First step, empirical Fisher: the update is −lr · (temporal solve) with A_0, G_0 from
    kfac_factors and the lag moments summed here by loops over (n, t)."""
    net, X, Y = rnn_problem()
    lam, lr = 1e-2, 0.5
    blocks = kfac_factors(net, X, Y, "ce", fisher="empirical")
    g = loss_and_grad(net, X, Y, "ce")[1]
    f, cache = net.forward_cache(X)
    loss = gnn.losses.loss_for_model(net, "ce")
    Dz = net.backward(cache, loss.grad(f, Y))
    N, T = X.shape[:2]
    want = []
    for blk, ab, D, V in zip(blocks, cache.abar, Dz, net.split_flat(g)):
        A1 = sum(np.outer(ab[n * T + t], ab[n * T + t + 1]) for n in range(N) for t in range(T - 1))
        G1 = sum(np.outer(D[n * T + t], D[n * T + t + 1]) for n in range(N) for t in range(T - 1))
        A0, G0 = blk
        pi = np.sqrt((np.trace(T * A0) / len(A0)) / (np.trace(G0) / len(G0)))
        tb = temporal_block(option, A0, G0, A1 / (N * (T - 1)), G1 / (N * (T - 1)), T, lam, pi)
        want.append(vec(temporal_solve(V, tb)))
    opt = get_optimizer("kfac", net, "ce", lr=lr, damping=lam, fisher="empirical", kl_clip=None,
                        temporal=option)
    theta = net.get_flat()
    opt.step(X, Y)
    np.testing.assert_allclose(net.get_flat() - theta, -lr * np.concatenate(want), rtol=RTOL,
                               atol=1e-12)


def test_temporal_options_leave_conv_layers_alone():
    rng = np.random.default_rng(0)
    net = gnn.Sequential([gnn.Conv2d(rng.standard_normal((2, 1, 3, 3)), np.zeros(2), "tanh"),
                          gnn.Flatten(), gnn.Dense(rng.standard_normal((3, 8)), np.zeros(3))])
    X, Y = rng.standard_normal((10, 1, 4, 4)), rng.integers(0, 3, 10)
    a, b = net.copy(), net.copy()
    get_optimizer("kfac", a, "ce", fisher="exact", temporal="option1").step(X, Y)
    get_optimizer("kfac", b, "ce", fisher="exact").step(X, Y)
    # the same step; the factors are summed in another order on the temporal path
    np.testing.assert_allclose(a.get_flat(), b.get_flat(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("option", ["option1", "option2"])
def test_temporal_kfac_trains_and_resumes(option):
    net, X, Y = rnn_problem(N=32)
    opt = get_optimizer("kfac", net, "ce", lr=0.3, damping=1e-2, temporal=option, fisher="mc",
                        inverse_update_period=2)
    losses = [opt.step(X, Y).loss for _ in range(6)]
    state = opt.state_dict()
    net2 = net.copy()
    opt2 = get_optimizer("kfac", net2, "ce", lr=0.3, damping=1e-2, temporal=option, fisher="mc",
                         inverse_update_period=2)
    opt2.load_state_dict(state)
    for _ in range(5):
        losses.append(opt.step(X, Y).loss)
        opt2.step(X, Y)
    assert net.get_flat().tobytes() == net2.get_flat().tobytes()
    assert losses[-1] < 0.8 * losses[0]


def test_temporal_needs_factored_damping():
    net, _, _ = rnn_problem()
    with pytest.raises(ConfigurationError, match="factored"):
        get_optimizer("kfac", net, "ce", temporal="option2", damping_mode="exact")
    with pytest.raises(ConfigurationError, match="temporal"):
        get_optimizer("kfac", net, "ce", temporal="option3")
