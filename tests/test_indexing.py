"""One numbering everywhere (paper: weight layers W_i, i = 1..L; activation spaces a_i,
i = 0..L) and one orientation of inputs (rows are examples, numeric and symbolic)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.kfac import independence_metric, kfac_metric
from geomkfac.networks import AbstractMLP
from geomkfac.nn import MLP
from geomkfac.reparam import CoordinateMLP, LayerChange, normalize_changes, reparameterize


def test_kfac_metric_block_i_is_the_independence_metric_of_layer_i():
    net = AbstractMLP([2, 3, 1], "tanh", name="ix")
    w = net.random_weights(0)
    X = np.random.default_rng(0).standard_normal((6, 2))
    g = kfac_metric(net, w, X, "gaussian")
    for i in (1, 2):
        gi = independence_metric(net, w, X, "gaussian", layer=i)
        assert gi.space is net.weight_spaces[i] and g.block(i).space is net.weight_spaces[i]
        np.testing.assert_allclose(g.block(i).matrix(), gi.matrix(), rtol=1e-12, atol=1e-14)
        assert g.block(i) is g.metrics[i - 1]
    # control: the neighbouring block lives on another space
    assert g.block(1).space is not independence_metric(net, w, X, "gaussian", layer=2).space
    for bad in (0, 3, True):
        with pytest.raises(ConfigurationError, match="numbered 1..2"):
            g.block(bad)
    with pytest.raises(ConfigurationError, match="numbered 1..2"):
        independence_metric(net, w, X, "gaussian", layer=0)


def test_param_counts_and_widths_and_one_activation_name():
    net = AbstractMLP([2, 3, 1], "tanh")
    assert net.widths == (2, 3, 1) and net.param_counts == (9, 4)
    assert [a.name for a in net.activations] == [a.name for a in MLP([2, 3, 1], "tanh").activations] \
        == ["tanh", "identity"]
    with pytest.warns(DeprecationWarning, match="param_counts"):
        assert net.layer_sizes == (9, 4)
    c = CoordinateMLP([np.zeros((3, 3)), np.zeros((1, 4))], ["tanh", "identity"])
    assert c.param_counts == (9, 4)
    with pytest.warns(DeprecationWarning, match="param_counts"):
        assert c.layer_sizes == (9, 4)


def test_error_messages_number_layers_from_one():
    with pytest.raises(DimensionError, match="layer 2 expects 5 inputs but layer 1 has 4"):
        from geomkfac.nn import Dense
        MLP.from_layers([Dense(np.zeros((4, 2)), np.zeros(4)), Dense(np.zeros((1, 5)), np.zeros(1))])
    with pytest.raises(ConfigurationError, match=r"activation spaces are numbered 0..2 \(0: the input, 2: the output\)"):
        normalize_changes({3: LayerChange(gamma=np.ones(1))}, 2)
    with pytest.raises(ConfigurationError, match="activation 0"):
        normalize_changes({0: LayerChange(Phi=np.eye(1))}, 2)


def _sym_net():
    R = sp.Rational
    return CoordinateMLP([sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]]),
                          sp.Matrix([[R(3, 2), -2, R(1, 4)]])], ["tanh", "identity"])


def test_symbolic_inputs_are_rows_like_numeric_ones():
    net = _sym_net()
    x, y = sp.symbols("x y")
    X = sp.Matrix([[x, 1], [sp.Rational(1, 2), y], [2, -1]])
    out = net.forward(X)
    assert out.shape == (3, 1)
    for r in range(3):
        one = net.forward(X.row(r))           # a 1 × n_0 row: one example
        assert one.shape == (1, 1)
        assert sp.simplify(one[0, 0] - out[r, 0]) == 0
    # the numeric reading of the same network on the same rows (another code path)
    netf = CoordinateMLP([np.array(W, dtype=float) for W in net.Wbars], net.activations)
    Xn = np.array([[0.3, 1.0], [0.5, -0.7], [2.0, -1.0]])
    Xs = sp.Matrix([[sp.Rational(3, 10), 1], [sp.Rational(1, 2), sp.Rational(-7, 10)], [2, -1]])
    np.testing.assert_allclose(np.array(net.forward(Xs).evalf(), dtype=float), netf.forward(Xn), atol=1e-14)
    abars, zs, acts = net.trace(Xs)
    assert abars[0].shape == (3, 3) and zs[0].shape == (3, 2) and acts[2].shape == (3, 1)
    # a column is still one example, deprecated, and gives a column
    with pytest.warns(DeprecationWarning, match="rows are examples"):
        col = net.forward(sp.Matrix([x, 1]))
    assert col.shape == (1, 1) and sp.simplify(col[0, 0] - out[0, 0]) == 0
    with pytest.raises(DimensionError, match="rows"):
        net.forward(sp.Matrix([[1, 2, 3]]))


def test_symbolic_rows_through_changes_and_the_abstract_network():
    """LayerChange.apply_activations and AbstractMLP.forward take the same rows; the
    reparameterized network on changed rows equals the original (exact)."""
    net = _sym_net()
    R = sp.Rational
    ch0 = LayerChange(Omega=sp.Matrix([[2, 1], [0, 1]]), gamma=sp.Matrix([1, R(-1, 2)]))
    net2 = reparameterize(net, {0: ch0, 1: LayerChange(Omega=sp.Matrix([[1, 1], [0, 2]]))})
    X = sp.Matrix([[R(1, 3), -1], [2, R(1, 2)]])
    X2 = ch0.apply_activations(X)
    assert X2.shape == (2, 2)
    assert X2.row(1) == (ch0.Omega * X.row(1).T + ch0.gamma).T
    d = (net2.forward(X2) - net.forward(X)).applyfunc(lambda e: sp.simplify(e.rewrite(sp.exp)))
    assert d == sp.zeros(2, 1)
    # control: the unchanged rows give another output
    assert any(abs(float(v)) > 1e-3 for v in (net2.forward(X) - net.forward(X)))
    anet = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="rows")
    w = anet.weights_from(list(net.Wbars))
    kappa = anet.reference_frames().derive({0: ch0})
    np.testing.assert_allclose(np.array(anet.forward(w, X, kappa).evalf(), dtype=float),
                               np.array(net.forward(X).evalf(), dtype=float), atol=1e-13)
