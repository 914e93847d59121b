"""The abstract MLP: spaces, frames, coordinate networks (paper §3, Appendix D).

The coordinate network read in derived frames (the core's induced frames of
``Aff(A, Z)``, law D.2, and the conjugated activations D.3) must equal
``reparameterize`` applied on plain arrays: two independent implementations of D.2.
"""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DimensionError, SpaceMismatchError
from geomkfac.maps import AffineMaps
from geomkfac.networks import (
    AbstractMLP,
    CoordinateMLP,
    FrameChoice,
    LayerChange,
    permutation,
    random_affine,
    reparameterize,
    sigmoid_to_tanh,
)
from geomkfac.spaces import Point

ACTS = ["identity", "sigmoid", "tanh", "softplus"]
# float64 passes through ≤ 3 layers, changes of condition ≤ 4: round-off ≪ 1e-8
TOL = 1e-8


def all_changes(rng, widths):
    ch = {0: random_affine(widths[0], rng).on_A_only()}
    for i in range(1, len(widths)):
        ch[i] = random_affine(widths[i], rng)
    return ch


def test_structure_of_the_abstract_mlp():
    net = AbstractMLP([3, 4, 2], ["tanh", "identity"], name="s")
    assert net.L == 2 and net.Z[0] is None and net.weight_spaces[0] is None
    assert [A.dim for A in net.A] == [3, 4, 2]
    assert net.weight_spaces[1] is AffineMaps(net.A[0], net.Z[1])
    assert net.weight_spaces[2].dim == 2 * 5
    assert net.weight_space.factors == net.weight_spaces[1:]
    assert net.weight_space.dim == 16 + 10
    ref = net.reference_frames()
    assert ref is net.reference_frames()
    assert ref.weight_space_frame is net.weight_space.reference_frame


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    widths=st.lists(st.integers(1, 4), min_size=2, max_size=4),
    act=st.sampled_from(ACTS),
)
def test_derived_frames_give_the_reparameterized_network(seed, widths, act):
    rng = np.random.default_rng(seed)
    L = len(widths) - 1
    net = AbstractMLP(widths, [act] * (L - 1) + ["identity"], name="h")
    w = net.random_weights(rng, scale=2.0)
    ref = net.reference_frames()
    ch = all_changes(rng, widths)
    kappa = ref.derive(ch)
    via_core = net.coordinates(w, kappa)
    via_arrays = reparameterize(net.coordinates(w, ref), ch)
    for Wc, Wa in zip(via_core.Wbars, via_arrays.Wbars):
        assert np.abs(Wc - Wa).max() < TOL
    x = rng.normal(size=(6, widths[0]))
    # the same abstract function read in two output frames
    out_k = net.forward(w, x, kappa)
    out_ref = net.forward(w, x, ref)
    assert np.abs(out_k - ch[L].apply_activations(out_ref)).max() < TOL
    # negative control: new weights (D.2) but the old activations (D.3 forgotten)
    if L >= 2:
        forgot = CoordinateMLP(via_core.Wbars, net.activations)
        x_k = net.input_coords(x, kappa)
        assert np.abs(forgot.forward(x_k) - out_k).max() > 1e-6


def test_weights_round_trip_in_any_frame():
    rng = np.random.default_rng(0)
    net = AbstractMLP([2, 3, 2], ["sigmoid", "identity"], name="rt")
    Ws = [rng.normal(size=(3, 3)), rng.normal(size=(2, 4))]
    kappa = net.reference_frames().derive(all_changes(rng, [2, 3, 2]))
    w = net.weights_from(Ws, kappa)
    assert isinstance(w, Point) and w.space is net.weight_space
    for a, b in zip(net.layer_weights(w, kappa), Ws):
        assert np.allclose(a, b, atol=1e-12)
    # coordinates are column-stacked vec(W̄)
    assert np.allclose(w.coords(kappa.weight_space_frame)[:9], Ws[0].reshape(-1, order="F"))
    # in another frame the numbers differ (negative control: it is not the identity)
    other = net.layer_weights(w)
    assert np.abs(other[0] - Ws[0]).max() > 1e-3


def test_named_change_through_frames_sigmoid_to_tanh_and_permutation():
    rng = np.random.default_rng(1)
    net = AbstractMLP([2, 3, 3, 1], ["sigmoid", "tanh", "identity"], name="nm")
    w = net.random_weights(rng, scale=2.0)
    kappa = net.reference_frames().derive({1: sigmoid_to_tanh(3), 2: permutation([2, 0, 1])})
    c = net.coordinates(w, kappa)
    z = rng.normal(size=(5, 3))
    assert np.abs(c.activations[0](z) - np.tanh(z)).max() < 1e-12
    assert np.abs(c.activations[1](z) - np.tanh(z)).max() < 1e-12
    x = rng.normal(size=(4, 2))
    assert np.abs(net.forward(w, x, kappa) - net.forward(w, x)).max() < TOL
    plain = CoordinateMLP(c.Wbars, ["tanh", "tanh", "identity"])
    assert np.abs(plain.forward(x) - net.forward(w, x)).max() < TOL


def test_symbolic_frames_exact():
    R = sp.Rational
    net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="sy")
    Ws = [sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]]), sp.Matrix([[R(3, 2), -2, R(1, 4)]])]
    w = net.weights_from(Ws)
    a, b, g = sp.symbols("a b g")
    ch = {1: LayerChange(Omega=sp.Matrix([[a, 1], [0, b]]), gamma=sp.Matrix([g, 0]),
                         Phi=sp.Matrix([[2, 0], [1, 1]]), tau=sp.Matrix([0, R(1, 2)]))}
    kappa = net.reference_frames().derive(ch)
    via_core = net.coordinates(w, kappa)
    via_arrays = reparameterize(net.coordinates(w), ch)
    for Wc, Wa in zip(via_core.Wbars, via_arrays.Wbars):
        assert all(sp.cancel(e) == 0 for e in (Wc - Wa))
    x = sp.Matrix([[R(1, 2), -1]])
    diff = net.forward(w, x, kappa)[0] - net.forward(w, x)[0]
    assert sp.cancel(diff) == 0
    # an input change too: inputs are given in the reference frame of A_0 and mapped
    kappa0 = net.reference_frames().derive(
        {0: LayerChange(Omega=sp.Matrix([[2, a], [0, 1]]), gamma=sp.Matrix([1, 0])), **ch}
    )
    assert sp.cancel(net.forward(w, x, kappa0)[0] - net.forward(w, x)[0]) == 0
    # negative control: feeding the reference coordinates to the κ-network differs
    wrong = net.coordinates(w, kappa0).forward(x)[0] - net.forward(w, x)[0]
    assert sp.cancel(wrong) != 0


def test_frame_choice_errors():
    net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="er")
    other = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="er2")
    with pytest.raises(SpaceMismatchError):
        net.coordinates(other.random_weights(0))
    with pytest.raises(SpaceMismatchError):
        net.coordinates(net.random_weights(0), other.reference_frames())
    with pytest.raises(SpaceMismatchError):
        FrameChoice(net, [A.reference_frame for A in other.A], [None, net.Z[1].reference_frame, net.Z[2].reference_frame])
    with pytest.raises(DimensionError):
        AbstractMLP([2, 2, 1], ["tanh"])
    # one activation name means what it means for geomkfac.nn.MLP: hidden layers, identity last
    one = AbstractMLP([2, 2, 1], "tanh")
    assert [a.name for a in one.activations] == ["tanh", "identity"]
    with pytest.raises(ConfigurationError):
        AbstractMLP([2, 2, 1], "swish")
    with pytest.raises(DimensionError):
        net.weights_from([np.zeros((2, 2)), np.zeros((1, 3))])
    with pytest.raises(ConfigurationError):
        net.reference_frames().activation(3)


@pytest.mark.parametrize(
    "name",
    ["geomkfac.activations_sym", "geomkfac.output_metrics", "geomkfac.reparam", "geomkfac.networks.mlp", "geomkfac.kfac"],
)
def test_doctests_of_the_theory_layer(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
