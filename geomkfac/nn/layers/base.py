"""The layer protocol of the NumPy backend (design: "The backend is made of layers").

Every layer maps a batch ``x`` of shape ``(N, *in_shape)`` to ``y`` of shape
``(N, *out_shape)`` and supplies

- ``out_shape(in_shape)``: the per-example output shape, or :class:`DimensionError` when the
  input does not fit the layer (shape inference, run once per input shape);
- ``forward(x) -> (y, ctx)``: the output and what the backward pass needs;
- ``backward(ctx, gy, need_input=True) -> (gx, Dz)``: given ``gy = ∂ℓ/∂y`` per example
  (extra *leading* axes allowed: ``(K, N, *out_shape)`` backpropagates K directions at once),
  the gradient at the input (``None`` when ``need_input`` is false) and, for a parametrized
  layer, ``Dz`` (below; ``None`` otherwise);
- ``jvp(ctx, dx, V) -> dy``: forward-mode derivative for input directions ``dx``
  (``(k, N, *in_shape)`` or ``None`` = 0) and parameter directions ``V``
  (``(k, out, d+1)`` in ``W̄`` layout, or ``None``) — used by Gauss-Newton-vector products.

A **parametrized** layer computes, at each of its ``T`` locations / steps ``t``, an affine map
``z_t = W̄ ā_t`` of a homogeneous input ``ā_t = [a_t; 1]`` followed by an activation. Its
``ctx`` holds the curvature statistics (paper Eqns. 4.4 and 4.7):

- ``ctx.abar``: the rows ``ā_{n,t}``, shape ``(N·T, d+1)``, example-major (row ``n·T + t``),
  homogeneous 1 last;
- ``ctx.T``: the scale ``|T|``;
- ``ctx.temporal`` (optional, default false): whether the ``T`` rows of an example are the
  steps of a time series (recurrent layers and layers applied at every step), which the
  temporally correlated K-FAC options use;
- ``backward`` returns ``Dz`` as rows ``(..., N·T, out)`` in the same order.

Its parameters are ``W̄ = [W.reshape(out, -1)  b]`` (``Wbar``, ``set_Wbar``), and θ is the
concatenation of the column-stacked ``vec(W̄)`` layer after layer. The per-example gradient
of a layer is ``Σ_t Dz_{n,t} ā_{n,t}ᵀ`` and the optimizers see only
``(ā rows, Dz rows, T)`` per layer, never which kind of layer produced them.

>>> import numpy as np
>>> from geomkfac.nn.layers import Conv2d
>>> conv = Conv2d(np.ones((2, 1, 3, 3)), np.zeros(2), padding=1)
>>> y, ctx = conv.forward(np.ones((4, 1, 5, 5)))
>>> ctx.abar.shape, ctx.T          # N·T rows of [patch; 1]
((100, 10), 25)
>>> gx, Dz = conv.backward(ctx, np.ones((3,) + y.shape))   # 3 stacked directions
>>> gx.shape, Dz.shape
((3, 4, 1, 5, 5), (3, 100, 2))
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import DimensionError

__all__ = ["Layer", "ParamLayer", "Context", "lead_shape", "as_float", "rows_product",
           "direction_rows"]


class Context:
    """A plain record of what ``forward`` kept (attributes set by each layer), with a
    ``memo`` dict for what the later passes of the same forward pass compute once and share
    (the activation derivative)."""

    def __init__(self, **kw):
        self.memo = {}
        self.__dict__.update(kw)


def lead_shape(g, n_trailing: int) -> tuple:
    """The extra leading axes of ``g`` beyond ``n_trailing`` (batch axis included)."""
    if g.ndim < n_trailing:
        raise DimensionError(
            f"a backpropagated gradient of shape {g.shape} has fewer than {n_trailing} axes"
        )
    return g.shape[: g.ndim - n_trailing]


def as_float(W) -> np.ndarray:
    W = np.array(W, copy=True)
    if not np.issubdtype(W.dtype, np.floating):
        W = W.astype(np.float64)
    return W


class Layer:
    """Base class of the layers (see the module docstring). Layers without parameters have
    ``num_params == 0`` and return ``Dz = None``."""

    has_params = False
    num_params = 0

    def out_shape(self, in_shape) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, ctx, gy, need_input=True):  # pragma: no cover - abstract
        raise NotImplementedError

    def jvp(self, ctx, dx, V):  # pragma: no cover - abstract
        raise NotImplementedError

    def copy(self):
        return self

    def astype(self, dtype):
        return self

    def spec(self) -> dict:
        """A JSON-able description of the layer's architecture (no weights)."""
        return {"type": type(self).__name__}


class ParamLayer(Layer):
    """A layer with weights ``W`` (any shape with ``W.shape[0] = out``) and bias ``b``."""

    has_params = True

    @property
    def out_dim(self) -> int:
        return self.W.shape[0]

    @property
    def Wbar_shape(self) -> tuple:
        return (self.W.shape[0], self.W[0].size + 1)

    @property
    def Wbar(self) -> np.ndarray:
        """``W̄ = [W.reshape(out, -1)  b]`` (a new array)."""
        return np.concatenate([self.W.reshape(self.W.shape[0], -1), self.b[:, None]], axis=1)

    def set_Wbar(self, Wb) -> None:
        """Set ``W`` and ``b`` in place from ``W̄`` (cast to the layer's dtype)."""
        self.W[...] = Wb[:, :-1].reshape(self.W.shape)
        self.b[...] = Wb[:, -1]

    def add_to_Wbar(self, D) -> None:
        """``W̄ ← W̄ + D`` in place (``D`` shaped like ``W̄``; the sum rounded to the layer's
        dtype, as ``set_Wbar(Wbar + D)`` would, without the two copies)."""
        self.W += D[:, :-1].reshape(self.W.shape)
        self.b += D[:, -1]

    @property
    def num_params(self) -> int:
        return self.W.size + self.b.size

    @property
    def dtype(self):
        return self.W.dtype

    def astype(self, dtype):
        self.W = self.W.astype(dtype, copy=False)
        self.b = self.b.astype(dtype, copy=False)
        return self

    def _check_bias(self, b):
        b = np.array(b, dtype=self.W.dtype, copy=True)
        if b.shape != (self.W.shape[0],):
            raise DimensionError(
                f"{type(self).__name__}: b must have shape ({self.W.shape[0]},) to match W "
                f"{self.W.shape}, got {b.shape}"
            )
        return b


def rows_product(D, abar) -> np.ndarray:
    """``Dᵀ Ā`` (``out × (d+1)``) summed over the rows: the weight gradient's GEMM, returned
    C-contiguous.

    Computed as ``(Āᵀ D)ᵀ`` when ``d+1 > out``: OpenBLAS is several times faster when the
    wider factor gives the rows of the product (measured for the conv layers of the
    benchmark CNN: 0.21 s against 0.70 s for 25088 rows, out 64, d+1 801). That product is
    written through a transposed view of a C-ordered result (as fast as the plain GEMM), so
    that every gradient has the layout of the weights: elementwise passes that mix C- and
    F-ordered operands (the momentum update, ``W += δ``) run several times slower, and
    ``np.vdot`` copies an F-ordered operand (measured: 3.7 ms against 0.09 ms for 500×1001).

    >>> import numpy as np
    >>> D, A = np.arange(6.0).reshape(3, 2), np.arange(9.0).reshape(3, 3)
    >>> G = rows_product(D, A)
    >>> bool(np.array_equal(G, D.T @ A)), G.flags.c_contiguous
    (True, True)
    """
    if D.ndim == 2 and abar.ndim == 2:  # the training step's case, without the stacking
        if abar.shape[1] > D.shape[1]:
            out = np.empty((D.shape[1], abar.shape[1]), dtype=np.result_type(D, abar))
            np.matmul(abar.T, D, out=out.T)
            return out
        return D.T @ abar
    if abar.shape[-1] > D.shape[-1]:
        at = np.swapaxes(abar, -1, -2)
        shape = np.broadcast_shapes(at.shape[:-2], D.shape[:-2]) + (D.shape[-1], abar.shape[-1])
        out = np.empty(shape, dtype=np.result_type(D, abar))
        np.matmul(at, D, out=np.swapaxes(out, -1, -2))
        return out
    return np.swapaxes(D, -1, -2) @ abar


def direction_rows(abar, V) -> np.ndarray:
    """``ā V_jᵀ`` for ``k`` stacked directions ``V`` (``(k, out, d+1)``): ``(k, R, out)``, as one
    2-D GEMM ``Ā [V_1; …; V_k]ᵀ`` (a view of its ``(R, k·out)`` result) instead of ``k``
    batched ones.

    >>> import numpy as np
    >>> A, V = np.arange(6.0).reshape(3, 2), np.arange(8.0).reshape(2, 2, 2)
    >>> bool(np.array_equal(direction_rows(A, V), np.matmul(A, np.swapaxes(V, 1, 2))))
    True
    """
    k, out = V.shape[0], V.shape[1]
    prod = abar @ V.reshape(k * out, V.shape[2]).T  # (R, k·out)
    return np.swapaxes(prod.reshape(prod.shape[0], k, out), 0, 1)


def homogeneous_rows(rows: np.ndarray) -> np.ndarray:
    """``[rows 1]``: append the homogeneous coordinate (a new array)."""
    out = np.empty(rows.shape[:-1] + (rows.shape[-1] + 1,), dtype=rows.dtype)
    out[..., :-1] = rows
    out[..., -1] = 1
    return out
