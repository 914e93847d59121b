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

Equality is decided exactly on the symbolic side (the difference is ``cancel``-ed,
then ``simplify``-ed only if still undecided) and with a stated tolerance on the
numeric side (:attr:`NumericField.rtol`, :attr:`NumericField.atol`).

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

from geomkfac.errors import DimensionError, FieldMismatchError, GeomKFACError, NonFiniteError

__all__ = [
    "Field",
    "NumericField",
    "SymbolicField",
    "NUMERIC",
    "SYMBOLIC",
    "field_of",
    "is_sympy",
    "SingularMatrixError",
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


def _to_sympy_number(x: Any) -> sympy.Expr:
    """Exact conversion: ints and floats become Integers / Rationals (floats exactly)."""
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
        return sympy.Rational(xf)
    if x is None:
        raise FieldMismatchError("cannot convert None to an exact number; give every entry a value")
    try:
        return sympy.sympify(x, strict=not isinstance(x, str))
    except (sympy.SympifyError, TypeError, ValueError) as exc:
        raise FieldMismatchError(
            f"cannot convert {type(x).__name__} {str(x)[:40]!r} to an exact number ({exc}); "
            "pass numbers or sympy expressions"
        ) from None


def _expr_is_zero(e: sympy.Expr) -> bool:
    """Exact zero test: cheap checks, then ``cancel``, then ``simplify``."""
    if e == 0:
        return True
    z = getattr(e, "is_zero", None)
    if z is not None:
        return bool(z)
    c = sympy.cancel(sympy.together(e))
    if c == 0:
        return True
    if c.is_number and c.is_zero is not None:
        return bool(c.is_zero)
    if not c.free_symbols:
        return bool(sympy.simplify(c) == 0)
    if c.is_rational_function():
        return False
    return bool(sympy.simplify(c) == 0)


def _lu_zero(e):
    """``iszerofunc`` for sympy's LU: decide exactly, treat undecidable as nonzero."""
    return _expr_is_zero(e)


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
        """Exact: every entry ``cancel``s (or ``simplify``s) to 0."""
        if isinstance(x, sympy.MatrixBase):
            return all(_expr_is_zero(e) for e in x)
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
