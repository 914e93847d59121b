"""The Elman recurrent layer (paper §4.2, Eqn. 4.5; Appendix G.1):
``z_t = W [h_{t−1}; x_t] + b``, ``h_t = φ(z_t)``, ``t = 1…T``, with a fixed initial state
``h_0`` (a point of the activation space, not a parameter).

The curvature statistics are the ``T`` steps of each example: ``ā_{n,t} = [h_{n,t−1}; x_{n,t}; 1]``
and ``Dz_{n,t} = ∂ℓ_n/∂z_{n,t}`` (backpropagation through time), rows example-major, so that
the K-FAC block with independence across time is ``T · E[ā āᵀ] ⊗ E[Dz Dzᵀ]`` (Eqn. 4.7 / G.3).
The time loop is inherent; each step is vectorized over the batch (and over stacked
backpropagated directions).

>>> import numpy as np
>>> rnn = RNN(np.zeros((2, 3)), np.ones(2))   # H = 2, inputs d = 1
>>> y, ctx = rnn.forward(np.zeros((4, 5, 1)))
>>> y.shape, ctx.abar.shape, ctx.T
((4, 5, 2), (20, 4), 5)
>>> bool(np.allclose(y, np.tanh(1.0)))
True
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import DimensionError
from geomkfac.nn.activations import derivative_rows, get_activation
from geomkfac.nn.layers.base import Context, ParamLayer, as_float, direction_rows, lead_shape

__all__ = ["RNN"]


class RNN(ParamLayer):
    """An Elman recurrent layer over sequences ``(N, T, d)``, returning all states ``(N, T, H)``.

    Parameters
    ----------
    W : array_like, shape (H, H + d)
        The columns acting on ``h_{t−1}`` first, then those on ``x_t``.
    b : array_like, shape (H,)
    activation : str or Activation, default "tanh"
    h0 : array_like, shape (H,), optional
        The initial state (default zeros).
    """

    makes_sequence = True

    def __init__(self, W, b, activation="tanh", h0=None):
        W = as_float(W)
        if W.ndim != 2 or W.shape[1] <= W.shape[0]:
            raise DimensionError(
                f"an RNN's W must be (H, H + d) with d >= 1 input features, got shape {W.shape}"
            )
        self.W = W
        self.b = self._check_bias(b)
        H = W.shape[0]
        h0 = np.zeros(H, dtype=W.dtype) if h0 is None else np.array(h0, dtype=W.dtype, copy=True)
        if h0.shape != (H,):
            raise DimensionError(f"the RNN's initial state h0 must have shape ({H},), got {h0.shape}")
        self.h0 = h0
        self.activation = get_activation(activation)

    @property
    def hidden(self) -> int:
        return self.W.shape[0]

    @property
    def in_dim(self) -> int:
        return self.W.shape[1] - self.W.shape[0]

    def astype(self, dtype):
        super().astype(dtype)
        self.h0 = self.h0.astype(dtype, copy=False)
        return self

    def copy(self) -> "RNN":
        return RNN(self.W, self.b, self.activation, self.h0)

    def spec(self) -> dict:
        return {"type": "rnn", "hidden": self.hidden, "in": self.in_dim,
                "act": self.activation.name}

    def __repr__(self) -> str:
        return f"RNN(in={self.in_dim}, hidden={self.hidden}, {self.activation.name})"

    def out_shape(self, in_shape) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[1] != self.in_dim or in_shape[0] < 1:
            raise DimensionError(
                f"{self!r} expects sequences (N, T, {self.in_dim}) with T >= 1, got per-example "
                f"shape {in_shape}"
            )
        return (in_shape[0], self.hidden)

    def forward(self, x):
        N, T, d = x.shape
        self.out_shape((T, d))
        H = self.hidden
        Wh, Wx = self.W[:, :H], self.W[:, H:]
        abar = np.empty((N, T, H + d + 1), dtype=x.dtype)
        abar[:, :, H:H + d] = x
        abar[:, :, -1] = 1
        z = x.reshape(N * T, d) @ Wx.T
        z += self.b
        z = z.reshape(N, T, H)
        a = np.empty_like(z)
        h = np.broadcast_to(self.h0, (N, H))
        for t in range(T):
            abar[:, t, :H] = h
            z[:, t] += h @ Wh.T
            h = a[:, t] = self.activation.forward(z[:, t])
        ctx = Context(abar=abar.reshape(N * T, -1), z=z, a=a, T=T, N=N, d=d, temporal=T > 1)
        return a, ctx

    def backward(self, ctx, gy, need_input=True):
        lead = lead_shape(gy, 3)
        H = self.hidden
        Wh, Wx = self.W[:, :H], self.W[:, H:]
        Dz = np.empty(lead + (ctx.N, ctx.T, H), dtype=gy.dtype)
        gh = np.zeros(lead + (ctx.N, H), dtype=gy.dtype)
        dphi = derivative_rows(self.activation, ctx.z, ctx.a, ctx.memo, "derivative")
        for t in range(ctx.T - 1, -1, -1):
            g = gy[..., t, :] + gh
            if dphi is None:
                dz = self.activation.backward(ctx.z[:, t], ctx.a[:, t], g)
            else:
                dz = np.multiply(g, dphi[:, t], out=g)
            Dz[..., t, :] = dz
            gh = dz @ Wh
        Dz = Dz.reshape(lead + (ctx.N * ctx.T, H))
        gx = (Dz @ Wx).reshape(lead + (ctx.N, ctx.T, ctx.d)) if need_input else None
        return gx, Dz

    def jvp(self, ctx, dx, V):
        from geomkfac.nn.optim.gvp import activation_jvp

        H = self.hidden
        Wh, Wx = self.W[:, :H], self.W[:, H:]
        N, T = ctx.N, ctx.T
        k = (V if V is not None else dx).shape[0]
        dz = np.zeros((k, N, T, H), dtype=ctx.z.dtype)
        if V is not None:
            dz += direction_rows(ctx.abar, V).reshape(k, N, T, H)
        if dx is not None:
            dz += (dx.reshape(k, N * T, -1) @ Wx.T).reshape(k, N, T, H)
        da = np.empty_like(dz)
        dh = None
        dphi = derivative_rows(self.activation, ctx.z, ctx.a, ctx.memo, "derivative")
        for t in range(T):
            u = dz[:, :, t] if dh is None else dz[:, :, t] + dh @ Wh.T
            dh = da[:, :, t] = (activation_jvp(self.activation, ctx.z[:, t], ctx.a[:, t], u)
                                if dphi is None else dphi[:, t] * u)
        return da
