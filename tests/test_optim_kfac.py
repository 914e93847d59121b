"""K-FAC and EKFAC: exactness where K-FAC is exact, the invariance of Theorem 2.1 (with SGD
as the negative control), damping modes against dense references, Levenberg–Marquardt,
adaptive learning rate and momentum, KL clipping, the eigenvalue floor and the float64
retry, EKFAC's reduction to K-FAC, and the GGN-vector products.

Kronecker products and dense matrices appear only here, as references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geomkfac.errors import DegenerateMetricError, DimensionError
from geomkfac.nn import (
    MLP,
    ConjugatedActivation,
    Dense,
    ggn,
    kfac_factors,
    loss_and_grad,
)
from geomkfac.nn.optim import get_optimizer, ggn_vector_product
from geomkfac.nn.optim import kronecker
from geomkfac.nn.optim.kronecker import safe_eigh

ORACLE = Path(__file__).parent / "oracle"


def linear_problem(N=30, d=3, C=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d)) @ (np.eye(d) + 0.5 * rng.standard_normal((d, d)))
    Y = rng.standard_normal((N, C))
    net = MLP.from_layers([Dense(rng.standard_normal((C, d)), rng.standard_normal(C), "identity")])
    return net, X, Y


def small_net(seed=0, loss="bernoulli", sizes=(4, 5, 3), N=40):
    rng = np.random.default_rng(seed)
    net = MLP(list(sizes), "tanh", seed=seed)
    X = rng.standard_normal((N, sizes[0]))
    if loss == "softmax_ce":
        Y = rng.integers(0, sizes[-1], N)
    elif loss == "bernoulli":
        Y = rng.random((N, sizes[-1]))
    else:
        Y = rng.standard_normal((N, sizes[-1]))
    return net, X, Y


def block_kron_solve(factors, g, damping=0.0, factored_pi=None):
    """Dense reference: (⊕ kron(A, G) + λ I)⁻¹ g, or the factored-damping variant."""
    out, start = [], 0
    for A, G in factors:
        n = A.shape[0] * G.shape[0]
        if factored_pi is None:
            M = np.kron(A, G) + damping * np.eye(n)
        else:
            pi = factored_pi(A, G)
            r = np.sqrt(damping)
            M = np.kron(A + pi * r * np.eye(len(A)), G + r / pi * np.eye(len(G)))
        out.append(np.linalg.solve(M, g[start:start + n]))
        start += n
    return np.concatenate(out)


def exact_kfac(**kw):
    h = dict(fisher="exact", damping=0.0, damping_mode="exact", eig_floor=None, ema_decay=0.0,
             factor_update_period=1, inverse_update_period=1, kl_clip=None)
    h.update(kw)
    return h


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name,mode,lam", [("kfac", "exact", 1e-3), ("kfac", "factored", 0.0),
                                           ("ekfac", "exact", 1e-3)])
def test_kfac_on_one_linear_layer_equals_exact_ngd(name, mode, lam):
    """One linear layer + squared error: A ⊗ I is the GGN, so K-FAC (and EKFAC) = NGD.
    (Factored damping is a different regularizer than λI, hence compared at λ = 0.)"""
    net, X, Y = linear_problem()
    net2 = net.copy()
    k = get_optimizer(name, net, "mse", lr=0.7, **exact_kfac(damping_mode=mode, damping=lam))
    n = get_optimizer("ngd", net2, "mse", lr=0.7, damping=lam)
    for _ in range(3):
        k.step(X, Y)
        n.step(X, Y)
        # round-off of small solves (condition number of A ~ 30)
        np.testing.assert_allclose(net.get_flat(), net2.get_flat(), rtol=0, atol=1e-12)


def test_undamped_kfac_equals_block_kron_inverse_and_both_modes_agree():
    net, X, Y = small_net(loss="mse")
    _, g = loss_and_grad(net, X, Y, "mse")
    fac = kfac_factors(net, X, Y, "mse", fisher="exact")
    ref = block_kron_solve(fac, g)  # exact undamped K-FAC natural gradient
    th0 = net.get_flat()
    for mode in ("exact", "factored"):
        net.set_flat(th0)
        get_optimizer("kfac", net, "mse", lr=1.0, **exact_kfac(damping_mode=mode)).step(X, Y)
        # conditioning of the factors ~1e3: 1e-9 relative
        np.testing.assert_allclose(th0 - net.get_flat(), ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("lam", [1e-3, 0.1, 2.0])
def test_exact_damping_equals_dense_kron_plus_lambda(lam):
    net, X, Y = small_net(loss="softmax_ce", seed=3)
    _, g = loss_and_grad(net, X, Y, "softmax_ce")
    fac = kfac_factors(net, X, Y, "softmax_ce", fisher="exact")
    th0 = net.get_flat()
    get_optimizer("kfac", net, "softmax_ce", lr=1.0,
                  **exact_kfac(damping=lam, eig_floor=0.0)).step(X, Y)
    np.testing.assert_allclose(th0 - net.get_flat(), block_kron_solve(fac, g, lam),
                               rtol=1e-10, atol=1e-12)  # λ-regularized solves, round-off only
    # factored damping with the π correction against its dense form
    net.set_flat(th0)
    get_optimizer("kfac", net, "softmax_ce", lr=1.0,
                  **exact_kfac(damping=lam, damping_mode="factored", eig_floor=0.0)).step(X, Y)
    pi = lambda A, G: np.sqrt((np.trace(A) / len(A)) / (np.trace(G) / len(G)))  # noqa: E731
    ref = block_kron_solve(fac, g, lam, factored_pi=pi)
    np.testing.assert_allclose(th0 - net.get_flat(), ref, rtol=1e-10, atol=1e-12)
    # negative control: exact and factored damping differ at λ > 0
    assert not np.allclose(ref, block_kron_solve(fac, g, lam), rtol=1e-3)


@pytest.mark.parametrize("case", ["tanh_ce", "sigmoid_mse"])
def test_natural_gradients_match_independent_libraries(case):
    """The oracle's (kfac + λI)⁻¹ grad and ((A+√λI) ⊗ (G+√λI))⁻¹ grad (π = 1)."""
    c = np.load(ORACLE / f"{case}.npz")
    o = np.load(ORACLE / f"{case}.oracle.npz")
    acts = [str(a) for a in c["acts"]]
    layers = [Dense(c[f"W{i}"], c[f"b{i}"], a) for i, a in enumerate(acts)]
    loss, lam = str(c["loss"]), float(c["damping"])
    for key, mode in (("natgrad_type2", "exact"), ("natgrad_factored_type2", "factored")):
        net = MLP.from_layers([Dense(l.W, l.b, l.activation) for l in layers])
        th0 = net.get_flat()
        opt = get_optimizer("kfac", net, loss, lr=1.0, **exact_kfac(
            damping=lam, damping_mode=mode, pi_correction=False, eig_floor=0.0))
        opt.step(c["X"], c["Y"])
        # the oracle agrees with itself to ~1e-15; damped solves lose a few digits
        np.testing.assert_allclose(th0 - net.get_flat(), o[key], rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- Theorem 2.1


def _homog(M, v):
    d = len(v)
    H = np.eye(d + 1)
    H[:d, :d] = M
    H[:d, d] = v
    return H


def _random_basis(rng, d, scale=0.4):
    return np.eye(d) + scale * rng.standard_normal((d, d))


def reparameterized_pair(seed=0):
    """An original 4-5-3 tanh net and the same abstract net in random affine bases on the
    input, hidden activation and hidden pre-activation spaces (output basis kept), built
    from paper-notes §3: [W̄_i; 0 1] = [Φ_i]_H [W̄‡_i; 0 1] [Ω_{i-1}]_H and
    φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ (Eqns. D.2, D.3)."""
    rng = np.random.default_rng(seed)
    net = MLP([4, 5, 3], ["tanh", "identity"], seed=seed)
    Om = [_random_basis(rng, 4), _random_basis(rng, 5), np.eye(3)]
    ga = [rng.standard_normal(4), rng.standard_normal(5), np.zeros(3)]
    Ph = [_random_basis(rng, 5), np.eye(3)]
    ta = [rng.standard_normal(5), np.zeros(3)]
    layers = []
    for i, W in enumerate(net.get_Wbars()):
        full = np.vstack([W, np.eye(1, W.shape[1], W.shape[1] - 1)])
        Wt = np.linalg.solve(_homog(Ph[i], ta[i]), full) @ np.linalg.inv(_homog(Om[i], ga[i]))
        act = (ConjugatedActivation("tanh", Om[1], ga[1], Ph[0], ta[0]) if i == 0
               else "identity")
        layers.append(Dense(Wt[:-1, :-1], Wt[:-1, -1], act))
    net2 = MLP.from_layers(layers)
    X = rng.standard_normal((48, 4))
    X2 = X @ Om[0].T + ga[0]
    Y = rng.random((48, 3))
    return net, net2, X, X2, Y


@pytest.mark.parametrize("hyper", [
    dict(lr=0.5, **exact_kfac()),
    dict(lr=0.1, momentum=0.5, **exact_kfac(damping_mode="factored", ema_decay=0.8,
                                            inverse_update_period=3)),
    dict(lr=0.1, **exact_kfac(fisher="empirical", ema_decay=0.5)),
    dict(lr=0.5, **exact_kfac(fisher="mc", mc_samples=4, ema_decay=0.5)),
], ids=["exact", "factored-ema-momentum", "empirical", "mc"])
def test_undamped_kfac_is_invariant_under_affine_reparameterization(hyper):
    net, net2, X, X2, Y = reparameterized_pair()
    np.testing.assert_allclose(net2.forward(X2), net.forward(X), rtol=0, atol=1e-12)
    o1 = get_optimizer("kfac", net, "bernoulli", **hyper)
    o2 = get_optimizer("kfac", net2, "bernoulli", **hyper)
    losses = []
    for _ in range(10):
        losses.append(o1.step(X, Y).loss)
        o2.step(X2, Y)
        # the two coordinate networks compute the same function (Thm 2.1); round-off
        # through ~10 solves with conditioning ~1e3
        np.testing.assert_allclose(net2.forward(X2), net.forward(X), rtol=0, atol=1e-9)
    assert losses[-1] < losses[0] - 1e-2  # it trained


def test_sgd_is_not_invariant_negative_control():
    net, net2, X, X2, Y = reparameterized_pair()
    o1 = get_optimizer("sgd", net, "bernoulli", lr=0.5)
    o2 = get_optimizer("sgd", net2, "bernoulli", lr=0.5)
    for _ in range(10):
        o1.step(X, Y)
        o2.step(X2, Y)
    assert np.max(np.abs(net2.forward(X2) - net.forward(X))) > 1e-3


def test_damped_kfac_loses_invariance_negative_control():
    net, net2, X, X2, Y = reparameterized_pair()
    h = dict(lr=0.5, **exact_kfac(damping=1e-1))
    o1, o2 = get_optimizer("kfac", net, "bernoulli", **h), get_optimizer("kfac", net2, "bernoulli", **h)
    for _ in range(10):
        o1.step(X, Y)
        o2.step(X2, Y)
    assert np.max(np.abs(net2.forward(X2) - net.forward(X))) > 1e-3


# --------------------------------------------------------------------------- LM, adaptive lr, KL


def test_lm_lowers_damping_when_the_model_is_accurate():
    """A linear layer + squared error is exactly quadratic: ρ = (gᵀδ + ½δᵀFδ) /
    (gᵀδ + ½δᵀ(F+λI)δ), close to 1 for a small λ, so λ ← ω₁ λ."""
    net, X, Y = linear_problem()
    lam = 1e-2
    opt = get_optimizer("kfac", net, "mse", lr=0.3, adapt_damping=True, lm_period=1,
                        **exact_kfac(damping=lam))
    _, g = loss_and_grad(net, X, Y, "mse")
    F = ggn(net, X, Y, "mse")
    th0 = net.get_flat()
    info = opt.step(X, Y)
    d = net.get_flat() - th0
    rho = (g @ d + 0.5 * d @ F @ d) / (g @ d + 0.5 * d @ (F + lam * np.eye(len(d))) @ d)
    assert info.extras["rho"] == pytest.approx(rho, rel=1e-9)  # both exact up to round-off
    assert rho > 0.75
    assert info.extras["next_damping"] == pytest.approx(lam * 0.95, rel=1e-14)
    assert opt.damping == pytest.approx(lam * 0.95, rel=1e-14)


def test_lm_raises_damping_after_an_overshooting_step():
    net, X, Y = small_net(loss="softmax_ce", seed=4)
    opt = get_optimizer("kfac", net, "softmax_ce", lr=30.0, adapt_damping=True, lm_period=3,
                        **exact_kfac(damping=1e-2))
    infos = [opt.step(X, Y) for _ in range(3)]
    assert "rho" not in infos[0].extras and "rho" not in infos[1].extras  # every T₁ = 3 steps
    assert infos[2].extras["rho"] < 0.25
    assert opt.damping == pytest.approx(1e-2 / 0.95**3, rel=1e-14)  # ω₁ = (19/20)^T₁


def test_lm_keeps_damping_for_middling_rho():
    from geomkfac.nn.optim.quadratic import levenberg_marquardt

    assert levenberg_marquardt(0.5, 0.5, 0.9) == 0.5
    assert levenberg_marquardt(0.5, float("nan"), 0.9) == 0.5
    assert levenberg_marquardt(1e-9, 0.9, 0.5, min_damping=1e-8) == 1e-8


def test_adaptive_lr_first_step_is_the_damped_newton_step_on_a_quadratic():
    net, X, Y = linear_problem()
    lam = 1e-9
    opt = get_optimizer("kfac", net, "mse", adaptive_lr=True, **exact_kfac(damping=lam))
    info = opt.step(X, Y)
    # K-FAC is exact here, so Δ = −(F+λI)⁻¹g and the model's minimizer is α = 1
    assert info.extras["lr"] == pytest.approx(1.0, rel=1e-10)
    Xbar = np.hstack([X, np.ones((len(X), 1))])
    W_ls = np.linalg.lstsq(Xbar, Y, rcond=None)[0].T
    np.testing.assert_allclose(net.get_Wbars()[0], W_ls, rtol=0, atol=1e-7)  # λ = 1e-9 bias, A's smallest eigenvalue ~0.1


def test_adaptive_lr_and_momentum_minimize_the_quadratic_model():
    net, X, Y = small_net(loss="mse", seed=5)
    lam = 0.05
    opt = get_optimizer("kfac", net, "mse", adaptive_lr=True, **exact_kfac(damping=lam))
    opt.step(X, Y)
    d0 = opt.prev_delta
    th0 = net.get_flat()
    _, g = loss_and_grad(net, X, Y, "mse")
    F = ggn(net, X, Y, "mse") + lam * np.eye(len(g))
    info = opt.step(X, Y)
    alpha, mu = info.extras["lr"], info.extras["momentum"]
    delta = net.get_flat() - th0
    flat = lambda L: np.concatenate([m.reshape(-1, order="F") for m in L])  # noqa: E731
    Delta = (delta - mu * flat(d0)) / alpha
    M = lambda a, m: 0.5 * (a * Delta + m * flat(d0)) @ F @ (a * Delta + m * flat(d0)) + \
        g @ (a * Delta + m * flat(d0))  # noqa: E731
    best = M(alpha, mu)
    for da, dm in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        assert M(alpha + da, mu + dm) > best
    assert mu != 0.0


def test_kl_clip_bounds_the_step():
    net, X, Y = small_net(loss="softmax_ce", seed=6)
    th0 = net.get_flat()
    _, g = loss_and_grad(net, X, Y, "softmax_ce")
    lr = 2.0
    get_optimizer("kfac", net, "softmax_ce", lr=lr, **exact_kfac(damping=1e-2)).step(X, Y)
    free = net.get_flat() - th0
    vg = -lr * g @ free  # lr² Σ ⟨P, ∇h⟩ with P the preconditioned gradient
    clip = 0.1 * vg
    net.set_flat(th0)
    info = get_optimizer("kfac", net, "softmax_ce", lr=lr,
                         **exact_kfac(damping=1e-2, kl_clip=clip)).step(X, Y)
    step = net.get_flat() - th0
    nu = np.sqrt(clip / vg)
    assert info.extras["kl_scale"] == pytest.approx(nu, rel=1e-10)
    np.testing.assert_allclose(step, nu * free, rtol=1e-10, atol=1e-14)
    # the KL estimate lr² ν² ⟨P, ∇h⟩ = (νP)ᵀ F̃ (νP) lr² is now at the bound
    assert -lr * g @ step * nu == pytest.approx(clip, rel=1e-9)
    # inactive clip: unchanged step
    net.set_flat(th0)
    info = get_optimizer("kfac", net, "softmax_ce", lr=lr,
                         **exact_kfac(damping=1e-2, kl_clip=10 * vg)).step(X, Y)
    assert info.extras["kl_scale"] == 1.0
    np.testing.assert_allclose(net.get_flat() - th0, free, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- floor, retry


def _singular_input_problem():
    net, X, Y = small_net(loss="mse", seed=7)
    X = X.copy()
    X[:, 3] = 0.0  # a dead input: A of layer 0 has an exact zero eigenvalue
    return net, X, Y


def test_eig_floor_makes_a_singular_factor_usable():
    net, X, Y = _singular_input_problem()
    opt = get_optimizer("kfac", net, "mse", lr=0.1, **exact_kfac(eig_floor=1e-4))
    th0 = net.get_flat()
    _, g = loss_and_grad(net, X, Y, "mse")
    fac = kfac_factors(net, X, Y, "mse", fisher="exact")
    info = opt.step(X, Y)
    assert info.extras["eig_floored"] >= 1
    # the step is the undamped K-FAC step with every factor eigenvalue raised to the floor
    ref, o = [], 0
    for A, G in fac:
        eA, QA = np.linalg.eigh(A)
        eG, QG = np.linalg.eigh(G)
        eA, eG = np.maximum(eA, 1e-4), np.maximum(eG, 1e-4)
        n_in, n_out = len(A), len(G)
        V = g[o:o + n_in * n_out].reshape(n_out, n_in, order="F")
        o += n_in * n_out
        ref.append((QG @ ((QG.T @ V @ QA) / np.outer(eG, eA)) @ QA.T).reshape(-1, order="F"))
    # float64 solves with eigenvalues floored at 1e-4: round-off ~1e-12 relative
    np.testing.assert_allclose(th0 - net.get_flat(), 0.1 * np.concatenate(ref), rtol=1e-8, atol=1e-12)


def test_without_floor_a_singular_factor_is_reported_and_nothing_changes():
    net, X, Y = _singular_input_problem()
    opt = get_optimizer("kfac", net, "mse", lr=0.1, **exact_kfac(eig_floor=None))
    th0 = net.get_flat()
    with pytest.raises(DegenerateMetricError, match="K-FAC block of layer 1 is degenerate: rank"):
        opt.step(X, Y)
    assert np.array_equal(net.get_flat(), th0)
    assert opt.A is None  # the optimizer state was rolled back too


def test_undamped_softmax_kfac_is_refused_as_degenerate():
    """The softmax output Fisher has rank C−1, so the last layer's undamped block is
    degenerate: the step is refused (as the abstract Metric.sharp refuses it), not taken
    with a round-off-sized division; a damped step goes through (control)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    Y = rng.integers(0, 3, 40)
    net = MLP([3, 4, 3], "tanh", seed=1)
    th0 = net.get_flat()
    opt = get_optimizer("kfac", net, "softmax_ce", lr=0.1, **exact_kfac(eig_floor=None))
    with pytest.raises(DegenerateMetricError, match="layer 2 is degenerate"):
        opt.step(X, Y)
    assert np.array_equal(net.get_flat(), th0)
    damped = get_optimizer("kfac", net, "softmax_ce", lr=0.1,
                           **dict(exact_kfac(eig_floor=None), damping=1e-3))
    damped.step(X, Y)
    assert not np.array_equal(net.get_flat(), th0)


def test_safe_eigh_floor_and_float64_retry(monkeypatch):
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 6))
    M = (B @ B.T).astype(np.float32)
    real = np.linalg.eigh
    calls = []

    def flaky(S):
        calls.append(S.dtype)
        if S.dtype == np.float32:
            return np.full(len(S), np.nan, np.float32), np.zeros_like(S)  # a failed decomposition
        return real(S)

    monkeypatch.setattr(kronecker, "_eigh", flaky)
    eg = safe_eigh(M, eig_floor=0.0)
    assert calls == [np.float32, np.float64] and eg.retried
    assert eg.e.dtype == np.float32 and eg.Q.dtype == np.float32
    np.testing.assert_allclose((eg.Q * eg.e) @ eg.Q.T, M, rtol=0, atol=1e-4)  # float32 result

    def broken(S):
        raise np.linalg.LinAlgError("did not converge")

    monkeypatch.setattr(kronecker, "_eigh", broken)
    from geomkfac.errors import DegenerateMetricError

    with pytest.raises(DegenerateMetricError, match="float64"):
        safe_eigh(M)


@pytest.mark.parametrize("method,seam", [("eigh", "_eigh"), ("inv", "_inv")])
def test_float32_training_retries_in_float64(monkeypatch, method, seam):
    real = getattr(kronecker, seam)

    def fail32(S, *args):
        if S.dtype == np.float32:
            raise np.linalg.LinAlgError("SBEVD failed to converge")
        return real(S, *args)

    rng = np.random.default_rng(1)
    X = rng.standard_normal((32, 4)).astype(np.float32)
    Y = rng.integers(0, 3, 32)
    h = dict(lr=0.3, damping=1e-2, fisher="exact", inverse_method=method)
    ref = MLP([4, 5, 3], "tanh", seed=1, dtype=np.float32)
    net = ref.copy()
    get_optimizer("kfac", ref, "ce", **h).step(X, Y)  # float32 decompositions succeed
    monkeypatch.setattr(kronecker, seam, fail32)
    info = get_optimizer("kfac", net, "ce", **h).step(X, Y)
    assert info.extras["eig_retries"] == 4  # A and G of both layers
    assert net.get_flat().dtype == np.float32
    # same step up to float32 round-off (computed in another precision)
    np.testing.assert_allclose(net.get_flat(), ref.get_flat(), rtol=0, atol=1e-5)
    # negative control: the step moved the weights by much more than that tolerance
    assert np.max(np.abs(net.get_flat() - MLP([4, 5, 3], "tanh", seed=1).get_flat())) > 1e-2


def test_factored_inverse_methods_agree():
    net, X, Y = small_net(loss="softmax_ce", seed=11)
    net2 = net.copy()
    h = dict(lr=0.3, fisher="exact", damping=3e-2, inverse_update_period=2, momentum=0.3)
    o1 = get_optimizer("kfac", net, "ce", inverse_method="inv", **h)
    o2 = get_optimizer("kfac", net2, "ce", inverse_method="eigh", **h)
    for _ in range(4):
        o1.step(X, Y)
        o2.step(X, Y)
    # two algebraically equal inverses of well-damped factors: round-off
    np.testing.assert_allclose(net.get_flat(), net2.get_flat(), rtol=0, atol=1e-11)


def test_singular_factor_without_damping_in_inverse_mode():
    from geomkfac.errors import DegenerateMetricError

    net, X, Y = _singular_input_problem()
    opt = get_optimizer("kfac", net, "mse", damping=0.0, fisher="exact")
    th0 = net.get_flat()
    with pytest.raises(DegenerateMetricError, match="factor A of layer 1"):
        opt.step(X, Y)
    assert np.array_equal(net.get_flat(), th0)


# --------------------------------------------------------------------------- EKFAC


def test_ekfac_equals_kfac_when_scalings_are_kronecker_eigenvalues():
    net, X, Y = small_net(loss="softmax_ce", seed=8)
    net2 = net.copy()
    h = dict(lr=0.4, fisher="exact", damping=1e-2, damping_mode="exact",
             factor_update_period=50, inverse_update_period=50)
    k, e = get_optimizer("kfac", net, "softmax_ce", **h), get_optimizer("ekfac", net2, "softmax_ce", **h)
    k.step(X, Y)
    e.step(X, Y)
    # the EKFAC scalings are the diagonal of the Fisher in the eigenbasis, not e_G e_Aᵀ
    assert not np.allclose(e.S[0], np.outer(e.eigG[0].e, e.eigA[0].e), rtol=1e-3)
    net2.set_flat(net.get_flat())
    e.S = [np.outer(g.e, a.e) for a, g in zip(e.eigA, e.eigG)]
    for _ in range(2):  # stale factors/bases (period 50): only the gradient changes
        k.step(X, Y)
        e.step(X, Y)
        np.testing.assert_allclose(net2.get_flat(), net.get_flat(), rtol=0, atol=1e-12)


def test_ekfac_scalings_are_the_fisher_diagonal_in_the_kronecker_eigenbasis():
    from geomkfac.nn.optim.statistics import backprop_samples, ekfac_scalings

    net, X, Y = small_net(loss="bernoulli", seed=9, sizes=(3, 4, 2), N=25)
    F = ggn(net, X, Y, "bernoulli")
    fac = kfac_factors(net, X, Y, "bernoulli", fisher="exact")
    f, cache = net.forward_cache(X)
    from geomkfac.nn import get_loss

    Dz, w = backprop_samples(net, cache, f, Y, get_loss("bernoulli"), "exact", None)
    for i, (A, G) in enumerate(fac):
        eA, eG = safe_eigh(A, None), safe_eigh(G, None)
        S = ekfac_scalings(Dz[i], cache.abar[i], eA.Q, eG.Q, w)
        lo, hi = net.offsets[i], net.offsets[i + 1]
        Q = np.kron(eA.Q, eG.Q)
        ref = np.diag(Q.T @ F[lo:hi, lo:hi] @ Q).reshape(S.shape, order="F")
        np.testing.assert_allclose(S, ref, rtol=1e-10, atol=1e-14)  # two exact computations


# --------------------------------------------------------------------------- GVP


@pytest.mark.parametrize("loss", ["mse", "softmax_ce", "bernoulli"])
def test_ggn_vector_product_matches_dense_ggn(loss):
    net, X, Y = small_net(loss=loss, seed=10)
    v = np.random.default_rng(0).standard_normal(net.num_params)
    np.testing.assert_allclose(ggn_vector_product(net, X, loss, v), ggn(net, X, Y, loss) @ v,
                               rtol=1e-10, atol=1e-12)  # same sums, different order


def test_ggn_vector_product_rejects_a_vector_of_the_wrong_shape():
    net, X, _ = small_net(loss="mse", seed=10)
    for bad in (np.zeros(net.num_params - 1), np.zeros((net.num_params, 1))):
        with pytest.raises(DimensionError):
            ggn_vector_product(net, X, "mse", bad)


def test_ggn_vector_products_vectorized_with_conjugated_activations():
    from geomkfac.nn import get_loss
    from geomkfac.nn.optim.gvp import ggn_vector_products

    _, net2, _, X2, Y = reparameterized_pair(seed=2)
    F = ggn(net2, X2, Y, "bernoulli")
    rng = np.random.default_rng(3)
    V = rng.standard_normal((2, net2.num_params))
    f, cache = net2.forward_cache(X2)
    parts = [np.stack([net2.split_flat(v)[i] for v in V]) for i in range(len(net2.layers))]
    out = ggn_vector_products(net2, cache, f, get_loss("bernoulli"), parts)
    got = np.stack([np.concatenate([o[k].reshape(-1, order="F") for o in out]) for k in range(2)])
    np.testing.assert_allclose(got, V @ F.T, rtol=1e-9, atol=1e-11)  # round-off through Φ, Ω


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factor_inverse_by_cholesky_matches_lu_and_falls_back_when_indefinite(dtype):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((7, 20))
    M = (X @ X.T / 20).astype(dtype)
    M0 = M.copy()
    inv = kronecker._inv(M, cholesky=True)
    assert inv.dtype == dtype and np.array_equal(inv, inv.T)  # mirrored triangle
    assert np.array_equal(M, M0)  # the input is left whole (the LU fallback needs it)
    # float32 round-off times cond(M) (~10 here) bounds the gap to the LU inverse
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(inv, np.linalg.inv(M), rtol=tol, atol=tol)
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]], dtype=dtype)  # Cholesky fails here
    np.testing.assert_allclose(kronecker._inv(indefinite, cholesky=True) @ indefinite, np.eye(2),
                               atol=tol)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 128, 130, 200])
def test_mirror_upper_triangle_across_block_edges(n):
    """The Cholesky inverse fills its lower triangle from the upper one in blocks of 64 rows;
    sizes at and around the block edges. Reference: ``triu(U) + triu(U, 1)ᵀ``."""
    U = np.random.default_rng(n).standard_normal((n, n))
    ref = np.triu(U) + np.triu(U, 1).T
    assert np.array_equal(kronecker._mirror_upper(U.copy()), ref)


@pytest.mark.parametrize("cholesky", [False, True])
def test_safe_inverse_leaves_the_factor_untouched_and_matches_a_solve(cholesky):
    """The damping shift is added to a copy's diagonal; the factor (optimizer state) must not
    change. Reference: ``np.linalg.solve`` of the symmetrized, shifted matrix."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 600))
    M = X @ X.T / 600
    M[0, 1] += 1e-12  # not exactly symmetric, as a GEMM's Gram matrix may be
    M0 = M.copy()
    inv, retried = kronecker.safe_inverse(M, 0.3, cholesky=cholesky)
    assert np.array_equal(M, M0) and not retried and np.array_equal(inv, inv.T)
    ref = np.linalg.solve(0.5 * (M + M.T) + 0.3 * np.eye(300), np.eye(300))
    np.testing.assert_allclose(inv, ref, rtol=1e-10, atol=1e-12)  # cond ≈ 20: round-off only
