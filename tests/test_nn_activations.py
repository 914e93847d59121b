"""Activations of geomkfac.nn: values, derivatives against central finite differences,
conjugated activations (Eqn. D.3), dtype, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn.activations import ACTIVATIONS, ConjugatedActivation, get_activation

NAMES = sorted(ACTIVATIONS)
EPS = 1e-6
# central differences have truncation error O(EPS² φ''') ~ 1e-12 and round-off O(1e-16/EPS)
# ~ 1e-10, so 1e-7 is a safe bound for these smooth functions with O(1) derivatives
FD_TOL = 1e-7


def fd_vjp(fun, z, grad_a):
    """Central-difference vector-Jacobian product of a row-wise function, entry by entry."""
    out = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = EPS
        out[idx] = np.sum((fun(z + e) - fun(z - e)) * grad_a) / (2 * EPS)
    return out


def test_known_values():
    z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(get_activation("sigmoid").forward(z), 1 / (1 + np.exp(-z)), rtol=1e-15)
    np.testing.assert_allclose(get_activation("tanh").forward(z), np.tanh(z), rtol=0)
    np.testing.assert_array_equal(get_activation("relu").forward(z), [[0.0, 0.0, 3.0]])
    np.testing.assert_allclose(get_activation("softplus").forward(z), np.log1p(np.exp(z)), rtol=1e-15)
    np.testing.assert_array_equal(get_activation("identity").forward(z), z)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_backward_matches_finite_differences(name, seed):
    act = get_activation(name)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((3, 4)) * 2
    if name == "relu":  # keep away from the kink, where the derivative jumps
        z = np.where(np.abs(z) < 1e-3, 0.5, z)
    g = rng.standard_normal(z.shape)
    got = act.backward(z, act.forward(z), g)
    np.testing.assert_allclose(got, fd_vjp(act.forward, z, g), atol=FD_TOL)
    np.testing.assert_allclose(act.derivative(z) * g, got, rtol=1e-14, atol=1e-15)


def test_backward_negative_control():
    """The FD check has power: tanh's backward is not sigmoid's."""
    z = np.linspace(-2, 2, 5)[None]
    g = np.ones_like(z)
    t, s = get_activation("tanh"), get_activation("sigmoid")
    assert np.abs(t.backward(z, t.forward(z), g) - fd_vjp(s.forward, z, g)).max() > 0.1


def test_saturation_is_finite():
    z = np.array([[-1000.0, -50.0, 50.0, 1000.0]])
    for name in NAMES:
        act = get_activation(name)
        a = act.forward(z)
        assert np.all(np.isfinite(a)) and np.all(np.isfinite(act.backward(z, a, np.ones_like(z))))
    np.testing.assert_array_equal(get_activation("sigmoid").forward(z)[0, [0, 3]], [0.0, 1.0])


@pytest.mark.parametrize("name", NAMES)
def test_float32_preserved_and_leading_axes(name):
    act = get_activation(name)
    z = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    a = act.forward(z)
    assert a.dtype == np.float32
    G = np.random.default_rng(1).standard_normal((2, 5, 3)).astype(np.float32)
    gz = act.backward(z, a, G)
    assert gz.dtype == np.float32 and gz.shape == (2, 5, 3)
    np.testing.assert_array_equal(gz[1], act.backward(z, a, G[1]))


def test_unknown_activation_lists_names():
    with pytest.raises(ConfigurationError, match="swish.*identity, sigmoid, tanh, relu, softplus"):
        get_activation("swish")
    with pytest.raises(ConfigurationError):
        get_activation(3)
    assert get_activation(" TANH ").name == "tanh"


# -- conjugated activations (Eqn. D.3) ----------------------------------------------------


def random_conjugated(rng, base, d):
    Om = np.eye(d) + 0.5 * rng.standard_normal((d, d))
    Ph = np.eye(d) + 0.5 * rng.standard_normal((d, d))
    return ConjugatedActivation(base, Om, rng.standard_normal(d), Ph, rng.standard_normal(d))


@pytest.mark.parametrize("base", NAMES)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_conjugated_forward_and_backward(base, seed):
    rng = np.random.default_rng(seed)
    d = 3
    act = random_conjugated(rng, base, d)
    z = rng.standard_normal((4, d))
    phi = get_activation(base)
    # forward: Ω φ(Φ z + τ) + γ, example by example (an independent, unvectorized reading)
    want = np.stack([act.Omega @ phi.forward(act.Phi @ zn + act.tau) + act.gamma for zn in z])
    np.testing.assert_allclose(act.forward(z), want, rtol=1e-13, atol=1e-13)
    if base == "relu":
        u = z @ act.Phi.T + act.tau
        if np.abs(u).min() < 1e-3:  # too close to the kink for finite differences
            return
    g = rng.standard_normal(z.shape)
    np.testing.assert_allclose(act.backward(z, act.forward(z), g), fd_vjp(act.forward, z, g), atol=1e-6)


def test_sigmoid_is_conjugated_tanh_and_negative_control():
    """σ(x) = ½ tanh(x/2) + ½ (paper-notes §3); dropping the inner scaling breaks it."""
    z = np.linspace(-4, 4, 9)[:, None]
    sig = get_activation("sigmoid").forward(z)
    good = ConjugatedActivation("tanh", Omega=[[0.5]], gamma=[0.5], Phi=[[0.5]], tau=[0.0])
    bad = ConjugatedActivation("tanh", Omega=[[0.5]], gamma=[0.5], Phi=[[1.0]], tau=[0.0])
    np.testing.assert_allclose(good.forward(z), sig, rtol=1e-15, atol=1e-16)
    assert np.abs(bad.forward(z) - sig).max() > 0.05


def test_conjugated_dtype_and_errors():
    act = ConjugatedActivation("tanh", Omega=2 * np.eye(2), tau=[0.1, 0.2])
    z = np.ones((3, 2), dtype=np.float32)
    assert act.forward(z).dtype == np.float32
    assert act.backward(z, act.forward(z), z).dtype == np.float32
    with pytest.raises(DimensionError):
        act.forward(np.ones((3, 4)))
    with pytest.raises(DimensionError):
        ConjugatedActivation("tanh", Omega=np.ones((2, 3)))
    with pytest.raises(DimensionError):
        ConjugatedActivation("tanh", Omega=np.eye(2), gamma=np.zeros(3))
    with pytest.raises(DimensionError):
        ConjugatedActivation("tanh")
    with pytest.raises(ConfigurationError):
        ConjugatedActivation("nope", Omega=np.eye(2))


@pytest.mark.parametrize("name", NAMES + ["conjugated"])
def test_forward_into_a_strided_view_equals_forward(name):
    """``forward_into`` writes φ(z) into the activation columns of a homogeneous buffer
    ``[a 1]`` (a strided view) exactly as ``forward`` returns it, and leaves the ones column."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 3))
    act = (ConjugatedActivation("tanh", np.eye(3) + 0.2, rng.standard_normal(3))
           if name == "conjugated" else get_activation(name))
    buf = np.ones((5, 4))
    got = act.forward_into(z, buf[:, :-1])
    np.testing.assert_array_equal(buf[:, :-1], act.forward(z))
    assert np.shares_memory(got, buf) and np.all(buf[:, -1] == 1)
