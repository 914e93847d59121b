"""Fields: one code path for exact (sympy) and floating-point (NumPy) coordinates.

Every other module of geomkfac is written once and asks a *field* object for the
few operations whose implementation differs between the two kinds of numbers:
conversion, matrix product, inverse, solve, Kronecker product, identity, zeros,
transpose, equality / zero test, rank, ``vec`` / ``unvec`` (column-stacking),
block-diagonal assembly and the smallest eigenvalue.

Coordinate conventions
----------------------
* :data:`NUMERIC` -- float64 :class:`numpy.ndarray`. Vectors are 1-D arrays,
  matrices 2-D arrays.
* :data:`SYMBOLIC` -- :class:`sympy.ImmutableMatrix` holding Rationals and symbols.
  Vectors are ``n x 1`` columns.

``vec`` is **column-stacking** (NumPy ``order='F'``), so ``vec([W b])`` ends with
the bias, and ``vec(G V A) = (A^T kron G) vec(V)``.

Equality is decided exactly on the symbolic side -- a numeric prefilter at
pseudo-random points rejects a nonzero difference, then the difference is decided
as a rational function of its symbols and atoms (by exact evaluation at random
points, a wrong "zero" with probability below 2**-100, or under ``zero_test("proof")``
by reduction to 0), and only if still undecided simplified (see
:func:`numerically_nonzero`, :func:`is_zero_by_random_evaluation`,
:func:`is_zero_as_rational_function`, :class:`zero_test`) -- and with a stated tolerance on the numeric side (:attr:`NumericField.rtol`,
:attr:`NumericField.atol`).

Floats given to the SYMBOLIC field stay sympy ``Float`` s unless the float policy is
``"rational"`` (:func:`float_policy`); display forms come from
:func:`simplify_for_display` and never feed back into computations.

Examples
--------
>>> import numpy as np, sympy
>>> from geomkfac.fields import NUMERIC, SYMBOLIC, field_of
>>> field_of(np.eye(2)) is NUMERIC, field_of(np.eye(2), sympy.Symbol("a")) is SYMBOLIC
(True, True)
>>> NUMERIC.vec(np.array([[1., 2.], [3., 4.]]))
array([1., 3., 2., 4.])
>>> SYMBOLIC.vec(sympy.Matrix([[1, 2], [3, 4]])).T
Matrix([[1, 3, 2, 4]])
>>> SYMBOLIC.inv(sympy.Matrix([[2, 1], [1, 1]]))
Matrix([
[ 1, -1],
[-1,  2]])
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterable, Sequence

import numpy as np
import scipy.linalg
import sympy

from geomkfac.errors import ConfigurationError, DimensionError, FieldMismatchError, GeomKFACError, NonFiniteError

__all__ = [
    "Field",
    "NumericField",
    "SymbolicField",
    "NUMERIC",
    "SYMBOLIC",
    "field_of",
    "is_sympy",
    "SingularMatrixError",
    "float_policy",
    "get_float_policy",
    "to_sympy_number",
    "numerically_nonzero",
    "is_zero_as_rational_function",
    "is_zero_by_random_evaluation",
    "zero_test",
    "get_zero_test",
    "simplify_for_display",
]


class SingularMatrixError(GeomKFACError, np.linalg.LinAlgError):
    """A field was asked to invert or solve with a singular matrix.

    The geometric objects translate it into the specific error of their context
    (:class:`~geomkfac.errors.SingularFrameChangeError`,
    :class:`~geomkfac.errors.DegenerateMetricError`); called directly, ``Field.inv`` and
    ``Field.solve`` raise it: check the matrix's rank, or regularize it.
    """


def is_sympy(obj: Any) -> bool:
    """True if ``obj`` is a sympy object or an object array holding one.

    >>> is_sympy(sympy.Rational(1, 2)), is_sympy(0.5), is_sympy([1, sympy.Symbol("x")])
    (True, False, True)
    """
    if isinstance(obj, (sympy.Basic, sympy.MatrixBase)):
        return True
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return any(isinstance(e, sympy.Basic) for e in obj.flat)
        return False
    if isinstance(obj, (list, tuple)):
        return any(is_sympy(e) for e in obj)
    return False


def field_of(*objs: Any) -> "Field":
    """The field for a computation mixing ``objs``: SYMBOLIC if any input is sympy.

    Objects carrying a ``field`` attribute (frames, changes of frame, values,
    metrics) contribute their own field.

    >>> field_of(1.0, np.ones(3)) is NUMERIC
    True
    >>> field_of(np.ones(3), sympy.Rational(1, 3)) is SYMBOLIC
    True
    """
    for obj in objs:
        t = type(obj)
        if t is np.ndarray:  # fast path: the common numeric case
            if obj.dtype != object:
                continue
            if any(isinstance(e, sympy.Basic) for e in obj.flat):
                return SYMBOLIC
            continue
        if obj is None or t is float or t is int:
            continue
        f = getattr(obj, "field", None)
        if isinstance(f, Field):
            if f.symbolic:
                return SYMBOLIC
            continue
        if is_sympy(obj):
            return SYMBOLIC
    return NUMERIC


class Field:
    """The few operations that differ between NumPy and sympy coordinates."""

    name = "field"
    symbolic = False

    def __repr__(self) -> str:
        return self.name.upper()

    def __reduce__(self):  # singletons survive pickling
        return (_field_by_name, (self.name,))


# --------------------------------------------------------------------------- numeric


class NumericField(Field):
    """Float64 NumPy arrays; vectors are 1-D.

    Tolerances: ``equal`` / ``is_zero`` use ``rtol = 1e-9`` and ``atol = 1e-9``:
    float64 carries ~1e-16 relative error, amplified by condition numbers up to ~1e6
    in typical random frames and dimension-sized sums, which leaves a wide margin
    below 1e-9 while still catching any genuine (order-one) discrepancy.
    """

    name = "numeric"
    symbolic = False
    #: relative tolerance of :meth:`equal` (see class docstring for the reason)
    rtol = 1e-9
    #: absolute tolerance of :meth:`equal` and :meth:`is_zero`
    atol = 1e-9

    # -- conversion
    def asarray(self, x: Any) -> np.ndarray:
        """Float64 array of any shape (sympy matrices keep their 2-D shape)."""
        if isinstance(x, np.ndarray) and x.dtype == np.float64:
            return x
        if isinstance(x, sympy.MatrixBase):
            if x.free_symbols:
                raise FieldMismatchError(
                    f"cannot convert a symbolic matrix with free symbols {sorted(map(str, x.free_symbols))} "
                    "to floats; substitute values first or use the SYMBOLIC field"
                )
            return np.array(x.evalf(), dtype=np.float64)
        try:
            raw = np.asarray(x)
            if raw.dtype == object and any(e is None for e in raw.flat):
                raise FieldMismatchError(
                    "cannot convert None to a number (NumPy would make it NaN); give every "
                    "coordinate a value"
                )
            return raw.astype(np.float64, copy=False)
        except FieldMismatchError:
            raise
        except (TypeError, ValueError) as exc:
            raise FieldMismatchError(
                f"cannot convert {type(x).__name__} to a float64 array ({exc}); "
                "pass numbers, or use the SYMBOLIC field for expressions"
            ) from exc

    def asmatrix(self, x: Any) -> np.ndarray:
        """2-D float64 array; a 0-d or 1-d input is refused."""
        a = self.asarray(x)
        if a.ndim != 2:
            raise DimensionError(f"expected a 2-D matrix, got an array of shape {a.shape}")
        return a

    def asvector(self, x: Any, dim: int | None = None) -> np.ndarray:
        """1-D float64 array; accepts 1-D input or an n x 1 / 1 x n matrix."""
        a = self.asarray(x)
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim != 1:
            raise DimensionError(f"expected a coordinate vector, got an array of shape {a.shape}")
        if dim is not None and a.shape[0] != dim:
            raise DimensionError(f"expected {dim} coordinates, got {a.shape[0]}")
        return a

    def scalar(self, x: Any) -> float:
        return float(np.asarray(x, dtype=np.float64).reshape(()))

    # -- algebra
    def matmul(self, a, b):
        return a @ b

    def dot(self, u, v) -> float:
        return float(np.dot(u, v))

    def inv(self, a):
        a = self.asmatrix(a)
        try:
            ainv = np.linalg.inv(a)
        except np.linalg.LinAlgError as exc:
            raise SingularMatrixError(str(exc)) from exc
        if not np.all(np.isfinite(ainv)):
            raise SingularMatrixError("inverse is not finite")
        return ainv

    def solve(self, a, b):
        try:
            return np.linalg.solve(a, b)
        except np.linalg.LinAlgError as exc:
            raise SingularMatrixError(str(exc)) from exc

    def kron(self, a, b):
        """``kron(a, b)`` of two matrices (by broadcasting: ``np.kron``'s general-rank
        machinery costs more than the product for the small factors met here)."""
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim != 2 or b.ndim != 2:
            return np.kron(a, b)
        (m, n), (p, q) = a.shape, b.shape
        return (a[:, None, :, None] * b[None, :, None, :]).reshape(m * p, n * q)

    def eye(self, n: int):
        return np.eye(n)

    def zeros(self, shape):
        return np.zeros(shape)

    def ones(self, shape):
        return np.ones(shape)

    def transpose(self, a):
        return a.T

    def hstack(self, blocks: Sequence):
        return np.hstack([np.atleast_2d(b) if np.ndim(b) != 1 else b[:, None] for b in blocks])

    def vstack(self, blocks: Sequence):
        return np.vstack(blocks)

    def concat(self, vectors: Sequence):
        """Stack coordinate vectors into one vector."""
        return np.concatenate([self.asvector(v) for v in vectors]) if len(vectors) else np.zeros(0)

    def split(self, v, sizes: Sequence[int]) -> list:
        return np.split(v, np.cumsum(sizes)[:-1])

    def column(self, v):
        """A vector as an ``n x 1`` matrix."""
        return np.asarray(v).reshape(-1, 1)

    def flatten(self, m):
        """An ``n x 1`` (or ``1 x n``) matrix as a vector."""
        return np.asarray(m).reshape(-1)

    def outer(self, u, v):
        return np.outer(u, v)

    def homogeneous(self, B, c):
        """``[[B, c], [0, 1]]``."""
        n = B.shape[0]
        H = np.zeros((n + 1, B.shape[1] + 1))
        H[:n, : B.shape[1]] = B
        H[:n, -1] = c
        H[n, -1] = 1.0
        return H

    # -- decisions
    def is_zero(self, x, atol: float | None = None) -> bool:
        """``max |x| <= atol`` (default :attr:`atol`)."""
        a = np.asarray(x, dtype=np.float64)
        return bool(a.size == 0 or np.max(np.abs(a)) <= (self.atol if atol is None else atol))

    def equal(self, a, b, rtol: float | None = None, atol: float | None = None) -> bool:
        """``np.allclose(a, b)`` with :attr:`rtol`, :attr:`atol` (shapes must agree)."""
        a = self.asarray(a)
        b = self.asarray(b)
        if a.shape != b.shape:
            if a.size == b.size and a.ndim + b.ndim == 3:  # vector vs column
                a, b = a.reshape(-1), b.reshape(-1)
            else:
                return False
        return bool(
            np.allclose(a, b, rtol=self.rtol if rtol is None else rtol, atol=self.atol if atol is None else atol)
        )

    def rank(self, m) -> int:
        """Numerical rank (NumPy's default SVD tolerance ``max(shape) * eps * s_max``)."""
        m = self.asmatrix(m)
        return int(np.linalg.matrix_rank(m)) if m.size else 0

    def det(self, m):
        return float(np.linalg.det(m))

    def min_eig(self, m) -> float:
        """Smallest eigenvalue of a symmetric matrix (``eigvalsh``)."""
        m = self.asmatrix(m)
        return float(np.linalg.eigvalsh(m)[0]) if m.size else float("inf")

    def eigvalsh(self, m) -> np.ndarray:
        return np.linalg.eigvalsh(self.asmatrix(m))

    def is_symmetric(self, m) -> bool:
        return self.equal(m, m.T)

    def psd_tolerance(self, m) -> float:
        """Eigenvalues above ``-n * eps * max|m| * 10`` count as nonnegative (rounding)."""
        m = np.asarray(m)
        return 10.0 * max(m.shape[0], 1) * np.finfo(np.float64).eps * (float(np.max(np.abs(m))) if m.size else 0.0)

    def is_psd(self, m) -> bool:
        """Symmetric ``m`` with ``min eig >= -psd_tolerance(m)``."""
        return bool(self.min_eig(m) >= -self.psd_tolerance(m))

    def is_nondegenerate(self, m) -> bool:
        """Full numerical rank (see :meth:`rank`)."""
        return self.rank(m) == m.shape[0]

    # -- vec
    def vec(self, m):
        """Column-stacking ``vec`` (``order='F'``)."""
        return np.asarray(m).reshape(-1, order="F")

    def unvec(self, v, shape):
        """Inverse of :meth:`vec`."""
        return np.asarray(v).reshape(shape, order="F")

    def block_diag(self, mats: Sequence):
        return scipy.linalg.block_diag(*mats) if len(mats) else np.zeros((0, 0))

    def symmetrize(self, m):
        return 0.5 * (m + m.T)


# --------------------------------------------------------------------------- symbolic


# --------------------------------------------------------------------------- float policy

class _Setting:
    """A module-wide choice: calling the class sets it until changed again; used as a
    context manager it restores the previous value on exit.  Subclasses name the store (a
    one-element list), the allowed values and how to describe them."""

    _store: list
    _choices: dict  # value -> what it means (for the error message)
    _what: str

    def __init__(self, value: str):
        if value not in self._choices:
            options = " or ".join(f"{k!r} ({v})" for k, v in self._choices.items())
            raise ConfigurationError(f"unknown {self._what} {value!r}; choose {options}")
        self._previous = self._store[-1]
        self._store[-1] = value

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._store[-1] = self._previous
        return False


_float_policy = ["float"]


def get_float_policy() -> str:
    """The current float policy of the SYMBOLIC field: ``"float"`` (default) or ``"rational"``.

    * ``"float"`` -- a Python/NumPy float that is not an integer becomes a sympy ``Float``
      (53-bit precision): what the user typed stays a float in symbolic results.
    * ``"rational"`` -- it becomes the exact binary Rational it denotes
      (``0.1 -> 3602879701896397/36028797018963968``), so that symbolic computations
      on float data are exact.

    In both policies an integer-valued float becomes an ``Integer`` (``2.0 -> 2``): it
    denotes that integer exactly, and displays as one.

    >>> get_float_policy()
    'float'
    """
    return _float_policy[-1]


class float_policy(_Setting):
    """Set the float policy (see :func:`get_float_policy`); usable as a context manager.

    ``float_policy("rational")`` called plainly sets the policy until changed again;
    ``with float_policy("rational"): ...`` restores the previous one on exit.

    >>> SYMBOLIC.asarray([0.5, 0.1]).T
    Matrix([[0.5, 0.1]])
    >>> with float_policy("rational"):
    ...     SYMBOLIC.asarray([0.5, 2.0]).T
    Matrix([[1/2, 2]])
    >>> get_float_policy()
    'float'
    """

    _store = _float_policy
    _choices = {"float": "keep floats as sympy Float", "rational": "exact binary rationals"}
    _what = "float policy"


def to_sympy_number(x: Any, policy: str | None = None) -> sympy.Expr:
    """A number as a sympy number under the float policy (default: the current one).

    Integers (and integer-valued floats) become ``Integer``; ``Fraction`` a ``Rational``;
    other floats a ``Float`` (policy ``"float"``) or their exact binary ``Rational``
    (policy ``"rational"``).

    >>> to_sympy_number(2.0), to_sympy_number(0.25), to_sympy_number(0.25, "rational")
    (2, 0.250000000000000, 1/4)
    """
    if isinstance(x, sympy.Basic):
        return x
    if isinstance(x, (bool, np.bool_)):
        return sympy.Integer(int(x))
    if isinstance(x, (int, np.integer)):
        return sympy.Integer(int(x))
    if isinstance(x, Fraction):
        return sympy.Rational(x.numerator, x.denominator)
    if isinstance(x, (float, np.floating)):
        xf = float(x)
        if not np.isfinite(xf):
            raise NonFiniteError(
                f"cannot convert {xf} to an exact (sympy) number; NaN and inf have no exact "
                "value: check the computation that produced it, or use the NUMERIC field"
            )
        if xf.is_integer():
            return sympy.Integer(int(xf))
        if (policy or _float_policy[-1]) == "rational":
            return sympy.Rational(xf)
        return sympy.Float(xf)
    if x is None:
        raise FieldMismatchError("cannot convert None to an exact number; give every entry a value")
    try:
        return sympy.sympify(x, strict=not isinstance(x, str))
    except (sympy.SympifyError, TypeError, ValueError) as exc:
        raise FieldMismatchError(
            f"cannot convert {type(x).__name__} {str(x)[:40]!r} to an exact number ({exc}); "
            "pass numbers or sympy expressions"
        ) from None


_to_sympy_number = to_sympy_number


# --------------------------------------------------------------------------- symbolic equality
#
# Policy (documented in SymbolicField): a difference is zero iff
#   1. it is not rejected by a numeric prefilter -- the expression DAG is evaluated with
#      30-digit mpmath arithmetic at two pseudo-random points of its free symbols; a value
#      above 1e-20 times the largest intermediate magnitude proves it nonzero;
#   2. it is zero as a rational function of its symbols and of its non-rational atoms
#      (tanh(5/6), exp(z), sqrt(2), ... each taken as a new indeterminate), decided by
#      exact evaluation of the DAG at random integer points (default, zero_test("random"))
#      or by evaluating it in the field QQ(gens) (zero_test("proof")).  Zero there is zero
#      for every value of the atoms;
#   3. otherwise (the atoms satisfy a relation, e.g. tanh(2x) and tanh(x)), by ``cancel``,
#      then ``trigsimp`` / ``simplify`` of the difference.

_PREFILTER_DPS = 30


def _nodes(e: sympy.Basic) -> set:
    """The distinct sub-expressions of ``e`` (a DAG walk: shared ones are visited once;
    ``free_symbols`` and ``has`` walk the tree, exponentially larger for network outputs)."""
    seen, stack = set(), [e]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(node.args)
    return seen


def _symbols_of(e) -> list:
    return sorted((n for n in _nodes(e) if n.is_Symbol), key=sympy.default_sort_key)


def _has_float(e) -> bool:
    return any(n.is_Float for n in _nodes(e))
_PREFILTER_REL = 1e-20


def _sample_value(sym: sympy.Symbol, rnd) -> Fraction:
    """A pseudo-random value respecting the symbol's sign / integer assumptions."""
    if sym.is_integer:
        v = Fraction(rnd.randint(2, 9))
    else:
        v = Fraction(rnd.randint(1009, 2999), 1511)
    if sym.is_negative or sym.is_nonpositive:
        v = -v
    elif not (sym.is_positive or sym.is_nonnegative) and rnd.random() < 0.5:
        v = -v
    return v


def _numeric_eval(e: sympy.Expr, values: dict, memo: dict | None = None):
    """``(value, scale)`` of ``e`` at ``values`` with mpmath, memoized on sub-expressions
    (pass one ``memo`` to share sub-expressions between several expressions)."""
    import mpmath

    memo = {} if memo is None else memo

    def ev(node):
        hit = memo.get(node)
        if hit is not None:
            return hit
        if node.is_Symbol:
            v = values[node]
            out = (v, abs(v))
        elif node.is_Rational:
            v = mpmath.mpf(node.p) / node.q
            out = (v, abs(v))
        elif node.is_Float:
            v = mpmath.mpf(node)
            out = (v, abs(v))
        elif node.is_Add:
            parts = [ev(a) for a in node.args]
            v = mpmath.fsum(p[0] for p in parts)
            out = (v, max(max(p[1] for p in parts), abs(v)))
        elif node.is_Mul:
            v, sc = mpmath.mpf(1), mpmath.mpf(1)
            for a in node.args:
                pv, ps = ev(a)
                v *= pv
                sc *= max(ps, abs(pv))
            out = (v, max(sc, abs(v)))
        elif node.is_Pow and node.exp.is_Integer:
            bv, bs = ev(node.base)
            v = bv ** int(node.exp)
            out = (v, max(abs(v), bs ** int(node.exp) if node.exp > 0 else abs(v)))
        else:
            args = [ev(a)[0] for a in node.args]
            r = node.func(*[sympy.Float(a, _PREFILTER_DPS) for a in args]).evalf(_PREFILTER_DPS)
            if not r.is_number or r.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
                raise ZeroDivisionError(f"cannot evaluate {node.func}")
            r = complex(r) if not r.is_real else r
            v = mpmath.mpf(r) if not isinstance(r, complex) else mpmath.mpc(r)
            out = (v, abs(v))
        memo[node] = out
        return out

    with mpmath.workdps(_PREFILTER_DPS):
        return ev(e)


def _any_numerically_nonzero(entries) -> bool:
    """One 30-digit evaluation of all ``entries`` at one point, sub-expressions shared:
    True when one of them is proven nonzero (the matrix prefilter)."""
    import random

    import mpmath

    syms = sorted(set().union(*[_symbols_of(e) for e in entries]), key=sympy.default_sort_key)
    rnd = random.Random(20240531)
    with mpmath.workdps(_PREFILTER_DPS):
        vals = {s: mpmath.mpf(v.numerator) / v.denominator for s in syms for v in [_sample_value(s, rnd)]}
    memo: dict = {}
    for e in entries:
        try:
            v, scale = _numeric_eval(e, vals, memo)
        except (ZeroDivisionError, TypeError, ValueError):
            continue
        if mpmath.isfinite(v) and mpmath.isfinite(scale) and abs(v) > _PREFILTER_REL * max(scale, 1):
            return True
    return False


def numerically_nonzero(e: sympy.Expr, points: int = 2) -> bool:
    """True when ``e`` is proven nonzero by evaluation at pseudo-random points.

    30-digit arithmetic; ``|e| > 1e-20 · (largest intermediate magnitude)`` counts as nonzero
    (rounding could only reach ~1e-28 of it).  ``False`` means "no evidence", not "zero".
    Deterministic (a fixed seed).

    >>> x = sympy.Symbol("x")
    >>> numerically_nonzero(sympy.sin(x) ** 2 + sympy.cos(x) ** 2 - 1), numerically_nonzero(x ** 2 - x)
    (False, True)
    """
    import random

    import mpmath

    rnd = random.Random(20240531)
    syms = _symbols_of(e)
    tried = 0
    for _ in range(4 * points):
        with mpmath.workdps(_PREFILTER_DPS):
            vals = {s: mpmath.mpf(v.numerator) / v.denominator for s in syms for v in [_sample_value(s, rnd)]}
        try:
            v, scale = _numeric_eval(e, vals)
        except (ZeroDivisionError, TypeError, ValueError):
            continue
        if not mpmath.isfinite(v) or not mpmath.isfinite(scale):
            continue
        if abs(v) > _PREFILTER_REL * max(scale, 1):
            return True
        tried += 1
        if tried >= points or not syms:
            break
    return False


def _rational_gens(e: sympy.Expr) -> list:
    """Symbols and non-rational atoms (function values, fractional powers, …) of ``e``."""
    gens, seen, stack = {}, set(), [e]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.is_Symbol:
            gens[node] = None
        elif node.is_Add or node.is_Mul or (node.is_Pow and node.exp.is_Integer):
            stack.extend(node.args)
        elif node.is_Number:
            continue
        else:
            gens[node] = None
    return sorted(gens, key=sympy.default_sort_key)


def is_zero_as_rational_function(e: sympy.Expr):
    """True when ``e`` is 0 as a rational function of its symbols and atoms, else False.

    The atoms (``tanh(5/6)``, ``exp(z)``, …) are new indeterminates; the expression is
    evaluated bottom-up, memoized on shared sub-expressions, in the fraction field
    ``QQ(gens)``, so every intermediate is a reduced fraction.  Floats count as the
    rationals they denote.  ``None`` when the expression has no such form (e.g. a 0/0).

    >>> x, y = sympy.symbols("x y")
    >>> is_zero_as_rational_function(1 / (x + y) - y / (x * y + y ** 2))
    True
    >>> is_zero_as_rational_function(sympy.tanh(x) - 1)
    False
    """
    gens = _rational_gens(e)
    if not gens:
        K, index = sympy.QQ, {}
    else:
        K = sympy.QQ.frac_field(*[sympy.Dummy() for _ in gens])
        index = {g: K.gens[i] for i, g in enumerate(gens)}
    try:
        value = _evaluate_rational(e, index, lambda p, q: K.convert(sympy.QQ(p, q)), K.zero, K.one)
    except (ZeroDivisionError, TypeError, sympy.polys.polyerrors.PolynomialError):
        return None
    return not value


def _evaluate_rational(e: sympy.Expr, leaves: dict, number, zero, one, memo: dict | None = None):
    """Evaluate a rational expression bottom-up, memoized on shared sub-expressions.

    ``leaves`` maps the generators (symbols, transcendental atoms) to their values,
    ``number(p, q)`` makes the value of a rational ``p/q`` (floats count as the rationals
    they denote), ``zero`` and ``one`` are the units of the arithmetic used.  Sums,
    products and integer powers only; anything else raises ``TypeError``, a division by
    zero ``ZeroDivisionError``.  One evaluator for the two zero tests: exact values in the
    fraction field ``QQ(gens)`` (a proof) and ``Fraction`` values at random points.
    """
    memo = {} if memo is None else memo

    def ev(node):
        hit = memo.get(node)
        if hit is not None:
            return hit
        v = leaves.get(node)
        if v is not None:
            out = v
        elif node.is_Rational:
            out = number(node.p, node.q)
        elif node.is_Float:
            r = sympy.Rational(node)
            out = number(r.p, r.q)
        elif node.is_Add:
            out = zero
            for a in node.args:
                out = out + ev(a)
        elif node.is_Mul:
            out = one
            for a in node.args:
                out = out * ev(a)
        elif node.is_Pow and node.exp.is_Integer:
            base, k = ev(node.base), int(node.exp)
            if k < 0:
                if not base:
                    raise ZeroDivisionError
                out = one / base ** (-k)
            else:
                out = base ** k
        else:
            raise TypeError(f"not a rational expression of its generators: {type(node).__name__}")
        memo[node] = out
        return out

    return ev(e)


def _degree_bound(e: sympy.Expr, gens: list) -> int:
    """An upper bound on the total degree of the numerator of ``e`` as a rational function
    of ``gens`` (no cancellation assumed): Add ``max(n_i + d - d_i)``, Mul sums, Pow scales."""
    gset = set(gens)
    memo: dict = {}

    def ev(node):
        hit = memo.get(node)
        if hit is not None:
            return hit
        if node in gset:
            out = (1, 0)
        elif node.is_Number:
            out = (0, 0)
        elif node.is_Add:
            parts = [ev(x) for x in node.args]
            d = sum(p[1] for p in parts)
            out = (max(p[0] + d - p[1] for p in parts), d)
        elif node.is_Mul:
            parts = [ev(x) for x in node.args]
            out = (sum(p[0] for p in parts), sum(p[1] for p in parts))
        else:  # integer power
            n, d = ev(node.base)
            k = int(node.exp)
            out = (n * k, d * k) if k >= 0 else (d * -k, n * -k)
        memo[node] = out
        return out

    return ev(e)[0]


def _exact_eval(e: sympy.Expr, values: dict, memo: dict | None = None) -> Fraction:
    """``e`` at rational ``values`` of its generators, exactly, memoized on sub-expressions
    (pass one ``memo`` to share them between expressions evaluated at the same point)."""
    return _evaluate_rational(e, values, Fraction, Fraction(0), Fraction(1), memo)


#: Schwartz-Zippel sample range: generators take independent uniform values in [1, 2**64]
_PIT_BITS = 64
#: error probability bound of a randomized zero decision: 2**-_PIT_SECURITY
_PIT_SECURITY = 100


def _random_zero_entries(entries: list, seed: int = 0) -> list:
    """:func:`is_zero_by_random_evaluation` of several expressions at shared points (their
    common sub-expressions evaluated once per point): one ``True/False/None`` per entry."""
    import math
    import random

    gens = sorted(set().union(*[_rational_gens(e) for e in entries]), key=sympy.default_sort_key)
    D = max([_degree_bound(e, gens) for e in entries] + [1])
    per_point = _PIT_BITS - math.log2(D)
    if per_point <= 1:
        return [None] * len(entries)
    points = math.ceil(_PIT_SECURITY / per_point)
    rnd = random.Random(seed)
    state = [True] * len(entries)
    counts = [0] * len(entries)
    for _ in range(4 * points):
        values = {g: Fraction(rnd.randint(1, 2 ** _PIT_BITS)) for g in gens}
        memo: dict = {}
        for k, e in enumerate(entries):
            if state[k] is not True or counts[k] >= points:
                continue
            try:
                if _exact_eval(e, values, memo) != 0:
                    state[k] = False
                else:
                    counts[k] += 1
            except ZeroDivisionError:
                continue
        if all(st is False or c >= points for st, c in zip(state, counts)):
            break
    return [st if st is False or c >= points else None for st, c in zip(state, counts)]


def is_zero_by_random_evaluation(e: sympy.Expr, seed: int = 0):
    """Decide ``e == 0`` as a rational function of its symbols and atoms, by exact
    evaluation at random integer points (Schwartz-Zippel identity testing).

    The generators (symbols and non-rational atoms such as ``tanh(5/6)``) take independent
    uniform integer values in ``[1, 2**64]``; the expression DAG is evaluated exactly with
    :class:`fractions.Fraction`, memoized on shared sub-expressions.  A nonzero value
    proves the rational function nonzero (``False``).  If the numerator is a nonzero
    polynomial of total degree ``≤ D`` (bounded bottom-up, no cancellation assumed), one
    point finds 0 with probability ``≤ D / 2**64``; enough points are taken for the
    probability of a wrong ``True`` to be below ``2**-100``.  ``None`` when no point
    avoids every pole.

    >>> x, y = sympy.symbols("x y")
    >>> is_zero_by_random_evaluation((x + y) ** 2 - x ** 2 - 2 * x * y - y ** 2)
    True
    >>> is_zero_by_random_evaluation(sympy.tanh(x) * y - y * sympy.tanh(y))
    False
    """
    import math
    import random

    gens = _rational_gens(e)
    if not gens:
        try:
            return _exact_eval(e, {}) == 0
        except ZeroDivisionError:
            return None
    D = max(_degree_bound(e, gens), 1)
    per_point = _PIT_BITS - math.log2(D)
    if per_point <= 1:
        return None
    points = math.ceil(_PIT_SECURITY / per_point)
    rnd = random.Random(seed)
    done = 0
    for _ in range(4 * points):
        values = {g: Fraction(rnd.randint(1, 2 ** _PIT_BITS)) for g in gens}
        try:
            v = _exact_eval(e, values)
        except ZeroDivisionError:
            continue
        if v != 0:
            return False
        done += 1
        if done >= points:
            return True
    return None


_zero_test = ["random"]


def get_zero_test() -> str:
    """How the SYMBOLIC field decides that a difference is zero (see :class:`zero_test`).

    >>> get_zero_test()
    'random'
    """
    return _zero_test[-1]


class zero_test(_Setting):
    """Choose how an exact zero is decided; usable as a context manager.

    Both modes first run the numeric prefilter (:func:`numerically_nonzero`), which
    rejects a nonzero difference in milliseconds, and end, for atoms that satisfy
    relations (``tanh(2x)`` and ``tanh(x)``), with ``cancel`` / ``trigsimp`` / ``simplify``.
    In between:

    * ``"random"`` (default) -- :func:`is_zero_by_random_evaluation`: exact rational
      evaluation at random points, a wrong "zero" has probability below ``2**-100``;
      fast (the 2-2-1 tanh K-FAC update in well under a second);
    * ``"proof"`` -- :func:`is_zero_as_rational_function`: the difference is reduced to 0
      in the field of rational functions, a proof, but reduced fractions can take minutes
      on large network expressions.

    >>> x = sympy.Symbol("x")
    >>> with zero_test("proof"):
    ...     SYMBOLIC.is_zero(1 / (x + 1) - x / (x ** 2 + x))
    True
    """

    _store = _zero_test
    _choices = {"random": "exact evaluation at random points", "proof": "reduction to zero"}
    _what = "zero test"


#: relative size below which a difference of expressions holding Floats counts as zero
FLOAT_RTOL = 1e-10


def _fallback_is_zero(e: sympy.Expr) -> bool:
    """The slow route, for atoms that satisfy relations: cancel, then trigsimp / simplify."""
    c = sympy.cancel(e)
    if c == 0:
        return True
    if c.has(*_TRIG):
        if sympy.trigsimp(c) == 0:
            return True
    return bool(sympy.simplify(c) == 0)


def _float_is_zero(e: sympy.Expr) -> bool:
    """Zero up to the Floats' precision: ``|e| <= FLOAT_RTOL · scale`` at sample points."""
    import random

    import mpmath

    rnd = random.Random(7)
    syms = _symbols_of(e)
    for _ in range(3):
        with mpmath.workdps(_PREFILTER_DPS):
            vals = {s: mpmath.mpf(v.numerator) / v.denominator for s in syms for v in [_sample_value(s, rnd)]}
        try:
            v, scale = _numeric_eval(e, vals)
        except (ZeroDivisionError, TypeError, ValueError):
            continue
        if abs(v) > FLOAT_RTOL * max(scale, 1):
            return False
    return True


def _expr_is_zero(e: sympy.Expr, prefiltered: bool = False) -> bool:
    """Exact zero test: numeric prefilter (skipped when the caller ran it), then the zero
    test of :class:`zero_test`, then simplification; expressions with Floats: zero up to
    :data:`FLOAT_RTOL`."""
    if e == 0:
        return True
    if e.is_Number:
        return abs(float(e)) <= FLOAT_RTOL if e.is_Float else False
    if not prefiltered:
        if _has_float(e):
            return _float_is_zero(e)
        if numerically_nonzero(e):
            return False
    if _zero_test[-1] == "random":
        zero = is_zero_by_random_evaluation(e)
    else:
        zero = is_zero_as_rational_function(e)
    if zero:
        return True
    return _fallback_is_zero(e)


def _lu_zero(e):
    """``iszerofunc`` for sympy's LU: decide exactly, treat undecidable as nonzero."""
    return _expr_is_zero(e)


# --------------------------------------------------------------------------- display simplification

_TRIG = (sympy.sin, sympy.cos, sympy.tan, sympy.cot, sympy.sec, sympy.csc,
         sympy.sinh, sympy.cosh, sympy.tanh, sympy.coth)


def simplify_for_display(e):
    """The display form of an entry (or of every entry of a matrix), chosen by kind.

    * numbers and symbols: unchanged;
    * rational functions of symbols: ``cancel`` (one reduced fraction);
    * expressions with trigonometric / hyperbolic functions: ``trigsimp`` after ``cancel``;
    * anything else (exp, log, …): ``cancel`` with the atoms as generators.

    Used by the displays and never by a computation: results keep the form they were
    computed in.

    >>> t = sympy.Symbol("t")
    >>> simplify_for_display((sympy.sin(t) ** 2 + sympy.cos(t) ** 2) ** 2)
    1
    >>> simplify_for_display(1 / (1 / t + 1))
    t/(t + 1)
    """
    if isinstance(e, sympy.MatrixBase):
        return sympy.ImmutableMatrix(e.applyfunc(simplify_for_display))
    if not isinstance(e, sympy.Basic):
        return e
    if e.is_Atom:
        return e
    if e.has(*_TRIG):
        return sympy.trigsimp(sympy.cancel(e))
    if e.has(sympy.Float):
        return e
    return sympy.cancel(e)


class SymbolicField(Field):
    """sympy ``ImmutableMatrix`` with exact entries; vectors are ``n x 1`` columns."""

    name = "symbolic"
    symbolic = True

    # -- conversion
    def asarray(self, x: Any) -> sympy.ImmutableMatrix:
        """ImmutableMatrix; a 1-D input becomes a column; numbers are converted exactly."""
        if isinstance(x, sympy.ImmutableMatrix):
            return x
        if isinstance(x, sympy.MatrixBase):
            return sympy.ImmutableMatrix(x)
        if isinstance(x, np.ndarray):
            if x.ndim == 0:
                return sympy.ImmutableMatrix([[_to_sympy_number(x.item())]])
            if x.ndim == 1:
                return sympy.ImmutableMatrix([[_to_sympy_number(e)] for e in x.tolist()])
            if x.ndim == 2:
                return sympy.ImmutableMatrix([[_to_sympy_number(e) for e in row] for row in x.tolist()])
            raise DimensionError(f"expected at most 2 dimensions, got an array of shape {x.shape}")
        if isinstance(x, (list, tuple)):
            if len(x) and all(isinstance(r, (list, tuple, np.ndarray, sympy.MatrixBase)) for r in x):
                rows = [[_to_sympy_number(e) for e in (r if not isinstance(r, sympy.MatrixBase) else list(r))] for r in x]
                return sympy.ImmutableMatrix(rows) if rows else sympy.ImmutableMatrix(0, 0, [])
            return sympy.ImmutableMatrix([[_to_sympy_number(e)] for e in x]) if len(x) else sympy.ImmutableMatrix(0, 1, [])
        return sympy.ImmutableMatrix([[_to_sympy_number(x)]])

    def asmatrix(self, x: Any) -> sympy.ImmutableMatrix:
        if isinstance(x, np.ndarray) and x.ndim != 2:
            raise DimensionError(f"expected a 2-D matrix, got an array of shape {x.shape}")
        return self.asarray(x)

    def asvector(self, x: Any, dim: int | None = None) -> sympy.ImmutableMatrix:
        m = self.asarray(x)
        if m.cols != 1:
            if m.rows == 1:
                m = m.T
            else:
                raise DimensionError(f"expected a coordinate vector, got a {m.rows}x{m.cols} matrix")
        if dim is not None and m.rows != dim:
            raise DimensionError(f"expected {dim} coordinates, got {m.rows}")
        return m

    def scalar(self, x: Any) -> sympy.Expr:
        if isinstance(x, sympy.MatrixBase):
            if x.shape != (1, 1):
                raise DimensionError(f"expected a 1x1 matrix, got {x.shape}")
            return x[0, 0]
        return _to_sympy_number(x)

    # -- algebra
    def matmul(self, a, b):
        return sympy.ImmutableMatrix(a * b)

    def dot(self, u, v) -> sympy.Expr:
        return (u.T * v)[0, 0]

    def inv(self, a):
        """Exact inverse by LU (adjugate for 2 x 2); never simplifies eagerly."""
        a = self.asmatrix(a)
        n = a.rows
        if n != a.cols:
            raise DimensionError(f"cannot invert a non-square {a.rows}x{a.cols} matrix")
        if n == 0:
            return a
        if n <= 2:
            d = a.det(method="berkowitz")
            if _expr_is_zero(d):
                raise SingularMatrixError("determinant is 0")
            return sympy.ImmutableMatrix(a.adjugate() / d)
        try:
            return sympy.ImmutableMatrix(a.inv(method="LU", iszerofunc=_lu_zero))
        except (ValueError, ZeroDivisionError) as exc:
            raise SingularMatrixError(str(exc)) from exc

    def solve(self, a, b):
        try:
            return sympy.ImmutableMatrix(sympy.Matrix(a).LUsolve(sympy.Matrix(b), iszerofunc=_lu_zero))
        except (ValueError, ZeroDivisionError) as exc:
            raise SingularMatrixError(str(exc)) from exc

    def kron(self, a, b):
        return sympy.ImmutableMatrix(sympy.kronecker_product(sympy.Matrix(a), sympy.Matrix(b)))

    def eye(self, n: int):
        return sympy.ImmutableMatrix(sympy.eye(n))

    def zeros(self, shape):
        if isinstance(shape, int):
            shape = (shape, 1)
        return sympy.ImmutableMatrix(sympy.zeros(*shape))

    def ones(self, shape):
        if isinstance(shape, int):
            shape = (shape, 1)
        return sympy.ImmutableMatrix(sympy.ones(*shape))

    def transpose(self, a):
        return a.T

    def hstack(self, blocks: Sequence):
        return sympy.ImmutableMatrix(sympy.Matrix.hstack(*[sympy.Matrix(b) for b in blocks]))

    def vstack(self, blocks: Sequence):
        return sympy.ImmutableMatrix(sympy.Matrix.vstack(*[sympy.Matrix(b) for b in blocks]))

    def concat(self, vectors: Sequence):
        if not len(vectors):
            return sympy.ImmutableMatrix(0, 1, [])
        return self.vstack([self.asvector(v) for v in vectors])

    def split(self, v, sizes: Sequence[int]) -> list:
        out, start = [], 0
        for s in sizes:
            out.append(sympy.ImmutableMatrix(v[start : start + s, :]))
            start += s
        return out

    def column(self, v):
        return self.asvector(v)

    def flatten(self, m):
        return self.asvector(sympy.Matrix(m).reshape(len(m), 1))

    def outer(self, u, v):
        return sympy.ImmutableMatrix(u * v.T)

    def homogeneous(self, B, c):
        n = B.rows
        bottom = sympy.Matrix.hstack(sympy.zeros(1, B.cols), sympy.ones(1, 1))
        top = sympy.Matrix.hstack(sympy.Matrix(B), sympy.Matrix(c))
        return sympy.ImmutableMatrix(sympy.Matrix.vstack(top, bottom)) if n >= 0 else None

    # -- decisions
    def is_zero(self, x, atol: float | None = None) -> bool:
        """Exact: every entry is zero (numeric prefilter on all entries first, then the
        zero test of :class:`zero_test`, then simplification; see the module docstring)."""
        if isinstance(x, sympy.MatrixBase):
            entries = [e for e in x if e != 0]
            # the numeric prefilter on every entry first: a nonzero one rejects in milliseconds
            exact = [e for e in entries if not _has_float(e)]
            if any(e.is_Number for e in exact) or (exact and _any_numerically_nonzero(exact)):
                return False
            floats = [e for e in entries if not any(e is f for f in exact)]
            if not all(_float_is_zero(e) for e in floats):
                return False
            if _zero_test[-1] == "random" and exact:
                decided = _random_zero_entries(exact)
                return all(d or _fallback_is_zero(e) for d, e in zip(decided, exact))
            return all(_expr_is_zero(e, prefiltered=True) for e in exact)
        return _expr_is_zero(_to_sympy_number(x))

    def equal(self, a, b, rtol=None, atol=None) -> bool:
        """Exact: ``a - b`` is zero entrywise (shapes must agree)."""
        if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase) or isinstance(a, (np.ndarray, list)):
            a, b = self.asarray(a), self.asarray(b)
            if a.shape != b.shape:
                if a.shape == b.T.shape and 1 in a.shape:
                    b = b.T
                else:
                    return False
            return self.is_zero(a - b)
        return _expr_is_zero(_to_sympy_number(a) - _to_sympy_number(b))

    def rank(self, m) -> int:
        m = sympy.Matrix(m)
        if not m.rows or not m.cols:
            return 0
        return int(m.rank(iszerofunc=_lu_zero))

    def det(self, m):
        return sympy.Matrix(m).det(method="berkowitz")

    def min_eig(self, m):
        """Smallest eigenvalue: a float for numeric entries, ``Min(...)`` with symbols."""
        m = sympy.Matrix(m)
        if not m.rows:
            return float("inf")
        if not m.free_symbols:
            return float(np.linalg.eigvalsh(np.array(m.evalf(30), dtype=np.float64))[0])
        return sympy.Min(*m.eigenvals().keys())

    def eigvalsh(self, m):
        m = sympy.Matrix(m)
        if m.free_symbols:
            raise FieldMismatchError("numeric eigenvalues of a matrix with free symbols; substitute values first")
        return np.linalg.eigvalsh(np.array(m.evalf(30), dtype=np.float64))

    def is_symmetric(self, m) -> bool:
        return self.equal(m, m.T)

    def is_psd(self, m) -> bool | None:
        """Exact PSD test of a symmetric matrix, or ``None`` when it cannot be decided.

        A real-rooted polynomial ``t^n + c_1 t^{n-1} + ... + c_n`` has only nonnegative
        roots iff ``(-1)^k c_k >= 0`` for all k (Descartes' rule of signs), applied to
        the characteristic polynomial.
        """
        m = sympy.Matrix(m)
        if not m.rows:
            return True
        t = sympy.Dummy("t")
        coeffs = m.charpoly(t).all_coeffs()
        undecided = False
        for k, c in enumerate(coeffs):
            s = sympy.cancel((-1) ** k * c)
            nonneg = s.is_nonnegative
            if nonneg is None and s.is_number:
                nonneg = bool(sympy.N(s, 50) >= 0)
            if nonneg is False:
                return False
            if nonneg is None:
                undecided = True
        return None if undecided else True

    def is_nondegenerate(self, m) -> bool:
        """Determinant not identically zero."""
        return not _expr_is_zero(self.det(m))

    # -- vec
    def vec(self, m):
        """Column-stacking ``vec``."""
        m = sympy.Matrix(m)
        return sympy.ImmutableMatrix(m.T.reshape(m.rows * m.cols, 1))

    def unvec(self, v, shape):
        rows, cols = shape
        return sympy.ImmutableMatrix(sympy.Matrix(v).reshape(cols, rows).T)

    def block_diag(self, mats: Sequence):
        if not len(mats):
            return sympy.ImmutableMatrix(0, 0, [])
        return sympy.ImmutableMatrix(sympy.diag(*[sympy.Matrix(m) for m in mats]))

    def symmetrize(self, m):
        return m


NUMERIC = NumericField()
SYMBOLIC = SymbolicField()


def _field_by_name(name: str) -> Field:
    return {"numeric": NUMERIC, "symbolic": SYMBOLIC}[name]


def common_field(fields: Iterable[Field]) -> Field:
    """SYMBOLIC if any of ``fields`` is symbolic, else NUMERIC."""
    return SYMBOLIC if any(f.symbolic for f in fields) else NUMERIC
