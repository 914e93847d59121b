"""The :class:`MLP` container of dense layers (:class:`~geomkfac.nn.layers.dense.Dense`,
re-exported here), with forward/backward passes vectorized over the batch. Other
architectures are stacks of layers in :class:`~geomkfac.nn.layers.Sequential`; an MLP is
the case in which every layer has one location (``T = 1``).

Layer ``i`` computes ``z_i = W_i a_{i-1} + b_i`` and ``a_i = φ_i(z_i)`` (paper-notes §1); on a
batch (rows are examples) ``z_i = a_{i-1} W_iᵀ + b_i = ā_{i-1} W̄_iᵀ`` with the homogeneous
``ā = [a 1]`` and ``W̄ = [W b]``. The parameter vector is
``θ = [vec(W̄_1); …; vec(W̄_L)]`` with column-stacking ``vec`` (``order="F"``), so each layer's
bias is the last ``out`` entries of its block.

>>> import numpy as np
>>> from geomkfac.nn.model import MLP
>>> net = MLP([3, 4, 2], "tanh", seed=0)
>>> [layer.activation.name for layer in net.layers]
['tanh', 'identity']
>>> net.num_params, net.offsets.tolist()
(26, [0, 16, 26])
>>> net.forward(np.ones((5, 3))).shape
(5, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.nn.activations import (Activation, ElementwiseActivation, derivative_rows,
                                     get_activation)
from geomkfac.nn.layers.base import direction_rows
from geomkfac.nn.layers.dense import Dense
from geomkfac.nn.kernels import fusable
from geomkfac.reparam import reparameterize  # the one implementation, re-exported here

__all__ = ["Dense", "MLP", "Cache", "INITS", "reparameterize", "check_inputs"]

#: weight initializations understood by :class:`MLP`
INITS = ("glorot", "he", "lecun", "sparse", "zeros")


@dataclass(frozen=True, eq=False)
class Cache:
    """What the forward pass keeps for the backward pass and the curvature statistics.

    Attributes
    ----------
    abar : list of ndarray
        ``abar[i]`` is the homogeneous input of layer ``i``, ``(N, in_i + 1)``, ones column last.
    z : list of ndarray
        ``z[i]`` the pre-activations of layer ``i``, ``(N, out_i)``.
    a : list of ndarray
        ``a[i] = φ_i(z[i])`` the activations of layer ``i`` (``a[-1]`` is the output).
    derivatives : dict
        ``φ_i'(z[i])`` by layer (key ``i``, or ``("full", i)`` for the whole ``[z 1]`` buffer
        of ``zext``), filled on first use by the backward passes and Jacobian-vector products
        of this forward pass (see :func:`~geomkfac.nn.activations.derivative_rows`).
    """

    abar: list
    z: list
    a: list
    derivatives: dict = field(default_factory=dict)
    #: hidden layer ``i`` with an elementwise activation → its ``[z 1]``-shaped buffer
    #: ``(N, out_i + 1)`` (``z[i]`` is a view of it; ``abar[i+1]`` is its activation with the
    #: ones column), for the full-buffer passes of :meth:`MLP.backward`
    zext: dict = field(default_factory=dict)

    @property
    def N(self) -> int:
        """Number of examples in the batch."""
        return self.abar[0].shape[0]

    @property
    def T(self) -> list:
        """The scale of every layer's statistics: 1 (one row of ``ā`` per example)."""
        return [1] * len(self.abar)

    @property
    def temporal(self) -> list:
        """No layer of an MLP acts over time steps."""
        return [False] * len(self.abar)

    @property
    def width(self) -> int:
        """The largest width of a layer (bounds stacked backward passes)."""
        return max(ab.shape[1] for ab in self.abar + self.z)


def check_inputs(X, in_dim: int, dtype) -> np.ndarray:
    """Return ``X`` as a 2-D array of ``dtype`` with ``in_dim`` columns, or raise.

    Raises
    ------
    DimensionError
        If ``X`` is not ``(N, in_dim)``; the message names the expected and the actual shape.
    """
    X = np.asarray(X)
    if X.ndim == 1 and in_dim == X.shape[0]:
        raise DimensionError(
            f"X must be a batch (N, {in_dim}); got a single example of shape {X.shape} — "
            f"use X[None, :]"
        )
    if X.ndim != 2 or X.shape[1] != in_dim:
        raise DimensionError(
            f"X does not match the architecture: expected shape (N, {in_dim}) "
            f"(the network's input width), got shape {X.shape}"
        )
    if X.dtype.kind not in "fiub":
        raise DimensionError(f"X must hold numbers, got dtype {X.dtype}")
    return X.astype(dtype, copy=False)


def _init_weights(rng, out_dim, in_dim, init, dtype):
    if init == "glorot":
        lim = np.sqrt(6.0 / (in_dim + out_dim))
        W = rng.uniform(-lim, lim, size=(out_dim, in_dim))
    elif init == "he":
        W = rng.standard_normal((out_dim, in_dim)) * np.sqrt(2.0 / in_dim)
    elif init == "lecun":
        W = rng.standard_normal((out_dim, in_dim)) * np.sqrt(1.0 / in_dim)
    elif init == "sparse":
        # Martens (2010): each unit gets min(15, in) nonzero N(0, 1) incoming weights
        k = min(15, in_dim)
        W = np.zeros((out_dim, in_dim))
        idx = np.argsort(rng.random((out_dim, in_dim)), axis=1)[:, :k]
        np.put_along_axis(W, idx, rng.standard_normal((out_dim, k)), axis=1)
    elif init == "zeros":
        W = np.zeros((out_dim, in_dim))
    else:
        raise ConfigurationError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    return W.astype(dtype)


class MLP:
    """A multilayer perceptron: a list of :class:`Dense` layers.

    Parameters
    ----------
    sizes : sequence of int
        Widths ``[d_0, d_1, …, d_L]`` (input first, output last).
    activations : str, Activation, or sequence of them
        A single name/object means: hidden layers use it and the **last layer is
        ``"identity"``** (the loss acts on logits / means). A sequence gives one activation
        per layer (length ``L``), the last included.
    seed : int
        Seed of the weight initialization (``numpy.random.default_rng``).
    dtype : numpy dtype
        ``float64`` or ``float32``; kept end to end (inputs are cast to it).
    init : str
        ``"glorot"`` (uniform, default), ``"he"``, ``"lecun"``, ``"sparse"`` (Martens 2010:
        15 nonzero N(0, 1) incoming weights per unit) or ``"zeros"``. Biases start at 0.

    Attributes
    ----------
    layers : list of Dense
    sizes : tuple of int
    dtype : numpy dtype
    num_params : int
    offsets : ndarray of int, shape (L+1,)
        ``offsets[i]`` is where layer ``i`` starts in θ; ``offsets[L] = num_params``.

    Examples
    --------
    >>> import numpy as np
    >>> net = MLP([2, 3, 1], ["tanh", "sigmoid"], seed=1)
    >>> theta = net.get_flat()
    >>> bool(np.array_equal(theta[net.offsets[1]:], net.layers[1].Wbar.reshape(-1, order="F")))
    True
    """

    def __init__(self, sizes, activations="tanh", seed=0, dtype=np.float64, init="glorot"):
        try:
            ok = all(not isinstance(s, bool) and float(s) == int(s) for s in sizes)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ConfigurationError(f"sizes must be a list of whole numbers (widths), got {sizes!r}")
        sizes = tuple(int(s) for s in sizes)
        if not isinstance(seed, np.random.Generator) and seed is not None and (
                isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigurationError(f"seed must be a whole number >= 0 (or a numpy Generator), got {seed!r}")
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigurationError(
                f"sizes must list at least an input and an output width, all >= 1, got {sizes}"
            )
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ConfigurationError(f"dtype must be float64 or float32, got {dtype}")
        L = len(sizes) - 1
        if isinstance(activations, (str, Activation)):
            get_activation(activations)  # checked even when there is no hidden layer to use it
            acts = [activations] * (L - 1) + ["identity"]
        else:
            acts = list(activations)
            if len(acts) != L:
                raise ConfigurationError(
                    f"{L} layers need {L} activations (one per layer, the last included), "
                    f"got {len(acts)}"
                )
        acts = [get_activation(a) for a in acts]
        if init not in INITS:
            raise ConfigurationError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        rng = np.random.default_rng(seed)
        layers = []
        for i in range(L):
            W = _init_weights(rng, sizes[i + 1], sizes[i], init, dtype)
            layers.append(Dense(W, np.zeros(sizes[i + 1], dtype=dtype), acts[i]))
        self._set_layers(layers)

    # -- construction ------------------------------------------------------------------------
    def _set_layers(self, layers):
        if not layers:
            raise ConfigurationError("an MLP needs at least one layer")
        for i in range(1, len(layers)):
            if layers[i].in_dim != layers[i - 1].out_dim:
                raise DimensionError(
                    f"layer {i + 1} expects {layers[i].in_dim} inputs but layer {i} has "
                    f"{layers[i - 1].out_dim} outputs"
                )
        dtype = np.result_type(*[l.W.dtype for l in layers])
        for l in layers:
            l.astype(dtype)
        self.layers = list(layers)
        self.dtype = np.dtype(dtype)
        self.sizes = (layers[0].in_dim,) + tuple(l.out_dim for l in layers)
        counts = [l.num_params for l in layers]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        self.num_params = int(self.offsets[-1])

    @classmethod
    def from_layers(cls, layers) -> "MLP":
        """Build an MLP from :class:`Dense` layers (copied; one dtype for all).

        >>> import numpy as np
        >>> net = MLP.from_layers([Dense(np.ones((2, 3)), np.zeros(2), "tanh")])
        >>> net.sizes
        (3, 2)
        """
        self = cls.__new__(cls)
        self._set_layers([l.copy() for l in layers])
        return self

    def copy(self) -> "MLP":
        """A deep copy (weights copied, activations shared: they are immutable)."""
        return MLP.from_layers(self.layers)

    @property
    def param_layers(self) -> list:
        """The layers with parameters (all of them, for an MLP)."""
        return self.layers

    #: an MLP's output has no step axis
    sequence_output = False

    def output_shape(self, in_shape) -> tuple:
        """The per-example output shape ``(sizes[-1],)``."""
        return (self.sizes[-1],)

    @property
    def activations(self) -> list:
        return [l.activation for l in self.layers]

    def __repr__(self) -> str:
        acts = ",".join(l.activation.name for l in self.layers)
        return f"MLP({list(self.sizes)}, [{acts}], dtype={self.dtype.name})"

    # -- parameters --------------------------------------------------------------------------
    def get_Wbars(self) -> list:
        """``[W̄_1, …, W̄_L]`` (new arrays)."""
        return [l.Wbar for l in self.layers]

    def set_Wbars(self, Wbars) -> None:
        """Set every layer from its ``W̄ = [W b]`` (copied, cast to the model dtype)."""
        Wbars = list(Wbars)
        if len(Wbars) != len(self.layers):
            raise DimensionError(f"expected {len(self.layers)} W̄ matrices, got {len(Wbars)}")
        for i, (l, Wb) in enumerate(zip(self.layers, Wbars)):
            Wb = np.asarray(Wb)
            if Wb.shape != (l.out_dim, l.in_dim + 1):
                raise DimensionError(
                    f"W̄ of layer {i + 1} must have shape {(l.out_dim, l.in_dim + 1)}, got {Wb.shape}"
                )
            l.set_Wbar(Wb)

    def get_flat(self) -> np.ndarray:
        """θ = ``[vec(W̄_1); …; vec(W̄_L)]`` with column-stacking ``vec``."""
        return np.concatenate([l.Wbar.reshape(-1, order="F") for l in self.layers])

    def set_flat(self, theta) -> None:
        """Set all weights from θ (inverse of :meth:`get_flat`)."""
        theta = np.asarray(theta)
        if theta.shape != (self.num_params,):
            raise DimensionError(f"θ must have shape ({self.num_params},), got {theta.shape}")
        for i, l in enumerate(self.layers):
            blk = theta[self.offsets[i] : self.offsets[i + 1]]
            Wb = blk.reshape(l.out_dim, l.in_dim + 1, order="F")
            l.set_Wbar(Wb)

    def split_flat(self, v) -> list:
        """Split a vector in θ order into per-layer matrices shaped like ``W̄_i``."""
        v = np.asarray(v)
        if v.shape[-1] != self.num_params:
            raise DimensionError(f"expected a vector of length {self.num_params}, got {v.shape}")
        return [
            v[self.offsets[i] : self.offsets[i + 1]].reshape(l.out_dim, l.in_dim + 1, order="F")
            for i, l in enumerate(self.layers)
        ]

    # -- passes ------------------------------------------------------------------------------
    def check_inputs(self, X) -> np.ndarray:
        """``X`` as ``(N, sizes[0])`` in the model dtype, or :class:`DimensionError`."""
        return check_inputs(X, self.sizes[0], self.dtype)

    def check_batch(self, X) -> np.ndarray:
        """``X`` for an optimizer step: a 2-D batch with ``sizes[0]`` features, or
        :class:`~geomkfac.errors.DataError`."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"inputs X must be a 2-D array (N, d_in), got shape {X.shape}")
        if X.shape[1] != self.sizes[0]:
            raise DataError(
                f"inputs X have {X.shape[1]} features but the network's input layer has "
                f"{self.sizes[0]}"
            )
        return X

    def forward(self, X) -> np.ndarray:
        """The network output ``f(X)``, shape ``(N, sizes[-1])``: the GEMMs of
        :meth:`forward_cache` (the same bits), keeping one layer's arrays at a time."""
        X = self.check_inputs(X)
        abar = np.empty((X.shape[0], self.sizes[0] + 1), dtype=self.dtype)
        abar[:, :-1] = X
        abar[:, -1] = 1
        for l in self.layers[:-1]:
            if isinstance(l.activation, ElementwiseActivation):
                full = abar @ l.Wext.T
                abar = l.activation.forward_into(full, full)  # in place: entry by entry
            else:
                z = abar @ l.Wbar_view.T
                abar = np.empty((z.shape[0], l.out_dim + 1), dtype=self.dtype)
                l.activation.forward_into(z, abar[:, :-1])
            abar[:, -1] = 1
        last = self.layers[-1]
        return last.activation.forward(abar @ last.Wbar_view.T)

    __call__ = forward

    def forward_cache(self, X):
        """Forward pass keeping what backward and the curvature need.

        Returns
        -------
        f : ndarray, shape (N, sizes[-1])
        cache : Cache
            ``abar[i]`` (N, in_i+1) with ones last, ``z[i]`` (N, out_i), ``a[i]`` (N, out_i).

        Every layer is one GEMM ``z = ā W̄ᵀ`` with the bias inside it. A hidden layer with an
        elementwise activation multiplies by ``[[W b], [0ᵀ 1]]`` instead (its storage,
        :attr:`Dense.Wext`), which gives ``[z 1]``: the activation is then one pass over that
        whole contiguous buffer, written into the next layer's input ``[a 1]`` (its last
        column set back to 1), and ``z[i]``, ``a[i]`` are views. (Passes over the ``(N, out)``
        views of ``(N, out+1)`` buffers run up to 3× slower than over whole buffers: the loop
        restarts at every row.)
        """
        X = self.check_inputs(X)
        N = X.shape[0]
        abar_list, z_list, a_list, zext = [], [], [], {}
        abar = np.empty((N, self.sizes[0] + 1), dtype=self.dtype)
        abar[:, :-1] = X
        abar[:, -1] = 1
        last = len(self.layers) - 1
        for i, l in enumerate(self.layers):
            abar_list.append(abar)
            if i == last:
                z = abar @ l.Wbar_view.T
                a = l.activation.forward(z)
            elif isinstance(l.activation, ElementwiseActivation):
                full = abar @ l.Wext.T  # [z 1] (the 1 exact unless ā has inf)
                zext[i] = full
                nxt = l.activation.forward_into(full, np.empty_like(full))
                nxt[:, -1] = 1
                z, a, abar = full[:, :-1], nxt[:, :-1], nxt
            else:
                z = abar @ l.Wbar_view.T
                # φ(z) written straight into the next layer's homogeneous input [a 1]
                nxt = np.empty((N, l.out_dim + 1), dtype=self.dtype)
                a = l.activation.forward_into(z, nxt[:, :-1])
                nxt[:, -1] = 1
                abar = nxt
            z_list.append(z)
            a_list.append(a)
        return a_list[-1], Cache(abar_list, z_list, a_list, zext=zext)

    def backward(self, cache: Cache, dF) -> list:
        """Backpropagate per-example output gradients to per-example ``Dz_i``.

        Parameters
        ----------
        cache : Cache
            From :meth:`forward_cache`.
        dF : ndarray, shape (..., N, C)
            ``∂ℓ_n/∂f_n`` per example (no 1/N). Extra leading axes (``(K, N, C)``)
            backpropagate K directions at once.

        Returns
        -------
        list of ndarray
            ``Dz_i`` of shape ``(..., N, out_i)``, one per layer (for the hidden layers of
            :meth:`forward_cache`'s ``[z 1]`` buffers, views of ``(..., N, out_i + 1)``
            buffers: the gradient is backpropagated as ``Dz W̄`` into that width, and ``φ'``
            multiplies the whole buffer, its last column 0).
        """
        dF = np.asarray(dF, dtype=self.dtype)
        N, C = cache.z[-1].shape
        if dF.shape[-2:] != (N, C):
            raise DimensionError(f"dF must end in ({N}, {C}) to match the output, got {dF.shape}")
        L = len(self.layers)
        Dz = [None] * L
        g, owned = dF, False  # owned: g is a temporary of this pass (may be overwritten)
        for i in range(L - 1, -1, -1):
            l = self.layers[i]
            full = cache.zext.get(i)
            if full is not None:  # g is (..., N, out+1): whole-buffer passes
                z, a = full, cache.abar[i + 1]
                key = ("full", i)
            else:
                z, a, key = cache.z[i], cache.a[i], i
            fused = l.activation.backward_from_output_ if owned else None
            if fused is not None and key not in cache.derivatives and fusable(g, a):
                # φ' ⊙ g in one compiled pass; φ' itself is left to a later pass that
                # needs it (the curvature's Jacobian-vector products compute and keep it)
                d = fused(g, a)
            elif (dphi := derivative_rows(l.activation, z, a, cache.derivatives, key)) is None:
                d = l.activation.backward(z, a, g)
            else:
                d = np.multiply(g, dphi, out=g) if owned else g * dphi
            if full is not None:
                d = d[..., :-1]
            Dz[i] = d
            if i > 0:
                W = l.Wbar_view if (i - 1) in cache.zext else l.W
                g, owned = d @ W, True
        return Dz

    def jvp(self, cache: Cache, V) -> np.ndarray:
        """Forward-mode ``J v``: ``dz_i = V_i ā_i + W_i da_{i-1}``, ``da_i = φ_i'(z_i) dz_i``
        for per-layer directions ``V_i`` ``(k, out_i, in_i+1)``; returns ``(k, N, sizes[-1])``.

        The directions are carried example-major, ``(N, k, out)``, the layout of the 2-D GEMM
        ``Ā [V_1; …; V_k]ᵀ``, so that both products of a layer add contiguously and ``φ'`` of an
        example multiplies its ``k`` rows in place."""
        from geomkfac.nn.optim.gvp import activation_jvp

        da = None
        for i, layer in enumerate(self.layers):
            ab, Vi = cache.abar[i], V[i]
            k, out = Vi.shape[0], Vi.shape[1]
            N = ab.shape[0]
            # the (N, k, out) product itself (direction_rows returns its (k, N, out) view)
            dz = np.swapaxes(direction_rows(ab, Vi), 0, 1)
            if da is not None:
                dz += (da.reshape(N * k, -1) @ layer.W.T).reshape(N, k, out)
            if i in cache.zext:  # φ' of the [z 1] buffer, shared with backward
                dphi = derivative_rows(layer.activation, cache.zext[i], cache.abar[i + 1],
                                       cache.derivatives, ("full", i))
                dphi = None if dphi is None else dphi[:, :-1]
            else:
                dphi = derivative_rows(layer.activation, cache.z[i], cache.a[i],
                                       cache.derivatives, i)
            if dphi is None:
                da = np.swapaxes(activation_jvp(layer.activation, cache.z[i], cache.a[i],
                                                np.swapaxes(dz, 0, 1)), 0, 1)
            else:
                dz *= dphi[:, None, :]
                da = dz
        return np.ascontiguousarray(np.swapaxes(da, 0, 1))
