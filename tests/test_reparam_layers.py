"""One ``reparameterize(net, changes)`` for the backend's layer stacks (Appendix D,
Theorems 4.1 and 4.2): the changed network computes the same function,
``net‡(Ω_0 x + γ_0) = Ω_L net(x) + γ_L``, with negative controls (zero padding instead of
the moved padding point, the other patch order, an unmoved initial state, max pooling under
a general change), and the same weights as a construction by hand.

Tolerance: every comparison is between float64 forward passes of O(1) values through at most
four layers whose frame changes have condition number below ~10; round-off is ~1e-14, and
1e-10 leaves four orders of margin while the controls differ by more than 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import geomkfac
import geomkfac.nn as gnn
from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn.bridge import to_coordinate_mlp, to_mlp
from geomkfac.nn.layers.conv import im2col
from geomkfac.reparam import CoordinateMLP, LayerChange, reparameterize

TOL = 1e-10
CONTROL = 1e-3


def frame(rng, n):
    return np.eye(n) + 0.3 * rng.standard_normal((n, n)), 0.5 * rng.standard_normal(n)


def full_change(rng, n, with_Z=True):
    return LayerChange(*frame(rng, n), *(frame(rng, n) if with_Z else (None, None)))


def images_in(change, X):
    """``Ω x + γ`` on the channel axis of images ``(N, C, H, W)``."""
    return np.einsum("ij,njhw->nihw", change.Omega, X) + change.gamma[:, None, None]


def out_in(change, F):
    return F @ change.Omega.T + change.gamma


def cnn(rng, pool=gnn.AvgPool2d, pad=1, side=6):
    s = (side + 2 * pad - 2) // 2
    return gnn.Sequential([
        gnn.Conv2d(0.5 * rng.standard_normal((3, 2, 3, 3)), 0.1 * rng.standard_normal(3), "tanh", padding=pad),
        pool(2),
        gnn.Conv2d(0.5 * rng.standard_normal((2, 3, 3, 3)), 0.1 * rng.standard_normal(2), "tanh", padding=pad),
        gnn.Flatten(),
        gnn.Dense(rng.standard_normal((2, 2 * (s + 2 * pad - 2) ** 2)), 0.1 * rng.standard_normal(2)),
    ])


def cnn_changes(rng):
    return {0: full_change(rng, 2, with_Z=False), 1: full_change(rng, 3), 2: full_change(rng, 2),
            3: full_change(rng, 2)}


def gap(net, net2, X, ch):
    """``max |net‡(Ω_0 x + γ_0) − (Ω_L net(x) + γ_L)|``."""
    L = len(net.param_layers)
    want = net.forward(X) if L not in ch or not ch[L].changes_A else out_in(ch[L], net.forward(X))
    if 0 not in ch:
        X2 = X
    else:
        X2 = images_in(ch[0], X) if X.ndim == 4 else X @ ch[0].Omega.T + ch[0].gamma
    return float(np.abs(net2.forward(X2) - want).max())


# --------------------------------------------------------------------------- convolution
def test_cnn_same_function_and_padding_point_control():
    """Thm 4.1 on a padded CNN with average pooling: same function; control: the same
    network padded with zeros (the old padding point's *old* coordinates) differs."""
    rng = np.random.default_rng(0)
    net, ch = cnn(rng), cnn_changes(rng)
    X = rng.standard_normal((6, 2, 6, 6))
    net2 = geomkfac.reparameterize(net, ch)
    assert isinstance(net2, gnn.Sequential) and net2.dtype == net.dtype
    assert gap(net, net2, X, ch) < TOL
    np.testing.assert_allclose(net2.layers[0].pad_value, ch[0].gamma, rtol=0, atol=1e-15)
    np.testing.assert_allclose(net2.layers[2].pad_value, ch[1].gamma, rtol=0, atol=1e-15)
    zero_pad = gnn.Sequential([gnn.Conv2d(l.W, l.b, l.activation, l.padding, l.stride)
                               if isinstance(l, gnn.Conv2d) else l for l in net2.layers])
    assert gap(net, zero_pad, X, ch) > CONTROL
    # without padding there is no padding point to move
    valid = cnn(rng, pad=0, side=10)
    assert all(l.pad_value is None for l in geomkfac.reparameterize(valid, ch).layers
               if isinstance(l, gnn.Conv2d))
    assert gap(valid, geomkfac.reparameterize(valid, ch), rng.standard_normal((4, 2, 10, 10)), ch) < TOL


def test_cnn_weights_equal_a_construction_by_hand_and_patch_order_control():
    """The second conv layer's weights equal ``W̄ (Ω ⊗ I_9)⁻¹`` with the shift ``γ ⊗ 1``
    (channel-major patches), written here with kron by hand; control: the other order
    ``I_9 ⊗ Ω`` gives other weights and another function."""
    rng = np.random.default_rng(1)
    net = cnn(rng)
    Om1, ga1 = frame(rng, 3)
    ch = {1: LayerChange(Omega=Om1, gamma=ga1)}
    net2 = reparameterize(net, ch)
    W2, b2 = net.layers[2].W, net.layers[2].b
    Mi = np.linalg.inv(np.kron(Om1, np.eye(9)))
    W2r = W2.reshape(2, 27) @ Mi
    np.testing.assert_allclose(net2.layers[2].W.reshape(2, 27), W2r, rtol=0, atol=TOL)
    np.testing.assert_allclose(net2.layers[2].b, b2 - W2r @ np.repeat(ga1, 9), rtol=0, atol=TOL)
    X = rng.standard_normal((5, 2, 6, 6))
    assert gap(net, net2, X, ch) < TOL
    # control: patches ordered (dy, dx, c)
    Wbad = W2.reshape(2, 27) @ np.linalg.inv(np.kron(np.eye(9), Om1))
    bad = net2.copy()
    bad.layers[2].W[...] = Wbad.reshape(W2.shape)
    bad.layers[2].b[...] = b2 - Wbad @ np.tile(ga1, 9)
    assert np.abs(Wbad - W2r).max() > CONTROL
    assert gap(net, bad, X, ch) > CONTROL


def test_max_pooling_commutes_only_with_positive_monomial_changes():
    rng = np.random.default_rng(2)
    net = cnn(rng, pool=gnn.MaxPool2d)
    X = rng.standard_normal((5, 2, 6, 6))
    P = np.eye(3)[[2, 0, 1]] * np.array([0.5, 2.0, 1.5])[:, None]   # permutation × positive diagonal
    ok = {1: LayerChange(Omega=P, gamma=rng.standard_normal(3), Phi=frame(rng, 3)[0])}
    assert gap(net, geomkfac.reparameterize(net, ok), X, ok) < TOL
    with pytest.raises(ConfigurationError, match="max pooling does not commute"):
        geomkfac.reparameterize(net, {1: LayerChange(Omega=-np.eye(3))})
    # control: the same change with average pooling is fine, and with max pooling it would
    # not be the same function (so refusing is right)
    neg = {1: LayerChange(Omega=-np.eye(3))}
    avg = gnn.Sequential([gnn.AvgPool2d(2) if isinstance(l, gnn.MaxPool2d) else l for l in net.layers])
    forced = gnn.Sequential([gnn.MaxPool2d(2) if isinstance(l, gnn.AvgPool2d) else l
                             for l in geomkfac.reparameterize(avg, neg).layers])
    assert gap(net, forced, X, neg) > CONTROL


def test_conv_pad_value_is_the_border_of_the_patches():
    conv = gnn.Conv2d(np.ones((1, 2, 2, 2)), np.zeros(1), padding=1, pad_value=[3.0, -1.0])
    _, ctx = conv.forward(np.zeros((1, 2, 1, 1)))
    # first patch: (c, dy, dx) with only (dy, dx) = (1, 1) inside the image
    np.testing.assert_array_equal(ctx.abar[0], [3, 3, 3, 0, -1, -1, -1, 0, 1])
    assert gnn.Conv2d(np.ones((1, 2, 2, 2)), np.zeros(1), padding=1, pad_value=[0, 0]).pad_value is None
    with pytest.raises(DimensionError, match="one entry per input channel"):
        gnn.Conv2d(np.ones((1, 2, 2, 2)), np.zeros(1), padding=1, pad_value=[1.0])
    np.testing.assert_array_equal(im2col(np.ones((1, 1, 1)), 2, padding=1, pad_value=[5.0])[0], [5, 5, 5, 1])


# --------------------------------------------------------------------------- recurrent
def rnn_net(rng, head="dense", H=3, d=2, T=5):
    rnn = gnn.RNN(0.6 * rng.standard_normal((H, H + d)), 0.1 * rng.standard_normal(H), "tanh",
                  h0=rng.standard_normal(H))
    heads = {"dense": [gnn.Dense(rng.standard_normal((2, H)), np.zeros(2))],
             "last": [gnn.LastStep(), gnn.Dense(rng.standard_normal((2, H)), np.zeros(2))],
             "flatten": [gnn.Flatten(), gnn.Dense(rng.standard_normal((2, T * H)), np.zeros(2))]}
    return gnn.Sequential([rnn, *heads[head]])


@pytest.mark.parametrize("head", ["dense", "last", "flatten"])
def test_rnn_same_function_and_initial_state_control(head):
    """Thm 4.2: (Ω, γ) on the hidden space moves h0; (Φ, τ) on the pre-activations; (Ωx, γx)
    on the inputs. Control: the same weights with the old h0 differ."""
    rng = np.random.default_rng(3)
    net = rnn_net(rng, head)
    ch = {0: full_change(rng, 2, with_Z=False), 1: full_change(rng, 3), 2: full_change(rng, 2)}
    net2 = geomkfac.reparameterize(net, ch)
    X = rng.standard_normal((4, 5, 2))
    assert gap(net, net2, X, ch) < TOL
    np.testing.assert_allclose(net2.layers[0].h0, ch[1].Omega @ net.layers[0].h0 + ch[1].gamma,
                               rtol=0, atol=1e-15)
    stale = net2.copy()
    stale.layers[0].h0[...] = net.layers[0].h0
    assert gap(net, stale, X, ch) > CONTROL


# --------------------------------------------------------------------------- MLP and bridge
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), widths=st.lists(st.integers(1, 4), min_size=2, max_size=4),
       act=st.sampled_from(["tanh", "sigmoid", "softplus"]))
def test_property_mlp_same_function_and_routes_agree(seed, widths, act):
    """For random frames on every space: the backend's network computes the same function,
    and the abstract route (CoordinateMLP → reparameterize → to_mlp) gives the same weights."""
    rng = np.random.default_rng(seed)
    net = gnn.MLP(widths, act, seed=seed % 1000)
    L = len(widths) - 1
    ch = {i: full_change(rng, widths[i], with_Z=i > 0) for i in range(L + 1)}
    net2 = geomkfac.reparameterize(net, ch)
    X = rng.standard_normal((5, widths[0]))
    assert gap(net, net2, X, ch) < TOL * max(1.0, np.abs(net.forward(X)).max())
    via_theory = to_mlp(reparameterize(to_coordinate_mlp(net), ch))
    for a, b in zip(net2.layers, via_theory.layers):
        np.testing.assert_allclose(a.Wbar, b.Wbar, rtol=1e-12, atol=1e-12)
    # control: forgetting the input change breaks the equality
    if np.abs(ch[0].Omega - np.eye(widths[0])).max() + np.abs(ch[0].gamma).max() > 0.1:
        bad = geomkfac.reparameterize(net, {i: c for i, c in ch.items() if i})
        assert gap(net, bad, X, ch) > 1e-8


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_property_cnn_and_rnn_random_frames(seed):
    rng = np.random.default_rng(seed)
    net, ch = cnn(rng), cnn_changes(rng)
    assert gap(net, geomkfac.reparameterize(net, ch), rng.standard_normal((3, 2, 6, 6)), ch) < TOL
    rnet = rnn_net(rng)
    rch = {0: full_change(rng, 2, with_Z=False), 1: full_change(rng, 3), 2: full_change(rng, 2)}
    assert gap(rnet, geomkfac.reparameterize(rnet, rch), rng.standard_normal((3, 4, 2)), rch) < TOL


def test_one_entry_point_for_every_kind():
    rng = np.random.default_rng(4)
    c = CoordinateMLP([rng.standard_normal((3, 3)), rng.standard_normal((1, 4))], ["tanh", "identity"])
    ch = {1: full_change(rng, 3)}
    assert isinstance(geomkfac.reparameterize(c, ch), CoordinateMLP)
    assert gnn.reparameterize is geomkfac.reparameterize is reparameterize
    m32 = gnn.MLP([2, 3, 1], "tanh", dtype=np.float32)
    assert geomkfac.reparameterize(m32, ch).dtype == np.float32
    with pytest.raises(ConfigurationError, match="AbstractMLP is reparameterized by choosing frames"):
        geomkfac.reparameterize(object(), ch)
    with pytest.raises(ConfigurationError, match="must be numeric"):
        geomkfac.reparameterize(to_mlp(c), {1: LayerChange(Omega=sp.eye(3) * sp.Symbol("s"))})
    with pytest.raises(DimensionError):
        geomkfac.reparameterize(to_mlp(c), {1: full_change(rng, 2)})


def test_strided_conv_and_a_second_change_moves_the_moved_padding_point():
    """Stride 2 and padding 2; then a second change of the changed network: its padding point
    (already γ) moves to Ω' γ + γ' — the composition computes the same function."""
    rng = np.random.default_rng(6)
    net = gnn.Sequential([
        gnn.Conv2d(rng.standard_normal((3, 2, 3, 3)), np.zeros(3), "tanh", padding=2, stride=2),
        gnn.Conv2d(rng.standard_normal((2, 3, 2, 2)), np.zeros(2), "sigmoid", padding=1, stride=2),
        gnn.Flatten(), gnn.Dense(rng.standard_normal((1, 18)), np.zeros(1))])
    X = rng.standard_normal((3, 2, 7, 7))
    ch = {0: full_change(rng, 2, with_Z=False), 1: full_change(rng, 3), 2: full_change(rng, 2)}
    net2 = geomkfac.reparameterize(net, ch)
    assert gap(net, net2, X, ch) < TOL
    ch2 = {0: full_change(rng, 2, with_Z=False), 1: full_change(rng, 3)}
    net3 = geomkfac.reparameterize(net2, ch2)
    np.testing.assert_allclose(net3.layers[1].pad_value, ch2[1].Omega @ ch[1].gamma + ch2[1].gamma,
                               rtol=0, atol=1e-14)
    X3 = images_in(ch2[0], images_in(ch[0], X))
    assert np.abs(net3.forward(X3) - net.forward(X)).max() < TOL
    # control: the second change with its padding point left at γ (not moved again)
    stale = net3.copy()
    stale.layers[1] = gnn.Conv2d(stale.layers[1].W, stale.layers[1].b, stale.layers[1].activation,
                                 padding=1, stride=2, pad_value=ch[1].gamma)
    stale = gnn.Sequential(stale.layers)
    assert np.abs(stale.forward(X3) - net.forward(X)).max() > CONTROL
