"""The dense (fully connected) layer ``a = φ(W a_prev + b)``.

In a :class:`~geomkfac.nn.layers.sequential.Sequential` a dense layer acts on the last axis:
on ``(N, d)`` it is the MLP layer (``T = 1``); after a recurrent layer, on ``(N, T, d)``, it
is applied at every step with shared weights and its curvature statistics have ``T`` rows
per example (the readout of Appendix G; oracle README, "seq" outputs).

>>> import numpy as np
>>> layer = Dense(np.eye(2), np.array([1.0, 2.0]), "relu")
>>> layer.Wbar
array([[1., 0., 1.],
       [0., 1., 2.]])
>>> y, ctx = layer.forward(np.zeros((3, 4, 2)))
>>> y.shape, ctx.abar.shape, ctx.T
((3, 4, 2), (12, 3), 4)
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import DimensionError
from geomkfac.nn.activations import derivative_rows, get_activation
from geomkfac.nn.layers.base import (Context, ParamLayer, as_float, direction_rows,
                                     homogeneous_rows, lead_shape)

__all__ = ["Dense"]


class Dense(ParamLayer):
    """One affine layer followed by an activation: ``a = φ(W a_prev + b)``.

    Parameters
    ----------
    W : array_like, shape (out, in)
    b : array_like, shape (out,)
    activation : str or Activation

    The arrays are owned by the layer (copied on construction) and updated in place by
    optimizers through ``set_flat`` / ``set_Wbars`` of the containing model.

    Storage: one C-ordered array ``[[W b], [0ᵀ 1]]`` of shape ``(out+1, in+1)``
    (:attr:`Wext`); ``W``, ``b`` and ``W̄ = [W b]`` (:attr:`Wbar_view`) are views of it. So
    the forward pass takes ``z = [a 1] W̄ᵀ`` as one GEMM (the bias inside it, no pass over
    ``z``), the MLP's hidden layers compute ``[z 1]`` at once with ``Wext`` (see
    :meth:`geomkfac.nn.model.MLP.forward_cache`), and an update of ``W̄`` is one contiguous
    pass. Assigning ``layer.W = …`` or ``layer.b = …`` copies into the storage (same shape).

    >>> import numpy as np
    >>> layer = Dense(np.eye(2), np.array([1.0, 2.0]), "relu")
    >>> layer.num_params, layer.in_dim, layer.out_dim
    (6, 2, 2)
    >>> layer.Wext
    array([[1., 0., 1.],
           [0., 1., 2.],
           [0., 0., 1.]])
    """

    def __init__(self, W, b, activation="identity"):
        W = as_float(W)
        if W.ndim != 2:
            raise DimensionError(f"a Dense layer's W must be 2-D (out, in), got shape {W.shape}")
        b = np.array(b, dtype=W.dtype, copy=True)
        if b.shape != (W.shape[0],):
            raise DimensionError(
                f"a Dense layer's b must have shape ({W.shape[0]},) to match W {W.shape}, got {b.shape}"
            )
        self._store(W, b)
        self.activation = get_activation(activation)
        width = getattr(self.activation, "width", None)
        if width is not None and width != W.shape[0]:
            raise DimensionError(
                f"activation {self.activation.name} has width {width} but the layer has "
                f"{W.shape[0]} outputs"
            )

    # -- storage: W, b, W̄ as views of Wext -------------------------------------------------
    def _store(self, W, b) -> None:
        out, d = W.shape
        ext = np.zeros((out + 1, d + 1), dtype=W.dtype)
        ext[:out, :d] = W
        ext[:out, d] = b
        ext[out, d] = 1
        self._ext = ext

    @property
    def Wext(self) -> np.ndarray:
        """``[[W b], [0ᵀ 1]]``, ``(out+1, in+1)``: the layer's storage (not a copy)."""
        return self._ext

    @property
    def Wbar_view(self) -> np.ndarray:
        """``W̄ = [W b]`` as a C-contiguous view of the storage (``Wbar`` is a copy)."""
        return self._ext[:-1]

    @property
    def W(self) -> np.ndarray:
        return self._ext[:-1, :-1]

    @W.setter
    def W(self, value) -> None:
        value = np.asarray(value)
        if value.shape != self.W.shape:
            raise DimensionError(f"Dense: W must keep its shape {self.W.shape}, got {value.shape}")
        if value.dtype != self._ext.dtype and np.issubdtype(value.dtype, np.floating):
            self._store(value, self.b.astype(value.dtype))
        else:
            self._ext[:-1, :-1] = value

    @property
    def b(self) -> np.ndarray:
        return self._ext[:-1, -1]

    @b.setter
    def b(self, value) -> None:
        value = np.asarray(value)
        if value.shape != self.b.shape:
            raise DimensionError(f"Dense: b must keep its shape {self.b.shape}, got {value.shape}")
        self._ext[:-1, -1] = value

    @property
    def Wbar(self) -> np.ndarray:
        """``W̄ = [W b]`` (a new array)."""
        return self._ext[:-1].copy()

    def set_Wbar(self, Wb) -> None:
        self._ext[:-1] = Wb

    def add_to_Wbar(self, D) -> None:
        self._ext[:-1] += D

    def astype(self, dtype):
        if np.dtype(dtype) != self._ext.dtype:
            self._ext = self._ext.astype(dtype)
        return self

    @property
    def in_dim(self) -> int:
        return self._ext.shape[1] - 1

    def copy(self) -> "Dense":
        return Dense(self.W, self.b, self.activation)

    def spec(self) -> dict:
        return {"type": "dense", "in": self.in_dim, "out": self.out_dim,
                "act": self.activation.name}

    def __repr__(self) -> str:
        return f"Dense({self.in_dim}->{self.out_dim}, {self.activation.name})"

    # -- the layer protocol ------------------------------------------------------------------
    def out_shape(self, in_shape) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) < 1 or in_shape[-1] != self.in_dim:
            raise DimensionError(
                f"Dense({self.in_dim}->{self.out_dim}) expects inputs whose last axis has "
                f"{self.in_dim} features, got per-example shape {in_shape}"
            )
        return in_shape[:-1] + (self.out_dim,)

    def forward(self, x):
        N, steps = x.shape[0], x.shape[1:-1]
        T = int(np.prod(steps)) if steps else 1
        abar = homogeneous_rows(x.reshape(N * T, self.in_dim))
        z = abar @ self.Wbar_view.T  # the bias inside the GEMM
        a = self.activation.forward(z)
        # over the steps of a sequence the rows form a time series (temporal K-FAC)
        ctx = Context(abar=abar, z=z, a=a, T=T, N=N, steps=steps, temporal=len(steps) == 1 and T > 1)
        return a.reshape((N,) + steps + (self.out_dim,)), ctx

    def backward(self, ctx, gy, need_input=True):
        lead = lead_shape(gy, 2 + len(ctx.steps))
        g = gy.reshape(lead + (ctx.N * ctx.T, self.out_dim))
        dphi = derivative_rows(self.activation, ctx.z, ctx.a, ctx.memo, "derivative")
        Dz = self.activation.backward(ctx.z, ctx.a, g) if dphi is None else dphi * g
        gx = None
        if need_input:
            gx = (Dz @ self.W).reshape(lead + (ctx.N,) + ctx.steps + (self.in_dim,))
        return gx, Dz

    def jvp(self, ctx, dx, V):
        from geomkfac.nn.optim.gvp import activation_jvp

        dz = 0
        if V is not None:
            dz = direction_rows(ctx.abar, V)
        if dx is not None:
            k = dx.shape[0]
            # the k directions as one 2-D GEMM
            t = (dx.reshape(k * ctx.N * ctx.T, self.in_dim) @ self.W.T).reshape(k, ctx.N * ctx.T, -1)
            if V is not None:
                t += dz
            dz = t
        dphi = derivative_rows(self.activation, ctx.z, ctx.a, ctx.memo, "derivative")
        da = activation_jvp(self.activation, ctx.z, ctx.a, dz) if dphi is None else dphi * dz
        return da.reshape((da.shape[0], ctx.N) + ctx.steps + (self.out_dim,))
