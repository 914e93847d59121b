"""Two-dimensional convolution as im2col GEMMs (Grosse & Martens 2016, "KFC"; paper §4.1,
Appendix F.1).

The expanded activations: for output location ``t = (i, j)`` (row-major over the output
image), the patch ``ā_t = [x[c, s·i + dy − p, s·j + dx − p] for c, dy, dx; 1]`` with the
coordinates ordered ``(c, dy, dx)`` channel first, zero padding inside the patch and the
homogeneous 1 last. With ``W̄ = [W.reshape(out, in·k·k)  b]`` the layer is
``Z = W̄ Ā`` (Eqn. F.1–F.3) followed by the activation at every location; its curvature
statistics are the ``T = H_out·W_out`` patches per example and their ``Dz``
(``F̂ = T · E[ā āᵀ] ⊗ E[Dz Dzᵀ]``, Eqn. 4.4 / F.5).

The forward pass and the weight gradient are single GEMMs over all examples and locations;
the gradient at the input is one GEMM per kernel offset, ``Dz W[:, :, dy, dx]``, added into a
channels-last padded image (the adjoint of im2col without forming the ``(N·T, C·k·k)``
patch gradients). Only the ``k²`` kernel offsets are looped over, never locations or
examples.

>>> import numpy as np
>>> conv = Conv2d(np.ones((1, 1, 2, 2)), np.zeros(1))
>>> x = np.arange(9.0).reshape(1, 1, 3, 3)
>>> y, ctx = conv.forward(x)
>>> y[0, 0]
array([[ 8., 12.],
       [20., 24.]])
>>> ctx.abar[0]  # the first patch, (c, dy, dx) order, then the homogeneous 1
array([0., 1., 3., 4., 1.])
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn.activations import get_activation
from geomkfac.nn.layers.base import Context, ParamLayer, as_float, lead_shape

__all__ = ["Conv2d", "im2col", "conv_output_size"]


def conv_output_size(size: int, k: int, stride: int, padding: int) -> int:
    """``⌊(size + 2p − k)/s⌋ + 1``."""
    return (size + 2 * padding - k) // stride + 1


def _pad(x, p, pad_value=None):
    """``x`` (``(..., C, H, W)``) with ``p`` entries on each side of the two image axes filled
    with the padding point: zeros, or ``pad_value[c]`` in channel ``c``."""
    if p == 0:
        return x
    if pad_value is None:
        width = [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)]
        return np.pad(x, width)
    H, W = x.shape[-2:]
    xp = np.empty(x.shape[:-2] + (H + 2 * p, W + 2 * p), dtype=x.dtype)
    xp[...] = np.asarray(pad_value, dtype=x.dtype)[:, None, None]
    xp[..., p:p + H, p:p + W] = x
    return xp


def im2col(x, k: int, stride: int = 1, padding: int = 0, out=None, pad_value=None) -> np.ndarray:
    """Patches of ``x`` (``(..., C, H, W)``) as rows: ``(..., H_out·W_out, C·k·k)``, locations
    row-major, coordinates ``(c, dy, dx)``. With ``out`` (a ``(..., H_out, W_out, C, k, k)``
    view) the patches are written there instead. Outside the image the patches hold the
    padding point: zeros, or ``pad_value[c]`` in channel ``c`` (a length-``C`` vector).

    >>> import numpy as np
    >>> im2col(np.arange(4.0).reshape(1, 2, 2), 2)
    array([[0., 1., 2., 3.]])
    >>> im2col(np.ones((1, 1, 1)), 2, padding=1, pad_value=[5.0])[0]
    array([5., 5., 5., 1.])
    """
    xp = _pad(x, padding, pad_value)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(-2, -1))
    win = win[..., ::stride, ::stride, :, :]  # (..., C, Ho, Wo, k, k)
    win = np.moveaxis(win, -5, -3)  # (..., Ho, Wo, C, k, k)
    if out is not None:
        out[...] = win
        return out
    Ho, Wo, C = win.shape[-5:-2]
    return win.reshape(win.shape[:-5] + (Ho * Wo, C * k * k))


class Conv2d(ParamLayer):
    """A 2-D convolution with square kernels, zero padding and stride, then an activation.

    Parameters
    ----------
    W : array_like, shape (out, in, k, k)
    b : array_like, shape (out,)
    activation : str or Activation, default "identity" (applied at every location)
    padding : int >= 0, default 0 (entries added on each side)
    stride : int >= 1, default 1
    pad_value : array_like, shape (in,), optional
        The coordinates of the padding point, channel by channel (default ``None``: zeros).
        The padded value is a point of the input activation space (paper-notes §5); after a
        change of frame ``a‡ = Ω a + γ`` of that space its coordinates are ``Ω·0 + γ = γ``,
        which is what :func:`geomkfac.nn.reparameterize` puts here.

    Inputs are ``(N, in, H, W)``, outputs ``(N, out, H_out, W_out)``.

    >>> import numpy as np
    >>> conv = Conv2d(np.zeros((3, 2, 3, 3)), np.zeros(3), "tanh", padding=1)
    >>> conv.out_shape((2, 5, 5)), conv.Wbar_shape
    ((3, 5, 5), (3, 19))
    """

    def __init__(self, W, b, activation="identity", padding=0, stride=1, pad_value=None):
        W = as_float(W)
        if W.ndim != 4 or W.shape[2] != W.shape[3]:
            raise DimensionError(
                f"a Conv2d layer's W must be (out, in, k, k) with a square kernel, got shape {W.shape}"
            )
        self.W = W
        self.b = self._check_bias(b)
        for name, v, lo in (("padding", padding, 0), ("stride", stride, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigurationError(f"Conv2d {name} must be an integer >= {lo}, got {v!r}")
        self.padding = int(padding)
        self.stride = int(stride)
        self.activation = get_activation(activation)
        if pad_value is not None:
            try:
                pad_value = np.array(pad_value, dtype=np.float64, copy=True)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"Conv2d pad_value must be numbers ({exc})") from None
            if pad_value.shape != (W.shape[1],):
                raise DimensionError(
                    f"Conv2d pad_value must have one entry per input channel, shape "
                    f"({W.shape[1]},), got {pad_value.shape}"
                )
            if not np.all(np.isfinite(pad_value)):
                raise ConfigurationError("Conv2d pad_value contains NaN or inf")
            if not pad_value.any():
                pad_value = None  # the zero point: plain zero padding
            else:
                pad_value.setflags(write=False)
        self.pad_value = pad_value

    @property
    def in_channels(self) -> int:
        return self.W.shape[1]

    @property
    def k(self) -> int:
        return self.W.shape[2]

    def copy(self) -> "Conv2d":
        return Conv2d(self.W, self.b, self.activation, self.padding, self.stride, self.pad_value)

    def spec(self) -> dict:
        out = {"type": "conv", "in": self.in_channels, "out": self.out_dim, "k": self.k,
               "pad": self.padding, "stride": self.stride, "act": self.activation.name}
        if self.pad_value is not None:
            out["pad_value"] = self.pad_value.tolist()
        return out

    def __repr__(self) -> str:
        point = "" if self.pad_value is None else ", padded with a point"
        return (f"Conv2d({self.in_channels}->{self.out_dim}, k={self.k}, pad={self.padding}{point}, "
                f"stride={self.stride}, {self.activation.name})")

    def out_shape(self, in_shape) -> tuple:
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise DimensionError(
                f"{self!r} expects images (C, H, W) per example, got per-example shape {in_shape}"
            )
        C, H, W = in_shape
        if C != self.in_channels:
            raise DimensionError(
                f"{self!r} expects {self.in_channels} input channels, got {C} "
                f"(per-example shape {in_shape})"
            )
        p, k = self.padding, self.k
        if H + 2 * p < k or W + 2 * p < k:
            raise DimensionError(
                f"{self!r}: the kernel ({k}x{k}) is larger than the padded input "
                f"({H + 2 * p}x{W + 2 * p}); use a smaller kernel, more padding or a larger image"
            )
        return (self.out_dim, conv_output_size(H, k, self.stride, p),
                conv_output_size(W, k, self.stride, p))

    def forward(self, x):
        N, C, H, W = x.shape
        out, Ho, Wo = self.out_shape((C, H, W))
        T, d = Ho * Wo, C * self.k * self.k
        abar = np.empty((N, Ho, Wo, d + 1), dtype=x.dtype)
        abar[..., -1] = 1
        view = np.reshape(abar[..., :d], (N, Ho, Wo, C, self.k, self.k), copy=False)
        im2col(x, self.k, self.stride, self.padding, out=view, pad_value=self.pad_value)
        abar = abar.reshape(N * T, d + 1)
        z = abar @ self.Wbar.T
        a = self.activation.forward(z)
        ctx = Context(abar=abar, z=z, a=a, T=T, N=N, in_shape=(C, H, W), out_hw=(Ho, Wo))
        return np.moveaxis(a.reshape(N, Ho, Wo, out), -1, 1), ctx

    def _rows(self, g, ctx):
        """``(..., N, out, Ho, Wo)`` → rows ``(..., N·T, out)``."""
        lead = lead_shape(g, 4)
        g = np.moveaxis(g, -3, -1)
        return lead, g.reshape(lead + (ctx.N * ctx.T, self.out_dim))

    def backward(self, ctx, gy, need_input=True):
        lead, g = self._rows(gy, ctx)
        Dz = self.activation.backward(ctx.z, ctx.a, g)
        gx = self._input_grad(Dz, lead, ctx) if need_input else None
        return gx, Dz

    def _input_grad(self, Dz, lead, ctx):
        """The adjoint of im2col applied to ``Dz W``: for each kernel offset ``(dy, dx)`` add
        ``Dz W[:, :, dy, dx]`` (``(..., N, Ho, Wo, C)``) at that offset of a padded
        channels-last image; crop the padding; return ``(..., N, C, H, W)``."""
        C, H, W = ctx.in_shape
        k, s, p = self.k, self.stride, self.padding
        Ho, Wo = ctx.out_hw
        gxp = np.zeros(lead + (ctx.N, H + 2 * p, W + 2 * p, C), dtype=Dz.dtype)
        hs, ws = s * (Ho - 1) + 1, s * (Wo - 1) + 1
        Wk = np.ascontiguousarray(np.moveaxis(self.W, 0, -1))  # (C, k, k, out)
        for dy in range(k):
            for dx in range(k):
                # one GEMM over all rows (Dz is (..., N·T, out): not a batch of small ones)
                term = (Dz @ Wk[:, dy, dx].T).reshape(lead + (ctx.N, Ho, Wo, C))
                gxp[..., dy:dy + hs:s, dx:dx + ws:s, :] += term
        if p:
            gxp = gxp[..., p:-p, p:-p, :]
        return np.moveaxis(gxp, -1, -3)

    def jvp(self, ctx, dx, V):
        from geomkfac.nn.optim.gvp import activation_jvp

        dz = 0
        if V is not None:
            dz = np.matmul(ctx.abar, np.swapaxes(V, -1, -2))
        if dx is not None:
            cols = im2col(dx, self.k, self.stride, self.padding)  # (k, N, T, d)
            cols = cols.reshape(dx.shape[0], ctx.N * ctx.T, -1)
            dz = dz + cols @ self.W.reshape(self.out_dim, -1).T
        da = activation_jvp(self.activation, ctx.z, ctx.a, dz)
        Ho, Wo = ctx.out_hw
        return np.moveaxis(da.reshape(da.shape[0], ctx.N, Ho, Wo, self.out_dim), -1, 2)
