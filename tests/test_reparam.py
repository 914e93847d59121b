"""Coordinate networks before/after reparameterize compute the same function (Eqns. D.2, D.3).

Each invariance check has a negative control beside it: transforming the weights without
the bias term ``Φ W‡ γ`` of D.2, or permuting the entries of a weight matrix, gives a
different function.
"""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.activations_sym import (
    IDENTITY,
    SIGMOID,
    SOFTPLUS,
    TANH,
    ConjugatedActivation,
    get_activation,
)
from geomkfac.errors import (
    ConfigurationError,
    DimensionError,
    SingularFrameChangeError,
)
from geomkfac.reparam import (
    CoordinateMLP,
    LayerChange,
    centering,
    permutation,
    random_affine,
    reparameterize,
    sigmoid_to_tanh,
    tanh_to_sigmoid,
    transform_weights,
    unit_scaling,
    whitening,
)

# float64 forward passes through ≤ 3 layers with changes of condition number ≤ 4 per
# space: round-off stays far below 1e-8; a wrong law gives O(1) differences.
TOL = 1e-8
ACTS = ["identity", "sigmoid", "tanh", "softplus"]


def random_net(rng, widths, acts):
    Ws = [rng.normal(size=(widths[i + 1], widths[i] + 1)) for i in range(len(widths) - 1)]
    return CoordinateMLP(Ws, acts)


def all_random_changes(rng, widths):
    L = len(widths) - 1
    ch = {0: random_affine(widths[0], rng).on_A_only()}
    for i in range(1, L + 1):
        ch[i] = random_affine(widths[i], rng)
    return ch


def outputs_match(net, net2, ch, x):
    """max |f‡(Ω_0 x + γ_0) − (Ω_L f(x) + γ_L)|."""
    L = net.L
    lhs = net2.forward(ch.get(0, LayerChange()).apply_activations(x))
    rhs = ch.get(L, LayerChange()).apply_activations(net.forward(x))
    return np.abs(lhs - rhs).max()


# --------------------------------------------------------------------------- numeric, random
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    widths=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    act_idx=st.lists(st.integers(0, 3), min_size=3, max_size=3),
)
def test_random_affine_changes_preserve_function(seed, widths, act_idx):
    rng = np.random.default_rng(seed)
    L = len(widths) - 1
    acts = [ACTS[act_idx[i % 3]] for i in range(L - 1)] + ["identity"]
    net = random_net(rng, widths, acts)
    ch = all_random_changes(rng, widths)
    net2 = reparameterize(net, ch)
    x = rng.normal(size=(7, widths[0]))
    assert outputs_match(net, net2, ch, x) < TOL

    # negative control 1: drop the Φ W‡ γ_{i-1} bias term of D.2 in layer k, and compare the
    # activations of layer k (the first k layers as a network). Compared at the network's
    # output instead, the errors of two layers can cancel, or later squashing layers shrink
    # them below the threshold.
    for k in range(1, L + 1):
        bad = [transform_weights(net.Wbars[i - 1], ch[i - 1], ch[i]).copy() for i in range(1, k + 1)]
        bad[-1][:, -1] += bad[-1][:, :-1] @ ch[k - 1].gamma  # undo the γ term: b‡ = Φ⁻¹(b − τ)
        net_bad = CoordinateMLP(bad, net2.activations[:k])
        net_k = CoordinateMLP(net.Wbars[:k], net.activations[:k])
        # random γ ~ N(0, 1): the dropped term moves layer k's activations by O(|W γ|), which
        # for 1-wide layers is a product of a few normals and can be ~1e-4; the correct network
        # agrees to TOL = 1e-8, so requiring 100·TOL separates the two without chance failures
        assert outputs_match(net_k, net_bad, ch, x) > 100 * TOL, f"layer {k}"


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 4))
def test_permuting_weight_entries_is_not_a_reparameterization(seed, n):
    """Negative control: a permutation of the *entries* of W̄ (not of units) changes f."""
    rng = np.random.default_rng(seed)
    net = random_net(rng, [3, n, 2], ["tanh", "identity"])
    W1 = net.Wbars[0]
    flat = W1.reshape(-1).copy()
    perm = rng.permutation(flat.size)
    while np.all(perm == np.arange(flat.size)):
        perm = rng.permutation(flat.size)
    W1p = flat[perm].reshape(W1.shape)
    net_p = CoordinateMLP([W1p, net.Wbars[1]], net.activations)
    x = rng.normal(size=(9, 3))
    assert np.abs(net_p.forward(x) - net.forward(x)).max() > 1e-6
    # ... while a permutation of *units* is covered (positive case beside it)
    ch = {1: permutation(rng.permutation(n))}
    assert outputs_match(net, reparameterize(net, ch), ch, x) < TOL


# --------------------------------------------------------------------------- named changes
def test_sigmoid_to_tanh_gives_tanh_network():
    rng = np.random.default_rng(0)
    net = random_net(rng, [3, 4, 4, 2], ["sigmoid", "sigmoid", "identity"])
    ch = {1: sigmoid_to_tanh(4), 2: sigmoid_to_tanh(4)}
    net2 = reparameterize(net, ch)
    x = rng.normal(size=(11, 3))
    assert outputs_match(net, net2, ch, x) < TOL
    # the conjugated activation *is* tanh, and the network with plain tanh is the same
    z = rng.normal(size=(5, 4)) * 3
    assert np.abs(net2.activations[0](z) - np.tanh(z)).max() < 1e-12  # identity of functions
    plain = CoordinateMLP(net2.Wbars, ["tanh", "tanh", "identity"])
    assert np.abs(plain.forward(x) - net.forward(x)).max() < TOL
    # negative control: replacing sigmoid by tanh *without* changing the weights differs
    naive = CoordinateMLP(net.Wbars, ["tanh", "tanh", "identity"])
    assert np.abs(naive.forward(x) - net.forward(x)).max() > 1e-2
    # and back
    back = reparameterize(plain, {1: tanh_to_sigmoid(4), 2: tanh_to_sigmoid(4)})
    for Wb, W in zip(back.Wbars, net.Wbars):
        assert np.allclose(Wb, W, atol=1e-12)


def test_centering_whitening_scaling_permutation():
    rng = np.random.default_rng(1)
    net = random_net(rng, [3, 5, 2], ["tanh", "identity"])
    x = rng.normal(size=(200, 3))
    a1 = net.trace(x)[2][1]
    mu, cov = a1.mean(0), np.cov(a1.T, bias=True)
    for ch1 in (
        centering(mu),
        whitening(mu, cov),
        unit_scaling(rng.uniform(0.5, 2, 5)),
        permutation(rng.permutation(5)),
    ):
        ch = {0: centering(x.mean(0)), 1: ch1}
        net2 = reparameterize(net, ch)
        assert outputs_match(net, net2, ch, x) < TOL
    # whitening makes the transformed hidden activations white on this data
    net_w = reparameterize(net, {1: whitening(mu, cov)})
    a1w = net_w.trace(x)[2][1]
    assert np.abs(a1w.mean(0)).max() < 1e-10  # exact up to round-off
    assert np.abs(np.cov(a1w.T, bias=True) - np.eye(5)).max() < 1e-8
    # negative control: the original activations are not white
    assert np.abs(cov - np.eye(5)).max() > 1e-2


def test_reparameterize_round_trip_and_composition():
    rng = np.random.default_rng(2)
    net = random_net(rng, [2, 3, 3, 1], ["softplus", "sigmoid", "identity"])
    ch = all_random_changes(rng, [2, 3, 3, 1])
    net2 = reparameterize(net, ch)
    inv = {}
    for i, c in ch.items():
        Oi = np.linalg.inv(c.Omega)
        inv_c = LayerChange(Omega=Oi, gamma=-Oi @ c.gamma)
        if c.Phi is not None:
            # z‡ = Φ z‡‡ + τ inverted: z‡‡ = Φ⁻¹ z‡ − Φ⁻¹ τ
            Pi = np.linalg.inv(c.Phi)
            inv_c = LayerChange(inv_c.Omega, inv_c.gamma, Pi, -Pi @ c.tau)
        inv[i] = inv_c
    back = reparameterize(net2, inv)
    for Wb, W in zip(back.Wbars, net.Wbars):
        assert np.allclose(Wb, W, atol=1e-10)
    z = rng.normal(size=(4, 3))
    assert np.allclose(back.activations[1](z), SIGMOID(z), atol=1e-12)
    # nested conjugation was flattened to one
    assert isinstance(back.activations[1], ConjugatedActivation)
    assert back.activations[1].base is SIGMOID


# --------------------------------------------------------------------------- symbolic
def _sym_net():
    R = sp.Rational
    W1 = sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]])
    W2 = sp.Matrix([[R(3, 2), -2, R(1, 4)]])
    return CoordinateMLP([W1, W2], ["sigmoid", "identity"])


def test_symbolic_same_function_exact():
    """Width-2 net, symbolic Ω, γ, Φ, τ, exact rational input: difference cancels to 0."""
    net = _sym_net()
    o1, o2, g1, p1, t1 = sp.symbols("o1 o2 g1 p1 t1")
    ch = {
        0: LayerChange(Omega=sp.Matrix([[2, 1], [0, 1]]), gamma=sp.Matrix([1, sp.Rational(-1, 2)])),
        1: LayerChange(
            Omega=sp.Matrix([[o1, 1], [0, o2]]),
            gamma=sp.Matrix([g1, 1]),
            Phi=sp.Matrix([[p1, 0], [1, 1]]),
            tau=sp.Matrix([t1, 0]),
        ),
    }
    net2 = reparameterize(net, ch)
    x = sp.Matrix([[sp.Rational(1, 3), -1]])  # one example: a row
    lhs = net2.forward(ch[0].apply_activations(x))[0]
    rhs = net.forward(x)[0]
    assert sp.cancel(lhs - rhs) == 0
    # negative control: drop the Φ W‡ γ bias term of D.2 in layer 2
    W2t = net2.Wbars[1]
    bad_b = W2t[:, -1] + W2t[:, :-1] * sp.Matrix(ch[1].gamma)
    W2bad = W2t[:, :-1].row_join(bad_b)
    net_bad = CoordinateMLP([net2.Wbars[0], W2bad], net2.activations)
    diff = sp.cancel(net_bad.forward(ch[0].apply_activations(x))[0] - rhs)
    assert diff != 0
    assert diff.free_symbols  # depends on the change: not a coincidence of numbers


def test_symbolic_sigmoid_to_tanh_exact():
    net = _sym_net()
    net2 = reparameterize(net, {1: sigmoid_to_tanh(2, symbolic=True)})
    plain = CoordinateMLP(net2.Wbars, ["tanh", "identity"])
    x = sp.Matrix([[sp.Rational(1, 2), 2]])
    d = (plain.forward(x)[0] - net.forward(x)[0]).rewrite(sp.exp)
    assert sp.simplify(d) == 0
    # negative control: tanh in place of sigmoid without the weight change
    naive = CoordinateMLP(net.Wbars, ["tanh", "identity"])
    d_bad = (naive.forward(x)[0] - net.forward(x)[0]).rewrite(sp.exp)
    assert abs(float(d_bad)) > 1e-3


def test_symbolic_agrees_with_numeric():
    net = _sym_net()
    netf = CoordinateMLP([np.array(W, dtype=float) for W in net.Wbars], net.activations)
    x = sp.Matrix([[sp.Rational(1, 5), sp.Rational(-3, 2)]])
    ys = float(net.forward(x)[0])
    yn = netf.forward(np.array([0.2, -1.5]))[0, 0]
    assert abs(ys - yn) < 1e-14  # exact value rounded once vs float64 pass


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize("act", [IDENTITY, SIGMOID, TANH, SOFTPLUS])
def test_activation_jacobian_matches_finite_differences(act):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 3))
    phi = ConjugatedActivation(act, rng.normal(size=(3, 3)), rng.normal(size=3),
                               rng.normal(size=(3, 3)), rng.normal(size=3))
    for f in (act, phi):
        J = f.jacobian(z)
        h = 1e-6
        fd = np.stack([(f(z + h * e) - f(z - h * e)) / (2 * h) for e in np.eye(3)], axis=-1)
        # central differences: error O(h²)·|f'''| + round-off ε/h ≈ 1e-10
        assert np.abs(J - fd).max() < 1e-7
    # symbolic Jacobian agrees with numeric
    zs = sp.Matrix([sp.Rational(1, 3), -1, 2])
    Js = np.array(act.jacobian(zs).evalf(), dtype=float)
    assert np.allclose(Js, act.jacobian(np.array([1 / 3, -1.0, 2.0])), atol=1e-12)


def test_errors_say_what_is_wrong():
    with pytest.raises(ConfigurationError):
        get_activation("relu6")
    rng = np.random.default_rng(4)
    net = random_net(rng, [2, 2, 1], ["tanh", "identity"])
    with pytest.raises(ConfigurationError):
        reparameterize(net, {0: random_affine(2, rng)})  # Φ on the input
    with pytest.raises(SingularFrameChangeError):
        reparameterize(net, {1: LayerChange(Omega=np.zeros((2, 2)))})
    with pytest.raises(DimensionError):
        reparameterize(net, {1: LayerChange(Omega=np.eye(3))})
    with pytest.raises(DimensionError):
        CoordinateMLP([np.zeros((2, 3)), np.zeros((1, 4))], ["tanh", "identity"])
    with pytest.raises(ConfigurationError):
        permutation([0, 0, 1])
