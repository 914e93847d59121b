"""Curvature of geomkfac.nn: K-FAC factors (exact / mc / empirical), dense GGN, empirical
Fisher, per-example gradients and Jacobians, each checked by an independent route, plus
the K-FAC transformation law under the reparameterization of Appendix D."""

from __future__ import annotations

import numpy as np
import pytest

import geomkfac.nn.curvature as curvature
from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.nn import (
    MLP,
    empirical_fisher,
    get_loss,
    ggn,
    jacobian,
    kfac_factors,
    kfac_matrix,
    kfac_solve,
    loss_and_grad,
    per_example_grads,
    reparameterize,
)
from geomkfac.nn.curvature import kfac_factors_from_cache
from geomkfac.nn.reparam import changes_from_arrays

LOSSES = ["softmax_ce", "mse", "bernoulli"]
# float64 round-off of sums of O(1) products over ≤ 100 terms: 1e-12 leaves a wide margin
RT = dict(rtol=1e-10, atol=1e-12)


def targets(name, rng, N, C):
    if name == "softmax_ce":
        return rng.integers(0, C, size=N)
    if name == "mse":
        return rng.standard_normal((N, C))
    return rng.random((N, C))


def problem(loss, sizes=(3, 5, 4, 3), acts=("tanh", "sigmoid", "identity"), N=9, seed=0):
    rng = np.random.default_rng(seed)
    net = MLP(list(sizes), list(acts), seed=seed)
    X = rng.standard_normal((N, sizes[0]))
    return net, X, targets(loss, rng, N, sizes[-1])


def bias_index(net, i):
    """θ positions of layer i's bias (the last `out` entries of its block)."""
    return np.arange(net.offsets[i + 1] - net.layers[i].out_dim, net.offsets[i + 1])


def test_single_linear_layer_squared_error_kfac_is_exact_ggn_and_hessian():
    """paper-notes §1 sanity identity: one linear layer with squared error has kron(A, G)
    equal to the exact GGN (= Hessian here, the model being linear); the Hessian is taken
    by central differences of the gradient, exact for a quadratic up to round-off."""
    rng = np.random.default_rng(1)
    net = MLP([4, 3], "identity", seed=1)
    X, Y = rng.standard_normal((11, 4)), rng.standard_normal((11, 3))
    [(A, G)] = kfac_factors(net, X, Y, "mse", fisher="exact")
    np.testing.assert_allclose(G, np.eye(3), atol=1e-15)
    K = np.kron(A, G)
    np.testing.assert_allclose(K, ggn(net, X, Y, "mse"), rtol=1e-13, atol=1e-14)
    theta, eps = net.get_flat(), 1e-3
    H = np.empty((theta.size, theta.size))
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = eps
        net.set_flat(theta + e)
        gp = loss_and_grad(net, X, Y, "mse")[1]
        net.set_flat(theta - e)
        gm = loss_and_grad(net, X, Y, "mse")[1]
        H[:, j] = (gp - gm) / (2 * eps)
    net.set_flat(theta)
    np.testing.assert_allclose(K, H, atol=1e-10)  # quadratic: FD error is round-off / eps
    # negative control: the other Kronecker order is a different matrix
    assert np.abs(np.kron(G, A) - H).max() > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
def test_single_layer_exact_G_is_mean_output_fisher(loss):
    """With one identity layer the pullback is trivial: G = (1/N) Σ F_out(f_n), and the GGN
    is (1/N) Σ ā āᵀ ⊗ F_n, which K-FAC's kron(A, G) only matches in its bias block."""
    net, X, Y = problem(loss, sizes=(3, 4), acts=("identity",), N=8, seed=2)
    [(A, G)] = kfac_factors(net, X, Y, loss, fisher="exact")
    F = get_loss(loss).output_fisher(net.forward(X))
    np.testing.assert_allclose(G, F.mean(axis=0), **RT)
    abar = np.hstack([X, np.ones((8, 1))])
    np.testing.assert_allclose(A, abar.T @ abar / 8, **RT)
    want = np.einsum("ni,nj,nab->iajb", abar, abar, F).reshape(16, 16) / 8
    np.testing.assert_allclose(ggn(net, X, Y, loss), want, **RT)
    b = bias_index(net, 0)
    np.testing.assert_allclose(ggn(net, X, Y, loss)[np.ix_(b, b)], G, **RT)
    if loss != "mse":  # F varies over examples, so K-FAC is only an approximation
        assert np.abs(np.kron(A, G) - want).max() > 1e-4


@pytest.mark.parametrize("loss", LOSSES)
def test_exact_G_equals_ggn_bias_blocks_in_deep_nets(loss):
    """ā's last entry is 1, so the bias–bias block of layer i in the GGN is
    (1/N) Σ J_zᵀ F_out J_z — exactly the "exact" G_i — for every layer of a deep net.
    The GGN itself is checked against (1/N) Σ Jᵀ F J from jacobian() and output_fisher()."""
    net, X, Y = problem(loss)
    F = ggn(net, X, Y, loss)
    J = jacobian(net, X)
    H = get_loss(loss).output_fisher(net.forward(X))
    np.testing.assert_allclose(F, np.einsum("nap,nab,nbq->pq", J, H, J) / X.shape[0], **RT)
    for i, (A, G) in enumerate(kfac_factors(net, X, Y, loss, fisher="exact")):
        b = bias_index(net, i)
        np.testing.assert_allclose(F[np.ix_(b, b)], G, **RT)
        # K-FAC's block has the bias-bias block A[-1, -1] * G = G (A's corner is mean of 1·1)
        assert A[-1, -1] == pytest.approx(1.0, abs=1e-15)
    # negative control: the empirical G is not the GGN block
    Ge = kfac_factors(net, X, Y, loss, fisher="empirical")[-1][1]
    b = bias_index(net, len(net.layers) - 1)
    assert np.abs(F[np.ix_(b, b)] - Ge).max() > 1e-3


@pytest.mark.parametrize("loss", LOSSES)
def test_empirical_factors_match_per_example_gradients(loss):
    net, X, Y = problem(loss, seed=3)
    N = X.shape[0]
    g = per_example_grads(net, X, Y, loss)
    assert g.shape == (N, net.num_params)
    np.testing.assert_allclose(g.mean(axis=0), loss_and_grad(net, X, Y, loss)[1], **RT)
    np.testing.assert_allclose(empirical_fisher(net, X, Y, loss), g.T @ g / N, **RT)
    for i, (A, G) in enumerate(kfac_factors(net, X, Y, loss, fisher="empirical")):
        Dz = g[:, bias_index(net, i)]  # the bias part of a per-example gradient is Dz
        np.testing.assert_allclose(G, Dz.T @ Dz / N, **RT)
        # and the whole per-example gradient of the layer is ā ⊗ Dz (column-stacking)
        blk = g[:, net.offsets[i] : net.offsets[i + 1]]
        _, cache = net.forward_cache(X)
        np.testing.assert_allclose(
            blk, np.einsum("ni,no->nio", cache.abar[i], Dz).reshape(N, -1), **RT
        )


def test_jacobian_matches_finite_differences():
    net, X, _ = problem("mse", N=4, seed=4)
    J = jacobian(net, X)
    theta, eps = net.get_flat(), 1e-6
    fd = np.empty_like(J)
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = eps
        net.set_flat(theta + e)
        fp = net.forward(X)
        net.set_flat(theta - e)
        fd[:, :, j] = (fp - net.forward(X)) / (2 * eps)
    net.set_flat(theta)
    np.testing.assert_allclose(J, fd, atol=1e-8)  # O(ε²) truncation + O(1e-16/ε) round-off


@pytest.mark.parametrize("loss", LOSSES)
def test_mc_factors_converge_to_exact(loss):
    """MC G is unbiased for the exact G. Tolerance from the CLT: R single-draw estimates give
    a per-entry σ; the average of M draws must lie within Z·σ/√M of the exact G (Z = 6: a
    false alarm for a correct estimator has probability < 1e-6 per entry). Negative control:
    the same bound rejects the empirical G."""
    net, X, Y = problem(loss, seed=5)
    f, cache = net.forward_cache(X)
    rng = np.random.default_rng(99)
    R, M, Z = 300, 3000, 6.0
    draws = [kfac_factors_from_cache(net, cache, f, None, loss, "mc", rng, 1) for _ in range(R)]
    exact = kfac_factors(net, X, Y, loss, fisher="exact")
    emp = kfac_factors(net, X, Y, loss, fisher="empirical")
    avg = kfac_factors(net, X, Y, loss, fisher="mc", mc_samples=M, seed=1)
    rejected = False
    for i, ((Ae, Ge), (Am, Gm), (_, Gemp)) in enumerate(zip(exact, avg, emp)):
        np.testing.assert_allclose(Am, Ae, **RT)
        sigma = np.std([d[i][1] for d in draws], axis=0, ddof=1)
        tol = Z * sigma / np.sqrt(M) + 1e-12
        assert np.all(np.abs(Gm - Ge) <= tol)
        rejected |= bool(np.any(np.abs(Gemp - Ge) > tol))
    assert rejected


def test_mc_is_seeded_and_mc_samples_average():
    net, X, Y = problem("softmax_ce", seed=6)
    a = kfac_factors(net, X, None, "ce", fisher="mc", mc_samples=3, seed=4)
    b = kfac_factors(net, X, None, "ce", fisher="mc", mc_samples=3, seed=4)
    c = kfac_factors(net, X, None, "ce", fisher="mc", mc_samples=3, seed=5)
    for (_, Ga), (_, Gb), (_, Gc) in zip(a, b, c):
        np.testing.assert_array_equal(Ga, Gb)
        assert not np.array_equal(Ga, Gc)
    # mc_samples=3 with one generator = mean of three single-draw passes with that generator
    f, cache = net.forward_cache(X)
    rng = np.random.default_rng(4)
    loss = get_loss("ce")
    grads = [loss.grad(f, loss.sample(f, rng)) for _ in range(3)]
    for i, (_, G) in enumerate(a):
        want = sum((D[i].T @ D[i]) for D in (net.backward(cache, g) for g in grads)) / (3 * X.shape[0])
        np.testing.assert_allclose(G, want, **RT)


def test_exact_factors_do_not_depend_on_chunking(monkeypatch):
    net, X, Y = problem("bernoulli", seed=7)
    whole = kfac_factors(net, X, Y, "bernoulli", fisher="exact")
    monkeypatch.setattr(curvature, "_CHUNK_ELEMENTS", 1)  # one column per backward pass
    chunked = kfac_factors(net, X, Y, "bernoulli", fisher="exact")
    for (A1, G1), (A2, G2) in zip(whole, chunked):
        np.testing.assert_allclose(G1, G2, **RT)


# -- transformation law under reparameterization (paper-notes §3) -------------------------


def homog(Om, ga):
    d = Om.shape[0]
    H = np.eye(d + 1)
    H[:d, :d], H[:d, d] = Om, ga
    return H


@pytest.mark.parametrize("loss", ["mse", "bernoulli"])
def test_kfac_factors_transform_and_undamped_step_is_invariant(loss):
    """A‡ = [Ω]_H A [Ω]_Hᵀ, G‡ = Φᵀ G Φ, and the undamped K-FAC step maps back:
    ΔW̄‡ = Φ⁻¹ ΔW̄ [Ω]_H⁻¹ (Theorem 2.1). Negative controls: the gradient step does not
    transform that way, nor does the step with Tikhonov damping."""
    rng = np.random.default_rng(8)
    sizes = [3, 4, 3, 2]
    net = MLP(sizes, "tanh", seed=8)
    X = rng.standard_normal((12, 3))
    Y = targets(loss, rng, 12, 2)
    L = len(sizes) - 1
    Om = [np.eye(d) + 0.3 * rng.standard_normal((d, d)) for d in sizes[:-1]] + [None]
    ga = [rng.standard_normal(d) for d in sizes[:-1]] + [None]
    Ph = [np.eye(d) + 0.3 * rng.standard_normal((d, d)) for d in sizes[1:]]
    ta = [rng.standard_normal(d) for d in sizes[1:]]
    net2 = reparameterize(net, changes_from_arrays(Om, ga, Ph, ta))
    X2 = X @ Om[0].T + ga[0]
    fac = kfac_factors(net, X, Y, loss, fisher="exact")
    fac2 = kfac_factors(net2, X2, Y, loss, fisher="exact")
    Oms = [homog(Om[i], ga[i]) for i in range(L)]
    for i in range(L):
        (A, G), (A2, G2) = fac[i], fac2[i]
        np.testing.assert_allclose(A2, Oms[i] @ A @ Oms[i].T, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(G2, Ph[i].T @ G @ Ph[i], rtol=1e-9, atol=1e-10)
    _, g = loss_and_grad(net, X, Y, loss)
    _, g2 = loss_and_grad(net2, X2, Y, loss)

    def mapped_back(step2):
        return [Ph[i] @ M @ Oms[i] for i, M in enumerate(net2.split_flat(step2))]

    step = net.split_flat(kfac_solve(fac, g, 0.0))
    for M, M2 in zip(step, mapped_back(kfac_solve(fac2, g2, 0.0))):
        np.testing.assert_allclose(M2, M, rtol=1e-7, atol=1e-9)  # solves amplify round-off
    worst = lambda a, b: max(np.abs(x - y).max() for x, y in zip(a, b))
    assert worst(mapped_back(g2), net.split_flat(g)) > 1e-3  # SGD: not invariant
    damped = net.split_flat(kfac_solve(fac, g, 0.1))
    assert worst(mapped_back(kfac_solve(fac2, g2, 0.1)), damped) > 1e-4  # damping: not invariant


# -- dtype and errors ---------------------------------------------------------------------


@pytest.mark.parametrize("fisher", ["exact", "mc", "empirical"])
def test_float32_curvature(fisher):
    net, X, Y = problem("softmax_ce", seed=9)
    net32 = MLP([3, 5, 4, 3], ["tanh", "sigmoid", "identity"], dtype=np.float32)
    net32.set_flat(net.get_flat())  # the same weights, rounded to float32
    assert net32.dtype == np.float32
    f32 = kfac_factors(net32, X, Y, "ce", fisher=fisher, seed=3)
    f64 = kfac_factors(net, X, Y, "ce", fisher=fisher, seed=3)
    for (A, G), (A6, G6) in zip(f32, f64):
        assert A.dtype == np.float32 and G.dtype == np.float32
        # float32 round-off (6e-8) through a few layers and sums: 1e-4 relative is generous
        np.testing.assert_allclose(A, A6, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(G, G6, rtol=1e-4, atol=1e-5)
    for fn in (ggn, empirical_fisher, per_example_grads):
        assert fn(net32, X, Y, "ce").dtype == np.float32
    assert jacobian(net32, X).dtype == np.float32


def test_bad_input():
    net, X, Y = problem("softmax_ce")
    with pytest.raises(ConfigurationError, match="exact, mc, empirical"):
        kfac_factors(net, X, Y, "ce", fisher="kronecker")
    with pytest.raises(ConfigurationError, match="mc_samples"):
        kfac_factors(net, X, Y, "ce", fisher="mc", mc_samples=0)
    with pytest.raises(DataError):
        kfac_factors(net, X, None, "ce", fisher="empirical")
    with pytest.raises(DataError, match="out of range"):
        kfac_factors(net, X, np.full(X.shape[0], 7), "ce", fisher="empirical")
    with pytest.raises(DimensionError, match=r"\(N, 3\)"):
        ggn(net, X[:, :2], Y, "ce")
    with pytest.raises(ConfigurationError):
        loss_and_grad(net, X, Y, "hinge")
    fac = kfac_factors(net, X, Y, "ce")
    with pytest.raises(ConfigurationError):
        kfac_solve(fac, np.zeros(net.num_params), -1.0)
    for fn in (lambda: loss_and_grad(net, X[:0], Y[:0], "ce"), lambda: ggn(net, X[:0], None, "ce"),
               lambda: kfac_factors(net, X[:0], None, "ce")):
        with pytest.raises(DataError, match="empty batch"):
            fn()
    for bad in (np.zeros(net.num_params + 2), np.zeros(net.num_params - 2),
                np.zeros((net.num_params, 2))):
        with pytest.raises(DimensionError, match="the factors cover"):
            kfac_solve(fac, bad, 1.0)


def test_kfac_solve_matches_dense_solves():
    net, X, Y = problem("mse", seed=10)
    fac = kfac_factors(net, X, Y, "mse")
    v = np.random.default_rng(0).standard_normal(net.num_params)
    K = kfac_matrix(fac)
    lam = 0.05
    np.testing.assert_allclose(kfac_solve(fac, v, lam), np.linalg.solve(K + lam * np.eye(len(v)), v), rtol=1e-8)
    r = np.sqrt(lam)
    Kf = kfac_matrix([(A + r * np.eye(len(A)), G + r * np.eye(len(G))) for A, G in fac])
    np.testing.assert_allclose(kfac_solve(fac, v, lam, factored=True), np.linalg.solve(Kf, v), rtol=1e-8)
    assert np.abs(kfac_solve(fac, v, lam, factored=True) - kfac_solve(fac, v, lam)).max() > 1e-4
