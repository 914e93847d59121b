"""Output metrics: metrics on the network's output space (paper Example 3.3, Eqn. 3.2).

An output metric ``g`` assigns to every output point ``z`` (logits / mean, the network
output in the output space's *reference* frame) a symmetric PSD matrix ``G(z)``.  Its
expected pullback along the network map, ``E_ξ[Ψ_ξ* g]`` (Eqn. 3.2), is

* the Fisher metric (Eqn. 2.4) when ``g`` is the Fisher metric of the predictive
  distribution (:class:`GaussianFisher`, :class:`CategoricalFisher`,
  :class:`BernoulliFisher`);
* the Gauss-Newton matrix when ``g`` is :class:`Euclidean`;
* the generalized Gauss-Newton matrix when ``g`` is the Hessian of a convex function
  (:class:`BregmanMetric`).

Coordinate formulas (``OutputMetric.matrix``) accept a numeric batch ``(N, C)`` →
``(N, C, C)``, one numeric example ``(C,)`` → ``(C, C)``, or a sympy column ``(C, 1)`` →
``C × C`` sympy matrix.  ``OutputMetric.at(point)`` returns the core's
:class:`~geomkfac.metrics.Metric` at a Point, in the point's space's reference frame.

Each output metric has its matching loss (``loss_for``): the negative log-likelihood
whose expected outer product of gradients (under the model's predictive distribution)
is the output Fisher, with ``value`` / ``grad`` in output coordinates.  ``grad`` is the
per-example gradient ``Dz`` (not divided by the batch size).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from scipy.special import expit, log_softmax, softmax

from geomkfac.activations_sym import as_float_array, as_sym_matrix, is_symbolic
from geomkfac.errors import ConfigurationError, DataError, DimensionError

__all__ = [
    "OutputMetric",
    "GaussianFisher",
    "CategoricalFisher",
    "BernoulliFisher",
    "Euclidean",
    "BregmanMetric",
    "get_output_metric",
    "loss_for",
    "Loss",
    "GaussianNLL",
    "SquaredError",
    "SoftmaxCrossEntropy",
    "BernoulliNLL",
    "BregmanLoss",
]


def _batch(z):
    """Return (float array (N, C), was_single_vector)."""
    z = np.asarray(z, dtype=float)
    if z.ndim == 1:
        return z[None, :], True
    if z.ndim != 2:
        raise DimensionError(f"expected outputs of shape (N, C) or (C,), got {z.shape}")
    return z, False


def _sym_softmax(z: sp.MatrixBase) -> sp.ImmutableMatrix:
    e = z.applyfunc(sp.exp)
    s = sum(e)
    return sp.ImmutableMatrix(e / s)


def _sym_sigmoid(z: sp.MatrixBase) -> sp.ImmutableMatrix:
    return sp.ImmutableMatrix(z.applyfunc(lambda v: 1 / (1 + sp.exp(-v))))


# =========================================================================== metrics
class OutputMetric:
    """A metric on the output space given by a coordinate formula ``G(z)`` (abstract)."""

    name = "output-metric"
    _check_at = True  # check symmetry / PSD of the matrix in .at (off for closed forms)

    def matrix(self, z):
        """Coordinate matrix ``G(z)`` in the reference frame of the output space."""
        if is_symbolic(z):
            return self._sym(as_sym_matrix(z))
        zb, single = _batch(z)
        G = self._num(zb)
        return G[0] if single else G

    def at(self, point):
        """The metric at an output Point, as a core :class:`~geomkfac.metrics.Metric`.

        The matrix is given in ``point.space.reference_frame`` (whatever frame the point
        was created in); ask the Metric for its matrix in any other frame.
        """
        from geomkfac.metrics import Metric

        frame = point.space.reference_frame
        z = point.coords(frame)
        # the closed-form Fishers are PSD by construction; a user's Bregman function is checked
        return Metric(frame, self.matrix(z), check=self._check_at)

    def loss(self) -> "Loss":
        """The matching per-example loss (see :func:`loss_for`)."""
        raise NotImplementedError

    def _num(self, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sym(self, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<OutputMetric {self.name}>"


class GaussianFisher(OutputMetric):
    """Fisher metric of ``N(z, Σ)`` on its mean: ``G = Σ⁻¹`` (unit variance: ``I``).

    Parameters
    ----------
    cov : (C, C) array or sympy Matrix, optional
        The covariance ``Σ`` (symmetric positive definite).  ``None`` means ``I``.

    Examples
    --------
    >>> import numpy as np
    >>> GaussianFisher().matrix(np.zeros(2))
    array([[1., 0.],
           [0., 1.]])
    >>> GaussianFisher(np.diag([2.0, 4.0])).matrix(np.zeros(2))
    array([[0.5 , 0.  ],
           [0.  , 0.25]])
    """

    name = "gaussian"
    _check_at = False

    def __init__(self, cov=None):
        self.cov = cov
        if cov is None:
            self._prec_num = None
            self._prec_sym = None
        elif is_symbolic(cov):
            c = as_sym_matrix(cov)
            if c.shape[0] != c.shape[1]:
                raise DimensionError(f"GaussianFisher: covariance must be square, got {c.shape}")
            self._prec_sym = sp.ImmutableMatrix(c.inv())
            self._prec_num = None
        else:
            c = np.asarray(cov, dtype=float)
            if c.ndim != 2 or c.shape[0] != c.shape[1]:
                raise DimensionError(f"GaussianFisher: covariance must be square, got {c.shape}")
            if not np.allclose(c, c.T):
                raise ConfigurationError("GaussianFisher: covariance must be symmetric")
            try:
                np.linalg.cholesky(c)
            except np.linalg.LinAlgError:
                raise ConfigurationError(
                    "GaussianFisher: covariance must be positive definite"
                ) from None
            self._prec_num = np.linalg.inv(c)
            self._prec_sym = None

    def _num(self, z):
        n, C = z.shape
        if self.cov is None:
            P = np.eye(C)
        elif self._prec_num is not None:
            P = self._prec_num
        else:
            P = as_float_array(self._prec_sym)
        if P.shape != (C, C):
            raise DimensionError(f"GaussianFisher: covariance is {P.shape}, outputs have C={C}")
        return np.broadcast_to(P, (n, C, C)).copy()

    def _sym(self, z):
        C = z.shape[0]
        if self.cov is None:
            return sp.ImmutableMatrix(sp.eye(C))
        P = self._prec_sym if self._prec_sym is not None else as_sym_matrix(self._prec_num)
        return sp.ImmutableMatrix(P)

    def loss(self):
        return GaussianNLL(self.cov)


class Euclidean(OutputMetric):
    """The Euclidean metric ``G = I`` (its expected pullback is the Gauss-Newton matrix).

    >>> import numpy as np
    >>> Euclidean().matrix(np.zeros((3, 2))).shape
    (3, 2, 2)
    """

    name = "euclidean"
    _check_at = False

    def _num(self, z):
        n, C = z.shape
        return np.broadcast_to(np.eye(C), (n, C, C)).copy()

    def _sym(self, z):
        return sp.ImmutableMatrix(sp.eye(z.shape[0]))

    def loss(self):
        return SquaredError()


class CategoricalFisher(OutputMetric):
    """Fisher metric of the softmax categorical distribution on its logits.

    ``G(z) = diag(p) − p pᵀ`` with ``p = softmax(z)``; rank ``C − 1`` (the all-ones
    direction is in its kernel), so the pulled-back metric may be degenerate.

    >>> import numpy as np
    >>> G = CategoricalFisher().matrix(np.zeros(2))
    >>> G
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    >>> int(np.linalg.matrix_rank(G))
    1
    """

    name = "categorical"
    _check_at = False

    def _num(self, z):
        p = softmax(z, axis=1)
        return p[:, :, None] * np.eye(z.shape[1])[None] - p[:, :, None] * p[:, None, :]

    def _sym(self, z):
        p = _sym_softmax(z)
        return sp.ImmutableMatrix(sp.diag(*p) - p * p.T)

    def loss(self):
        return SoftmaxCrossEntropy()


class BernoulliFisher(OutputMetric):
    """Fisher metric of independent Bernoulli outputs on their logits: ``diag(p(1−p))``.

    >>> import numpy as np
    >>> BernoulliFisher().matrix(np.zeros(2))
    array([[0.25, 0.  ],
           [0.  , 0.25]])
    """

    name = "bernoulli"
    _check_at = False

    def _num(self, z):
        p = expit(z)
        return (p * (1.0 - p))[:, :, None] * np.eye(z.shape[1])[None]

    def _sym(self, z):
        p = _sym_sigmoid(z)
        return sp.ImmutableMatrix(sp.diag(*[pj * (1 - pj) for pj in p]))

    def loss(self):
        return BernoulliNLL()


class BregmanMetric(OutputMetric):
    """Hessian metric ``G(z) = ∇²φ(z)`` of a convex function (→ generalized Gauss-Newton).

    Parameters
    ----------
    phi : sympy expression or callable
        Either a sympy expression of the output coordinates (its Hessian and gradient are
        obtained by differentiation), or a numeric *Hessian* callable mapping ``(N, C)`` to
        ``(N, C, C)``.
    symbols : sequence of sympy Symbols, optional
        The output coordinates ``z_1 … z_C`` in ``phi`` (default: its free symbols sorted
        by name).
    gradient : callable, optional
        For a numeric Hessian callable, the gradient ``∇φ`` ``(N, C) → (N, C)``; needed only
        for the matching loss (the Bregman divergence).

    Examples
    --------
    ``φ(z) = log(1 + e^z)`` gives the Bernoulli Fisher ``σ(z)(1 − σ(z))``:

    >>> import sympy as sp, numpy as np
    >>> z = sp.Symbol("z")
    >>> g = BregmanMetric(sp.log(1 + sp.exp(z)), [z])
    >>> bool(np.allclose(g.matrix(np.array([[0.3]])), BernoulliFisher().matrix(np.array([[0.3]]))))
    True
    """

    name = "bregman"

    def __init__(self, phi, symbols=None, gradient=None):
        if isinstance(phi, sp.Basic):
            if symbols is None:
                symbols = sorted(phi.free_symbols, key=lambda s: s.name)
            self.symbols = tuple(symbols)
            if not self.symbols:
                raise ConfigurationError(
                    "BregmanMetric: phi has no free symbols; give the output coordinates"
                )
            self.phi = phi
            self.hessian_expr = sp.ImmutableMatrix(sp.hessian(phi, self.symbols))
            self.gradient_expr = sp.ImmutableMatrix([sp.diff(phi, s) for s in self.symbols])
            mods = [{"ImmutableDenseMatrix": lambda x: x, "MutableDenseMatrix": lambda x: x}, "numpy"]
            self._hess_f = sp.lambdify(self.symbols, self.hessian_expr, modules=mods)
            self._grad_f = sp.lambdify(self.symbols, self.gradient_expr, modules=mods)
            self._phi_f = sp.lambdify(self.symbols, phi, modules="numpy")
            self._num_hess = None
            self._num_grad = None
        elif callable(phi):
            self.phi = None
            self.symbols = None
            self._num_hess = phi
            self._num_grad = gradient
        else:
            raise ConfigurationError(
                "BregmanMetric: give phi as a sympy expression or a numeric Hessian callable"
            )

    def _eval_nested(self, f, z):
        cols = [z[:, k] for k in range(z.shape[1])]
        nested = f(*cols)
        n = z.shape[0]
        return np.array(
            [[np.broadcast_to(np.asarray(e, dtype=float), (n,)) for e in row] for row in nested]
        )  # (r, c, N)

    def _check_C(self, C):
        if self.symbols is not None and len(self.symbols) != C:
            raise DimensionError(
                f"BregmanMetric: phi has {len(self.symbols)} coordinates, outputs have C={C}"
            )

    def _num(self, z):
        if self._num_hess is not None:
            return np.asarray(self._num_hess(z), dtype=float)
        self._check_C(z.shape[1])
        return np.moveaxis(self._eval_nested(self._hess_f, z), -1, 0)

    def _sym(self, z):
        if self.hessian_expr is None:  # pragma: no cover - numeric only
            raise ConfigurationError("BregmanMetric given numerically cannot be used symbolically")
        self._check_C(z.shape[0])
        return sp.ImmutableMatrix(self.hessian_expr.subs(dict(zip(self.symbols, list(z)))))

    hessian_expr = None

    def grad_phi(self, z):
        """``∇φ(z)``: numeric ``(N, C)`` / ``(C,)`` or sympy column."""
        if is_symbolic(z):
            z = as_sym_matrix(z)
            return sp.ImmutableMatrix(self.gradient_expr.subs(dict(zip(self.symbols, list(z)))))
        zb, single = _batch(z)
        if self._num_hess is not None:
            if self._num_grad is None:
                raise ConfigurationError(
                    "BregmanMetric: pass gradient=callable to use the Bregman loss with a "
                    "numeric Hessian"
                )
            g = np.asarray(self._num_grad(zb), dtype=float)
        else:
            self._check_C(zb.shape[1])
            g = self._eval_nested(self._grad_f, zb)[:, 0, :].T
        return g[0] if single else g

    def phi_value(self, z):
        """``φ(z)`` (needs a sympy ``phi``)."""
        if self.phi is None:
            raise ConfigurationError("BregmanMetric: phi values need a sympy expression")
        if is_symbolic(z):
            return self.phi.subs(dict(zip(self.symbols, list(as_sym_matrix(z)))))
        zb, single = _batch(z)
        v = np.broadcast_to(
            np.asarray(self._phi_f(*[zb[:, k] for k in range(zb.shape[1])]), dtype=float),
            (zb.shape[0],),
        )
        return v[0] if single else v

    def loss(self):
        return BregmanLoss(self)


_NAMES = {
    "gaussian": GaussianFisher,
    "mse": GaussianFisher,
    "squared_error": GaussianFisher,
    "categorical": CategoricalFisher,
    "softmax": CategoricalFisher,
    "cross_entropy": CategoricalFisher,
    "ce": CategoricalFisher,
    "bernoulli": BernoulliFisher,
    "sigmoid": BernoulliFisher,
    "bce": BernoulliFisher,
    "euclidean": Euclidean,
    "gauss-newton": Euclidean,
    "gn": Euclidean,
}


def get_output_metric(name) -> OutputMetric:
    """Output metric by name (``gaussian``/``mse``, ``categorical``/``softmax``/``ce``,
    ``bernoulli``/``bce``, ``euclidean``/``gn``); an OutputMetric is returned unchanged.

    >>> get_output_metric("softmax").name
    'categorical'
    """
    if isinstance(name, OutputMetric):
        return name
    try:
        return _NAMES[str(name).lower()]()
    except KeyError:
        raise ConfigurationError(
            f"unknown output metric {name!r}; choose one of {sorted(_NAMES)} or build a "
            "BregmanMetric(phi)"
        ) from None


def loss_for(output_metric) -> "Loss":
    """The per-example loss matching an output metric (NLL for Fisher metrics).

    >>> loss_for("categorical").name
    'softmax_cross_entropy'
    """
    return get_output_metric(output_metric).loss()


# =========================================================================== losses
class Loss:
    """A per-example loss ``ℓ(z, y)`` in output coordinates (abstract).

    ``value(z, y)`` → ``(N,)`` (or a sympy scalar for a sympy column ``z``);
    ``grad(z, y)`` → ``∂ℓ/∂z`` per example, ``(N, C)`` (or a sympy column);
    ``sample(z, rng)`` → targets drawn from the model's predictive distribution.
    """

    name = "loss"

    def value(self, z, y):
        if is_symbolic(z, y):
            return self._sym_value(as_sym_matrix(z), y)
        zb, single = _batch(z)
        v = self._num_value(zb, self._targets(y, zb))
        return v[0] if single else v

    def grad(self, z, y):
        if is_symbolic(z, y):
            return self._sym_grad(as_sym_matrix(z), y)
        zb, single = _batch(z)
        g = self._num_grad(zb, self._targets(y, zb))
        return g[0] if single else g

    def _targets(self, y, zb):
        y = np.asarray(y, dtype=float)
        if y.ndim == 1 and zb.shape[0] == 1:
            y = y[None, :]
        if y.shape != zb.shape:
            raise DataError(f"{self.name}: targets of shape {y.shape} for outputs {zb.shape}")
        return y

    def sample(self, z, rng):  # pragma: no cover - abstract
        raise ConfigurationError(f"{self.name} has no predictive distribution to sample from")

    def __repr__(self) -> str:
        return f"<Loss {self.name}>"


class GaussianNLL(Loss):
    """``ℓ = ½ (z − y)ᵀ Σ⁻¹ (z − y)`` (NLL of ``N(z, Σ)`` up to a constant)."""

    name = "gaussian_nll"

    def __init__(self, cov=None):
        self.cov = cov
        self._metric = GaussianFisher(cov)

    def _prec(self, C):
        return self._metric._num(np.zeros((1, C)))[0]

    def _num_value(self, z, y):
        r = z - y
        return 0.5 * np.einsum("ni,ij,nj->n", r, self._prec(z.shape[1]), r)

    def _num_grad(self, z, y):
        return (z - y) @ self._prec(z.shape[1]).T

    def _sym_value(self, z, y):
        r = z - as_sym_matrix(y)
        return sp.simplify((r.T * self._metric._sym(z) * r)[0, 0] / 2)

    def _sym_grad(self, z, y):
        return sp.ImmutableMatrix(self._metric._sym(z) * (z - as_sym_matrix(y)))

    def sample(self, z, rng):
        """Draw ``y ~ N(z, Σ)``."""
        zb, single = _batch(z)
        eps = rng.standard_normal(zb.shape)
        if self.cov is not None:
            eps = eps @ np.linalg.cholesky(as_float_array(self.cov)).T
        y = zb + eps
        return y[0] if single else y


class SquaredError(GaussianNLL):
    """``ℓ = ½ ‖z − y‖²`` (matches the Euclidean metric: Gauss-Newton)."""

    name = "squared_error"

    def __init__(self):
        super().__init__(None)

    def sample(self, z, rng):
        raise ConfigurationError(
            "the Euclidean output metric is not the Fisher metric of a distribution; use "
            "GaussianFisher() to sample targets (its Fisher equals this Gauss-Newton metric)"
        )


class SoftmaxCrossEntropy(Loss):
    """``ℓ = −log softmax(z)_y``; targets are class indices ``(N,)`` or one-hot ``(N, C)``."""

    name = "softmax_cross_entropy"

    def _targets(self, y, zb):
        y = np.asarray(y)
        C = zb.shape[1]
        if np.issubdtype(y.dtype, np.integer) and (
            y.ndim == 0 or (y.ndim == 1 and y.shape[0] == zb.shape[0])
        ):
            labels = np.atleast_1d(y)
            if labels.min() < 0 or labels.max() >= C:
                raise DataError(f"class labels must lie in 0..{C - 1}, got {labels}")
            return np.eye(C)[labels]
        return super()._targets(y, zb)

    def _num_value(self, z, y):
        return -np.sum(y * log_softmax(z, axis=1), axis=1)

    def _num_grad(self, z, y):
        return softmax(z, axis=1) * y.sum(axis=1, keepdims=True) - y

    def _sym_onehot(self, z, y):
        if isinstance(y, (int, np.integer)):
            return sp.ImmutableMatrix([[1 if k == int(y) else 0] for k in range(z.shape[0])])
        return as_sym_matrix(y)

    def _sym_value(self, z, y):
        y = self._sym_onehot(z, y)
        lse = sp.log(sum(z.applyfunc(sp.exp)))
        return sum(y[k] * (lse - z[k]) for k in range(z.shape[0]))

    def _sym_grad(self, z, y):
        y = self._sym_onehot(z, y)
        return sp.ImmutableMatrix(_sym_softmax(z) * sum(y) - y)

    def sample(self, z, rng):
        """Draw class labels ``y ~ Categorical(softmax(z))`` (returns ints)."""
        zb, single = _batch(z)
        p = softmax(zb, axis=1)
        u = rng.random((zb.shape[0], 1))
        y = np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), zb.shape[1] - 1)
        return y[0] if single else y


class BernoulliNLL(Loss):
    """``ℓ = Σ_j softplus(z_j) − y_j z_j`` (independent Bernoulli outputs on logits)."""

    name = "bernoulli_nll"

    def _num_value(self, z, y):
        return np.sum(np.logaddexp(0.0, z) - y * z, axis=1)

    def _num_grad(self, z, y):
        return expit(z) - y

    def _sym_value(self, z, y):
        y = as_sym_matrix(y)
        return sum(sp.log(1 + sp.exp(z[k])) - y[k] * z[k] for k in range(z.shape[0]))

    def _sym_grad(self, z, y):
        return sp.ImmutableMatrix(_sym_sigmoid(z) - as_sym_matrix(y))

    def sample(self, z, rng):
        """Draw ``y_j ~ Bernoulli(σ(z_j))`` (returns 0./1. floats)."""
        zb, single = _batch(z)
        y = (rng.random(zb.shape) < expit(zb)).astype(float)
        return y[0] if single else y


class BregmanLoss(Loss):
    """Bregman divergence ``ℓ(z, y) = φ(z) − φ(y) − ∇φ(y)ᵀ (z − y)`` (Hessian in z: ``∇²φ``)."""

    name = "bregman"

    def __init__(self, metric: BregmanMetric):
        self.metric = metric

    def _num_value(self, z, y):
        return (
            self.metric.phi_value(z)
            - self.metric.phi_value(y)
            - np.sum(self.metric.grad_phi(y) * (z - y), axis=1)
        )

    def _num_grad(self, z, y):
        return self.metric.grad_phi(z) - self.metric.grad_phi(y)

    def _sym_value(self, z, y):
        y = as_sym_matrix(y)
        return (
            self.metric.phi_value(z)
            - self.metric.phi_value(y)
            - (self.metric.grad_phi(y).T * (z - y))[0, 0]
        )

    def _sym_grad(self, z, y):
        return sp.ImmutableMatrix(self.metric.grad_phi(z) - self.metric.grad_phi(as_sym_matrix(y)))
