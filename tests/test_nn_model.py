"""The MLP of geomkfac.nn: θ order, forward/backward against finite differences, the
reparameterized network of Appendix D (Eqns. D.2/D.3), dtype, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn import MLP, Dense, get_loss, loss_and_grad, reparameterize
from geomkfac.nn.reparam import changes_from_arrays
from geomkfac.reparam import LayerChange
from geomkfac.nn.activations import ACTIVATIONS, ConjugatedActivation

ACTS = sorted(ACTIVATIONS)
LOSSES = ["softmax_ce", "mse", "bernoulli"]


def targets(name, rng, N, C):
    if name == "softmax_ce":
        return rng.integers(0, C, size=N)
    if name == "mse":
        return rng.standard_normal((N, C))
    return rng.random((N, C))


def test_theta_order_is_column_stacking_with_bias_last():
    net = MLP([3, 4, 2], "tanh", seed=0)
    theta = net.get_flat()
    assert theta.shape == (net.num_params,) == (4 * 4 + 2 * 5,)
    assert net.offsets.tolist() == [0, 16, 26]
    for i, l in enumerate(net.layers):
        blk = theta[net.offsets[i] : net.offsets[i + 1]]
        np.testing.assert_array_equal(blk[-l.out_dim :], l.b)  # bias = last `out` entries
        np.testing.assert_array_equal(blk[: l.out_dim], l.W[:, 0])  # first column of W first
    net.layers[0].b[:] = [1, 2, 3, 4]
    theta = net.get_flat()
    other = MLP([3, 4, 2], "tanh", seed=5)
    other.set_flat(theta)
    np.testing.assert_array_equal(other.get_flat(), theta)
    np.testing.assert_array_equal(other.layers[0].b, [1, 2, 3, 4])
    mats = net.split_flat(theta)
    for M, l in zip(mats, net.layers):
        np.testing.assert_array_equal(M, l.Wbar)


def test_wbars_round_trip_and_copy_independent():
    net = MLP([2, 3, 1], ["relu", "sigmoid"], seed=1)
    Wb = [2 * M for M in net.get_Wbars()]
    twin = net.copy()
    net.set_Wbars(Wb)
    for M, l in zip(Wb, net.layers):
        np.testing.assert_array_equal(l.Wbar, M)
    assert not np.array_equal(twin.get_flat(), net.get_flat())  # the copy did not move


def test_single_activation_name_means_identity_last_layer():
    net = MLP([2, 3, 3, 1], "relu")
    assert [l.activation.name for l in net.layers] == ["relu", "relu", "identity"]
    net = MLP([2, 3, 1], ["relu", "tanh"])
    assert [l.activation.name for l in net.layers] == ["relu", "tanh"]


def test_forward_cache_contents():
    rng = np.random.default_rng(0)
    net = MLP([3, 5, 4, 2], ["tanh", "softplus", "sigmoid"], seed=2)
    X = rng.standard_normal((6, 3))
    f, cache = net.forward_cache(X)
    np.testing.assert_array_equal(f, net.forward(X))
    a = X
    for i, l in enumerate(net.layers):
        np.testing.assert_array_equal(cache.abar[i], np.hstack([a, np.ones((6, 1))]))
        z = cache.abar[i] @ l.Wbar.T
        np.testing.assert_allclose(cache.z[i], z, rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(cache.a[i], l.activation.forward(cache.z[i]))
        a = cache.a[i]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", LOSSES)
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_gradient_matches_central_differences(act, loss, seed):
    """loss_and_grad against central differences of the mean loss in θ (float64).
    Tolerance: truncation O(ε²)≈1e-12 plus round-off O(1e-16/ε)≈1e-10 → 1e-7."""
    rng = np.random.default_rng(seed)
    net = MLP([3, 4, 3], [act, "tanh"], seed=seed % 1000)
    X = rng.standard_normal((5, 3))
    Y = targets(loss, rng, 5, 3)
    _, g = loss_and_grad(net, X, Y, loss)
    theta = net.get_flat()
    eps = 1e-6
    E = np.eye(theta.size) * eps

    def h(t):
        m = net.copy()
        m.set_flat(t)
        return get_loss(loss).value(m.forward(X), Y)

    if act == "relu":  # skip draws too close to the kink for finite differences
        _, cache = net.forward_cache(X)
        if np.abs(cache.z[0]).min() < 1e-4:
            return
    fd = np.array([(h(theta + e) - h(theta - e)) / (2 * eps) for e in E])
    np.testing.assert_allclose(g, fd, atol=1e-7)


def test_backward_leading_axes_equal_separate_passes():
    rng = np.random.default_rng(3)
    net = MLP([3, 4, 2], "tanh", seed=0)
    _, cache = net.forward_cache(rng.standard_normal((5, 3)))
    dF = rng.standard_normal((3, 5, 2))
    stacked = net.backward(cache, dF)
    for k in range(3):
        for D, Dk in zip(stacked, net.backward(cache, dF[k])):
            np.testing.assert_allclose(D[k], Dk, rtol=1e-15, atol=0)


# -- reparameterization (Appendix D) ------------------------------------------------------


def random_bases(rng, sizes, keep_output=True):
    L = len(sizes) - 1
    Om = [np.eye(d) + 0.4 * rng.standard_normal((d, d)) for d in sizes]
    ga = [rng.standard_normal(d) for d in sizes]
    Ph = [np.eye(d) + 0.4 * rng.standard_normal((d, d)) for d in sizes[1:]]
    ta = [rng.standard_normal(d) for d in sizes[1:]]
    if keep_output:
        Om[L], ga[L] = None, None
    return Om, ga, Ph, ta


@pytest.mark.parametrize("act", ACTS)
def test_reparameterized_network_computes_same_function(act):
    """Eqns. D.2/D.3: net‡(Ω_0 x + γ_0) = Ω_L net(x) + γ_L; negative controls: feeding the
    untransformed input, or weights from a wrong law (W‡ = Φ W Ω instead of Φ⁻¹ W Ω⁻¹)."""
    rng = np.random.default_rng(10)
    sizes = [3, 4, 5, 2]
    net = MLP(sizes, act, seed=4)
    X = rng.standard_normal((7, 3))
    Om, ga, Ph, ta = random_bases(rng, sizes, keep_output=False)
    net2 = reparameterize(net, changes_from_arrays(Om, ga, Ph, ta))
    assert all(isinstance(l.activation, ConjugatedActivation) for l in net2.layers)
    want = net.forward(X) @ Om[-1].T + ga[-1]
    np.testing.assert_allclose(net2.forward(X @ Om[0].T + ga[0]), want, rtol=1e-9, atol=1e-10)
    assert np.abs(net2.forward(X) - want).max() > 1e-3
    wrong_layers = []
    for i, (l, l2) in enumerate(zip(net.layers, net2.layers)):
        Wwrong = Ph[i] @ l.W @ Om[i]
        wrong_layers.append(Dense(Wwrong, l2.b, l2.activation))
    wrong = MLP.from_layers(wrong_layers)
    assert np.abs(wrong.forward(X @ Om[0].T + ga[0]) - want).max() > 1e-3


def test_reparameterize_keep_output_basis():
    rng = np.random.default_rng(11)
    sizes = [2, 3, 2]
    net = MLP(sizes, "sigmoid", seed=0)
    Om, ga, Ph, ta = random_bases(rng, sizes, keep_output=True)
    net2 = reparameterize(net, changes_from_arrays(Om, ga, Ph, ta))
    X = rng.standard_normal((4, 2))
    np.testing.assert_allclose(net2.forward(X @ Om[0].T + ga[0]), net.forward(X), rtol=1e-10, atol=1e-12)
    with pytest.raises(DimensionError):
        changes_from_arrays(Om[:-1], ga, Ph, ta)
    # the former signature still works, with a DeprecationWarning, and gives the same network
    with pytest.warns(DeprecationWarning, match="deprecated"):
        old = reparameterize(net, Om, ga, Ph, ta)
    for a, b in zip(old.layers, net2.layers):
        np.testing.assert_array_equal(a.Wbar, b.Wbar)


def test_sigmoid_network_is_reparameterized_tanh_network():
    """paper-notes §3 named example: σ(x) = ½ tanh(x/2) + ½, so a tanh network with
    Φ = ½ I, Ω = ½ I, γ = ½ on the hidden layer and weights by D.2 computes the same function
    as a sigmoid network; the conjugated activation *is* the sigmoid."""
    rng = np.random.default_rng(12)
    tanh_net = MLP([2, 3, 1], "tanh", seed=3)
    h = 3
    net2 = reparameterize(tanh_net, {1: LayerChange(Omega=0.5 * np.eye(h), gamma=0.5 * np.ones(h),
                                                    Phi=0.5 * np.eye(h))})
    z = rng.standard_normal((5, h))
    sig = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(net2.layers[0].activation.forward(z), sig, rtol=1e-14)
    X = rng.standard_normal((5, 2))
    np.testing.assert_allclose(net2.forward(X), tanh_net.forward(X), rtol=1e-12, atol=1e-14)
    plain = MLP.from_layers([Dense(l.W, l.b, a) for l, a in zip(net2.layers, ["sigmoid", "identity"])])
    np.testing.assert_allclose(plain.forward(X), tanh_net.forward(X), rtol=1e-12, atol=1e-14)
    # negative control: the tanh network's own weights with sigmoid activations differ
    naive = MLP.from_layers([Dense(l.W, l.b, a) for l, a in zip(tanh_net.layers, ["sigmoid", "identity"])])
    assert np.abs(naive.forward(X) - tanh_net.forward(X)).max() > 1e-2


# -- dtype and errors ---------------------------------------------------------------------


def test_float32_end_to_end():
    net = MLP([3, 4, 2], "tanh", seed=0, dtype=np.float32)
    X = np.random.default_rng(0).standard_normal((5, 3))  # float64 input is cast
    f, cache = net.forward_cache(X)
    assert f.dtype == np.float32
    assert all(a.dtype == np.float32 for a in cache.abar + cache.z + cache.a)
    assert all(D.dtype == np.float32 for D in net.backward(cache, np.ones((5, 2))))
    v, g = loss_and_grad(net, X, np.array([0, 1, 1, 0, 1]), "ce")
    assert v.dtype == np.float32 and g.dtype == np.float32 and net.get_flat().dtype == np.float32
    net64 = MLP([3, 4, 2], "tanh", seed=0)
    # float32 has 2^-24 ≈ 6e-8 relative round-off; a few layers of O(1) values stay below 1e-5
    np.testing.assert_allclose(f, net64.forward(X), rtol=1e-5, atol=1e-6)
    assert net.copy().dtype == np.float32


@pytest.mark.parametrize("init", ["glorot", "he", "lecun", "sparse", "zeros"])
def test_inits(init):
    net = MLP([20, 30, 5], "tanh", seed=0, init=init)
    W = net.layers[0].W
    if init == "zeros":
        assert not W.any()
    elif init == "sparse":
        assert (np.count_nonzero(W, axis=1) == 15).all()
        # the nonzero weights are N(0, 1): 450 draws, std within 5 standard errors (~0.17)
        assert abs(W[W != 0].std() - 1.0) < 0.17
    else:
        # the stated scale of each scheme (fan_in = 20, fan_out = 30); 600 draws give the
        # sample std a relative standard error ≈ 1/√1200 ≈ 0.03, so 10% is > 3 of them
        want = {"glorot": np.sqrt(2 / 50), "he": np.sqrt(2 / 20), "lecun": np.sqrt(1 / 20)}[init]
        assert abs(W.std() / want - 1) < 0.1
        if init == "glorot":
            assert np.abs(W).max() <= np.sqrt(6 / 50)  # uniform on [-lim, lim]
    assert not net.layers[0].b.any()
    np.testing.assert_array_equal(MLP([20, 30, 5], "tanh", seed=0, init=init).get_flat(), net.get_flat())


def test_bad_input():
    net = MLP([3, 4, 2], "tanh")
    with pytest.raises(DimensionError, match=r"expected shape \(N, 3\).*got shape \(5, 4\)"):
        net.forward(np.ones((5, 4)))
    with pytest.raises(DimensionError, match="single example"):
        net.forward(np.ones(3))
    with pytest.raises(DimensionError):
        loss_and_grad(net, np.ones((5, 2)), np.zeros(5, dtype=int), "ce")
    with pytest.raises(ConfigurationError, match="unknown activation 'gelu'"):
        MLP([3, 4, 2], "gelu")
    with pytest.raises(ConfigurationError, match="2 layers need 2 activations"):
        MLP([3, 4, 2], ["tanh", "tanh", "tanh"])
    with pytest.raises(ConfigurationError, match="init"):
        MLP([3, 2], "tanh", init="orthogonal")
    with pytest.raises(ConfigurationError, match="dtype"):
        MLP([3, 2], "tanh", dtype=np.int32)
    with pytest.raises(ConfigurationError):
        MLP([3], "tanh")
    with pytest.raises(DimensionError, match="layer 2 expects 5 inputs but layer 1 has 4"):
        MLP.from_layers([Dense(np.ones((4, 3)), np.zeros(4)), Dense(np.ones((2, 5)), np.zeros(2))])
    with pytest.raises(DimensionError):
        Dense(np.ones((4, 3)), np.zeros(3))
    with pytest.raises(DimensionError):
        net.set_flat(np.zeros(net.num_params + 1))
    from geomkfac.errors import DataError

    with pytest.raises(DataError, match="out of range"):
        loss_and_grad(net, np.ones((2, 3)), np.array([0, 2]), "ce")


@pytest.mark.parametrize(
    "module",
    ["geomkfac.nn", "geomkfac.nn.activations", "geomkfac.nn.losses", "geomkfac.nn.model", "geomkfac.nn.curvature"],
)
def test_docstring_examples(module):
    """The ``>>>`` examples in the docstrings are correct (they run as doctests)."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_dense_storage_is_one_array_with_w_b_and_wbar_as_views():
    """``Wext = [[W b], [0ᵀ 1]]`` is the storage: W, b, W̄ are views, assignments copy in,
    a deep copy is independent, and dtype changes rebuild it."""
    import copy

    layer = Dense(np.arange(6.0).reshape(2, 3), [7.0, 8.0], "tanh")
    np.testing.assert_array_equal(layer.Wext, [[0, 1, 2, 7], [3, 4, 5, 8], [0, 0, 0, 1]])
    assert layer.Wbar_view.flags.c_contiguous and np.shares_memory(layer.W, layer.Wext)
    layer.W = np.ones((2, 3))
    layer.b = [1.0, 2.0]
    np.testing.assert_array_equal(layer.Wbar, [[1, 1, 1, 1], [1, 1, 1, 2]])
    wb = layer.Wbar
    wb[0, 0] = 99  # Wbar is a copy
    assert layer.W[0, 0] == 1
    layer.add_to_Wbar(np.full((2, 4), 0.5))
    np.testing.assert_array_equal(layer.Wext[-1], [0, 0, 0, 1])  # the fixed row untouched
    np.testing.assert_array_equal(layer.b, [1.5, 2.5])
    twin = copy.deepcopy(layer)
    twin.set_Wbar(np.zeros((2, 4)))
    assert np.all(twin.W == 0) and np.all(twin.b == 0) and layer.W[0, 0] == 1.5
    layer.W = np.ones((2, 3), dtype=np.float32)  # a float dtype change rebuilds the storage
    assert layer.dtype == np.float32 and layer.b.dtype == np.float32
    np.testing.assert_array_equal(layer.b, [1.5, 2.5])
    with pytest.raises(DimensionError, match="keep its shape"):
        layer.W = np.ones((3, 3))
    with pytest.raises(DimensionError, match="keep its shape"):
        layer.b = np.ones(3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mixed_hidden_layers_gradient_against_central_differences(dtype):
    """Hidden layers of both forward routes next to each other: elementwise ones (one
    ``[z 1]`` buffer, the gradient backpropagated into width ``out+1``) and a conjugated,
    non-elementwise one (plain ``(N, out)`` arrays), against central differences of the mean
    loss in float64, and the float32 gradient against the float64 one. Tolerances:
    float64 as in ``test_gradient_matches_central_differences``; float32 relative 1e-4
    (rounding ~1e-7 per operation through a few layers)."""
    rng = np.random.default_rng(3)
    conj = ConjugatedActivation("tanh", Omega=rng.standard_normal((4, 4)),
                                gamma=rng.standard_normal(4), Phi=np.eye(4) * 0.7,
                                tau=rng.standard_normal(4))
    net = MLP([3, 4, 4, 4, 2], ["relu", conj, "sigmoid", "identity"], seed=4)
    X, Y = rng.standard_normal((7, 3)), rng.random((7, 2))
    loss = get_loss("bernoulli")
    _, g = loss_and_grad(net, X, Y, loss)
    theta, eps = net.get_flat(), 1e-5
    fd = np.empty_like(theta)
    for k in range(theta.size):
        for s in (1, -1):
            t = theta.copy()
            t[k] += s * eps
            net.set_flat(t)
            val = loss.value(net.forward(X), Y)
            fd[k] = val if s == 1 else (fd[k] - val) / (2 * eps)
    net.set_flat(theta)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)
    if dtype is np.float32:
        net32 = MLP.from_layers([Dense(l.W.astype(np.float32), l.b.astype(np.float32),
                                       l.activation) for l in net.layers])
        assert net32.dtype == np.float32
        _, g32 = loss_and_grad(net32, X.astype(np.float32), Y.astype(np.float32), loss)
        np.testing.assert_allclose(g32, g, rtol=1e-4, atol=1e-5)
