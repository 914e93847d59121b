"""Losses of the NumPy backend: negative log-likelihoods of the network output ``f``.

Each loss is ``ℓ(f, y) = −log p(y | f)`` for one example (paper-notes §1), summed over the
``C`` outputs; the objective is the **mean** over the ``N`` examples. The output Fisher
``F_out(f) = E_{y~p(·|f)}[∇_f ℓ ∇_f ℓᵀ]`` equals the Hessian ``∇²_f ℓ`` for these three
(canonical-link) losses, so the Fisher, the Gauss-Newton and the generalized Gauss-Newton
coincide.

- ``softmax_ce`` (aliases ``ce``, ``cross_entropy``): ``ℓ = logsumexp(f) − f_y``; targets are
  int labels ``(N,)`` in ``0..C-1``; ``F_out = diag(p) − p pᵀ`` with ``p = softmax(f)`` (rank C−1).
- ``mse`` (alias ``squared_error``): ``ℓ = ½‖f − y‖²`` (Gaussian, unit variance); targets are
  floats ``(N, C)``; ``F_out = I``.
- ``bernoulli`` (aliases ``sigmoid_ce``, ``bce``): ``ℓ = Σ_c softplus(f_c) − y_c f_c`` on logits; targets
  are floats in ``[0, 1]``, ``(N, C)``; ``F_out = diag(p(1−p))`` with ``p = σ(f)``.

Methods (``f`` is the network output, ``(N, C)``): ``value`` (mean), ``per_example``
(``(N,)``), ``grad`` (per-example ``∂ℓ/∂f``, **not** divided by N), ``value_and_grad`` (both,
the targets checked once and shared intermediate arrays computed once), ``fisher_sqrt``
(``(N, C, K)`` with ``S Sᵀ = F_out``), ``fisher_sqrt_columns`` (columns ``k0:k1`` of it,
stacked ``(k1−k0, N, C)``, built without the rest), ``output_fisher`` (``(N, C, C)``),
``sample`` (targets from the model's predictive distribution) and ``check_targets``.

>>> import numpy as np
>>> loss = get_loss("ce")
>>> f = np.array([[2.0, 0.0, -1.0]])
>>> S = loss.fisher_sqrt(f)
>>> np.allclose(S[0] @ S[0].T, loss.output_fisher(f)[0])
True
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.nn.kernels import bernoulli_value_and_grad

__all__ = ["Loss", "SoftmaxCrossEntropy", "SquaredError", "Bernoulli", "StepwiseLoss", "LOSSES",
           "get_loss", "loss_for_model"]


def _as_output(f) -> np.ndarray:
    f = np.asarray(f)
    if f.ndim != 2:
        raise DimensionError(f"network outputs must be a 2-D array (N, C), got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.floating):
        f = f.astype(np.float64)
    return f


def _sigmoid(f):
    half = f.dtype.type(0.5)
    return half * np.tanh(half * f) + half


class Loss:
    """Base class of the losses; see the module docstring for the shared interface."""

    name: str = "loss"

    # -- targets ---------------------------------------------------------------------------
    def check_targets(self, Y, C: int, N: int | None = None) -> np.ndarray:
        """Validate targets for ``C`` outputs (and ``N`` examples if given); return them as an
        array in the canonical format. Raises :class:`DataError` if they do not fit."""
        raise NotImplementedError

    def _prepare(self, f, Y):
        f = _as_output(f)
        Y = self.check_targets(Y, f.shape[1], f.shape[0])
        return f, Y

    # -- values ----------------------------------------------------------------------------
    def per_example(self, f, Y) -> np.ndarray:
        """Per-example loss ``ℓ(f_n, y_n)``, shape ``(N,)``."""
        raise NotImplementedError

    def value(self, f, Y):
        """Mean loss over the batch (the objective ``h``), a scalar of ``f``'s dtype."""
        return self.per_example(f, Y).mean()

    def grad(self, f, Y) -> np.ndarray:
        """Per-example gradient ``∂ℓ/∂f``, shape ``(N, C)`` — not divided by N."""
        raise NotImplementedError

    def value_and_grad(self, f, Y):
        """``(value(f, Y), grad(f, Y))``, equal to the two calls, with the targets checked once
        and the arrays both need computed once (the training step calls this).

        >>> import numpy as np
        >>> loss = get_loss("bernoulli")
        >>> f, Y = np.array([[0.5, -2.0]]), np.array([[1.0, 0.0]])
        >>> h, g = loss.value_and_grad(f, Y)
        >>> bool(h == loss.value(f, Y)), bool(np.array_equal(g, loss.grad(f, Y)))
        (True, True)
        """
        f, Y = self._prepare(f, Y)
        return self._value_and_grad(f, Y)

    def _value_and_grad(self, f, Y):
        """:meth:`value_and_grad` of outputs and targets that have been checked already (the
        optimizers check a batch's targets once per step). Losses that can share work
        override this; the default calls the two public methods."""
        return self.value(f, Y), self.grad(f, Y)

    # -- curvature -------------------------------------------------------------------------
    def fisher_sqrt_columns(self, f, k0: int, k1: int) -> np.ndarray:
        """Columns ``k0:k1`` of :meth:`fisher_sqrt`, stacked first: shape ``(k1−k0, N, C)``."""
        return np.moveaxis(self.fisher_sqrt(f)[:, :, k0:k1], 2, 0)

    def fisher_sqrt(self, f) -> np.ndarray:
        """Square root ``S`` of the output Fisher per example: ``(N, C, K)``, ``S Sᵀ = F_out``."""
        f = _as_output(f)
        return np.moveaxis(self.fisher_sqrt_columns(f, 0, self.fisher_rank_bound(f)), 0, 2)

    def fisher_rank_bound(self, f) -> int:
        """``K``, the number of columns of :meth:`fisher_sqrt`."""
        return _as_output(f).shape[1]

    def output_fisher(self, f) -> np.ndarray:
        """Output Fisher (= Hessian of ℓ in ``f``) per example, shape ``(N, C, C)``."""
        S = self.fisher_sqrt(f)
        return S @ np.swapaxes(S, 1, 2)

    def sample(self, f, rng: np.random.Generator) -> np.ndarray:
        """Targets drawn from the predictive distribution ``p(y | f)``, in the data format."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def _check_float_targets(Y, C, N, name, lo=None, hi=None) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.dtype.kind not in "fiub":
        raise DataError(f"{name} targets must be numbers, got dtype {Y.dtype}")
    if Y.ndim != 2 or Y.shape[1] != C:
        raise DataError(
            f"{name} targets must have shape (N, {C}) to match the {C} network outputs, "
            f"got shape {Y.shape}"
        )
    if N is not None and Y.shape[0] != N:
        raise DataError(f"got {Y.shape[0]} targets for {N} examples")
    if lo is not None and Y.size:
        # two passes decide both checks: min and max are NaN where an entry is, ±inf where
        # an entry is infinite, and finite only when every entry is
        mn, mx = Y.min(), Y.max()
        if not (np.isfinite(mn) and np.isfinite(mx)):
            raise DataError(f"{name} targets contain NaN or inf")
        if mn < lo or mx > hi:
            raise DataError(f"{name} targets must lie in [{lo}, {hi}], got values in [{mn}, {mx}]")
    elif not np.all(np.isfinite(Y)):
        raise DataError(f"{name} targets contain NaN or inf")
    return Y


class SoftmaxCrossEntropy(Loss):
    """Categorical negative log-likelihood on logits: ``ℓ = logsumexp(f) − f_y``.

    >>> import numpy as np
    >>> loss = SoftmaxCrossEntropy()
    >>> f = np.zeros((2, 4))
    >>> bool(np.isclose(loss.value(f, [0, 3]), np.log(4)))
    True
    """

    name = "softmax_ce"

    def check_targets(self, Y, C, N=None):
        Y = np.asarray(Y)
        if Y.ndim != 1:
            raise DataError(
                f"softmax_ce targets must be integer class labels of shape (N,), got shape {Y.shape}"
            )
        if N is not None and Y.shape[0] != N:
            raise DataError(f"got {Y.shape[0]} labels for {N} examples")
        if Y.dtype.kind == "f":
            if not np.all(np.isfinite(Y)) or not np.all(Y == np.round(Y)):
                raise DataError("softmax_ce labels must be integers 0..C-1, got non-integer values")
            Y = Y.astype(np.int64)
        elif Y.dtype.kind not in "iub":
            raise DataError(f"softmax_ce labels must be integers, got dtype {Y.dtype}")
        if Y.size and (Y.min() < 0 or Y.max() >= C):
            raise DataError(
                f"labels out of range: the network has {C} outputs, so labels must be in "
                f"0..{C - 1}, got labels in {int(Y.min())}..{int(Y.max())}"
            )
        return Y.astype(np.intp, copy=False)

    @staticmethod
    def log_softmax(f):
        """Numerically stable ``log softmax(f)`` row by row."""
        m = f.max(axis=1, keepdims=True)
        s = f - m
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))

    @classmethod
    def probs(cls, f):
        """``softmax(f)`` row by row."""
        return np.exp(cls.log_softmax(_as_output(f)))

    def per_example(self, f, Y):
        f, Y = self._prepare(f, Y)
        return -np.take_along_axis(self.log_softmax(f), Y[:, None], axis=1)[:, 0]

    def grad(self, f, Y):
        f, Y = self._prepare(f, Y)
        g = self.probs(f)
        g[np.arange(f.shape[0]), Y] -= 1
        return g

    def _value_and_grad(self, f, Y):
        # one log-softmax for both: the value reads it at the labels, the gradient is its exp
        rows = np.arange(f.shape[0])
        ls = self.log_softmax(f)
        value = (-ls[rows, Y]).mean()
        g = np.exp(ls, out=ls)
        g[rows, Y] -= 1
        return value, g

    def fisher_sqrt_columns(self, f, k0, k1):
        # S = diag(√p) − p √pᵀ, column k is √p_k (e_k − p)
        f = _as_output(f)
        p = self.probs(f)
        sq = np.sqrt(p[:, k0:k1])  # (N, K)
        E = np.eye(f.shape[1], dtype=f.dtype)[k0:k1]  # (K, C)
        return sq.T[:, :, None] * (E[:, None, :] - p[None, :, :])

    def output_fisher(self, f):
        p = self.probs(f)
        F = -p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        F[:, idx, idx] += p
        return F

    def sample(self, f, rng):
        p = self.probs(f)
        u = rng.random(p.shape[0])[:, None]
        y = (np.cumsum(p, axis=1) < u).sum(axis=1)
        return np.minimum(y, p.shape[1] - 1).astype(np.intp)


class SquaredError(Loss):
    """Gaussian negative log-likelihood with unit variance, up to a constant: ``½‖f − y‖²``.

    >>> import numpy as np
    >>> SquaredError().per_example(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    array([2.5])
    """

    name = "mse"

    def check_targets(self, Y, C, N=None):
        return _check_float_targets(Y, C, N, self.name)

    def per_example(self, f, Y):
        f, Y = self._prepare(f, Y)
        r = f - Y.astype(f.dtype, copy=False)
        return 0.5 * np.einsum("nc,nc->n", r, r)

    def grad(self, f, Y):
        f, Y = self._prepare(f, Y)
        return f - Y.astype(f.dtype, copy=False)

    def _value_and_grad(self, f, Y):
        r = f - Y.astype(f.dtype, copy=False)  # the residual is the gradient
        return (0.5 * np.einsum("nc,nc->n", r, r)).mean(), r

    def fisher_sqrt_columns(self, f, k0, k1):
        f = _as_output(f)
        E = np.eye(f.shape[1], dtype=f.dtype)[k0:k1]
        return np.broadcast_to(E[:, None, :], (k1 - k0, f.shape[0], f.shape[1])).copy()

    def output_fisher(self, f):
        f = _as_output(f)
        return np.broadcast_to(np.eye(f.shape[1], dtype=f.dtype), (f.shape[0],) + (f.shape[1],) * 2).copy()

    def sample(self, f, rng):
        f = _as_output(f)
        return f + rng.standard_normal(f.shape).astype(f.dtype, copy=False)


class Bernoulli(Loss):
    """Independent Bernoulli outputs on logits (sigmoid cross-entropy):
    ``ℓ = Σ_c softplus(f_c) − y_c f_c`` (targets may be soft, in ``[0, 1]``).

    >>> import numpy as np
    >>> bool(np.isclose(Bernoulli().value(np.zeros((1, 3)), np.ones((1, 3))), 3 * np.log(2)))
    True
    """

    name = "bernoulli"

    def check_targets(self, Y, C, N=None):
        return _check_float_targets(Y, C, N, self.name, 0, 1)

    def per_example(self, f, Y):
        f, Y = self._prepare(f, Y)
        # softplus(f) = log(1 + e^f) = max(f, 0) + log1p(e^{-|f|}): stable for any f and about
        # 10x faster than np.logaddexp(0, f) in float32
        softplus = np.maximum(f, 0) + np.log1p(np.exp(-np.abs(f)))
        return (softplus - Y.astype(f.dtype, copy=False) * f).sum(axis=1)

    def grad(self, f, Y):
        f, Y = self._prepare(f, Y)
        return _sigmoid(f) - Y.astype(f.dtype, copy=False)

    def _value_and_grad(self, f, Y):
        # the same operations as per_example and grad, in two buffers, the arithmetic
        # around exp / log1p / tanh fused where numba is installed (the same bits)
        return bernoulli_value_and_grad(f, Y.astype(f.dtype, copy=False))

    def fisher_sqrt_columns(self, f, k0, k1):
        f = _as_output(f)
        p = _sigmoid(f[:, k0:k1])
        s = np.sqrt(p * (1 - p))  # (N, K)
        E = np.eye(f.shape[1], dtype=f.dtype)[k0:k1]
        return s.T[:, :, None] * E[:, None, :]

    def output_fisher(self, f):
        f = _as_output(f)
        p = _sigmoid(f)
        F = np.zeros(f.shape + (f.shape[1],), dtype=f.dtype)
        idx = np.arange(f.shape[1])
        F[:, idx, idx] = p * (1 - p)
        return F

    def sample(self, f, rng):
        f = _as_output(f)
        return (rng.random(f.shape) < _sigmoid(f)).astype(f.dtype)


#: canonical loss names and aliases -> class
LOSSES = {
    "softmax_ce": SoftmaxCrossEntropy,
    "ce": SoftmaxCrossEntropy,
    "cross_entropy": SoftmaxCrossEntropy,
    "mse": SquaredError,
    "squared_error": SquaredError,
    "bernoulli": Bernoulli,
    "sigmoid_ce": Bernoulli,
    "bce": Bernoulli,
}


def get_loss(name) -> Loss:
    """Return the loss called ``name`` (a :class:`Loss` instance passes through).

    Raises
    ------
    ConfigurationError
        For an unknown name; the message lists the known names and aliases.

    >>> get_loss("cross_entropy").name
    'softmax_ce'
    >>> get_loss("bce").name
    'bernoulli'
    >>> get_loss("hinge")
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: unknown loss 'hinge'; choose one of: softmax_ce, ce, cross_entropy, mse, squared_error, bernoulli, sigmoid_ce, bce
    """
    if isinstance(name, Loss):
        return name
    if isinstance(getattr(name, "loss_fn", None), Loss):  # an optimizer's bound loss
        return name.loss_fn
    if not isinstance(name, str):
        raise ConfigurationError(f"a loss must be a name or a Loss object, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in LOSSES:
        raise ConfigurationError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[key]()


class StepwiseLoss(Loss):
    """A loss on sequence outputs ``f`` of shape ``(N, T, C)``: the per-example loss is the
    sum over steps, ``ℓ_n = Σ_t ℓ(f_{n,t}, y_{n,t})`` (the additive output metric over steps,
    Appendix B.2 / G), and the objective its mean over examples.

    Targets are ``(N, T)`` labels or ``(N, T, C)`` floats. The output Fisher of an example is
    block diagonal over steps, so its square root has ``T·K`` columns, column ``t·K + k``
    holding the base loss's column ``k`` at step ``t`` and zeros elsewhere.

    >>> import numpy as np
    >>> loss = StepwiseLoss(get_loss("ce"))
    >>> f = np.zeros((2, 3, 4)); Y = np.zeros((2, 3), dtype=int)
    >>> bool(np.isclose(loss.value(f, Y), 3 * np.log(4)))
    True
    >>> loss.fisher_sqrt_columns(f, 0, loss.fisher_rank_bound(f)).shape
    (12, 2, 3, 4)
    """

    def __init__(self, base):
        self.base = get_loss(base)
        self.name = self.base.name

    def __repr__(self):
        return f"StepwiseLoss({self.base!r})"

    def __eq__(self, other):
        return isinstance(other, StepwiseLoss) and self.base == other.base

    def __hash__(self):
        return hash((StepwiseLoss, self.base))

    @staticmethod
    def _f(f):
        f = np.asarray(f)
        if f.ndim != 3:
            raise DimensionError(f"sequence outputs must be (N, T, C), got shape {f.shape}")
        return f

    def check_targets(self, Y, C, N=None):
        Y = np.asarray(Y)
        labels = isinstance(self.base, SoftmaxCrossEntropy)
        want = 2 if labels else 3
        if Y.ndim != want or (not labels and Y.shape[-1] != C):
            form = "(N, T) integer labels" if labels else f"(N, T, {C}) floats"
            raise DataError(f"{self.name} targets of a sequence model must be {form}, got shape {Y.shape}")
        if N is not None and Y.shape[0] != N:
            raise DataError(f"got {Y.shape[0]} target sequences for {N} examples")
        rows = Y.reshape((-1,) + Y.shape[2:])
        return self.base.check_targets(rows, C).reshape(Y.shape)

    def _rows(self, f, Y):
        f = self._f(f)
        Y = self.check_targets(Y, f.shape[2], f.shape[0])
        if Y.shape[1] != f.shape[1]:
            raise DataError(f"targets have {Y.shape[1]} steps but the outputs have {f.shape[1]}")
        return f, f.reshape(-1, f.shape[2]), Y.reshape((-1,) + Y.shape[2:])

    def per_example(self, f, Y):
        f, fr, Yr = self._rows(f, Y)
        return self.base.per_example(fr, Yr).reshape(f.shape[:2]).sum(axis=1)

    def grad(self, f, Y):
        f, fr, Yr = self._rows(f, Y)
        return self.base.grad(fr, Yr).reshape(f.shape)

    def fisher_rank_bound(self, f):
        f = self._f(f)
        return f.shape[1] * self.base.fisher_rank_bound(f[:, 0])

    def fisher_sqrt_columns(self, f, k0, k1):
        f = self._f(f)
        N, T, C = f.shape
        K = self.base.fisher_rank_bound(f[:, 0])
        S = self.base.fisher_sqrt_columns(f.reshape(-1, C), 0, K).reshape(K, N, T, C)
        js = np.arange(k0, k1)
        ts, ks = js // K, js % K
        out = np.zeros((len(js), N, T, C), dtype=S.dtype)
        out[np.arange(len(js)), :, ts, :] = S[ks, :, ts, :]
        return out

    def fisher_sqrt(self, f):
        raise NotImplementedError("use fisher_sqrt_columns for sequence outputs")

    def output_fisher(self, f):
        raise NotImplementedError("the output Fisher of a sequence loss is block diagonal over "
                                  "steps; use fisher_sqrt_columns")

    def sample(self, f, rng):
        f = self._f(f)
        y = self.base.sample(f.reshape(-1, f.shape[2]), rng)
        return y.reshape(f.shape[:2] + y.shape[1:])


def loss_for_model(model, loss) -> Loss:
    """``get_loss(loss)``, wrapped in :class:`StepwiseLoss` when the model's output has a step
    axis (``model.sequence_output``)."""
    loss = get_loss(loss)
    if getattr(model, "sequence_output", False) and not isinstance(loss, StepwiseLoss):
        return StepwiseLoss(loss)
    return loss
