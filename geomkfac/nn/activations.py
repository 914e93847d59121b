"""Activation functions of the NumPy backend, vectorized over the batch.

Arrays are batch-major: a pre-activation batch ``z`` is ``(N, d)`` and the activation
``a = φ(z)`` has the same shape. Every activation offers

- ``forward(z)`` → ``a``;
- ``backward(z, a, grad_a)`` → ``grad_z``, the vector-Jacobian product
  ``grad_z = (∂a/∂z)ᵀ grad_a`` per example. ``grad_a`` may carry extra *leading* axes
  (``(K, N, d)``): the curvature code backpropagates K output directions at once, and
  ``z``/``a`` broadcast against them;
- elementwise activations also ``derivative(z)`` = ``φ'(z)``.

:class:`ConjugatedActivation` is the activation of a reparameterized network (Eqn. D.3,
paper-notes §3): ``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ``. Together with the weights of Eqn. D.2
(see :func:`geomkfac.reparameterize`) it computes the same function in new
activation / pre-activation bases.

>>> import numpy as np
>>> from geomkfac.nn.activations import get_activation
>>> act = get_activation("tanh")
>>> z = np.array([[0.0, 1.0]])
>>> a = act.forward(z)
>>> np.allclose(act.backward(z, a, np.ones_like(z)), 1 - np.tanh(z) ** 2)
True
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import (
    ConfigurationError,
    DimensionError,
    NonFiniteError,
    SingularFrameChangeError,
)
from geomkfac.nn.kernels import sigmoid_backward_, tanh_backward_

__all__ = [
    "Activation",
    "ElementwiseActivation",
    "Identity",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "Softplus",
    "ConjugatedActivation",
    "ACTIVATIONS",
    "get_activation",
]


class Activation:
    """Base class: a map ``a = φ(z)`` applied to each row of a batch.

    Subclasses set ``name`` and implement :meth:`forward` and :meth:`backward`.
    """

    name: str = "activation"

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Return ``a = φ(z)`` for a batch ``z`` of shape ``(N, d)``."""
        raise NotImplementedError

    def forward_into(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write ``φ(z)`` into ``out`` (e.g. the activation columns of the next layer's
        homogeneous input, so that no copy is made) and return ``out``."""
        out[...] = self.forward(z)
        return out

    def backward(self, z: np.ndarray, a: np.ndarray, grad_a: np.ndarray) -> np.ndarray:
        """Return ``grad_z = (∂φ/∂z)ᵀ grad_a`` per example.

        Parameters
        ----------
        z, a : ndarray, shape (N, d)
            The pre-activations and the activations ``a = φ(z)`` of the forward pass.
        grad_a : ndarray, shape (..., N, d)
            Gradient with respect to ``a``; extra leading axes are allowed.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    #: ``backward_from_output_(g, a)``: ``g ← φ'(z) ⊙ g`` in place from the output ``a``
    #: alone, as one fused pass (:mod:`geomkfac.nn.kernels`); None where there is none
    backward_from_output_ = None


class ElementwiseActivation(Activation):
    """An activation acting entry by entry: ``backward = φ'(z) ⊙ grad_a``."""

    def derivative(self, z: np.ndarray) -> np.ndarray:
        """Return ``φ'(z)`` entrywise."""
        raise NotImplementedError

    def _derivative_from(self, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        # default: ignore the cached activation
        return self.derivative(z)

    def backward(self, z, a, grad_a):
        return self._derivative_from(z, a) * grad_a

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def derivative_rows(act, z, a, store=None, key=None):
    """``φ'(z)`` of an elementwise activation whose backward pass is ``φ'(z) ⊙ grad_a``
    (:meth:`ElementwiseActivation.backward`), computed once per forward pass: with a dict
    ``store`` it is kept under ``key`` and reused by every later backward pass and
    Jacobian-vector product of the same pass (a step runs up to three). ``None`` for
    activations with their own backward (identity, ReLU, conjugated ones), which the caller
    then applies directly.

    >>> import numpy as np
    >>> t = Tanh(); z = np.array([[0.5]]); a = t.forward(z)
    >>> bool(np.allclose(derivative_rows(t, z, a), t.derivative(z))), derivative_rows(Identity(), z, z)
    (True, None)
    """
    if not isinstance(act, ElementwiseActivation) or type(act).backward is not ElementwiseActivation.backward:
        return None
    if store is None:
        return act._derivative_from(z, a)
    if key not in store:
        store[key] = act._derivative_from(z, a)
    return store[key]


class Identity(ElementwiseActivation):
    """``φ(z) = z`` (the usual last layer: the loss acts on logits / means)."""

    name = "identity"

    def forward(self, z):
        return z

    def derivative(self, z):
        return np.ones_like(z)

    def backward(self, z, a, grad_a):
        return grad_a


class Sigmoid(ElementwiseActivation):
    """Logistic sigmoid ``σ(z) = 1 / (1 + e^{-z}) = ½ tanh(z/2) + ½`` (overflow-free form)."""

    name = "sigmoid"

    def forward(self, z):
        half = z.dtype.type(0.5) if isinstance(z, np.ndarray) else 0.5
        return half * np.tanh(half * z) + half

    def derivative(self, z):
        s = self.forward(z)
        return s * (1 - s)

    def _derivative_from(self, z, a):
        d = np.subtract(1, a)
        d *= a  # a (1 − a), one temporary
        return d

    backward_from_output_ = staticmethod(sigmoid_backward_)


class Tanh(ElementwiseActivation):
    """Hyperbolic tangent; ``φ' = 1 − φ²``."""

    name = "tanh"

    def forward(self, z):
        return np.tanh(z)

    def forward_into(self, z, out):
        return np.tanh(z, out=out)

    def derivative(self, z):
        t = np.tanh(z)
        return 1 - t * t

    def _derivative_from(self, z, a):
        d = np.square(a)
        return np.subtract(1, d, out=d)  # 1 − a², one temporary

    backward_from_output_ = staticmethod(tanh_backward_)


class ReLU(ElementwiseActivation):
    """``max(z, 0)``; the derivative at 0 is taken as 0."""

    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0)

    def forward_into(self, z, out):
        return np.maximum(z, 0, out=out)

    def derivative(self, z):
        return (z > 0).astype(z.dtype)

    def backward(self, z, a, grad_a):
        # a product with the 0/1 mask (not np.where: five times slower on these shapes)
        return grad_a * (z > 0)


class Softplus(ElementwiseActivation):
    """``log(1 + e^z)`` (computed as ``logaddexp(0, z)``); ``φ' = σ``."""

    name = "softplus"

    def forward(self, z):
        return np.logaddexp(0, z)

    def derivative(self, z):
        half = z.dtype.type(0.5)
        return half * np.tanh(half * z) + half


#: the named activations, name -> class
ACTIVATIONS = {
    cls.name: cls for cls in (Identity, Sigmoid, Tanh, ReLU, Softplus)
}


def get_activation(name) -> Activation:
    """Return the activation called ``name`` (an :class:`Activation` passes through).

    Parameters
    ----------
    name : str or Activation
        One of ``"identity"``, ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"softplus"``
        (case-insensitive), or an :class:`Activation` instance.

    Raises
    ------
    ConfigurationError
        For an unknown name; the message lists the known ones.

    >>> get_activation("ReLU").name
    'relu'
    >>> get_activation("swish")
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: unknown activation 'swish'; choose one of: identity, sigmoid, tanh, relu, softplus
    """
    if isinstance(name, Activation):
        return name
    if not isinstance(name, str):
        raise ConfigurationError(
            f"an activation must be a name or an Activation object, got {type(name).__name__}"
        )
    key = name.strip().lower()
    if key not in ACTIVATIONS:
        raise ConfigurationError(
            f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[key]()


def _floats(x, name: str, dtype=np.float64) -> np.ndarray:
    try:
        a = np.array(x, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise DimensionError(f"{name} must be an array of numbers ({exc})") from None
    if not np.all(np.isfinite(a)):
        raise NonFiniteError(f"{name} contains NaN or inf; a change of basis must be finite")
    return a


def _square(M, name: str) -> np.ndarray:
    M = _floats(M, name)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise DimensionError(f"{name} must be a square matrix (a change of basis), got shape {M.shape}")
    n = M.shape[0]
    if n and not np.linalg.cond(M) < 1.0 / (n * np.finfo(np.float64).eps):
        raise SingularFrameChangeError(
            f"{name} is singular (condition number {np.linalg.cond(M):.3g}); a change of basis "
            "needs an invertible matrix"
        )
    M.setflags(write=False)
    return M


def _vector(v, d: int, name: str, dtype) -> np.ndarray:
    if v is None:
        v = np.zeros(d, dtype=dtype)
    v = _floats(v, name, dtype)
    if v.shape != (d,):
        raise DimensionError(f"{name} must have shape ({d},), got {v.shape}")
    v.setflags(write=False)
    return v


class ConjugatedActivation(Activation):
    """The activation in changed bases (Eqn. D.3): ``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ``.

    ``Φ, τ`` change the basis of the pre-activation space ``Z_i``
    (``z = Φ z‡ + τ``) and ``Ω, γ`` that of the activation space ``A_i``
    (``a‡ = Ω a + γ``). On a batch (rows are examples) this reads
    ``a‡ = φ(z‡ Φᵀ + τ) Ωᵀ + γ`` and the backward pass is
    ``grad_z‡ = (φ'(Φ z‡ + τ) ⊙ (grad_a‡ Ω)) Φ``.

    Parameters
    ----------
    base : str or Activation
        The activation ``φ`` in the original bases.
    Omega : array_like, shape (d, d)
        Linear part of the change of basis on the activation space; ``None`` = identity.
    gamma : array_like, shape (d,)
        Its translation; ``None`` = zero.
    Phi : array_like, shape (d, d)
        Linear part of ``z = Φ z‡ + τ``; ``None`` = identity.
    tau : array_like, shape (d,)
        Its translation; ``None`` = zero.

    Examples
    --------
    The sigmoid is a conjugated tanh: ``σ(x) = ½ tanh(x/2) + ½``.

    >>> import numpy as np
    >>> sig = ConjugatedActivation("tanh", Omega=[[0.5]], gamma=[0.5], Phi=[[0.5]], tau=[0.0])
    >>> z = np.array([[-1.0], [2.0]])
    >>> np.allclose(sig.forward(z), 1 / (1 + np.exp(-z)))
    True
    """

    def __init__(self, base, Omega=None, gamma=None, Phi=None, tau=None):
        self.base = get_activation(base)
        d = None
        for M in (Omega, Phi, gamma, tau):
            if d is None and M is not None:
                shape = np.shape(M)
                if not shape:
                    raise DimensionError(
                        "Omega and Phi must be (d, d) matrices and gamma, tau (d,) vectors, "
                        f"got a scalar {M!r}"
                    )
                d = shape[0]
        if d is None:
            raise DimensionError(
                "ConjugatedActivation needs at least one of Omega, gamma, Phi, tau to fix its width"
            )
        self.Omega = _square(np.eye(d) if Omega is None else Omega, "Omega")
        self.Phi = _square(np.eye(d) if Phi is None else Phi, "Phi")
        if self.Omega.shape != (d, d) or self.Phi.shape != (d, d):
            raise DimensionError(
                f"Omega and Phi must both be ({d}, {d}), got {self.Omega.shape} and {self.Phi.shape}"
            )
        self.gamma = _vector(gamma, d, "gamma", np.float64)
        self.tau = _vector(tau, d, "tau", np.float64)
        self.width = d
        self.name = f"conjugated({self.base.name})"

    def _cast(self, dtype):
        return (
            self.Omega.astype(dtype, copy=False),
            self.gamma.astype(dtype, copy=False),
            self.Phi.astype(dtype, copy=False),
            self.tau.astype(dtype, copy=False),
        )

    def _check(self, z):
        if z.shape[-1] != self.width:
            raise DimensionError(
                f"{self.name} acts on width {self.width}, got an input with last axis {z.shape[-1]}"
            )

    def forward(self, z):
        z = np.asarray(z)
        self._check(z)
        Om, ga, Ph, ta = self._cast(z.dtype)
        return self.base.forward(z @ Ph.T + ta) @ Om.T + ga

    def backward(self, z, a, grad_a):
        z = np.asarray(z)
        self._check(z)
        Om, ga, Ph, ta = self._cast(z.dtype)
        u = z @ Ph.T + ta  # the pre-activation in the original basis
        grad_u = self.base.backward(u, self.base.forward(u), grad_a @ Om)
        return grad_u @ Ph

    def __repr__(self) -> str:
        return f"ConjugatedActivation({self.base!r}, width={self.width})"
