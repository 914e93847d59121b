"""The :class:`Sequential` container: layers applied one after the other, with the same model
interface as :class:`~geomkfac.nn.model.MLP` (``forward``, ``forward_cache``, ``backward``,
``get_flat`` / ``set_flat``, ``get_Wbars`` / ``set_Wbars``, ``split_flat``, ``offsets``), so
that the curvature functions, the optimizers and checkpoints work on any stack of layers.

θ is ``[vec(W̄_1); vec(W̄_2); …]`` over the parametrized layers in order, ``W̄ = [W.reshape(out,
-1)  b]`` and column-stacking ``vec`` (oracle README). The cache of a forward pass lists per
parametrized layer the rows ``ā`` ``(N·T_i, d_i+1)`` and the scale ``T_i``; ``backward``
returns the matching ``Dz`` rows ``(..., N·T_i, out_i)``.

>>> import numpy as np
>>> from geomkfac.nn.layers import Conv2d, Dense, Flatten, Sequential
>>> rng = np.random.default_rng(0)
>>> net = Sequential([Conv2d(rng.standard_normal((2, 1, 3, 3)), np.zeros(2), "tanh", padding=1),
...                   Flatten(), Dense(rng.standard_normal((3, 32)), np.zeros(3))])
>>> f, cache = net.forward_cache(rng.standard_normal((5, 1, 4, 4)))
>>> f.shape, cache.T, [ab.shape for ab in cache.abar]
((5, 3), [16, 1], [(80, 10), (5, 33)])
>>> net.offsets.tolist()
[0, 20, 119]
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.nn.layers.base import Layer

__all__ = ["Sequential", "SequentialCache"]


class SequentialCache:
    """What :meth:`Sequential.forward_cache` keeps.

    Attributes
    ----------
    ctxs : list
        One context per layer.
    abar : list of ndarray
        Per parametrized layer, the homogeneous input rows ``(N·T_i, d_i+1)``.
    T : list of int
        Per parametrized layer, the number of locations / steps ``T_i``.
    N : int
        Number of examples.
    width : int
        The largest per-example size of any activation (bounds stacked backward passes).
    temporal : list of bool
        Per parametrized layer, whether its ``T`` rows per example are time steps.
    """

    def __init__(self, ctxs, abar, T, N, width, temporal=None):
        self.ctxs, self.abar, self.T, self.N, self.width = ctxs, abar, T, N, width
        self.temporal = [False] * len(abar) if temporal is None else temporal


class Sequential:
    """Layers applied in order; see the module docstring.

    Parameters
    ----------
    layers : sequence of Layer
        Copied on construction; all parametrized layers are cast to one dtype (their common
        result type, or ``dtype`` if given: float64 or float32).
    dtype : numpy dtype, optional
    """

    def __init__(self, layers, dtype=None):
        layers = [l.copy() for l in layers]
        if not layers:
            raise ConfigurationError("a Sequential model needs at least one layer")
        for i, l in enumerate(layers):
            if not isinstance(l, Layer):
                raise ConfigurationError(f"layers[{i}] is not a geomkfac.nn layer: {l!r}")
        params = [l for l in layers if l.has_params]
        if not params:
            raise ConfigurationError("a Sequential model needs at least one layer with parameters")
        if dtype is None:
            dtype = np.result_type(*[l.W.dtype for l in params])
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ConfigurationError(f"dtype must be float64 or float32, got {dtype}")
        for l in params:
            l.astype(dtype)
        self.layers = layers
        self.param_layers = params
        self.dtype = dtype
        counts = [l.num_params for l in params]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        self.num_params = int(self.offsets[-1])
        self._shapes = {}
        self._first_param = next(i for i, l in enumerate(layers) if l.has_params)

    def copy(self) -> "Sequential":
        return Sequential(self.layers, self.dtype)

    def __repr__(self) -> str:
        return f"Sequential([{', '.join(map(repr, self.layers))}], dtype={self.dtype.name})"

    def spec(self) -> list:
        """The architecture as a JSON-able list (no weights)."""
        return [l.spec() for l in self.layers]

    @property
    def sequence_output(self) -> bool:
        """Whether the output has a step axis ``(N, T, C)`` (an RNN not followed by
        :class:`~geomkfac.nn.layers.flatten.LastStep`): the loss is then summed over steps."""
        seq = False
        for l in self.layers:
            flag = getattr(l, "makes_sequence", None)
            if flag is not None:
                seq = flag
        return seq

    # -- parameters --------------------------------------------------------------------------
    def get_Wbars(self) -> list:
        return [l.Wbar for l in self.param_layers]

    def set_Wbars(self, Wbars) -> None:
        Wbars = list(Wbars)
        if len(Wbars) != len(self.param_layers):
            raise DimensionError(f"expected {len(self.param_layers)} W̄ matrices, got {len(Wbars)}")
        for i, (l, Wb) in enumerate(zip(self.param_layers, Wbars)):
            Wb = np.asarray(Wb)
            if Wb.shape != l.Wbar_shape:
                raise DimensionError(f"W̄ of layer {i + 1} must have shape {l.Wbar_shape}, got {Wb.shape}")
            l.set_Wbar(Wb)

    def get_flat(self) -> np.ndarray:
        return np.concatenate([l.Wbar.reshape(-1, order="F") for l in self.param_layers])

    def set_flat(self, theta) -> None:
        theta = np.asarray(theta)
        if theta.shape != (self.num_params,):
            raise DimensionError(f"θ must have shape ({self.num_params},), got {theta.shape}")
        self.set_Wbars(self.split_flat(theta))

    def split_flat(self, v) -> list:
        v = np.asarray(v)
        if v.shape[-1] != self.num_params:
            raise DimensionError(f"expected a vector of length {self.num_params}, got {v.shape}")
        return [v[self.offsets[i]:self.offsets[i + 1]].reshape(l.Wbar_shape, order="F")
                for i, l in enumerate(self.param_layers)]

    # -- shapes ------------------------------------------------------------------------------
    def shapes(self, in_shape) -> list:
        """Per-example shapes ``[in_shape, after layer 0, …]``; :class:`DimensionError` names
        the first layer the input does not fit."""
        in_shape = tuple(int(s) for s in in_shape)
        if in_shape not in self._shapes:
            out = [in_shape]
            for i, l in enumerate(self.layers):
                try:
                    out.append(tuple(l.out_shape(out[-1])))
                except DimensionError as exc:
                    raise DimensionError(f"layers[{i}] ({l!r}): {exc}") from None
            self._shapes[in_shape] = out
        return self._shapes[in_shape]

    def output_shape(self, in_shape) -> tuple:
        """The per-example output shape for inputs of per-example shape ``in_shape``."""
        return self.shapes(in_shape)[-1]

    def check_inputs(self, X) -> np.ndarray:
        """``X`` as an array of the model dtype whose per-example shape fits the layers, or
        :class:`DimensionError` (:class:`DataError` for ragged sequences)."""
        if isinstance(X, (list, tuple)):
            try:
                X = np.asarray(X)
            except ValueError:
                raise DataError(
                    "the examples have different shapes (ragged sequences?); pad them to one "
                    "length or train on batches of equal length"
                ) from None
        X = np.asarray(X)
        if X.dtype == object:
            raise DataError("the examples have different shapes (ragged sequences?); pad them "
                            "to one length or train on batches of equal length")
        if X.dtype.kind not in "fiub":
            raise DimensionError(f"X must hold numbers, got dtype {X.dtype}")
        if X.ndim < 2:
            raise DimensionError(f"X must be a batch (N, ...) of examples, got shape {X.shape}")
        self.shapes(X.shape[1:])
        return X.astype(self.dtype, copy=False)

    def check_batch(self, X) -> np.ndarray:
        """:meth:`check_inputs` for optimizers: a mismatch is a :class:`DataError`."""
        try:
            return self.check_inputs(X)
        except DimensionError as exc:
            raise DataError(f"the input batch does not fit the network: {exc}") from None

    # -- passes ------------------------------------------------------------------------------
    def forward(self, X) -> np.ndarray:
        x = self.check_inputs(X)
        for l in self.layers:
            x, _ = l.forward(x)
        return x

    __call__ = forward

    def forward_cache(self, X):
        """Forward pass keeping what backward and the curvature need: ``(f, cache)``."""
        x = self.check_inputs(X)
        N = x.shape[0]
        width = max(int(np.prod(s)) for s in self.shapes(x.shape[1:]))
        ctxs = []
        for l in self.layers:
            x, ctx = l.forward(x)
            ctxs.append(ctx)
        abar = [c.abar for l, c in zip(self.layers, ctxs) if l.has_params]
        T = [c.T for l, c in zip(self.layers, ctxs) if l.has_params]
        width = max([width] + [ab.shape[1] * t for ab, t in zip(abar, T)])
        temporal = [bool(getattr(c, "temporal", False))
                    for l, c in zip(self.layers, ctxs) if l.has_params]
        return x, SequentialCache(ctxs, abar, T, N, width, temporal)

    def backward(self, cache: SequentialCache, dF) -> list:
        """Backpropagate per-example output gradients ``dF`` (``(..., N, *out_shape)``, no
        1/N) to ``Dz`` rows ``(..., N·T_i, out_i)`` of every parametrized layer."""
        dF = np.asarray(dF, dtype=self.dtype)
        Dz = []
        g = dF
        for i in range(len(self.layers) - 1, self._first_param - 1, -1):
            l = self.layers[i]
            g, D = l.backward(cache.ctxs[i], g, need_input=i > self._first_param)
            if l.has_params:
                Dz.append(D)
        return Dz[::-1]

    def jvp(self, cache: SequentialCache, V) -> np.ndarray:
        """Forward-mode ``J v`` for per-layer directions ``V`` (each ``(k, out, d+1)``):
        the output directions ``(k, N, *out_shape)``."""
        dx = None
        it = iter(V)
        for i in range(self._first_param, len(self.layers)):
            l = self.layers[i]
            dx = l.jvp(cache.ctxs[i], dx, next(it) if l.has_params else None)
        return dx
