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


def _offsets(k, s, Ho, Wo):
    """The ``k²`` window offsets ``(o, (dy, dx) slices)`` in row-major order: for offset
    ``(dy, dx)`` the strided slice of the input holding that entry of every window, so
    ``x[..., sy, sx]`` is ``(..., Ho, Wo)``. Pooling is a loop over these ``k²`` offsets of
    whole-array operations, never over locations or examples."""
    hs, ws = s * (Ho - 1) + 1, s * (Wo - 1) + 1
    return [(dy * k + dx, (slice(dy, dy + hs, s), slice(dx, dx + ws, s)))
            for dy in range(k) for dx in range(k)]


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

    def _slices(self, in_hw):
        H, W = in_hw
        Ho, Wo = (H - self.k) // self.stride + 1, (W - self.k) // self.stride + 1
        return _offsets(self.k, self.stride, Ho, Wo)

    @property
    def _disjoint(self) -> bool:
        """Windows do not overlap (stride ≥ k): each input entry is in at most one window."""
        return self.stride >= self.k


class AvgPool2d(_Pool):
    """Average pooling over ``k×k`` windows (stride ``k`` by default)."""

    kind = "avgpool"

    def _mean(self, x):
        offs = self._slices(x.shape[-2:])
        y = x[(...,) + offs[0][1]].copy()
        for _, sl in offs[1:]:
            y += x[(...,) + sl]
        y *= y.dtype.type(1.0 / (self.k * self.k))
        return y

    def forward(self, x):
        shape = self.out_shape(x.shape[1:])
        return self._mean(x), Context(in_shape=x.shape[1:], out_shape=shape)

    def backward(self, ctx, gy, need_input=True):
        lead_shape(gy, 4)
        if not need_input:
            return None, None
        gc = gy * gy.dtype.type(1.0 / (self.k * self.k))
        out = np.zeros(gy.shape[:-3] + tuple(ctx.in_shape), dtype=gy.dtype)
        for _, sl in self._slices(ctx.in_shape[-2:]):
            if self._disjoint:
                out[(...,) + sl] = gc
            else:
                out[(...,) + sl] += gc
        return out, None

    def jvp(self, ctx, dx, V):
        return self._mean(dx)


class MaxPool2d(_Pool):
    """Max pooling over ``k×k`` windows (stride ``k`` by default); the gradient goes to the
    first maximal entry of each window (row-major order inside the window)."""

    kind = "maxpool"

    def forward(self, x):
        shape = self.out_shape(x.shape[1:])
        offs = self._slices(x.shape[-2:])
        y = x[(...,) + offs[0][1]].copy()
        idx = np.zeros(y.shape, dtype=np.int16)
        for o, sl in offs[1:]:
            v = x[(...,) + sl]
            better = v > y  # strictly: ties keep the first maximal entry
            np.copyto(y, v, where=better)
            np.copyto(idx, o, where=better)
        return y, Context(in_shape=x.shape[1:], out_shape=shape, idx=idx)

    def backward(self, ctx, gy, need_input=True):
        lead_shape(gy, 4)
        if not need_input:
            return None, None
        out = np.zeros(gy.shape[:-3] + tuple(ctx.in_shape), dtype=gy.dtype)
        for o, sl in self._slices(ctx.in_shape[-2:]):
            hit = ctx.idx == o
            dst = out[(...,) + sl]
            if self._disjoint:
                np.copyto(dst, gy, where=hit)
            else:
                np.add(dst, gy, out=dst, where=hit)
        return out, None

    def jvp(self, ctx, dx, V):
        offs = self._slices(ctx.in_shape[-2:])
        y = dx[(...,) + offs[0][1]].copy()
        for o, sl in offs[1:]:
            np.copyto(y, dx[(...,) + sl], where=ctx.idx == o)
        return y
