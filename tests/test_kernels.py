"""The fused kernels (``geomkfac.nn.kernels``): compiled and NumPy routes give the same bits,
kernel by kernel (random shapes, strides, dtypes and special values) and over whole training
runs; arrays a kernel cannot take fall back; the switches work.

The compiled route needs numba (the ``jit`` or ``test`` extra); without it those comparisons
are skipped and only the NumPy route is tested.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError
from geomkfac.nn import MLP, kernels
from geomkfac.nn.optim import get_optimizer

needs_numba = pytest.mark.skipif(not kernels.jit_available(), reason="numba is not installed")

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 88.0, -88.0, 1e30, -1e30,
                    0.5, -0.5, 1.0, -1.0])


def jit(fn):
    """``[fn() with the compiled kernels, fn() with the NumPy route]``; the setting restored."""
    previous, out = kernels.use_jit(None), []
    try:
        for flag in (True, False):
            kernels.use_jit(flag)
            out.append(fn())
    finally:
        kernels.use_jit(previous)
    return out


def _arrays(seed, shape, dtype, special, layout):
    """Three arrays of ``shape``: values on several scales with special values mixed in; the
    layout C-contiguous, transposed (F) or a strided slice."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        full = (rng.standard_normal((shape[1], shape[0]) if layout == "F" else
                                    (shape[0], 2 * shape[1]) if layout == "strided" else shape)
                * rng.choice([1e-3, 1.0, 30.0])).astype(dtype)
        # the layout taken after the cast (a cast of a strided view would be contiguous)
        x = full.T if layout == "F" else full[:, ::2] if layout == "strided" else full
        assert layout == "C" or min(shape) == 1 or not x.flags.c_contiguous
        if special:
            mask = rng.random(x.shape) < 0.2
            x[mask] = rng.choice(SPECIAL, mask.sum()).astype(dtype)
        out.append(x)
    return out


def _same(a, b):
    """Bit equality (so −0 and +0 differ), NaNs in the same places (their payload and sign
    are not specified by either route)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    nan = np.isnan(a)
    if not np.array_equal(nan, np.isnan(b)):
        return False
    word = f"u{a.dtype.itemsize}"
    return np.array_equal(a.view(word)[~nan], b.view(word)[~nan])


def _bits(x):
    return np.ascontiguousarray(x)


kernel_cases = dict(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 37), st.integers(1, 37)),
    dtype=st.sampled_from([np.float32, np.float64]),
    special=st.booleans(),
    layout=st.sampled_from(["C", "F", "strided"]),
)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(**kernel_cases, act=st.sampled_from(["tanh", "sigmoid"]))
def test_activation_backward_kernels_give_the_fallback_bits(seed, shape, dtype, special, layout,
                                                          act):
    g0, a, _ = _arrays(seed, shape, dtype, special, layout)
    with np.errstate(over="ignore"):
        a = np.tanh(a) if act == "tanh" else 1 / (1 + np.exp(-a))
    fn = kernels.tanh_backward_ if act == "tanh" else kernels.sigmoid_backward_

    def run():
        g = g0.copy(order="K")
        with np.errstate(all="ignore"):
            assert fn(g, a) is g
        return _bits(g)

    compiled, fallback = jit(run)
    assert _same(compiled, fallback)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(**kernel_cases)
def test_bernoulli_kernel_gives_the_fallback_bits(seed, shape, dtype, special, layout):
    f, y, _ = _arrays(seed, shape, dtype, special, layout)
    y = np.clip(np.nan_to_num(np.abs(y)), 0, 1).astype(dtype)

    def run():
        with np.errstate(all="ignore"):
            value, g = kernels.bernoulli_value_and_grad(f, y)
        return np.array([value]), _bits(g)

    (v1, g1), (v2, g2) = jit(run)
    assert _same(v1, v2) and _same(g1, g2)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(**kernel_cases, mu=st.floats(0.0, 0.999), lr=st.floats(1e-6, 10.0))
def test_momentum_kernel_gives_the_fallback_bits(seed, shape, dtype, special, layout, mu, lr):
    W0, v, g = _arrays(seed, shape, dtype, special, layout)

    def run():
        W, vel = W0.copy(), np.empty(shape, dtype)
        with np.errstate(all="ignore"):
            if not kernels.momentum_update_([W], [v], [g], [vel], mu, lr):
                # the NumPy route of SGD: v·μ, + g, ·(−lr), W +=
                np.multiply(v, mu, out=vel)
                vel += g
                W += vel * dtype(-lr)
        return _bits(W), _bits(vel)

    (W1, v1), (W2, v2) = jit(run)
    assert _same(W1, W2) and _same(v1, v2)


def test_kernels_refuse_what_they_cannot_take():
    """Shapes that broadcast, other dtypes, 1-D and 3-D arrays and a read-only output go to
    the NumPy route (and ``momentum_update_`` reports it by returning False)."""
    a32, b32 = np.ones((3, 4), np.float32), np.ones((3, 4), np.float32)
    assert not kernels.fusable(a32, np.ones((1, 4), np.float32))
    assert not kernels.fusable(a32, np.ones((3, 4), np.float64))
    assert not kernels.fusable(np.ones(4), np.ones(4))
    assert not kernels.fusable(np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    assert not kernels.fusable(np.ones((3, 4), np.int64), np.ones((3, 4), np.int64))
    ro = np.ones((3, 4), np.float32)
    ro.flags.writeable = False
    assert not kernels.fusable(ro, b32)
    W = np.ones((3, 4), np.float32)
    # all layers or none: the second layer's read-only weights stop the first's update too
    assert not kernels.momentum_update_([W, ro], [b32, b32], [b32, b32], [a32, a32.copy()],
                                        0.9, 0.1)
    assert np.array_equal(ro, np.ones((3, 4))) and np.array_equal(W, np.ones((3, 4)))
    assert kernels.fusable(a32, b32) == kernels.jit_active()  # control: these it takes


def _train(opt_name, dtype, acts, steps=8, **hyper):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 6)).astype(dtype)
    Y = (rng.random((40, 5)) < 0.5).astype(dtype)
    net = MLP([6, 9, 7, 5], acts, seed=4, dtype=dtype)
    opt = get_optimizer(opt_name, net, "bernoulli", **hyper)
    losses = [opt.step(X, Y).loss for _ in range(steps)]
    return np.array(losses), net.get_flat()


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt_name,hyper", [
    ("sgd", {"lr": 0.3, "momentum": 0.9}),
    ("sgd", {"lr": 0.3, "momentum": 0.9, "nesterov": True}),
    ("adam", {"lr": 0.01}),
    ("kfac", {"adaptive_lr": True, "adapt_damping": True, "damping": 1.0, "fisher": "mc"}),
])
def test_training_runs_are_the_same_bits_with_and_without_numba(dtype, opt_name, hyper):
    """Whole runs (tanh and sigmoid hidden layers, Bernoulli loss): the same losses and
    weights to the last bit, compiled or not."""
    (l1, t1), (l2, t2) = jit(lambda: _train(opt_name, dtype, ["tanh", "sigmoid", "identity"],
                                            **hyper))
    assert _same(l1, l2) and _same(t1, t2)
    # control: a run that differs (another learning rate) is told apart
    if opt_name == "sgd":
        l3, _ = _train(opt_name, dtype, ["tanh", "sigmoid", "identity"],
                       **dict(hyper, lr=0.31))
        assert not _same(l1, l3)


@needs_numba
def test_the_compiled_route_runs_in_the_step(monkeypatch):
    """With numba the SGD step takes the fused routes (not silently the fallbacks)."""
    calls = []
    for name in ("tanh_backward", "bernoulli_pre", "momentum_update"):
        real = kernels._compiled()[name]
        monkeypatch.setitem(kernels._state["compiled"], name,
                            lambda *a, _r=real, _n=name: (calls.append(_n), _r(*a))[1])
    previous = kernels.use_jit(True)
    try:
        _train("sgd", np.float32, ["tanh", "tanh", "identity"], steps=3, lr=0.1, momentum=0.9)
    finally:
        kernels.use_jit(previous)
    assert {"tanh_backward", "bernoulli_pre", "momentum_update"} <= set(calls)
    assert calls.count("momentum_update") == 2 * 3  # steps 2 and 3, three layers each


def test_switches(monkeypatch):
    previous = kernels.use_jit(None)
    try:
        monkeypatch.setenv(kernels.ENV_VAR, "0")
        kernels.use_jit(None)  # read the environment again
        assert not kernels.jit_active()
        monkeypatch.setenv(kernels.ENV_VAR, "1")
        kernels.use_jit(None)
        assert kernels.jit_active() == kernels.jit_available()
        assert kernels.use_jit(False) is None and not kernels.jit_active()
        monkeypatch.setenv(kernels.ENV_VAR, "maybe")
        kernels.use_jit(None)
        with pytest.raises(ConfigurationError, match="GEOMKFAC_JIT='maybe'"):
            kernels.jit_active()
        with pytest.raises(ConfigurationError, match="True, False or None"):
            kernels.use_jit("yes")
    finally:
        monkeypatch.delenv(kernels.ENV_VAR)
        kernels.use_jit(previous)


def test_without_numba_the_numpy_route_runs(monkeypatch):
    """As on a machine without numba: nothing is compiled, every kernel still computes its
    result (against formulas written out here)."""
    monkeypatch.setitem(kernels._state, "compiled", False)
    monkeypatch.setitem(kernels._state, "active", None)
    assert not kernels.jit_available() and not kernels.jit_active()
    assert not kernels.fusable(np.ones((2, 2)), np.ones((2, 2)))
    g, a = np.array([[2.0, -4.0]]), np.array([[0.5, -0.25]])
    np.testing.assert_array_equal(kernels.tanh_backward_(g.copy(), a), g * (1 - a * a))
    np.testing.assert_array_equal(kernels.sigmoid_backward_(g.copy(), a), g * ((1 - a) * a))
    f, y = np.array([[0.3, -2.0]]), np.array([[1.0, 0.0]])
    value, grad = kernels.bernoulli_value_and_grad(f, y)
    assert value == pytest.approx(np.sum(np.logaddexp(0, f) - y * f), rel=1e-15)
    np.testing.assert_allclose(grad, 1 / (1 + np.exp(-f)) - y, rtol=1e-15)
    assert not kernels.momentum_update_([g.copy()], [g], [g], [g.copy()], 0.9, 0.1)
