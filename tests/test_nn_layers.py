"""The layer backend: convolution against a direct (scipy) correlation, pooling against
reshapes, gradients and BPTT against finite differences, Gauss-Newton products against the
dense GGN, the MLP as a special case, float32, and clear errors for bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import geomkfac.nn as gnn
from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.nn import ggn, kfac_factors, loss_and_grad
from geomkfac.nn.optim.gvp import ggn_vector_product

RNG = np.random.default_rng(0)


def small_cnn(dtype=np.float64, pool="avg", stride=1, seed=0):
    rng = np.random.default_rng(seed)
    Pool = gnn.AvgPool2d if pool == "avg" else gnn.MaxPool2d
    return gnn.Sequential([
        gnn.Conv2d(0.5 * rng.standard_normal((3, 2, 3, 3)), 0.1 * rng.standard_normal(3), "tanh",
                   padding=1, stride=stride),
        Pool(2),
        gnn.Conv2d(0.5 * rng.standard_normal((2, 3, 2, 2)), 0.1 * rng.standard_normal(2), "softplus"),
        gnn.Flatten(),
        gnn.Dense(0.5 * rng.standard_normal((3, 2 if stride == 2 else 8)), 0.1 * rng.standard_normal(3)),
    ], dtype=dtype)


def small_rnn(output="seq", dtype=np.float64, seed=0, H=3, d=2, C=3):
    rng = np.random.default_rng(seed)
    layers = [gnn.RNN(0.7 * rng.standard_normal((H, H + d)), 0.1 * rng.standard_normal(H), "tanh",
                      h0=0.3 * rng.standard_normal(H))]
    if output == "last":
        layers.append(gnn.LastStep())
    layers.append(gnn.Dense(rng.standard_normal((C, H)), 0.1 * rng.standard_normal(C)))
    return gnn.Sequential(layers, dtype=dtype)


# -- the forward pass against independent routes ------------------------------------------


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 2), (2, 1)])
def test_conv_equals_direct_correlation(stride, padding):
    """Conv2d = Σ_j correlate2d(x_j, W_ij) (scipy, no im2col), subsampled by the stride."""
    W, b = RNG.standard_normal((4, 3, 3, 3)), RNG.standard_normal(4)
    x = RNG.standard_normal((2, 3, 7, 6))
    y, _ = gnn.Conv2d(W, b, padding=padding, stride=stride).forward(x)
    xp = np.pad(x, [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    for n in range(2):
        for i in range(4):
            want = sum(scipy.signal.correlate2d(xp[n, j], W[i, j], mode="valid") for j in range(3))
            np.testing.assert_allclose(y[n, i], want[::stride, ::stride] + b[i], rtol=1e-12, atol=1e-12)


def test_conv_negative_control_flipped_kernel():
    """The same comparison with a convolution (flipped kernel) must fail."""
    W, b = RNG.standard_normal((1, 1, 3, 3)), np.zeros(1)
    x = RNG.standard_normal((1, 1, 5, 5))
    y, _ = gnn.Conv2d(W, b).forward(x)
    flipped = scipy.signal.convolve2d(x[0, 0], W[0, 0], mode="valid")
    assert np.abs(y[0, 0] - flipped).max() > 0.1


def test_pooling_against_reshape():
    x = RNG.standard_normal((2, 3, 6, 4))
    blocks = x.reshape(2, 3, 3, 2, 2, 2)
    np.testing.assert_allclose(gnn.AvgPool2d(2).forward(x)[0], blocks.mean(axis=(3, 5)), rtol=1e-14)
    np.testing.assert_array_equal(gnn.MaxPool2d(2).forward(x)[0], blocks.max(axis=(3, 5)))


def test_rnn_forward_by_hand():
    net = small_rnn()
    rnn, dense = net.layers
    X = RNG.standard_normal((4, 5, 2))
    h = np.broadcast_to(rnn.h0, (4, 3))
    for t in range(5):
        h = np.tanh(np.concatenate([h, X[:, t]], axis=1) @ rnn.W.T + rnn.b)
        np.testing.assert_allclose(net.forward(X)[:, t], h @ dense.W.T + dense.b, rtol=1e-13)


# -- gradients against finite differences -------------------------------------------------

MODELS = {
    "cnn_avg": (lambda: small_cnn(pool="avg"), (6, 2, 6, 6), "softmax_ce"),
    "cnn_max_stride2": (lambda: small_cnn(pool="max", stride=2), (6, 2, 8, 8), "softmax_ce"),
    "rnn_seq": (lambda: small_rnn("seq"), (5, 4, 2), "softmax_ce"),
    "rnn_last_mse": (lambda: small_rnn("last"), (5, 6, 2), "mse"),
}


def _data(key, seed=1):
    make, shape, loss = MODELS[key]
    net = make()
    rng = np.random.default_rng(seed)
    X = rng.standard_normal(shape)
    out = net.output_shape(shape[1:])
    if loss == "softmax_ce":
        Y = rng.integers(0, out[-1], size=(shape[0],) + out[:-1])
    else:
        Y = rng.standard_normal((shape[0],) + out)
    return net, X, Y, loss


@pytest.mark.parametrize("key", list(MODELS))
def test_gradient_against_finite_differences(key):
    """Directional derivatives by central differences, ε = 1e-6: truncation O(ε²) ~ 1e-12
    and round-off O(1e-16/ε) ~ 1e-10, so 1e-7 relative agreement leaves a wide margin while
    any wrong term (a missing recurrence, a transposed patch) is O(1)."""
    net, X, Y, loss = _data(key)
    _, g = loss_and_grad(net, X, Y, loss)
    theta = net.get_flat()
    rng = np.random.default_rng(2)
    for _ in range(3):
        v = rng.standard_normal(theta.size)
        eps = 1e-6
        net.set_flat(theta + eps * v)
        hp = loss_and_grad(net, X, Y, loss)[0]
        net.set_flat(theta - eps * v)
        hm = loss_and_grad(net, X, Y, loss)[0]
        net.set_flat(theta)
        fd = (hp - hm) / (2 * eps)
        assert abs(fd - g @ v) <= 1e-7 * max(1.0, abs(fd)), (fd, g @ v)


def test_bptt_negative_control_truncated():
    """Truncating BPTT to one step (no gradient through h_{t−1}) fails the same check."""
    net, X, Y, loss = _data("rnn_seq")
    f, cache = net.forward_cache(X)
    L = gnn.losses.StepwiseLoss(loss)
    gF = L.grad(f, Y)
    rnn, dense = net.layers
    gh, Dz_dense = dense.backward(cache.ctxs[1], gF)
    ctx = cache.ctxs[0]
    # truncated: each step's own output only
    Dz = rnn.activation.backward(ctx.z, ctx.a, gh).reshape(-1, 3)
    trunc = (Dz.T @ ctx.abar) / X.shape[0]
    _, g = loss_and_grad(net, X, Y, loss)
    full = g[: 3 * 6].reshape(3, 6, order="F")
    assert np.abs(trunc - full).max() > 1e-3


@pytest.mark.parametrize("key", list(MODELS))
def test_ggn_vector_products_match_dense_ggn(key):
    """Forward-mode products (each layer's jvp) against the dense GGN built from backward
    passes only."""
    net, X, Y, loss = _data(key)
    F = ggn(net, X, Y, loss)
    v = np.random.default_rng(3).standard_normal(net.num_params)
    np.testing.assert_allclose(ggn_vector_product(net, X, loss, v), F @ v, rtol=1e-10,
                               atol=1e-12 * np.abs(F).max())


# -- special cases -------------------------------------------------------------------------


def test_sequential_of_dense_is_the_mlp():
    mlp = gnn.MLP([4, 5, 3], "tanh", seed=3)
    seq = gnn.Sequential(mlp.layers)
    X, Y = RNG.standard_normal((7, 4)), RNG.integers(0, 3, 7)
    v1, g1 = loss_and_grad(mlp, X, Y, "ce")
    v2, g2 = loss_and_grad(seq, X, Y, "ce")
    assert v1 == v2 and np.array_equal(g1, g2)
    for (A1, G1), (A2, G2) in zip(kfac_factors(mlp, X, Y, "ce"), kfac_factors(seq, X, Y, "ce")):
        np.testing.assert_allclose(A1, A2, rtol=1e-14)
        np.testing.assert_allclose(G1, G2, rtol=1e-14)


def test_rnn_with_one_step_is_a_dense_layer():
    """T = 1: the RNN is the dense layer x ↦ tanh(W_x x + (b + W_h h0)); its gradient and
    K-FAC factors restricted to the (x, 1) coordinates are the MLP's, and the h-columns get
    Dz h0ᵀ."""
    net = small_rnn("seq")
    rnn, dense = net.layers
    X = RNG.standard_normal((9, 1, 2))
    Y = RNG.integers(0, 3, (9, 1))
    mlp = gnn.MLP.from_layers([gnn.Dense(rnn.W[:, 3:], rnn.b + rnn.W[:, :3] @ rnn.h0, "tanh"),
                               gnn.Dense(dense.W, dense.b)])
    _, g = loss_and_grad(net, X, Y, "ce")
    _, gm = loss_and_grad(mlp, X[:, 0], Y[:, 0], "ce")
    Gr = g[:18].reshape(3, 6, order="F")
    Gm = gm[:9].reshape(3, 3, order="F")
    np.testing.assert_allclose(Gr[:, 3:], Gm, rtol=1e-12)
    np.testing.assert_allclose(Gr[:, :3], np.outer(Gm[:, -1], rnn.h0), rtol=1e-12)
    np.testing.assert_allclose(g[18:], gm[9:], rtol=1e-12)
    (A, G), _ = kfac_factors(net, X, Y, "ce")
    (Am, Gm2), _ = kfac_factors(mlp, X[:, 0], Y[:, 0], "ce")
    np.testing.assert_allclose(A[3:, 3:], Am, rtol=1e-12)
    np.testing.assert_allclose(G, Gm2, rtol=1e-12)


@pytest.mark.parametrize("key", ["cnn_avg", "rnn_seq"])
def test_float32_end_to_end(key):
    net, X, Y, loss = _data(key)
    net32 = gnn.Sequential(net.layers, dtype=np.float32)
    f, cache = net32.forward_cache(X)
    assert f.dtype == np.float32 and all(ab.dtype == np.float32 for ab in cache.abar)
    v, g = loss_and_grad(net32, X, Y, loss)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, loss_and_grad(net, X, Y, loss)[1], rtol=1e-3, atol=1e-4)


# -- errors -----------------------------------------------------------------------------------


def test_conv_errors():
    net = small_cnn()
    with pytest.raises(DimensionError, match="input channels"):
        net.forward(np.zeros((2, 1, 6, 6)))
    with pytest.raises(DimensionError, match=r"layers\[4\]"):  # image size not matching the dense
        net.forward(np.zeros((2, 2, 8, 8)))
    with pytest.raises(DimensionError, match="larger than the padded input"):
        gnn.Conv2d(np.zeros((1, 1, 5, 5)), np.zeros(1), padding=1).forward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ConfigurationError, match="padding"):
        gnn.Conv2d(np.zeros((1, 1, 3, 3)), np.zeros(1), padding=-1)
    with pytest.raises(DimensionError, match="b must have shape"):
        gnn.Conv2d(np.zeros((2, 1, 3, 3)), np.zeros(3))
    with pytest.raises(DimensionError, match="images"):
        net.forward(np.zeros((2, 16)))


def test_rnn_errors():
    net = small_rnn()
    with pytest.raises(DimensionError, match="sequences"):
        net.forward(np.zeros((2, 4, 3)))
    with pytest.raises(DimensionError, match="sequences"):
        net.forward(np.zeros((2, 4)))
    with pytest.raises(DimensionError, match="h0"):
        gnn.RNN(np.zeros((3, 5)), np.zeros(3), h0=np.zeros(2))
    with pytest.raises(DataError, match="ragged"):
        net.forward([np.zeros((4, 2)), np.zeros((3, 2))])
    opt = gnn.get_optimizer("sgd", net, "ce")
    with pytest.raises(DataError, match="does not fit"):
        opt.step(np.zeros((2, 4, 3)), np.zeros((2, 4), dtype=int))
    with pytest.raises(DataError, match=r"\(N, T\)"):
        opt.step(np.zeros((2, 4, 2)), np.zeros(2, dtype=int))


@pytest.mark.parametrize("C, H, k, stride, padding", [
    (1, 7, 3, 1, 1),   # channel-first input gradient (C ≤ W_out)
    (7, 4, 3, 1, 1),   # channels-last input gradient (C > W_out = 5)
    (2, 7, 3, 2, 2),   # strided, channel-first
    (6, 5, 2, 2, 0),   # strided, channels-last
])
def test_conv_input_gradient_against_finite_differences(C, H, k, stride, padding):
    """⟨gx, dx⟩ = d/dε ⟨gy, conv(x + ε dx)⟩ (the layer is affine in x before the activation,
    so with the identity activation central differences are exact up to round-off, 1e-9);
    both layouts of the adjoint are covered. A transposed kernel offset or a missed
    crop of the padding is O(1)."""
    rng = np.random.default_rng(C * 10 + H)
    conv = gnn.Conv2d(rng.standard_normal((3, C, k, k)), rng.standard_normal(3),
                      padding=padding, stride=stride)
    x = rng.standard_normal((2, C, H, H + 1))
    y, ctx = conv.forward(x)
    gy = rng.standard_normal(y.shape)
    gx, Dz = conv.backward(ctx, gy)
    assert gx.shape == x.shape
    dx = rng.standard_normal(x.shape)
    eps = 1e-3
    fd = (np.vdot(gy, conv.forward(x + eps * dx)[0]) - np.vdot(gy, conv.forward(x - eps * dx)[0])) / (2 * eps)
    assert abs(fd - np.vdot(gx, dx)) <= 1e-9 * max(1.0, abs(fd))
    # stacked directions (leading axis) give the same per-direction result
    gx2, _ = conv.backward(ctx, np.stack([gy, 2 * gy]))
    np.testing.assert_allclose(gx2[1], 2 * gx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("Pool", [gnn.AvgPool2d, gnn.MaxPool2d])
@pytest.mark.parametrize("k, stride", [(2, 2), (3, 1), (3, 2), (2, 3)])
def test_pooling_against_loops_and_its_adjoint(Pool, k, stride):
    """Pooling (overlapping, disjoint and gapped windows) against explicit loops over the
    windows, and its backward pass as the adjoint of its forward-mode product:
    ⟨gy, J dx⟩ = ⟨Jᵀ gy, dx⟩ (max pooling is linear in dx for the fixed argmax; average
    pooling is linear). A window offset swapped or a missed overlap is O(1)."""
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.standard_normal((2, 3, 7, 8))
    pool = Pool(k, stride=stride)
    y, ctx = pool.forward(x)
    Ho, Wo = (7 - k) // stride + 1, (8 - k) // stride + 1
    want = np.empty((2, 3, Ho, Wo))
    red = np.mean if Pool is gnn.AvgPool2d else np.max
    for i in range(Ho):
        for j in range(Wo):
            want[..., i, j] = red(x[..., i * stride:i * stride + k, j * stride:j * stride + k], axis=(-2, -1))
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
    dx, gy = rng.standard_normal(x.shape), rng.standard_normal(y.shape)
    Jdx = pool.jvp(ctx, dx[None], None)[0]
    gx, _ = pool.backward(ctx, gy)
    assert abs(np.vdot(gy, Jdx) - np.vdot(gx, dx)) <= 1e-12 * np.abs(gy).sum()


@pytest.mark.parametrize("lead_D,lead_A", [((), ()), ((3,), ()), ((3,), (3,)), ((2, 3), (3,))])
@pytest.mark.parametrize("out,d", [(5, 9), (9, 5)])  # both GEMM orientations
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_product_is_the_weight_gradient_gemm_and_c_ordered(lead_D, lead_A, out, d, dtype):
    """``rows_product(D, Ā) = Dᵀ Ā`` over the rows, with leading (stacked) axes broadcast,
    in either GEMM orientation, returned C-contiguous (the later elementwise passes mix it
    with C-ordered weights). Reference: einsum."""
    from geomkfac.nn.layers.base import rows_product

    rng = np.random.default_rng(out * 10 + d)
    D = rng.standard_normal(lead_D + (7, out)).astype(dtype)
    A = rng.standard_normal(lead_A + (7, d)).astype(dtype)
    got = rows_product(D, A)
    ref = np.einsum("...ro,...rd->...od", D.astype(np.float64), A.astype(np.float64))
    assert got.dtype == dtype and got.shape == ref.shape and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
