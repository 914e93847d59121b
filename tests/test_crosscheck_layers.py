"""The fast NumPy backend against the abstract pipeline for convolutional and recurrent nets.

The pipeline (:mod:`geomkfac.networks.conv_kfac`, :mod:`geomkfac.networks.rnn_kfac`) builds the
K-FAC metric of a layer from core objects — per sample and location (or step) the patch
(or state-input pair) as a point, the rest of the network as composed core maps, pullbacks
of the output metric, expectations, the factored tensor product scaled by |T| — and reads
its factors in the reference files' convention.  The backend (:mod:`geomkfac.nn.layers`)
computes them from im2col/BPTT arrays.  Different code on both sides; random small nets.

Tolerance: float64 sums of a few hundred O(1) products in different orders agree to
~1e-14; 1e-10 relative (the agreement the project requires of the fast path).
"""

from __future__ import annotations

import numpy as np
import pytest

from geomkfac import nn as gnn
from geomkfac.networks import conv, conv_kfac
from geomkfac.networks.rnn import AbstractRNN
from geomkfac.networks import rnn_kfac
from geomkfac.output_metrics import CategoricalFisher, GaussianFisher
from geomkfac.spaces import Point

RTOL = 1e-10


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def _cnn(seed, pad=1):
    rng = np.random.default_rng(seed)
    arch = [{"type": "conv", "in": 2, "out": 3, "k": 3, "pad": pad, "act": "tanh"},
            {"type": "conv", "in": 3, "out": 2, "k": 2, "pad": 0, "act": "tanh"},
            {"type": "flatten"}]
    side = 4 + 2 * pad - 2 - 1
    arch.append({"type": "dense", "in": 2 * side * side, "out": 3, "act": "identity"})
    Ws = [0.5 * rng.normal(size=(3, 2, 3, 3)), 0.5 * rng.normal(size=(2, 3, 2, 2)),
          0.5 * rng.normal(size=(3, 2 * side * side))]
    bs = [0.1 * rng.normal(size=3), 0.1 * rng.normal(size=2), 0.1 * rng.normal(size=3)]
    net, w = conv.AbstractCNN.from_oracle((2, 4, 4), arch, Ws, bs)
    model = gnn.Sequential([gnn.Conv2d(Ws[0], bs[0], "tanh", padding=pad),
                            gnn.Conv2d(Ws[1], bs[1], "tanh", padding=0),
                            gnn.Flatten(), gnn.Dense(Ws[2], bs[2], "identity")])
    X = rng.normal(size=(3, 2, 4, 4))
    return net, w, model, X, rng


@pytest.mark.parametrize("seed,pad", [(0, 1), (1, 0)])
def test_conv_backend_factors_equal_the_pipeline(seed, pad):
    net, w, model, X, rng = _cnn(seed, pad)
    ref = conv_kfac.oracle_kfac_factors(net, w, X, CategoricalFisher())
    got = gnn.kfac_factors(model, X, None, "softmax_ce", fisher="exact")
    assert len(got) == len(ref)
    for blk, (A_ref, G_ref, T) in zip(got, ref):
        A, G = blk
        assert blk.T == T
        assert rel(A, A_ref) < RTOL
        assert rel(G, G_ref) < RTOL
    # control: the Kronecker order / the scale matter — T·kron(A, G) is not kron(A, G)
    blk, (A_ref, G_ref, T) = got[0], ref[0]
    assert T > 1 and rel(np.kron(blk[0], blk[1]), T * np.kron(A_ref, G_ref)) > 1e-3


def test_conv_backend_gradient_equals_the_pipeline_differential():
    net, w, model, X, rng = _cnn(2)
    Y = rng.integers(0, 3, size=X.shape[0])
    value, grad = gnn.loss_and_grad(model, X, Y, "softmax_ce")
    dh = conv_kfac.loss_differential(net, w, X, np.eye(3)[Y], CategoricalFisher().loss())  # one-hot rows
    theta_order = np.asarray(dh.coords(net.reference_frames().weight_space_frame), float)
    # the pipeline's weight coordinates are in the abstract patch order: map them to θ
    Wbars = net.layer_weights(Point(net.reference_frames().weight_space_frame, theta_order))
    g_pipe = conv.oracle_theta(net, Wbars)
    assert rel(grad, g_pipe) < RTOL


def _rnn(seed, output):
    rng = np.random.default_rng(seed)
    H, d, c, T, N = 3, 2, 2, 3, 4
    net = AbstractRNN(H, d, c, T=T, output=output, name=f"x{seed}{output}")
    Wr, br = 0.6 * rng.normal(size=(H, H + d)), 0.1 * rng.normal(size=H)
    Wo, bo = 0.6 * rng.normal(size=(c, H)), 0.1 * rng.normal(size=c)
    w = net.weights_from(np.hstack([Wr, br[:, None]]), np.hstack([Wo, bo[:, None]]))
    h0v = 0.3 * rng.normal(size=H)
    h0 = Point(net.A.reference_frame, h0v)
    layers = [gnn.RNN(Wr, br, "tanh", h0=h0v)]
    if output == "last":
        layers.append(gnn.LastStep())
    layers.append(gnn.Dense(Wo, bo, "identity"))
    X = rng.normal(size=(N, T, d))
    return net, w, h0, gnn.Sequential(layers), X, rng


@pytest.mark.parametrize("output", ["seq", "last"])
def test_rnn_backend_factors_equal_the_pipeline(output):
    net, w, h0, model, X, rng = _rnn(3, output)
    ref = rnn_kfac.kfac_factors(net, w, h0, X, output_metric=GaussianFisher(), fisher="type2")
    got = gnn.kfac_factors(model, X, None, "mse", fisher="exact")
    assert len(got) == 2
    for blk, (A_ref, G_ref, T) in zip(got, ref):
        A, G = blk
        assert blk.T == T
        assert rel(A, np.asarray(A_ref, float)) < RTOL
        assert rel(G, np.asarray(G_ref, float)) < RTOL
    # control: the recurrent layer's statistics are over T steps (T > 1), not the last one
    assert ref[0][2] == net.T > 1
