"""Frames from data: centering and whitening changes computed from a network's activations.

For a network and a batch ``X``, the activation space ``A_i`` (``i = 0..L``: ``a_0`` the input,
``a_i`` the output of weight layer ``W_i``) gets the moments

* ``μ_i = E[a_i]`` and ``Σ_i = E[(a_i − μ_i)(a_i − μ_i)ᵀ]`` (population moments, ``1/n``),

the expectation over the examples and, for a convolution or a recurrent layer, over its
locations or steps too (the change of frame of Theorems 4.1 and 4.2 is the same at every
location / step, so the moments are per channel / per hidden unit). From them:

* :func:`centering_changes` — ``a‡ = a − μ_i`` (``Ω = I, γ = −μ``, paper-notes §3);
* :func:`whitening_changes` — ``a‡ = (Σ_i + ε I)^{-1/2} (a − μ_i)`` (ZCA).

Pass the result to :func:`geomkfac.reparameterize`: the reparameterized network's activations
on the same ``X`` then have mean 0 (and covariance ``I`` for whitening with ``ε = 0``) up to
round-off, while it computes the same function.

>>> import numpy as np
>>> from geomkfac import reparameterize
>>> from geomkfac.nn import MLP
>>> net = MLP([3, 5, 2], "sigmoid", seed=0)
>>> X = np.random.default_rng(0).standard_normal((50, 3))
>>> net2 = reparameterize(net, centering_changes(net, X))
>>> mu, cov = activation_moments(net2, X)[1]
>>> bool(np.abs(mu).max() < 1e-12)
True
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DataError, SingularFrameChangeError
from geomkfac.reparam import CoordinateMLP, centering, whitening

__all__ = ["activations_of", "activation_moments", "centering_changes", "whitening_changes"]


def _rows(a, channel_first: bool) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if channel_first:  # images (N, C, H, W): one row per example and location
        a = np.moveaxis(a, 1, -1)
    return a.reshape(-1, a.shape[-1])


def activations_of(net, X) -> list:
    """``[a_0, a_1, …, a_L]`` on the batch ``X``, each as rows ``(n, dim A_i)``: one row per
    example (and per location / step of a convolution / recurrent layer).

    Parameters
    ----------
    net : numeric CoordinateMLP, geomkfac.nn.MLP or geomkfac.nn.Sequential
    X : array, rows are examples (images ``(N, C, H, W)``, sequences ``(N, T, d)``)

    Examples
    --------
    >>> from geomkfac.nn import Conv2d, Flatten, Dense, Sequential
    >>> cnn = Sequential([Conv2d(np.ones((3, 1, 2, 2)), np.zeros(3)), Flatten(), Dense(np.ones((1, 12)), [0.0])])
    >>> [a.shape for a in activations_of(cnn, np.ones((5, 1, 3, 3)))]   # per channel: N·T rows
    [(45, 1), (20, 3), (5, 1)]
    """
    from geomkfac.nn.layers import RNN, Conv2d, Sequential
    from geomkfac.nn.model import MLP

    if isinstance(net, CoordinateMLP):
        if net.symbolic:
            raise ConfigurationError("frames from data need a numeric network; this CoordinateMLP is symbolic")
        return [np.asarray(a, dtype=np.float64) for a in net.trace(np.asarray(X, dtype=float))[2]]
    if isinstance(net, MLP):
        _, cache = net.forward_cache(X)
        return [_rows(net.check_inputs(X), False)] + [_rows(a, False) for a in cache.a]
    if isinstance(net, Sequential):
        _, cache = net.forward_cache(X)
        first = net.param_layers[0]
        out = [_rows(net.check_inputs(X), isinstance(first, Conv2d))]
        for layer, ctx in zip(net.layers, cache.ctxs):
            if layer.has_params:
                width = layer.hidden if isinstance(layer, RNN) else layer.out_dim
                out.append(np.asarray(ctx.a, dtype=np.float64).reshape(-1, width))
        return out
    raise ConfigurationError(
        f"frames from data take a CoordinateMLP, a geomkfac.nn.MLP or a Sequential, got {type(net).__name__}")


def activation_moments(net, X) -> list:
    """``[(μ_0, Σ_0), …, (μ_L, Σ_L)]``: mean and population covariance of every activation
    space on ``X`` (see :func:`activations_of` for what is averaged).

    >>> from geomkfac.nn import MLP
    >>> mu, cov = activation_moments(MLP([2, 1], "identity"), np.array([[0.0, 2.0], [2.0, 0.0]]))[0]
    >>> mu, cov
    (array([1., 1.]), array([[ 1., -1.],
           [-1.,  1.]]))
    """
    out = []
    for a in activations_of(net, X):
        if not np.all(np.isfinite(a)):
            raise DataError("the activations contain NaN or inf on this batch")
        mu = a.mean(axis=0)
        d = a - mu
        out.append((mu, d.T @ d / a.shape[0]))
    return out


def _layers(net, layers, L):
    if layers is None:
        return list(range(1, L))
    layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i <= L:
            raise ConfigurationError(f"activation indices are 0..{L} (0: the input, {L}: the output), got {i!r}")
    return layers


def _num_layers(net) -> int:
    from geomkfac.nn.layers import Sequential
    from geomkfac.nn.model import MLP

    if isinstance(net, CoordinateMLP):
        return net.L
    if isinstance(net, (MLP, Sequential)):
        return len(net.param_layers)
    raise ConfigurationError(
        f"frames from data take a CoordinateMLP, a geomkfac.nn.MLP or a Sequential, got {type(net).__name__}")


def centering_changes(net, X, layers=None) -> dict:
    """``{i: centering(E[a_i])}`` for the activation indices ``layers`` (default: the hidden
    ones, ``1 … L−1``; add 0 for the input, ``L`` for the output).

    Returns
    -------
    dict ``{i: LayerChange}`` with ``Ω = I, γ = −μ_i``, for :func:`geomkfac.reparameterize`.

    Examples
    --------
    >>> from geomkfac.nn import MLP
    >>> ch = centering_changes(MLP([1, 2, 1], "sigmoid"), np.zeros((4, 1)))
    >>> sorted(ch), ch[1].gamma                      # σ(0) = ½ in both hidden units
    ([1], array([-0.5, -0.5]))
    """
    L = _num_layers(net)
    idx = _layers(net, layers, L)
    moments = activation_moments(net, X)
    return {i: centering(moments[i][0]) for i in idx}


def whitening_changes(net, X, layers=None, eps: float = 0.0) -> dict:
    """``{i: whitening(μ_i, Σ_i + ε I)}``: ``a‡ = (Σ_i + ε I)^{-1/2} (a − μ_i)`` (ZCA).

    Parameters
    ----------
    net, X, layers
        As for :func:`centering_changes`.
    eps : float >= 0
        Added to the covariance's diagonal. With ``eps = 0`` the whitened activations have
        identity covariance on ``X``, and a singular covariance (a dead or duplicated unit,
        fewer rows than units) raises :class:`~geomkfac.errors.SingularFrameChangeError`;
        ``eps > 0`` makes the change invertible, and the covariance becomes
        ``Σ (Σ + ε I)^{-1}`` (eigenvalues ``λ/(λ + ε)`` instead of 1).

    Examples
    --------
    >>> from geomkfac.nn import MLP
    >>> X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    >>> whitening_changes(MLP([2, 1], "identity"), X, layers=[0])[0].Omega    # 1/std per input
    array([[1. , 0. ],
           [0. , 0.5]])
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)) \
            or not np.isfinite(eps) or eps < 0:
        raise ConfigurationError(f"eps must be a finite number >= 0, got {eps!r}")
    L = _num_layers(net)
    idx = _layers(net, layers, L)
    moments = activation_moments(net, X)
    out = {}
    for i in idx:
        mu, cov = moments[i]
        try:
            out[i] = whitening(mu, cov + eps * np.eye(len(mu)))
        except SingularFrameChangeError as exc:
            raise SingularFrameChangeError(
                f"activation {i}: {exc}; pass eps > 0 (e.g. eps=1e-6 × the largest variance) to "
                "whiten a singular covariance") from None
    return out

