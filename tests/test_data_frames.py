"""Centering and whitening frames from data: after ``reparameterize(net, centering_changes(net,
X))`` the activations on ``X`` have mean 0, and after whitening identity covariance, while the
network computes the same function.

Tolerances: the moments of the reparameterized network are sums over at most a few thousand
rows of O(1) float64 values; their round-off is ~1e-13 of the activation scale. Means are
checked to 1e-10 and covariances to 1e-8 (the whitening matrix Σ^{-1/2} amplifies round-off by
at most its condition number, below ~1e3 for these draws). The controls (the original
network's moments) are O(0.1) away.
"""

from __future__ import annotations

import numpy as np
import pytest

import geomkfac
import geomkfac.nn as gnn
from geomkfac import activation_moments, centering_changes, reparameterize, whitening_changes
from geomkfac.errors import ConfigurationError, SingularFrameChangeError
from geomkfac.nn.bridge import to_coordinate_mlp

MEAN_TOL, COV_TOL, CONTROL = 1e-10, 1e-8, 1e-2


def networks(rng):
    mlp = gnn.MLP([3, 5, 4, 2], "sigmoid", seed=1)
    cnn = gnn.Sequential([gnn.Conv2d(0.5 * rng.standard_normal((3, 2, 3, 3)), np.full(3, 0.3), "tanh", padding=1),
                          gnn.AvgPool2d(2),
                          gnn.Conv2d(0.5 * rng.standard_normal((2, 3, 3, 3)), np.full(2, 0.2), "sigmoid", padding=1),
                          gnn.Flatten(), gnn.Dense(rng.standard_normal((2, 18)), np.zeros(2))])
    rnn = gnn.Sequential([gnn.RNN(0.6 * rng.standard_normal((3, 5)), np.full(3, 0.4), "sigmoid",
                                  h0=rng.standard_normal(3)),
                          gnn.Dense(rng.standard_normal((2, 3)), np.zeros(2), "softplus"),
                          gnn.LastStep(), gnn.Dense(rng.standard_normal((2, 2)), np.zeros(2))])
    return {
        "mlp": (mlp, rng.standard_normal((60, 3)) + 1.0),
        "coordinate": (to_coordinate_mlp(mlp), rng.standard_normal((60, 3)) - 0.5),
        "cnn": (cnn, rng.standard_normal((20, 2, 6, 6)) + 0.5),
        "rnn": (rnn, rng.standard_normal((20, 6, 2)) + 0.5),
    }


@pytest.mark.parametrize("kind", ["mlp", "coordinate", "cnn", "rnn"])
def test_centering_and_whitening_from_data(kind):
    net, X = networks(np.random.default_rng(0))[kind]
    L = len(net.param_layers) if hasattr(net, "param_layers") else net.L
    before = activation_moments(net, X)
    hidden = range(1, L)
    assert max(np.abs(before[i][0]).max() for i in hidden) > CONTROL  # not centred already
    centred = reparameterize(net, centering_changes(net, X))
    np.testing.assert_allclose(centred.forward(X), net.forward(X), rtol=0, atol=1e-10)
    after = activation_moments(centred, X)
    for i in hidden:
        assert np.abs(after[i][0]).max() < MEAN_TOL
        np.testing.assert_allclose(after[i][1], before[i][1], rtol=0, atol=COV_TOL)  # Ω = I
    white = reparameterize(net, whitening_changes(net, X))
    np.testing.assert_allclose(white.forward(X), net.forward(X), rtol=0, atol=1e-9)
    for i in hidden:
        mu, cov = activation_moments(white, X)[i]
        assert np.abs(mu).max() < MEAN_TOL
        np.testing.assert_allclose(cov, np.eye(len(mu)), rtol=0, atol=COV_TOL)
        assert np.abs(before[i][1] - np.eye(len(mu))).max() > CONTROL


def test_input_and_output_indices_and_eps():
    rng = np.random.default_rng(1)
    net = gnn.MLP([3, 4, 2], "tanh", seed=0)
    X = rng.standard_normal((40, 3)) * np.array([1.0, 3.0, 0.5]) + 2.0
    ch = whitening_changes(net, X, layers=[0, 2])
    assert sorted(ch) == [0, 2]
    net2 = reparameterize(net, ch)
    X0 = ch[0].apply_activations(X)
    np.testing.assert_allclose(np.cov(X0, rowvar=False, bias=True), np.eye(3), atol=COV_TOL)
    np.testing.assert_allclose(net2.forward(X0), ch[2].apply_activations(net.forward(X)), atol=1e-10)
    # a duplicated input column: singular covariance; refused without eps, whitened with it
    Xd = np.hstack([X[:, :2], X[:, :1]])
    with pytest.raises(SingularFrameChangeError, match="pass eps > 0"):
        whitening_changes(net, Xd, layers=[0])
    eps = 1e-3
    c = whitening_changes(net, Xd, layers=[0], eps=eps)[0]
    cov = np.cov(c.apply_activations(Xd), rowvar=False, bias=True)
    lam, U = np.linalg.eigh(np.cov(Xd, rowvar=False, bias=True))
    np.testing.assert_allclose(cov, (U * (lam / (lam + eps))) @ U.T, atol=COV_TOL)
    for bad in (dict(layers=[3]), dict(layers=[True]), dict(eps=-1.0)):
        with pytest.raises(ConfigurationError):
            whitening_changes(net, X, **bad)
    with pytest.raises(ConfigurationError):
        centering_changes(object(), X)
    assert geomkfac.centering_changes is centering_changes
