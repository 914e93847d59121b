"""Reshaping layers without parameters: :class:`Flatten` (channel-major, ``(C, H, W) → C·H·W``)
and :class:`LastStep` (keep only the last step ``h_T`` of a sequence ``(T, H)``).

>>> import numpy as np
>>> y, _ = Flatten().forward(np.arange(8.0).reshape(1, 2, 2, 2))
>>> y
array([[0., 1., 2., 3., 4., 5., 6., 7.]])
>>> LastStep().forward(np.arange(6.0).reshape(1, 3, 2))[0]
array([[4., 5.]])
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import DimensionError
from geomkfac.nn.layers.base import Context, Layer, lead_shape

__all__ = ["Flatten", "LastStep"]


class Flatten(Layer):
    """``(N, C, H, W) → (N, C·H·W)`` in C order (channel-major: index ``c·H·W + i·W + j``)."""

    makes_sequence = False

    def spec(self):
        return {"type": "flatten"}

    def __repr__(self):
        return "Flatten()"

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, x):
        return x.reshape(x.shape[0], -1), Context(in_shape=x.shape[1:])

    def backward(self, ctx, gy, need_input=True):
        lead = lead_shape(gy, 2)
        return (gy.reshape(lead + (gy.shape[-2],) + ctx.in_shape) if need_input else None), None

    def jvp(self, ctx, dx, V):
        return dx.reshape(dx.shape[:2] + (-1,))


class LastStep(Layer):
    """Keep the last step of a sequence: ``(N, T, H) → (N, H)`` (outputs only at ``t = T``)."""

    makes_sequence = False

    def spec(self):
        return {"type": "last"}

    def __repr__(self):
        return "LastStep()"

    def out_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 2:
            raise DimensionError(f"LastStep expects sequences (T, H) per example, got {in_shape}")
        return in_shape[1:]

    def forward(self, x):
        return x[:, -1], Context(in_shape=x.shape[1:])

    def backward(self, ctx, gy, need_input=True):
        lead = lead_shape(gy, 2)
        if not need_input:
            return None, None
        gx = np.zeros(lead + (gy.shape[-2],) + ctx.in_shape, dtype=gy.dtype)
        gx[..., -1, :] = gy
        return gx, None

    def jvp(self, ctx, dx, V):
        return dx[..., -1, :]
