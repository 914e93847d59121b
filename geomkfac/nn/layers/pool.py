"""Pooling layers without parameters: average pooling (an affine, indeed linear, map of the
activations: Appendix F, "average pooling") and max pooling. Square windows ``k``, stride
``s`` (default ``k``), no padding; inputs ``(N, C, H, W)``.

>>> import numpy as np
>>> x = np.arange(16.0).reshape(1, 1, 4, 4)
>>> AvgPool2d(2).forward(x)[0][0, 0]
array([[ 2.5,  4.5],
       [10.5, 12.5]])
>>> MaxPool2d(2).forward(x)[0][0, 0]
array([[ 5.,  7.],
       [13., 15.]])
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn.layers.base import Context, Layer, lead_shape

__all__ = ["AvgPool2d", "MaxPool2d"]


def _windows(x, k, s):
    """``(..., C, H, W)`` → ``(..., C, Ho, Wo, k, k)`` (a view)."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(-2, -1))
    return win[..., ::s, ::s, :, :]


class _Pool(Layer):
    kind = "pool"

    def __init__(self, k, stride=None):
        stride = k if stride is None else stride
        for name, v in (("kernel size", k), ("stride", stride)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigurationError(f"{type(self).__name__} {name} must be an integer >= 1, got {v!r}")
        self.k, self.stride = int(k), int(stride)

    def spec(self):
        return {"type": self.kind, "k": self.k, "stride": self.stride}

    def __repr__(self):
        return f"{type(self).__name__}({self.k}, stride={self.stride})"

    def out_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise DimensionError(f"{self!r} expects images (C, H, W), got per-example shape {in_shape}")
        C, H, W = in_shape
        if H < self.k or W < self.k:
            raise DimensionError(f"{self!r}: the window ({self.k}x{self.k}) is larger than the input ({H}x{W})")
        return (C, (H - self.k) // self.stride + 1, (W - self.k) // self.stride + 1)

    def _scatter(self, g, shape, weights):
        """``Σ_{dy,dx}`` of ``g · weights[dy, dx]`` placed at each window offset."""
        lead = g.shape[:-3]
        k, s = self.k, self.stride
        Ho, Wo = g.shape[-2:]
        out = np.zeros(lead + tuple(shape), dtype=g.dtype)
        hs, ws = s * (Ho - 1) + 1, s * (Wo - 1) + 1
        for dy in range(k):
            for dx in range(k):
                out[..., dy:dy + hs:s, dx:dx + ws:s] += weights(dy, dx, g)
        return out


class AvgPool2d(_Pool):
    """Average pooling over ``k×k`` windows (stride ``k`` by default)."""

    kind = "avgpool"

    def forward(self, x):
        shape = self.out_shape(x.shape[1:])
        y = _windows(x, self.k, self.stride).mean(axis=(-2, -1))
        return y, Context(in_shape=x.shape[1:], out_shape=shape)

    def backward(self, ctx, gy, need_input=True):
        lead_shape(gy, 4)
        if not need_input:
            return None, None
        c = gy.dtype.type(1.0 / (self.k * self.k))
        return self._scatter(gy, ctx.in_shape, lambda dy, dx, g: g * c), None

    def jvp(self, ctx, dx, V):
        return _windows(dx, self.k, self.stride).mean(axis=(-2, -1))


class MaxPool2d(_Pool):
    """Max pooling over ``k×k`` windows (stride ``k`` by default); the gradient goes to the
    first maximal entry of each window."""

    kind = "maxpool"

    def forward(self, x):
        shape = self.out_shape(x.shape[1:])
        win = _windows(x, self.k, self.stride)
        flat = win.reshape(win.shape[:-2] + (self.k * self.k,))
        idx = flat.argmax(axis=-1)
        y = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
        return y, Context(in_shape=x.shape[1:], out_shape=shape, idx=idx)

    def backward(self, ctx, gy, need_input=True):
        lead_shape(gy, 4)
        if not need_input:
            return None, None
        k = self.k
        return self._scatter(gy, ctx.in_shape,
                             lambda dy, dx, g: g * (ctx.idx == dy * k + dx)), None

    def jvp(self, ctx, dx, V):
        win = _windows(dx, self.k, self.stride)
        flat = win.reshape(win.shape[:-2] + (self.k * self.k,))
        idx = np.broadcast_to(ctx.idx[..., None], flat.shape[:-1] + (1,))
        return np.take_along_axis(flat, idx, axis=-1)[..., 0]
