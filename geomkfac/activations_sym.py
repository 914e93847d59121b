"""Activation functions usable both symbolically (sympy) and numerically (NumPy).

An activation ``φ_i : Z_i → A_i`` of an MLP layer is a smooth map between affine spaces.
In the reference frames it is an elementwise function (identity, sigmoid, tanh,
softplus).  In any other pair of frames its coordinate expression is the *conjugated*
activation of Eqn. D.3,

    ``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ``,

where ``(Ω, γ)`` is the change of frame ι → κ on ``A_i`` and ``(Φ, τ)`` the change κ → ι on
``Z_i``.  Every activation here has ``__call__`` and ``jacobian`` that work on

* a numeric batch: a float array of shape ``(N, n)`` (rows are examples), or one
  example of shape ``(n,)``;  ``jacobian`` returns ``(N, n, n)`` or ``(n, n)``;
* a symbolic column: a sympy ``Matrix`` of shape ``(n, 1)``; ``jacobian`` returns an
  ``n × n`` sympy matrix.

Numeric paths are vectorized (no Python loop over examples).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import sympy as sp
from scipy.special import expit

from geomkfac.errors import ConfigurationError, DimensionError

__all__ = [
    "Activation",
    "ElementwiseActivation",
    "ConjugatedActivation",
    "IDENTITY",
    "SIGMOID",
    "TANH",
    "SOFTPLUS",
    "get_activation",
    "is_symbolic",
    "as_sym_matrix",
    "as_exact_sym",
    "as_float_array",
]


# --------------------------------------------------------------------------- helpers
def is_symbolic(*objs) -> bool:
    """True if any argument is a sympy object (matrix, expression or number)."""
    return any(isinstance(o, (sp.MatrixBase, sp.Basic)) for o in objs if o is not None)


def as_sym_matrix(x) -> sp.ImmutableMatrix:
    """Return ``x`` as a sympy ``ImmutableMatrix``; 1-D input becomes a column."""
    if isinstance(x, sp.MatrixBase):
        return sp.ImmutableMatrix(x)
    arr = np.asarray(x, dtype=object)
    if arr.ndim == 0:
        return sp.ImmutableMatrix([[sp.sympify(arr.item())]])
    if arr.ndim == 1:
        return sp.ImmutableMatrix([[sp.sympify(v)] for v in arr])
    return sp.ImmutableMatrix(arr.tolist())


def as_exact_sym(x, policy: str = "rational") -> sp.ImmutableMatrix:
    """Like :func:`as_sym_matrix`, but floats become the exact binary Rationals they denote.

    This is the conversion of the symbolic path of the networks (conjugated activations,
    frame changes and numeric data met by symbolic weights): it stays exact so that the
    abstract pipeline's symbolic results are exact identities.  ``policy="float"`` keeps
    floats as sympy ``Float`` s (integer-valued floats become Integers either way), as the
    SYMBOLIC field does by default (:func:`geomkfac.fields.float_policy`).

    >>> as_exact_sym([0.5, 2.0]).T, as_exact_sym([0.5, 2.0], policy="float").T
    (Matrix([[1/2, 2]]), Matrix([[0.5, 2]]))
    """
    if isinstance(x, sp.MatrixBase):
        return sp.ImmutableMatrix(x)
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        from geomkfac.fields import to_sympy_number

        arr = np.vectorize(lambda v: to_sympy_number(float(v), policy), otypes=[object])(arr)
    return as_sym_matrix(arr)


def as_float_array(x) -> np.ndarray:
    """Return ``x`` as a float64 array (sympy matrices must hold numbers only)."""
    if isinstance(x, sp.MatrixBase):
        try:
            return np.array(x.evalf(), dtype=float)
        except TypeError as exc:  # free symbols left
            raise ConfigurationError(
                f"cannot evaluate a symbolic matrix with free symbols {x.free_symbols} "
                "numerically; substitute numbers first (matrix.subs({...}))"
            ) from exc
    return np.asarray(x, dtype=float)


# --------------------------------------------------------------------------- base class
class Activation:
    """A smooth map ``Z_i → A_i`` in coordinates (abstract base).

    Subclasses implement :meth:`_num` / :meth:`_num_jac` on float arrays of shape
    ``(N, n)`` and :meth:`_sym` / :meth:`_sym_jac` on sympy columns.
    """

    name: str = "activation"
    elementwise: bool = False

    def __call__(self, z):
        if is_symbolic(z):
            return self._sym(as_sym_matrix(z))
        z = np.asarray(z, dtype=float)
        if z.ndim == 1:
            return self._num(z[None, :])[0]
        if z.ndim != 2:
            raise DimensionError(
                f"{self.name}: expected a batch of shape (N, n) or one vector (n,), got {z.shape}"
            )
        return self._num(z)

    def jacobian(self, z):
        """Jacobian ``∂φ/∂z``: ``(N, n, n)`` for a batch, ``(n, n)`` for one example."""
        if is_symbolic(z):
            return self._sym_jac(as_sym_matrix(z))
        z = np.asarray(z, dtype=float)
        if z.ndim == 1:
            return self._num_jac(z[None, :])[0]
        if z.ndim != 2:
            raise DimensionError(
                f"{self.name}: expected a batch of shape (N, n) or one vector (n,), got {z.shape}"
            )
        return self._num_jac(z)

    # default symbolic Jacobian: differentiate
    def _sym_jac(self, z: sp.ImmutableMatrix) -> sp.ImmutableMatrix:
        syms = sp.symbols(f"_u0:{z.shape[0]}")
        u = sp.ImmutableMatrix(syms)
        out = self._sym(u)
        jac = out.jacobian(u)
        return sp.ImmutableMatrix(jac.subs(dict(zip(syms, list(z)))))

    def __repr__(self) -> str:
        return f"<Activation {self.name}>"


class ElementwiseActivation(Activation):
    """An elementwise activation ``a_j = φ(z_j)`` with known derivative.

    Parameters
    ----------
    name : str
    sym : callable
        sympy function of one sympy expression.
    num : callable
        vectorized NumPy function.
    num_deriv : callable
        vectorized NumPy derivative ``φ'``.

    Examples
    --------
    >>> import numpy as np, sympy as sp
    >>> SIGMOID(np.array([0.0]))
    array([0.5])
    >>> SIGMOID(sp.Matrix([0]))
    Matrix([[1/2]])
    >>> TANH.jacobian(np.zeros((1, 2)))[0]
    array([[1., 0.],
           [0., 1.]])
    """

    elementwise = True

    def __init__(self, name: str, sym: Callable, num: Callable, num_deriv: Callable):
        self.name = name
        self.sym = sym
        self.num = num
        self.num_deriv = num_deriv

    def _num(self, z):
        return self.num(z)

    def _num_jac(self, z):
        d = self.num_deriv(z)  # (N, n)
        n = z.shape[1]
        return d[:, :, None] * np.eye(n)[None, :, :]

    def _sym(self, z):
        return sp.ImmutableMatrix(z.applyfunc(self.sym))

    def _sym_jac(self, z):
        x = sp.Symbol("_x")
        d = sp.diff(self.sym(x), x)
        return sp.ImmutableMatrix(sp.diag(*[d.subs(x, zj) for zj in z]))

    def derivative(self, z):
        """Elementwise derivative ``φ'(z)`` (numeric array or symbolic column)."""
        if is_symbolic(z):
            x = sp.Symbol("_x")
            d = sp.diff(self.sym(x), x)
            return sp.ImmutableMatrix(as_sym_matrix(z).applyfunc(lambda v: d.subs(x, v)))
        return self.num_deriv(np.asarray(z, dtype=float))

    def __repr__(self) -> str:
        return f"<Activation {self.name}>"


def _sym_sigmoid(x):
    return 1 / (1 + sp.exp(-x))


def _sym_softplus(x):
    return sp.log(1 + sp.exp(x))


IDENTITY = ElementwiseActivation("identity", lambda x: x, lambda z: z.copy(), np.ones_like)
SIGMOID = ElementwiseActivation(
    "sigmoid", _sym_sigmoid, expit, lambda z: expit(z) * (1.0 - expit(z))
)
TANH = ElementwiseActivation("tanh", sp.tanh, np.tanh, lambda z: 1.0 - np.tanh(z) ** 2)
SOFTPLUS = ElementwiseActivation("softplus", _sym_softplus, lambda z: np.logaddexp(0.0, z), expit)

_REGISTRY = {a.name: a for a in (IDENTITY, SIGMOID, TANH, SOFTPLUS)}
_REGISTRY["linear"] = IDENTITY


def get_activation(name_or_activation) -> Activation:
    """Look an activation up by name (``identity``, ``sigmoid``, ``tanh``, ``softplus``).

    >>> get_activation("tanh").name
    'tanh'
    """
    if isinstance(name_or_activation, Activation):
        return name_or_activation
    try:
        return _REGISTRY[str(name_or_activation).lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown activation {name_or_activation!r}; choose one of "
            f"{sorted(_REGISTRY)} or pass an Activation object"
        ) from None


# --------------------------------------------------------------------------- Eqn. D.3
class ConjugatedActivation(Activation):
    """The activation in changed frames, ``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ`` (Eqn. D.3).

    ``(Ω, γ)`` is the change of frame ι → κ on the activation space ``A_i``
    (``a‡ = Ω a + γ``) and ``(Φ, τ)`` the change κ → ι on the pre-activation space ``Z_i``
    (``z = Φ z‡ + τ``).  Nested conjugations are flattened into one.

    Parameters
    ----------
    base : Activation or str
    Omega, Phi : (n, n) array or sympy Matrix, optional (identity if None)
    gamma, tau : (n,) array or sympy column, optional (zero if None)

    Examples
    --------
    The sigmoid ↔ tanh change: ``2 σ(2 z) − 1 = tanh(z)``.

    >>> import numpy as np
    >>> phi = ConjugatedActivation("sigmoid", 2 * np.eye(2), -np.ones(2), 2 * np.eye(2), None)
    >>> z = np.array([[0.3, -1.2]])
    >>> bool(np.allclose(phi(z), np.tanh(z)))
    True
    """

    elementwise = False

    def __init__(self, base, Omega=None, gamma=None, Phi=None, tau=None):
        base = get_activation(base)
        if isinstance(base, ConjugatedActivation):
            # flatten: Ω2 (Ω1 φ(Φ1 (Φ2 z + τ2) + τ1) + γ1) + γ2
            inner = base
            n = inner.n
            sym = is_symbolic(Omega, gamma, Phi, tau, inner.Omega, inner.gamma, inner.Phi, inner.tau)
            O2 = inner._param(Omega, n, "matrix", sym)
            g2 = inner._param(gamma, n, "vector", sym)
            P2 = inner._param(Phi, n, "matrix", sym)
            t2 = inner._param(tau, n, "vector", sym)
            mm = (lambda a, b: a * b) if sym else (lambda a, b: a @ b)
            cv = as_exact_sym if sym else as_float_array
            O1, g1, P1, t1 = (cv(m) for m in (inner.Omega, inner.gamma, inner.Phi, inner.tau))
            O2, g2, P2, t2 = (cv(m) for m in (O2, g2, P2, t2))
            Omega, gamma = mm(O2, O1), mm(O2, g1) + g2
            Phi, tau = mm(P1, P2), mm(P1, t2) + t1
            base = inner.base
        self.base = base
        n = self._infer_n(Omega, gamma, Phi, tau)
        self.n = n
        sym = is_symbolic(Omega, gamma, Phi, tau)
        self.Omega = self._param(Omega, n, "matrix", sym)
        self.gamma = self._param(gamma, n, "vector", sym)
        self.Phi = self._param(Phi, n, "matrix", sym)
        self.tau = self._param(tau, n, "vector", sym)
        if sym:  # keep symbolic activations exact: numeric parts become Rationals
            self.Omega, self.Phi = as_exact_sym(self.Omega), as_exact_sym(self.Phi)
            self.gamma = sp.ImmutableMatrix(as_exact_sym(self.gamma).reshape(n, 1))
            self.tau = sp.ImmutableMatrix(as_exact_sym(self.tau).reshape(n, 1))
        for nm, m in (("Omega", self.Omega), ("Phi", self.Phi)):
            if tuple(m.shape) != (n, n):
                raise DimensionError(f"ConjugatedActivation: {nm} must be {n}×{n}, got {m.shape}")
        for nm, v in (("gamma", self.gamma), ("tau", self.tau)):
            if (v.shape[0] if not isinstance(v, sp.MatrixBase) else v.shape[0]) != n:
                raise DimensionError(f"ConjugatedActivation: {nm} must have length {n}")
        self.name = f"conj({base.name})"
        self._float_cache = None

    @staticmethod
    def _infer_n(*params):
        for p in params:
            if p is not None:
                shape = p.shape
                return int(shape[0])
        raise ConfigurationError(
            "ConjugatedActivation needs at least one of Omega, gamma, Phi, tau to know its width"
        )

    @staticmethod
    def _param(p, n, kind, symbolic=False):
        if p is None:
            if symbolic:
                return sp.ImmutableMatrix(sp.eye(n) if kind == "matrix" else sp.zeros(n, 1))
            return np.eye(n) if kind == "matrix" else np.zeros(n)
        if isinstance(p, sp.MatrixBase):
            m = sp.ImmutableMatrix(p)
            if kind == "vector" and m.shape[1] != 1:
                m = sp.ImmutableMatrix(m.reshape(m.shape[0] * m.shape[1], 1))
            return m
        if kind == "vector":
            return np.asarray(p, dtype=float).reshape(-1)
        return np.asarray(p, dtype=float)

    @property
    def is_symbolic(self) -> bool:
        return is_symbolic(self.Omega, self.gamma, self.Phi, self.tau)

    def _floats(self):
        if self._float_cache is None:
            self._float_cache = tuple(
                as_float_array(m).reshape(-1) if i in (1, 3) else as_float_array(m)
                for i, m in enumerate((self.Omega, self.gamma, self.Phi, self.tau))
            )
        return self._float_cache

    def _num(self, z):
        O, g, P, t = self._floats()
        return self.base._num(z @ P.T + t) @ O.T + g

    def _num_jac(self, z):
        O, _, P, t = self._floats()
        inner = self.base._num_jac(z @ P.T + t)  # (N, n, n)
        return O[None] @ inner @ P[None]

    def _syms(self):
        return tuple(as_exact_sym(m) for m in (self.Omega, self.gamma, self.Phi, self.tau))

    def _sym(self, z):
        O, g, P, t = self._syms()
        return sp.ImmutableMatrix(O * self.base._sym(sp.ImmutableMatrix(P * z + t)) + g)

    def _sym_jac(self, z):
        O, _, P, t = self._syms()
        return sp.ImmutableMatrix(O * self.base._sym_jac(sp.ImmutableMatrix(P * z + t)) * P)

    def __repr__(self) -> str:
        return f"<ConjugatedActivation Ω {self.base.name}(Φ z + τ) + γ, n={self.n}>"
