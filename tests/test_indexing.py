"""One numbering everywhere (paper: weight layers W_i, i = 1..L; activation spaces a_i,
i = 0..L) for the MLP, the CNN and the RNN, and one orientation of inputs (rows are examples,
numeric and symbolic)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.kfac import independence_metric, kfac_metric
from geomkfac.networks import AbstractMLP, conv_kfac, rnn_kfac
from geomkfac.networks.conv import AbstractCNN
from geomkfac.networks.rnn import AbstractRNN
from geomkfac.numbering import LayerList
from geomkfac.output_metrics import GaussianFisher
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


# ----------------------------------------------------------------------------- CNN and RNN

_ARCH = [{"type": "conv", "out": 2, "k": 2, "pad": 0, "act": "tanh"}, {"type": "avgpool", "k": 1},
         {"type": "flatten"}, {"type": "dense", "out": 1, "act": "identity"}]


def _cnn():
    net = AbstractCNN((1, 3, 3), _ARCH, name="ix")
    rng = np.random.default_rng(0)
    return net, net.random_weights(rng), rng.normal(size=(4, 1, 3, 3))


def test_cnn_space_names_and_display_number_weight_layers_from_one():
    net, w, _ = _cnn()
    assert [Z.name for Z in net.Z] == ["ix.Z1", "ix.Z2"]
    assert [A.name for A in net.A] == ["ix.A0", "ix.A1", "ix.A2"]          # activation spaces 0..L
    assert net.layer_inputs.layer(1).name == "ix.P1" and net.weight_spaces.layer(1).codomain is net.Z.layer(1)
    assert [r.layer for r in net.layers] == [1, None, None, 2]               # pooling/flatten: no number
    lines = str(net.display(weights=w)).splitlines()
    assert lines[0].endswith("parametrized layers 1..2")
    assert lines[1].startswith("layer 1, conv 2×2 pad 0: ix.A0 [ι_ix.A0] on 3×3 → patches ix.P1 = ix.A0^4 → ix.Z1")
    assert lines[1].endswith("φ_1 = tanh") and lines[4].startswith("layer 2, dense:") and lines[4].endswith("φ_2 = identity")
    assert "  [W b]_1 =" in lines and "  [W b]_2 =" in lines and "  [W b]_0 =" not in lines
    tex = net.latex(weights=w)
    assert r"\omega_{1}" in tex and r"\varphi_{2}" in tex and r"\left|T_{1}\right| = 4" in tex
    assert r"\omega_{0}" not in tex and r"\bar{W}_{0}" not in tex


def test_cnn_layer_arguments_accessors_and_frames_are_one_based():
    net, w, X = _cnn()
    g = conv_kfac.kfac_metric(net, w, X, GaussianFisher())
    dims = {1: 2 * 2 * 1 + 1, 2: 4 * 2 + 1}                    # ā: a 2×2 patch of 1 channel; 4 locations × 2
    for i in (1, 2):
        gi = conv_kfac.layer_kfac_metric(net, w, X, GaussianFisher(), i)
        assert gi.space is net.weight_spaces.layer(i) is g.block(i).space
        assert g.block(i).factors()[0].shape == (dims[i], dims[i])
        np.testing.assert_allclose(g.block(i).matrix(), gi.matrix(), rtol=1e-12, atol=1e-14)
        assert net.layer_weights(w).layer(i).shape == net.weight_spaces.layer(i).shape
        assert net.layer_points(w).layer(i).space is net.weight_spaces.layer(i)
        A, G, T = conv_kfac.oracle_kfac_factors(net, w, X, GaussianFisher()).layer(i)
        assert A.shape == (dims[i], dims[i]) and T == (4 if i == 1 else 1)
    # the Python list keeps its positions: [0] is layer 1
    assert net.layer_weights(w)[0].shape == net.weight_spaces.layer(1).shape
    # control: the two layers' blocks are different objects on different spaces
    assert g.block(1).space is not g.block(2).space
    # frames: Z={1: …} changes Z_1 (the conv's pre-activations), not Z_2
    Phi = np.array([[2.0, 0.0], [1.0, 1.0]])
    kappa = net.reference_frames().derive(Z={1: (Phi, np.array([0.5, -1.0]))})
    assert kappa.Z.layer(1).space is net.Z.layer(1) and not kappa.Z.layer(1).is_reference
    assert kappa.Z.layer(2).is_reference
    np.testing.assert_allclose(net.forward(w, X, kappa), net.forward(w, X), atol=1e-12)
    assert kappa.activation(1) is not net.reference_frames().activation(1)     # φ_1 conjugated (D.3)
    assert kappa.activation(2) is net.reference_frames().activation(2)
    assert net.patch_map(1).codomain_frame.space.dim == 4 * net.layer_inputs.layer(1).dim
    assert np.shape(net.pool_map(1).matrix()) == (8, 9)       # arch[1]: 1×1 windows on 4 locations × 2 channels


def test_cnn_error_messages_number_layers_from_one_and_arch_positions():
    net, w, X = _cnn()
    with pytest.raises(ConfigurationError, match=r"the parametrized layers of ix are numbered 1\.\.2, got 0"):
        conv_kfac.layer_kfac_metric(net, w, X, GaussianFisher(), 0)
    with pytest.raises(ConfigurationError, match="numbered 1..2, got 3"):
        net.reference_frames().weight_frame(3)
    with pytest.raises(ConfigurationError, match="layer 2 of ix is a dense layer, not conv"):
        net.patch_map(2)
    with pytest.raises(ConfigurationError, match=r"pre-activation spaces Z_i of ix are numbered 1\.\.2, got 0"):
        net.reference_frames().derive(Z={0: (np.eye(2), None)})
    with pytest.raises(ConfigurationError, match=r"activation spaces A_s of ix are numbered 0\.\.2"):
        net.reference_frames().derive(A={3: (np.eye(1), None)})
    with pytest.raises(ConfigurationError, match=r"arch\[0\] is conv, not avgpool"):
        net.pool_map(0)
    with pytest.raises(DimensionError, match="layer 2: W̄_2 must be"):
        net.weights_from([np.zeros((2, 5)), np.zeros((1, 3))])
    with pytest.raises(ConfigurationError, match=r"arch\[1\]: a dense layer needs a flatten before it"):
        AbstractCNN((1, 3, 3), [{"type": "conv", "out": 1, "k": 2}, {"type": "dense", "out": 1}])
    with pytest.raises(DimensionError, match=r"arch\[2\] \(layer 2\): conv expects 3 input channels"):
        AbstractCNN((1, 4, 4), [{"type": "conv", "out": 2, "k": 2}, {"type": "avgpool", "k": 1},
                                {"type": "conv", "in": 3, "out": 1, "k": 2}])


def _rnn(output="seq"):
    net = AbstractRNN(2, 1, 1, T=3, output=output, name="rx")
    rng = np.random.default_rng(1)
    return net, net.random_weights(rng), net.initial_state(rng.normal(size=2)), rng.normal(size=(4, 3, 1))


def test_rnn_layers_are_one_recurrent_and_two_readout():
    net, w, h0, X = _rnn("last")
    g = rnn_kfac.kfac_metric(net, w, h0, X, "gaussian")
    facs = rnn_kfac.kfac_factors(net, w, h0, X, output_metric="gaussian")
    assert net.weight_spaces.layer(1) is net.W_rec and net.weight_spaces.layer(2) is net.W_out
    for i, space in ((1, net.W_rec), (2, net.W_out)):
        gi = rnn_kfac.recurrent_kfac_metric(net, w, h0, X, "gaussian", layer=i)
        assert gi.space is space is g.block(i).space
        A, G, T = facs.layer(i)
        # T·kron(A, G) from the factors (scaled=False) equals the scaled block
        np.testing.assert_allclose(T * np.kron(A, G), g.block(i).matrix(), rtol=1e-12, atol=1e-14)
        assert net.reference_frames().weight_frame(i).space is space
        assert net.layer_points(w).layer(i).space is space
    assert rnn_kfac.recurrent_kfac_metric(net, w, h0, X, "gaussian").space is net.W_rec   # default: layer 1
    assert net.scales == (3, 1) and net.scales.layer(2) == 1 and facs.layer(2)[2] == 1
    # control: the readout of "last" is used once, the recurrent layer at every step
    assert facs.layer(1)[2] == 3
    lines = str(net.display(weights=w, h0=h0)).splitlines()
    assert lines[1].startswith("layer 1, recurrent:") and lines[2].startswith("layer 2, readout:")
    assert lines[3] == "  [W b]_1 =" and lines[6] == "  [W b]_2 ="
    assert r"\left[\bar{W}_{1}\right]" in net.latex(weights=w) and r"\bar{W}_{0}" not in net.latex(weights=w)
    for bad in (0, 3, True):
        with pytest.raises(ConfigurationError, match=r"the layers of an RNN \(1: recurrent, 2: readout\) are numbered 1\.\.2"):
            rnn_kfac.recurrent_kfac_metric(net, w, h0, X, "gaussian", layer=bad)
    with pytest.raises(ConfigurationError, match="numbered 1..2, got 0"):
        net.reference_frames().weight_frame(0)


def test_layer_list_reads_by_the_paper_number_and_keeps_python_positions():
    xs = LayerList(["first", "second"])
    assert xs.layer(1) == xs[0] == "first" and xs.layer(2) == xs[-1] == "second"
    assert xs == ["first", "second"]
    for bad in (0, 3, True, 1.0):
        with pytest.raises(ConfigurationError, match=r"layers are numbered 1\.\.2"):
            xs.layer(bad)
