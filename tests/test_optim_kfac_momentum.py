"""K-FAC's momentum fixed against a hand-computed two-step trajectory.

The optimizer's update with a fixed learning rate is ``δ_t = μ δ_{t−1} − lr ν P_t`` (heavy
ball on the preconditioned gradient; ``ν = 1`` without KL clipping) and ``θ_t = θ_{t−1} + δ_t``.
Here the trajectory is recomputed by independent NumPy code on a one-layer linear model with
squared error: the gradient ``DW̄ = (1/N) Σ (f − y) āᵀ``, the factors ``A = (1/N) Σ ā āᵀ`` and
``G = I`` (the exact Fisher of a unit-variance Gaussian output), and the preconditioned
gradient by a *dense* solve with the Kronecker product, ``vec P = (A' ⊗ G')⁻¹ vec DW̄``
(column-stacking; 6 parameters), with the damped factors ``A' = A + π√λ I``,
``G' = G + √λ/π I``, ``π = sqrt((tr A / 3) / (tr G / 2))`` when ``λ > 0``.

The trajectories with the two plausible wrong formulas — ``δ = −μ δ_prev − lr P`` (wrong
sign) and ``δ = μ P_prev − lr P`` (``P`` in place of ``δ_prev``) — are computed too and must
differ from the right one by far more than the tolerance, so the comparison can tell them
apart.

Tolerance: every quantity is O(1) and computed in float64 by a few small solves (condition
numbers ≲ 1e2), so round-off is ≲ 1e-13; we allow 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

from geomkfac.nn import MLP, get_optimizer

TOL = 1e-10
N, D_IN, D_OUT = 8, 2, 2


def _data(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D_IN))
    Y = rng.normal(size=(N, D_OUT))
    W0 = rng.normal(size=(D_OUT, D_IN + 1))
    return X, Y, W0


def _preconditioned(Wbar, X, Y, damping):
    """``P`` of the one-layer linear model at ``W̄``, by a dense Kronecker solve."""
    Xbar = np.hstack([X, np.ones((len(X), 1))])
    f = Xbar @ Wbar.T
    D = (f - Y).T @ Xbar / len(X)                       # DW̄ (out × in+1)
    A = Xbar.T @ Xbar / len(X)
    G = np.eye(D_OUT)
    if damping > 0:
        pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
        A = A + pi * np.sqrt(damping) * np.eye(A.shape[0])
        G = G + np.sqrt(damping) / pi * np.eye(D_OUT)
    vecP = np.linalg.solve(np.kron(A, G), D.reshape(-1, order="F"))
    return vecP.reshape(D.shape, order="F")


def _trajectory(W0, X, Y, lr, mu, damping, rule="right"):
    """``[W̄_1, W̄_2]`` after two steps of the heavy-ball rule ``rule``."""
    W, delta_prev, P_prev, out = W0.copy(), None, None, []
    for _ in range(2):
        P = _preconditioned(W, X, Y, damping)
        delta = -lr * P
        if delta_prev is not None:
            if rule == "right":
                delta = mu * delta_prev - lr * P
            elif rule == "wrong sign":
                delta = -mu * delta_prev - lr * P
            elif rule == "P for δ_prev":
                delta = mu * P_prev - lr * P
        W = W + delta
        delta_prev, P_prev = delta, P
        out.append(W.copy())
    return out


def _optimizer_trajectory(W0, X, Y, lr, mu, damping):
    model = MLP([D_IN, D_OUT], "identity", seed=0)
    model.set_Wbars([W0])
    opt = get_optimizer("kfac", model, "mse", lr=lr, momentum=mu, damping=damping,
                        fisher="exact", kl_clip=None, ema_decay=0.0,
                        inverse_update_period=1, factor_update_period=1)
    out = []
    for _ in range(2):
        opt.step(X, Y)
        out.append(model.get_Wbars()[0])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mu", [0.5, 0.9])
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_two_step_momentum_trajectory_matches_hand_computation(seed, mu, damping):
    X, Y, W0 = _data(seed)
    lr = 0.3
    expected = _trajectory(W0, X, Y, lr, mu, damping)
    got = _optimizer_trajectory(W0, X, Y, lr, mu, damping)
    for step, (a, b) in enumerate(zip(got, expected), start=1):
        assert np.max(np.abs(a - b)) <= TOL, (
            f"step {step}: optimizer W̄ differs from δ = μ δ_prev − lr P by {np.max(np.abs(a - b)):.2e}")


@pytest.mark.parametrize("rule", ["wrong sign", "P for δ_prev"])
def test_wrong_momentum_rules_are_far_from_the_hand_trajectory(rule):
    """The comparison above can tell the right rule from the plausible wrong ones."""
    X, Y, W0 = _data(0)
    right = _trajectory(W0, X, Y, 0.3, 0.9, 0.0)
    wrong = _trajectory(W0, X, Y, 0.3, 0.9, 0.0, rule=rule)
    assert np.max(np.abs(right[0] - wrong[0])) <= TOL        # the first step has no momentum
    assert np.max(np.abs(right[1] - wrong[1])) > 1e3 * TOL
    got = _optimizer_trajectory(W0, X, Y, 0.3, 0.9, 0.0)
    assert np.max(np.abs(got[1] - wrong[1])) > 1e3 * TOL


def test_momentum_zero_is_two_plain_kfac_steps():
    X, Y, W0 = _data(3)
    W1 = W0 - 0.3 * _preconditioned(W0, X, Y, 0.0)
    W2 = W1 - 0.3 * _preconditioned(W1, X, Y, 0.0)
    got = _optimizer_trajectory(W0, X, Y, 0.3, 0.0, 0.0)
    assert np.max(np.abs(got[0] - W1)) <= TOL
    assert np.max(np.abs(got[1] - W2)) <= TOL
