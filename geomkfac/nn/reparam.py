"""Reparameterization of the NumPy backend's networks (Appendix D; Theorems 4.1 and 4.2).

The same ``changes`` as for a :class:`~geomkfac.reparam.CoordinateMLP`: a mapping
``{i: LayerChange}`` keyed by the **activation index** ``i = 0..L`` (``a_0`` the input,
``a_i`` the output of the ``i``-th layer with parameters, ``L`` their number), with
``(Ω_i, γ_i)`` the change ``a‡ = Ω_i a + γ_i`` of ``A_i`` and ``(Φ_i, τ_i)`` the change
``z = Φ_i z‡ + τ_i`` of ``Z_i``. Every layer kind reads them as the theorems do:

* :class:`~geomkfac.nn.layers.Dense`: Eqn. D.2 on ``W̄`` and the conjugated activation
  ``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ`` (D.3); after an RNN it acts at every step with the same
  change;
* :class:`~geomkfac.nn.layers.Conv2d`: the change acts per channel, the same at every
  location (Thm 4.1): a patch ``(c, dy, dx)`` (channel-major) changes by ``Ω ⊗ I_{k²}`` and
  ``γ ⊗ 1``, and the **padding point** moves to its new coordinates ``Ω p + γ`` (``p`` its
  old ones, zero at first), kept in :attr:`Conv2d.pad_value`;
* :class:`~geomkfac.nn.layers.RNN`: ``(Ω_i, γ_i)`` on the hidden space, which is both the
  output and the recurrent input ``h_{t-1}`` (the initial state moves to ``Ω_i h_0 + γ_i``),
  ``(Φ_i, τ_i)`` on the pre-activation, ``(Ω_{i-1}, γ_{i-1})`` on the inputs ``x_t``, the
  same at every step (Thm 4.2): ``ā = [h; x; 1]`` changes by ``blockdiag(Ω_i, Ω_{i-1})``;
* :class:`~geomkfac.nn.layers.AvgPool2d`: commutes with a per-channel affine change (its
  weights sum to one), nothing to do;
* :class:`~geomkfac.nn.layers.MaxPool2d`: commutes only with changes whose ``Ω`` is a
  permutation times a positive diagonal; any other ``Ω`` is refused
  (:class:`~geomkfac.errors.ConfigurationError`) rather than returning another function;
* :class:`~geomkfac.nn.layers.Flatten`: a flattened image carries ``Ω ⊗ I_T`` (channel-major,
  ``T`` locations), a flattened sequence ``I_T ⊗ Ω``; the dense layer after it reads ``T``
  from its input width; :class:`~geomkfac.nn.layers.LastStep` keeps the change.

The result computes ``net‡(Ω_0 x + γ_0) = Ω_L net(x) + γ_L`` (Ω_0 acting on the feature /
channel axis of ``x``).

>>> import numpy as np
>>> from geomkfac.nn import MLP
>>> from geomkfac.reparam import centering
>>> net = MLP([2, 3, 1], "tanh", seed=0)
>>> net2 = reparameterize_network(net, {1: centering([0.1, 0.2, 0.3])})
>>> X = np.random.default_rng(0).standard_normal((4, 2))
>>> bool(np.allclose(net2.forward(X), net.forward(X), rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DimensionError, GeomKFACError
from geomkfac.nn.activations import ConjugatedActivation
from geomkfac.nn.layers import RNN, AvgPool2d, Conv2d, Dense, Flatten, LastStep, MaxPool2d, Sequential
from geomkfac.nn.model import MLP
from geomkfac.reparam import LayerChange, normalize_changes, transform_weights

__all__ = ["reparameterize_network", "changes_from_arrays"]

# the layout of the running activation: which axis carries the space A_i
_VECTOR, _SEQUENCE, _IMAGE, _FLAT_IMAGE, _FLAT_SEQUENCE = (
    "vector", "sequence", "image", "flattened image", "flattened sequence")


def _numeric(change: LayerChange, n: int, which: str, i: int):
    """``(B, c)`` of ``change`` on an ``n``-dimensional space as float arrays."""
    try:
        return change._parts(n, which, False)
    except DimensionError as exc:
        raise DimensionError(f"activation {i}: {exc}") from None
    except GeomKFACError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"the change on {'A' if which == 'A' else 'Z'}_{i} must be numeric for a geomkfac.nn "
            f"network ({exc}); substitute the symbols first"
        ) from None


def _is_positive_monomial(M, tol=1e-12) -> bool:
    """Whether ``M`` is a permutation times a positive diagonal (max pooling commutes)."""
    nz = np.abs(M) > tol * max(np.abs(M).max(), 1e-300)
    return bool(np.all(nz.sum(0) == 1) and np.all(nz.sum(1) == 1) and np.all(M[nz] > 0))


def _z_change(change: LayerChange, n: int, i: int) -> LayerChange:
    """Only the ``(Φ, τ)`` part of ``change`` on ``Z_i`` (numeric)."""
    Ph, ta = _numeric(change, n, "Z", i)
    return LayerChange(Phi=Ph, tau=ta)


def _conjugate(act, change: LayerChange, n: int, i: int):
    if not (change.changes_A or change.changes_Z):
        return act
    Om, ga = _numeric(change, n, "A", i)
    Ph, ta = _numeric(change, n, "Z", i)
    return ConjugatedActivation(act, Om, ga, Ph, ta)


def _input_frame(layout, Om, ga, width, i, layer):
    """The change ``(M, g)`` of a dense layer's input of ``width`` features."""
    C = Om.shape[0]
    if layout in (_VECTOR, _SEQUENCE):
        if width != C:
            raise DimensionError(f"{layer!r} expects {width} features but A_{i} has dimension {C}")
        return Om, ga
    if width % C:
        raise DimensionError(
            f"{layer!r} reads a {layout} of {C} channels, but its {width} inputs are not a "
            f"multiple of {C}")
    T = width // C
    if layout == _FLAT_IMAGE:  # index c·T + t (channel-major)
        return np.kron(Om, np.eye(T)), np.repeat(ga, T)
    return np.kron(np.eye(T), Om), np.tile(ga, T)  # flattened sequence: index t·C + c


def reparameterize_network(model, changes):
    """The same abstract network in changed frames, for an :class:`~geomkfac.nn.MLP` or a
    :class:`~geomkfac.nn.layers.Sequential` (see the module docstring for each layer kind).

    Parameters
    ----------
    model : MLP or Sequential
        Of Dense, Conv2d, AvgPool2d, MaxPool2d, Flatten, RNN and LastStep layers.
    changes : dict ``{i: LayerChange}`` or sequence of ``L + 1`` LayerChange/None
        Keyed by the activation index ``i = 0..L`` (0: the input, only ``Ω, γ``; ``L``: the
        output, optional), ``L`` the number of layers with parameters.

    Returns
    -------
    MLP or Sequential
        Of the same kind and dtype, with ``net‡(Ω_0 x + γ_0) = Ω_L net(x) + γ_L``.

    Raises
    ------
    ConfigurationError
        For a change max pooling does not commute with, a symbolic change with free symbols,
        or a layer kind without a reparameterization rule.
    DimensionError
        For a change of the wrong size.

    Examples
    --------
    An RNN whose hidden space is centred: ``h0`` moves with it.

    >>> from geomkfac.nn import RNN, Dense, Sequential
    >>> net = Sequential([RNN(0.5 * np.ones((2, 3)), np.zeros(2), h0=[1.0, 0.0]), Dense(np.ones((1, 2)), [0.0])])
    >>> net2 = reparameterize_network(net, {1: LayerChange(gamma=[-0.5, 0.5])})
    >>> net2.layers[0].h0
    array([0.5, 0.5])
    >>> X = np.linspace(-1, 1, 8).reshape(2, 4, 1)
    >>> bool(np.allclose(net2.forward(X), net.forward(X), rtol=0, atol=1e-12))
    True
    """
    if isinstance(model, MLP):
        layers = model.layers
    elif isinstance(model, Sequential):
        layers = model.layers
    else:
        raise ConfigurationError(
            f"reparameterize_network takes a geomkfac.nn MLP or Sequential, got {type(model).__name__}")
    L = sum(1 for l in layers if l.has_params)
    ch = normalize_changes(changes, L)
    dtype = model.dtype
    # A_0 is the input's feature axis: the channels of images (a Conv2d first), else the
    # last axis (features of a vector or of each step of a sequence)
    first = next(l for l in layers if l.has_params)
    in_dim = first.in_channels if isinstance(first, Conv2d) else first.in_dim
    Om, ga = _numeric(ch[0], in_dim, "A", 0)
    layout = {Conv2d: _IMAGE, RNN: _SEQUENCE}.get(type(first), _VECTOR)
    new, i = [], 0  # i: the index of the current activation space A_i
    for layer in layers:
        if isinstance(layer, Dense):
            M, g = _input_frame(layout, Om, ga, layer.in_dim, i, layer)
            if layout in (_FLAT_IMAGE, _FLAT_SEQUENCE):
                layout = _VECTOR
            Wb = transform_weights(layer.Wbar.astype(np.float64), LayerChange(Omega=M, gamma=g),
                                   _z_change(ch[i + 1], layer.out_dim, i + 1))
            act = _conjugate(layer.activation, ch[i + 1], layer.out_dim, i + 1)
            new.append(Dense(Wb[:, :-1].astype(dtype), Wb[:, -1].astype(dtype), act))
        elif isinstance(layer, Conv2d):
            if layout != _IMAGE:
                raise ConfigurationError(f"{layer!r} after a {layout}: only images feed a Conv2d")
            k2 = layer.k * layer.k
            if Om.shape[0] != layer.in_channels:
                raise DimensionError(f"{layer!r} has {layer.in_channels} input channels but A_{i} "
                                     f"has dimension {Om.shape[0]}")
            # patch (c, dy, dx), channel-major: Ω ⊗ I_{k²}, γ ⊗ 1; the padding point p → Ω p + γ
            M, g = np.kron(Om, np.eye(k2)), np.repeat(ga, k2)
            p_old = np.zeros(layer.in_channels) if layer.pad_value is None else layer.pad_value
            pad = Om @ p_old + ga if layer.padding else None
            Wb = transform_weights(layer.Wbar.astype(np.float64), LayerChange(Omega=M, gamma=g),
                                   _z_change(ch[i + 1], layer.out_dim, i + 1))
            act = _conjugate(layer.activation, ch[i + 1], layer.out_dim, i + 1)
            new.append(Conv2d(Wb[:, :-1].reshape(layer.W.shape).astype(dtype), Wb[:, -1].astype(dtype),
                              act, layer.padding, layer.stride, pad_value=pad))
        elif isinstance(layer, RNN):
            if layout not in (_VECTOR, _SEQUENCE):
                raise ConfigurationError(f"{layer!r} after a {layout}: an RNN reads sequences (N, T, d)")
            if Om.shape[0] != layer.in_dim:
                raise DimensionError(f"{layer!r} has {layer.in_dim} inputs but A_{i} has dimension "
                                     f"{Om.shape[0]}")
            H = layer.hidden
            Oh, gh = _numeric(ch[i + 1], H, "A", i + 1)
            M = np.zeros((H + layer.in_dim,) * 2)
            M[:H, :H], M[H:, H:] = Oh, Om
            Wb = transform_weights(layer.Wbar.astype(np.float64),
                                   LayerChange(Omega=M, gamma=np.concatenate([gh, ga])),
                                   _z_change(ch[i + 1], H, i + 1))
            act = _conjugate(layer.activation, ch[i + 1], H, i + 1)
            h0 = Oh @ layer.h0.astype(np.float64) + gh
            new.append(RNN(Wb[:, :-1].astype(dtype), Wb[:, -1].astype(dtype), act, h0=h0.astype(dtype)))
            layout = _SEQUENCE
        elif isinstance(layer, (AvgPool2d, MaxPool2d)) and layout != _IMAGE and (
                not np.array_equal(Om, np.eye(len(Om))) or ga.any()):
            raise ConfigurationError(
                f"{layer!r} before the first layer with parameters acts on images whose channels "
                f"are not A_{i}'s coordinates here; change the input frame of such a stack by hand")
        elif isinstance(layer, AvgPool2d):
            new.append(layer.copy())
        elif isinstance(layer, MaxPool2d):
            if not _is_positive_monomial(Om):
                raise ConfigurationError(
                    f"{layer!r} after a change of A_{i} whose Ω is not a permutation times a "
                    "positive diagonal: max pooling does not commute with it (max(Ω a) ≠ Ω max(a)), "
                    "so no network with max pooling computes the reparameterized function; use "
                    "AvgPool2d, or a per-channel positive scaling / permutation on this space")
            new.append(layer.copy())
        elif isinstance(layer, Flatten):
            layout = {_IMAGE: _FLAT_IMAGE, _SEQUENCE: _FLAT_SEQUENCE}.get(layout, layout)
            new.append(layer.copy())
        elif isinstance(layer, LastStep):
            layout = _VECTOR
            new.append(layer.copy())
        else:
            raise ConfigurationError(
                f"no reparameterization rule for the layer {layer!r} ({type(layer).__name__}); "
                "known: Dense, Conv2d, AvgPool2d, MaxPool2d, Flatten, RNN, LastStep")
        if layer.has_params:
            i += 1
            out = layer.hidden if isinstance(layer, RNN) else layer.out_dim
            Om, ga = _numeric(ch[i], out, "A", i)
    if isinstance(model, MLP):
        return MLP.from_layers(new)
    return Sequential(new, dtype=dtype)


def changes_from_arrays(Omegas, gammas, Phis, taus) -> dict:
    """``{i: LayerChange}`` from the per-space lists of the former
    ``reparameterize(model, Omegas, gammas, Phis, taus)`` (``Omegas``, ``gammas``: ``L + 1``
    entries for ``A_0..A_L``; ``Phis``, ``taus``: ``L`` entries for ``Z_1..Z_L``).

    >>> ch = changes_from_arrays([None, 2 * np.eye(1)], [None, None], [None], [None])
    >>> sorted(ch), ch[1].Omega.tolist()
    ([1], [[2.0]])
    """
    Omegas, gammas, Phis, taus = (list(x) for x in (Omegas, gammas, Phis, taus))
    L = len(Phis)
    if len(Omegas) != L + 1 or len(gammas) != L + 1 or len(taus) != L:
        raise DimensionError(
            f"a network of {L} layers needs {L + 1} Omegas and gammas (input..output) and "
            f"{L} Phis and taus, got {len(Omegas)}, {len(gammas)}, {len(Phis)}, {len(taus)}")
    out = {}
    for i in range(L + 1):
        Ph, ta = (Phis[i - 1], taus[i - 1]) if i else (None, None)
        if any(x is not None for x in (Omegas[i], gammas[i], Ph, ta)):
            out[i] = LayerChange(Omegas[i], gammas[i], Ph, ta)
    return out
