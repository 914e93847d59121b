"""The two readings of one network: ``geomkfac.reparam.CoordinateMLP`` (theory layer) and
``geomkfac.nn.MLP`` (fast backend), converted by ``geomkfac.nn.bridge``; the backend's
``reparameterize`` agrees with the theory layer's D.2/D.3; the ``bce`` loss alias."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac import activations_sym as S
from geomkfac.errors import ConfigurationError
from geomkfac.nn import MLP, get_loss, kfac_factors, reparameterize, to_coordinate_mlp, to_mlp
from geomkfac.nn import activations as F
from geomkfac.output_metrics import get_output_metric
from geomkfac.reparam import CoordinateMLP, LayerChange, random_affine
from geomkfac.reparam import reparameterize as theory_reparameterize

SHARED = ["identity", "sigmoid", "tanh", "softplus"]
# Tolerances (why): both readings evaluate the same float64 expressions in a different
# order (matrix products vs homogeneous solves); O(1) values agree to ~1e-15, we allow 1e-12.
TOL = 1e-12
# a wrong mapping or a missing change of frame moves O(1) outputs by O(0.1); require 1e-3
CONTROL_MIN = 1e-3


def random_net(rng, widths, acts):
    Ws = [rng.normal(size=(o, i + 1)) / np.sqrt(i + 1) for i, o in zip(widths[:-1], widths[1:])]
    return CoordinateMLP(Ws, acts)


def random_changes(rng, widths, output=True):
    L = len(widths) - 1
    ch = {0: random_affine(widths[0], rng).on_A_only()}
    for i in range(1, L + 1):
        ch[i] = random_affine(widths[i], rng)
    if not output:
        ch[L] = LayerChange(Phi=ch[L].Phi, tau=ch[L].tau)
    return ch


nets = st.tuples(
    st.integers(0, 10_000),
    st.lists(st.integers(1, 4), min_size=2, max_size=4),
    st.data(),
)


@settings(max_examples=30, deadline=None)
@given(nets)
def test_reparameterized_coordinate_net_as_mlp_computes_the_same_function(args):
    """to_mlp of reparam.reparameterize(net): f‡(Ω_0 x + γ_0) = Ω_L f(x) + γ_L on the fast
    path; control: the output compared without the change of A_L."""
    seed, widths, data = args
    rng = np.random.default_rng(seed)
    acts = [data.draw(st.sampled_from(SHARED)) for _ in widths[1:]]
    net = random_net(rng, widths, acts)
    ch = random_changes(rng, widths)
    model = to_mlp(theory_reparameterize(net, ch))
    X = rng.normal(size=(6, widths[0]))
    want = ch[len(widths) - 1].apply_activations(net.forward(X))
    got = model.forward(ch[0].apply_activations(X))
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL * max(1.0, np.abs(want).max()))
    assert all(isinstance(l.activation, F.ConjugatedActivation) for l in model.layers)
    assert np.abs(got - net.forward(X)).max() > CONTROL_MIN


@settings(max_examples=30, deadline=None)
@given(nets)
def test_round_trip_keeps_weights_and_activations(args):
    """CoordinateMLP → MLP → CoordinateMLP: the same W̄ (bit for bit), names and Ω, γ, Φ, τ;
    MLP → CoordinateMLP → MLP likewise; both readings compute the same function."""
    seed, widths, data = args
    rng = np.random.default_rng(seed)
    acts = [data.draw(st.sampled_from(SHARED)) for _ in widths[1:]]
    net = theory_reparameterize(random_net(rng, widths, acts), random_changes(rng, widths))
    back = to_coordinate_mlp(to_mlp(net))
    for W0, W1, a0, a1 in zip(net.Wbars, back.Wbars, net.activations, back.activations):
        assert np.array_equal(W0, W1)
        assert a0.name == a1.name
        for m0, m1 in zip(a0._floats(), a1._floats()):
            assert np.array_equal(m0, m1)
    X = rng.normal(size=(5, widths[0]))
    np.testing.assert_allclose(back.forward(X), net.forward(X), rtol=0, atol=TOL)

    fast = MLP(widths, acts, seed=seed)
    again = to_mlp(to_coordinate_mlp(fast))
    for l0, l1 in zip(fast.layers, again.layers):
        assert np.array_equal(l0.Wbar, l1.Wbar) and type(l0.activation) is type(l1.activation)
    np.testing.assert_allclose(to_coordinate_mlp(fast).forward(X), fast.forward(X), rtol=0, atol=TOL)


def test_linear_alias_maps_to_identity():
    rng = np.random.default_rng(0)
    net = random_net(rng, (3, 2), ["linear"])
    model = to_mlp(net)
    assert type(model.layers[0].activation) is F.Identity
    X = rng.normal(size=(5, 3))
    np.testing.assert_allclose(model.forward(X), X @ net.Wbars[0][:, :-1].T + net.Wbars[0][:, -1],
                               rtol=0, atol=TOL)


def test_wrong_activation_mapping_is_detected_by_the_function_check():
    """Negative control of the name map: reading tanh as sigmoid changes the function."""
    rng = np.random.default_rng(1)
    net = random_net(rng, (3, 4, 2), ["tanh", "identity"])
    X = rng.normal(size=(8, 3))
    model = to_mlp(net)
    model.layers[0].activation = F.get_activation("sigmoid")
    assert np.abs(model.forward(X) - net.forward(X)).max() > CONTROL_MIN


def test_nested_conjugations_are_merged():
    """A conjugation of a conjugation: one backend ConjugatedActivation from the theory
    layer's flattened one; a nested backend one becomes one theory-layer conjugation."""
    rng = np.random.default_rng(2)
    c1, c2 = random_affine(3, rng), random_affine(3, rng)
    inner = S.ConjugatedActivation("tanh", c1.Omega, c1.gamma, c1.Phi, c1.tau)
    outer = S.ConjugatedActivation(inner, c2.Omega, c2.gamma, c2.Phi, c2.tau)
    net = CoordinateMLP([rng.normal(size=(3, 3))], [outer])
    model = to_mlp(net)
    act = model.layers[0].activation
    assert isinstance(act, F.ConjugatedActivation) and isinstance(act.base, F.Tanh)
    X = rng.normal(size=(7, 2))
    np.testing.assert_allclose(model.forward(X), net.forward(X), rtol=0, atol=TOL)

    nested = F.ConjugatedActivation(F.ConjugatedActivation("sigmoid", c1.Omega, c1.gamma, c1.Phi,
                                                           c1.tau), c2.Omega, c2.gamma, c2.Phi, c2.tau)
    fast = MLP([2, 3], [nested], seed=0)
    theory = to_coordinate_mlp(fast)
    assert theory.activations[0].base is S.SIGMOID
    np.testing.assert_allclose(theory.forward(X), fast.forward(X), rtol=0, atol=TOL)
    # control: the inner conjugation alone is another function
    only_inner = to_coordinate_mlp(MLP.from_layers([type(fast.layers[0])(
        fast.layers[0].W, fast.layers[0].b, nested.base)]))
    assert np.abs(only_inner.forward(X) - fast.forward(X)).max() > CONTROL_MIN


def test_backend_reparameterize_agrees_with_the_theory_layer():
    """nn.reparameterize and reparam.reparameterize read through the bridge give the same
    weights and function (one D.2/D.3); control: the weights without the change of Z_1, A_1
    differ (the weight comparison can fail; the function, frame-free, would not)."""
    rng = np.random.default_rng(3)
    widths = (3, 4, 5, 2)
    model = MLP(widths, "softplus", seed=1)
    ch = random_changes(rng, widths)
    fast = reparameterize(model, ch)  # the same changes, read by the backend's rules
    theory = to_mlp(theory_reparameterize(to_coordinate_mlp(model), ch))
    for a, b in zip(fast.layers, theory.layers):
        np.testing.assert_allclose(a.Wbar, b.Wbar, rtol=0, atol=TOL * max(1.0, np.abs(b.Wbar).max()))
    X = rng.normal(size=(9, 3))
    np.testing.assert_allclose(fast.forward(X), theory.forward(X), rtol=0, atol=1e-11)
    partial = to_mlp(theory_reparameterize(to_coordinate_mlp(model), {**ch, 1: None}))
    assert np.abs(partial.layers[0].Wbar - fast.layers[0].Wbar).max() > CONTROL_MIN


def test_kfac_factors_of_the_converted_net_transform_by_appendix_d():
    """The backend's K-FAC factors of the reparameterized network are ``[Ω]_H A [Ω]_Hᵀ`` and
    ``Φᵀ G Φ`` (paper-notes §3); control: G without Φ."""
    rng = np.random.default_rng(4)
    widths = (2, 3, 3)
    net = random_net(rng, widths, ["tanh", "identity"])
    ch = random_changes(rng, widths, output=False)
    X = rng.normal(size=(40, 2))
    loss = get_loss("mse")
    fac = kfac_factors(to_mlp(net), X, None, loss, fisher="exact")
    fac2 = kfac_factors(to_mlp(theory_reparameterize(net, ch)), ch[0].apply_activations(X), None,
                        loss, fisher="exact")
    for i, ((A, G), (A2, G2)) in enumerate(zip(fac, fac2), start=1):
        OH = ch[i - 1].omega_H(widths[i - 1])
        P = ch[i].Phi
        np.testing.assert_allclose(A2, OH @ A @ OH.T, rtol=0, atol=1e-11)  # sums of N O(1) terms
        np.testing.assert_allclose(G2, P.T @ G @ P, rtol=0, atol=1e-11)
        assert np.abs(G2 - G).max() > CONTROL_MIN


def test_unsupported_activations_and_inputs_raise_configuration_error():
    rng = np.random.default_rng(5)
    with pytest.raises(ConfigurationError, match="relu"):
        to_coordinate_mlp(MLP([2, 3, 1], "relu", seed=0))
    with pytest.raises(ConfigurationError, match="relu"):  # inside a conjugation too
        to_coordinate_mlp(MLP([2, 3], [F.ConjugatedActivation("relu", np.eye(3))], seed=0))

    class Swish(F.ElementwiseActivation):
        name = "tanh"  # claims a shared name, but is another class

        def forward(self, z):
            return z / (1 + np.exp(-z))

    with pytest.raises(ConfigurationError, match="layer 1"):
        to_coordinate_mlp(MLP([2, 3], [Swish()], seed=0))
    swish = S.ElementwiseActivation("swish", lambda x: x / (1 + sp.exp(-x)),
                                    lambda z: z / (1 + np.exp(-z)), lambda z: z)
    with pytest.raises(ConfigurationError, match="swish"):
        to_mlp(CoordinateMLP([rng.normal(size=(2, 3))], [swish]))
    fake_tanh = S.ElementwiseActivation("tanh", sp.sin, np.sin, np.cos)
    with pytest.raises(ConfigurationError, match="different function"):
        to_mlp(CoordinateMLP([rng.normal(size=(2, 3))], [fake_tanh]))
    x = sp.Symbol("x")
    with pytest.raises(ConfigurationError, match="free symbols"):
        to_mlp(CoordinateMLP([sp.Matrix([[x, 1, 0]])], ["tanh"]))
    with pytest.raises(ConfigurationError, match="dtype"):
        to_mlp(random_net(rng, (2, 1), ["tanh"]), dtype=np.int64)
    with pytest.raises(ConfigurationError):
        to_mlp(MLP([2, 1], "tanh"))
    # a symbolic network holding numbers only converts exactly
    sym = CoordinateMLP([sp.Matrix([[sp.Rational(1, 2), -1, 0]])], ["sigmoid"])
    X = rng.normal(size=(4, 2))
    np.testing.assert_allclose(to_mlp(sym).forward(X), 1 / (1 + np.exp(-(0.5 * X[:, :1] - X[:, 1:]))),
                               rtol=0, atol=TOL)


def test_float32_conversion_keeps_dtype():
    rng = np.random.default_rng(6)
    net = random_net(rng, (3, 2), ["sigmoid"])
    model = to_mlp(net, dtype=np.float32)
    X = rng.normal(size=(5, 3))
    assert model.dtype == np.float32 and model.forward(X).dtype == np.float32
    # float32 round-off (ε ≈ 6e-8) on O(1) values
    np.testing.assert_allclose(model.forward(X), net.forward(X), rtol=0, atol=1e-6)


def test_bce_is_the_bernoulli_loss_in_both_layers():
    """``bce`` names the Bernoulli loss in geomkfac.nn as in the theory layer; its value is
    Σ_c softplus(f_c) − y_c f_c (mean over examples); control: another loss differs."""
    rng = np.random.default_rng(7)
    f = rng.normal(size=(6, 3))
    Y = rng.random((6, 3))
    bce = get_loss("BCE")
    assert bce.name == get_output_metric("bce").name == "bernoulli"
    want = float(np.mean(np.sum(np.logaddexp(0.0, f) - Y * f, axis=1)))
    assert abs(bce.value(f, Y) - want) < TOL
    np.testing.assert_array_equal(bce.output_fisher(f), get_loss("bernoulli").output_fisher(f))
    assert abs(get_loss("mse").value(f, Y) - want) > CONTROL_MIN
