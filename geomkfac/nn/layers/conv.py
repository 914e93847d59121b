"""Two-dimensional convolution as im2col GEMMs (Grosse & Martens 2016, "KFC"; paper §4.1,
Appendix F.1).

The expanded activations: for output location ``t = (i, j)`` (row-major over the output
image), the patch ``ā_t = [x[c, s·i + dy − p, s·j + dx − p] for c, dy, dx; 1]`` with the
coordinates ordered ``(c, dy, dx)`` channel first, zero padding inside the patch and the
homogeneous 1 last. With ``W̄ = [W.reshape(out, in·k·k)  b]`` the layer is
``Z = W̄ Ā`` (Eqn. F.1–F.3) followed by the activation at every location; its curvature
statistics are the ``T = H_out·W_out`` patches per example and their ``Dz``
(``F̂ = T · E[ā āᵀ] ⊗ E[Dz Dzᵀ]``, Eqn. 4.4 / F.5).

The forward pass, the weight gradient and the gradient at the input are single GEMMs over
all examples and locations. The patches are built column-wise, as ``Āᵀ`` of shape
``(C·k·k + 1, N·T)``: one strided copy per kernel offset ``(dy, dx)`` of a channel-first padded
image, whose inner axes are the image rows (a few long copies instead of ``N·T`` short ones);
``ctx.abar`` is the transposed view of that array, so the rows are the same ``ā_{n,t}``
(a Fortran-ordered view, which BLAS takes without a copy). The gradient at the input is the
patch gradients ``Dz W`` added back at the ``k²`` kernel offsets (the adjoint of im2col). Only the ``k²`` kernel offsets are looped over, never locations or
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
from geomkfac.nn.activations import derivative_rows, get_activation
from geomkfac.nn.layers.base import Context, ParamLayer, as_float, direction_rows, lead_shape

__all__ = ["Conv2d", "im2col", "patch_columns", "conv_output_size"]


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


def im2col(x, k: int, stride: int = 1, padding: int = 0, pad_value=None) -> np.ndarray:
    """Patches of ``x`` (``(..., C, H, W)``) as rows: ``(..., H_out·W_out, C·k·k)``, locations
    row-major, coordinates ``(c, dy, dx)``. Outside the image the patches hold the padding
    point: zeros, or ``pad_value[c]`` in channel ``c`` (a length-``C`` vector).

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
    Ho, Wo, C = win.shape[-5:-2]
    return win.reshape(win.shape[:-5] + (Ho * Wo, C * k * k))


def patch_columns(x, k: int, stride: int = 1, padding: int = 0, homogeneous: bool = False,
                  pad_value=None):
    """The patches of a batch ``x`` (``(..., N, C, H, W)``) as columns: ``(..., C·k·k, N·T)``
    (``(..., C·k·k + 1, N·T)`` with a last row of ones when ``homogeneous``), column
    ``n·T + t`` the patch of example ``n`` at location ``t`` (row-major), rows ``(c, dy, dx)``:
    the transpose of :func:`im2col`'s rows (the same padding point ``pad_value``), built by
    ``k²`` strided copies.

    >>> import numpy as np
    >>> x = np.arange(18.0).reshape(2, 1, 3, 3)
    >>> cols = patch_columns(x, 2, homogeneous=True)
    >>> cols.shape
    (5, 8)
    >>> bool(np.array_equal(cols[:-1].T, im2col(x, 2).reshape(8, 4)))
    True
    """
    lead, (N, C, H, W) = x.shape[:-4], x.shape[-4:]
    p, s = padding, stride
    Ho, Wo = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    xc = np.swapaxes(x, -4, -3)  # (..., C, N, H, W): the image rows stay innermost
    if p:
        xp = np.zeros(lead + (C, N, H + 2 * p, W + 2 * p), dtype=x.dtype)
        if pad_value is not None:
            xp[...] = np.asarray(pad_value, dtype=x.dtype)[:, None, None, None]
        xp[..., p:p + H, p:p + W] = xc
    else:
        xp = xc
    d, h = C * k * k, int(bool(homogeneous))
    cols = np.empty(lead + (d + h, N * Ho * Wo), dtype=x.dtype)
    if h:
        cols[..., -1, :] = 1
    view = np.reshape(cols[..., :d, :], lead + (C, k, k, N, Ho, Wo), copy=False)
    hs, ws = s * (Ho - 1) + 1, s * (Wo - 1) + 1
    for dy in range(k):
        for dx in range(k):
            view[..., dy, dx, :, :, :] = xp[..., dy:dy + hs:s, dx:dx + ws:s]
    return cols


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
        T = Ho * Wo
        cols = patch_columns(x, self.k, self.stride, self.padding, homogeneous=True,
                              pad_value=self.pad_value)
        z = (self.Wbar @ cols).T  # rows (N·T, out) of Zᵀ = W̄ Āᵀ (Eqn. F.2), a transposed view
        a = self.activation.forward(z)  # the activation acts on rows (elementwise keeps the layout)
        ctx = Context(abar=cols.T, z=z, a=a, T=T, N=N, in_shape=(C, H, W), out_hw=(Ho, Wo))
        return np.swapaxes(a.T.reshape(out, N, Ho, Wo), 0, 1), ctx

    def backward(self, ctx, gy, need_input=True):
        lead = lead_shape(gy, 4)
        # (..., N, out, Ho, Wo) -> (..., out, N·T), viewed as rows (..., N·T, out)
        gt = np.reshape(np.swapaxes(gy, -4, -3), lead + (self.out_dim, ctx.N * ctx.T))
        dphi = derivative_rows(self.activation, ctx.z, ctx.a, ctx.memo, "derivative")
        g = np.swapaxes(gt, -1, -2)
        Dz = self.activation.backward(ctx.z, ctx.a, g) if dphi is None else dphi * g
        gx = self._input_grad(Dz, lead, ctx) if need_input else None
        return gx, Dz

    def _input_grad(self, Dz, lead, ctx):
        """The adjoint of the patch map applied to ``Dz W``: the patch gradients of every
        kernel offset ``(dy, dx)`` added at that offset of a padded image; crop the padding;
        return ``(..., N, C, H, W)``.

        Two layouts of the same sum, chosen for the longer innermost loop of the ``k²``
        strided additions (the cost on small images is their loop overhead, not the
        arithmetic): channel-first ``(C, N, H, W)`` (inner loop: an image row, ``W_out``
        long) with the patch gradients ``W_flatᵀ Dzᵀ`` from one GEMM, or channels-last
        ``(N, H, W, C)`` (inner loop: the ``C`` channels) with one GEMM ``Dz W[:, :, dy, dx]``
        per offset, whose result is contiguous there."""
        C, H, W = ctx.in_shape
        k, s, p = self.k, self.stride, self.padding
        Ho, Wo = ctx.out_hw
        N = ctx.N
        hs, ws = s * (Ho - 1) + 1, s * (Wo - 1) + 1
        if C <= Wo:
            pt = self.W.reshape(self.out_dim, -1).T @ np.swapaxes(Dz, -1, -2)
            pt = pt.reshape(lead + (C, k, k, N, Ho, Wo))
            gxp = np.zeros(lead + (C, N, H + 2 * p, W + 2 * p), dtype=Dz.dtype)
            for dy in range(k):
                for dx in range(k):
                    gxp[..., dy:dy + hs:s, dx:dx + ws:s] += pt[..., dy, dx, :, :, :]
            return np.swapaxes(gxp[..., p:p + H, p:p + W], -4, -3)
        gxp = np.zeros(lead + (N, H + 2 * p, W + 2 * p, C), dtype=Dz.dtype)
        Wk = np.moveaxis(self.W, 0, -1)  # (C, k, k, out)
        for dy in range(k):
            for dx in range(k):
                term = (Dz @ Wk[:, dy, dx].T).reshape(lead + (N, Ho, Wo, C))
                gxp[..., dy:dy + hs:s, dx:dx + ws:s, :] += term
        return np.moveaxis(gxp[..., p:p + H, p:p + W, :], -1, -3)

    def jvp(self, ctx, dx, V):
        from geomkfac.nn.optim.gvp import activation_jvp

        dz = 0
        if V is not None:
            dz = direction_rows(ctx.abar, V)
        if dx is not None:
            cols = patch_columns(dx, self.k, self.stride, self.padding)  # (k, d, N·T)
            dz = dz + np.swapaxes(self.W.reshape(self.out_dim, -1) @ cols, -1, -2)
        dphi = derivative_rows(self.activation, ctx.z, ctx.a, ctx.memo, "derivative")
        da = activation_jvp(self.activation, ctx.z, ctx.a, dz) if dphi is None else dphi * dz
        Ho, Wo = ctx.out_hw
        return np.moveaxis(da.reshape(da.shape[0], ctx.N, Ho, Wo, self.out_dim), -1, 2)
