"""Metrics: symmetric positive-semidefinite bilinear forms, and how to build them.

A :class:`Metric` is made from its matrix in one frame and gives its matrix in any
other frame by the covariant law (paper-notes §1, Appendix B.4)

    ``G_κ = B⁻ᵀ G_ι B⁻¹``     (``y = B x + c`` the change from ι to κ),

cached per frame, so ``g(u, v)`` is the same number in every frame.

Constructions (paper B.4, B.5, §3.1):

* :func:`pullback` -- ``φ*g = Jᵀ G J`` along an affine or smooth map (B.4);
* :func:`additive_metric` -- the metric on a product, block diagonal in product
  frames (Eqn. B.2), kept as blocks (:class:`AdditiveMetric`);
* :class:`SecondMoment` / :func:`second_moment` -- ``E[α ⊗ α]``, a contravariant
  symmetric 2-tensor on the homogeneous extension: ``E[ā āᵀ]``, transforming as
  ``[B]_H M [B]_Hᵀ``;
* :class:`KroneckerMetric` (alias :data:`tensor_product`) -- ``E[α ⊗ α] ⊗ g`` on
  ``Aff(A, Z)``, kept factored: in an induced frame its matrix is ``kron(A, G)``
  (column-stacking ``vec``), and ``g⁻¹`` is applied as ``vec(G⁻¹ V A⁻¹)``;
* :func:`expectation` -- the weighted mean of metrics;
* :func:`natural_gradient` -- ``g⁻¹ ω`` (the musical isomorphism ``♯``).

Examples
--------
One metric, two frames:

>>> import numpy as np
>>> from geomkfac.spaces import AffineSpace, Vector
>>> A = AffineSpace(2, "A")
>>> g = Metric(A.reference_frame, np.array([[2., 0.], [0., 1.]]))
>>> kappa = A.reference_frame.derive(np.array([[1., 1.], [0., 1.]]), np.array([5., 0.]), name="κ")
>>> g.matrix(kappa)
array([[ 2., -2.],
       [-2.,  3.]])
>>> u = Vector(A.reference_frame, [1., 2.])
>>> float(g(u, u)), float(Metric(kappa, g.matrix(kappa))(Vector(kappa, u.coords(kappa)), Vector(kappa, u.coords(kappa))))
(6.0, 6.0)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import sympy

from geomkfac import display as _display
from geomkfac.errors import (
    ConfigurationError,
    DegenerateMetricError,
    DimensionError,
    NotPSDError,
    NotSymmetricError,
    SpaceMismatchError,
)
from geomkfac.fields import NUMERIC, SYMBOLIC, Field, SingularMatrixError, common_field, field_of
from geomkfac.maps import AffineMap, AffineMaps, Map
from geomkfac.spaces import AffineSpace, Covector, Frame, Point, ProductSpace, Vector

__all__ = [
    "Metric",
    "AdditiveMetric",
    "KroneckerMetric",
    "SecondMoment",
    "Pullback",
    "pullback",
    "additive_metric",
    "tensor_product",
    "second_moment",
    "expectation",
    "natural_gradient",
]


def _is_scalar(s) -> bool:
    return isinstance(s, (int, float, np.number)) or (isinstance(s, sympy.Expr) and not isinstance(s, sympy.MatrixBase))


def _check_nonneg_scalar(s, what: str) -> None:
    if isinstance(s, sympy.Expr):
        if s.is_negative:
            raise NotPSDError(f"{what} by the negative number {s} would not be positive semidefinite")
    elif float(s) < 0:
        raise NotPSDError(f"{what} by the negative number {s} would not be positive semidefinite; use a scalar >= 0")


class _SymmetricTensor(_display.Displayable):
    """Shared machinery: a symmetric matrix in a frame, transformed and cached per frame."""

    _label = "tensor"

    def _setup(self, frame: Frame, field: Field) -> None:
        if not isinstance(frame, Frame):
            raise SpaceMismatchError(f"{type(self).__name__} needs a Frame, got {type(frame).__name__}")
        self._frame = frame
        self._field = field
        self._matrices: dict = {}
        self._eig = None

    # -- basic
    @property
    def frame(self) -> Frame:
        """The frame the object was made in."""
        return self._frame

    @property
    def space(self) -> AffineSpace:
        return self._frame.space

    @property
    def field(self) -> Field:
        return self._field

    def _size(self) -> int:
        return self.space.dim

    def _validate(self, M, check: bool):
        field = self._field
        n = self._size()
        if tuple(M.shape) != (n, n):
            raise DimensionError(
                f"a {self._label} on {self.space.name} needs a ({n}, {n}) matrix, got {tuple(M.shape)}"
            )
        if not check:
            return M
        if not field.is_symmetric(M):
            if field.symbolic:
                detail = "its transpose differs exactly"
            else:
                detail = f"max |M − Mᵀ| = {float(np.max(np.abs(M - M.T))):.3g}"
            raise NotSymmetricError(
                f"the matrix of a {self._label} on {self.space.name} must be symmetric ({detail}); "
                "symmetrize it, e.g. (M + M.T) / 2, if the asymmetry is rounding"
            )
        psd = field.is_psd(M)
        if psd is False:
            raise NotPSDError(
                f"the matrix of a {self._label} on {self.space.name} is not positive semidefinite "
                f"(smallest eigenvalue {field.min_eig(M)}); a metric needs g(u, u) >= 0 for every u"
            )
        return field.symmetrize(M)

    def matrix(self, frame: Frame | None = None):
        """The matrix in ``frame`` (default: the frame it was made in); cached per frame."""
        if frame is None:
            frame = self._frame
        hit = self._matrices.get(frame)
        if hit is not None:
            return hit
        if not isinstance(frame, Frame) or frame.space is not self.space:
            where = frame.space.name if isinstance(frame, Frame) else type(frame).__name__
            raise SpaceMismatchError(f"a {self._label} on {self.space.name} has no matrix in a frame of {where}")
        M = self._compute(frame)
        self._matrices[frame] = M
        return M

    def _compute(self, frame: Frame):
        raise NotImplementedError

    # -- spectral queries
    def _eigs(self):
        if self._eig is None:
            self._eig = NUMERIC.eigvalsh(NUMERIC.asarray(self.matrix(self._frame)))
        return self._eig

    def _rank_tol(self, eigs) -> float:
        return max(len(eigs), 1) * np.finfo(np.float64).eps * (float(np.max(np.abs(eigs))) if len(eigs) else 0.0)

    def is_symmetric(self) -> bool:
        """Whether the matrix (in its own frame) is symmetric (exactly / within tolerance)."""
        M = self.matrix(self._frame)
        return self._field.is_symmetric(M)

    def is_psd(self) -> bool | None:
        """Positive semidefinite? (symbolic: exact, ``None`` if undecidable with symbols)."""
        M = self.matrix(self._frame)
        if self._field.symbolic:
            return self._field.is_psd(M)
        e = self._eigs()
        return bool(len(e) == 0 or e[0] >= -NUMERIC.psd_tolerance(M))

    def rank(self) -> int:
        """Rank (numeric: eigenvalues above ``n·eps·max|λ|``, as NumPy's ``matrix_rank``)."""
        if self._field.symbolic:
            return self._field.rank(self.matrix(self._frame))
        e = self._eigs()
        return int(np.sum(e > self._rank_tol(e)))

    def is_nondegenerate(self) -> bool:
        """Full rank (numeric: see :meth:`rank`; symbolic: determinant not identically 0)."""
        if self._field.symbolic:
            return self._field.is_nondegenerate(self.matrix(self._frame))
        return self.rank() == self._size()

    def min_eigenvalue(self, frame: Frame | None = None):
        """Smallest eigenvalue of the matrix in ``frame`` (frame-dependent unless it is 0)."""
        if frame is None or frame is self._frame:
            if not self._field.symbolic:
                e = self._eigs()
                return float(e[0]) if len(e) else float("inf")
        return self._field.min_eig(self.matrix(frame))

    def _degeneracy_report(self) -> str:
        n = self._size()
        r = self.rank()
        try:
            lam = self.min_eigenvalue()
            lam_s = f"{float(lam):.3g}" if not isinstance(lam, sympy.Basic) or lam.is_number else str(lam)
        except Exception:  # pragma: no cover - undecidable symbolic spectrum
            lam_s = "undetermined"
        return f"rank {r} < {n}, smallest eigenvalue {lam_s} in frame {self._frame.name}"

    # -- display
    def __repr__(self) -> str:
        M = self.matrix(self._frame)
        body = np.array2string(M, precision=4, threshold=64, edgeitems=3) if isinstance(M, np.ndarray) else str(M.tolist())
        return f"{type(self).__name__}(on {self.space.name}, in {self._frame.name}: {body})"

    def _sympystr(self, printer) -> str:
        return f"{type(self).__name__}(on {self.space.name}, in {self._frame.name}: {printer.doprint(sympy.Matrix(self.matrix(self._frame)))})"

    def _display(self, frame=None):
        """The matrix in ``frame`` (default: its own), see :mod:`geomkfac.display`."""
        return _display.tensor_display(self, frame)

    def _repr_latex_(self) -> str | None:
        if not self._field.symbolic and self._size() > 12:  # too large to typeset usefully
            return None
        return super()._repr_latex_()

    _symbol = "T"


class Metric(_SymmetricTensor):
    """A symmetric positive-semidefinite bilinear form on ``frame.space``.

    Parameters
    ----------
    frame : Frame
        The frame ``matrix`` is given in.
    matrix : array_like or sympy Matrix, (n, n)
    check : bool
        Refuse non-symmetric (:class:`NotSymmetricError`) and non-PSD
        (:class:`NotPSDError`) matrices. Numeric tolerances: symmetry within
        ``NUMERIC.rtol/atol``; PSD if the smallest eigenvalue is above
        ``-10·n·eps·max|G|`` (rounding of the eigensolver).

    Examples
    --------
    >>> import sympy
    >>> from geomkfac.spaces import AffineSpace, Covector
    >>> A = AffineSpace(2, "A")
    >>> a = sympy.Symbol("a", positive=True)
    >>> g = Metric(A.reference_frame, sympy.Matrix([[a, 0], [0, 1]]))
    >>> k = A.reference_frame.derive(sympy.Matrix([[2, 0], [0, 1]]), [1, 0])
    >>> g.matrix(k)
    Matrix([
    [a/4, 0],
    [  0, 1]])
    >>> g.sharp(Covector(A.reference_frame, [1, 1])).coords()
    Matrix([
    [1/a],
    [  1]])
    """

    _label = "metric"
    _symbol = "G"

    def __init__(self, frame: Frame, matrix, check: bool = True):
        field = field_of(matrix)
        self._setup(frame, field)
        M = self._validate(field.asmatrix(matrix), check)
        self._matrices[frame] = M

    @classmethod
    def identity(cls, frame: Frame) -> "Metric":
        """The Euclidean metric of ``frame`` (identity matrix there)."""
        return cls(frame, NUMERIC.eye(frame.space.dim), check=False)

    @classmethod
    def outer(cls, covector: Covector) -> "Metric":
        """``ω ⊗ ω``: the rank-one metric ``(u, v) ↦ ω(u) ω(v)``, matrix ``w wᵀ`` in ω's frame.

        >>> from geomkfac.spaces import AffineSpace, Covector
        >>> A = AffineSpace(2, "A")
        >>> Metric.outer(Covector(A.reference_frame, [1., 2.])).matrix()
        array([[1., 2.],
               [2., 4.]])
        """
        if not isinstance(covector, Covector):
            raise SpaceMismatchError(f"Metric.outer needs a Covector, got {type(covector).__name__}")
        w = covector.coords()
        field = field_of(w)
        return cls(covector.frame, field.outer(w, w), check=False)

    #: a plain Metric is a constant metric field (see :meth:`at`)
    is_constant = True

    def at(self, point: Point) -> "Metric":
        """The metric at ``point``: a :class:`Metric` is a constant metric field, so itself.

        Point-dependent metrics (:class:`Pullback` along a smooth map, the output metrics of
        :mod:`geomkfac.output_metrics`) return their value at ``point``.
        """
        if not isinstance(point, Point) or point.space is not self.space:
            raise SpaceMismatchError(f"a metric on {self.space.name} is evaluated at a Point of it, got {point!r}")
        return self

    def _compute(self, frame: Frame):
        """``G_κ = B⁻ᵀ G_ι B⁻¹`` from the metric's own frame."""
        ch = self._frame.change_to(frame)
        G = self.matrix(self._frame)
        if ch.is_identity:
            return G
        field = field_of(G, ch)
        G = field.asmatrix(G)
        Binv = field.asmatrix(ch.B_inv)
        out = field.matmul(field.transpose(Binv), field.matmul(G, Binv))
        return field.symmetrize(out)

    # -- evaluation
    def _vector_coords(self, v, frame: Frame, what: str):
        if not isinstance(v, Vector):
            raise SpaceMismatchError(f"a metric evaluates Vectors; {what} is a {type(v).__name__}")
        if v.space is not self.space:
            raise SpaceMismatchError(
                f"a metric on {self.space.name} cannot evaluate {what}, a vector of {v.space.name}"
            )
        return v.coords(frame)

    def __call__(self, u: Vector, v: Vector):
        """``g(u, v) = uᵀ G v`` (the same number in every frame)."""
        F = self._frame
        x = self._vector_coords(u, F, "u")
        y = self._vector_coords(v, F, "v")
        G = self.matrix(F)
        field = field_of(G, x, y)
        x, y = field.asvector(x), field.asvector(y)
        return field.dot(x, field.matmul(field.asmatrix(G), y))

    def flat(self, vector: Vector) -> Covector:
        """``v♭ = g(v, ·)``, coordinates ``G v`` (in the vector's frame)."""
        F = vector.frame if isinstance(vector, Vector) else self._frame
        x = self._vector_coords(vector, F, "the vector")
        G = self.matrix(F)
        field = field_of(G, x)
        return Covector(F, field.matmul(field.asmatrix(G), field.asvector(x)))

    def _require_nondegenerate(self) -> None:
        if not self.is_nondegenerate():
            raise DegenerateMetricError(
                f"the {self._label} on {self.space.name} is degenerate ({self._degeneracy_report()}) "
                "and cannot be inverted; add damping (g + λ·identity) or use a nondegenerate metric"
            )

    def sharp(self, covector: Covector) -> Vector:
        """``ω♯ = g⁻¹ ω`` (natural gradient direction), in the covector's frame.

        Raises
        ------
        DegenerateMetricError
            if the metric is degenerate; the message gives its rank and smallest eigenvalue.
        """
        if not isinstance(covector, Covector):
            raise SpaceMismatchError(f"sharp turns a Covector into a Vector, got {type(covector).__name__}")
        if covector.space is not self.space:
            raise SpaceMismatchError(
                f"a metric on {self.space.name} cannot raise a covector of {covector.space.name}"
            )
        self._require_nondegenerate()
        F = covector.frame
        w = covector.coords(F)
        G = self.matrix(F)
        field = field_of(G, w)
        try:
            v = field.solve(field.asmatrix(G), field.asvector(w))
        except SingularMatrixError as exc:
            raise DegenerateMetricError(
                f"the {self._label} on {self.space.name} could not be inverted in frame {F.name} ({exc})"
            ) from None
        return Vector(F, v)

    # -- algebra
    def __add__(self, other: "Metric") -> "Metric":
        if not isinstance(other, Metric):
            return NotImplemented
        if other.space is not self.space:
            raise SpaceMismatchError(
                f"cannot add a metric on {self.space.name} and a metric on {other.space.name}"
            )
        F = self._frame
        a, b = self.matrix(F), other.matrix(F)
        field = field_of(a, b)
        return Metric(F, field.asmatrix(a) + field.asmatrix(b), check=False)

    def __mul__(self, s) -> "Metric":
        if not _is_scalar(s):
            return NotImplemented
        _check_nonneg_scalar(s, "scaling a metric")
        G = self.matrix(self._frame)
        field = field_of(G, s)
        return Metric(self._frame, field.asmatrix(G) * (s if not field.symbolic else field.scalar(s)), check=False)

    __rmul__ = __mul__


class AdditiveMetric(Metric):
    """The metric ``g₁ + … + g_K`` on a product space (Eqn. B.2), kept as blocks.

    In a product frame its matrix is ``block_diag(G₁, …, G_K)``; ``♯`` is applied
    blockwise there.

    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace
    >>> A, B = AffineSpace(1, "A"), AffineSpace(2, "B")
    >>> g = additive_metric([Metric(A.reference_frame, [[2.]]), Metric(B.reference_frame, np.eye(2))])
    >>> g.space is A * B
    True
    >>> g.matrix((A * B).reference_frame)
    array([[2., 0., 0.],
           [0., 1., 0.],
           [0., 0., 1.]])
    """

    def __init__(self, metrics: Sequence[Metric], product_space: ProductSpace | None = None):
        metrics = tuple(metrics)
        if not metrics:
            raise DimensionError("an additive metric needs at least one metric")
        for m in metrics:
            if not isinstance(m, Metric):
                raise SpaceMismatchError(f"additive_metric needs Metric objects, got {type(m).__name__}")
        spaces = tuple(m.space for m in metrics)
        P = product_space if product_space is not None else ProductSpace(spaces)
        if not isinstance(P, ProductSpace) or len(P.factors) != len(spaces) or any(a is not b for a, b in zip(P.factors, spaces)):
            raise SpaceMismatchError(
                f"the metrics live on ({', '.join(s.name for s in spaces)}) but the product space is {P!r}"
            )
        self._metrics = metrics
        frame = P.frame_from([m.frame for m in metrics])
        self._setup(frame, common_field(m.field for m in metrics))

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The factor metrics as a tuple (Python indexing: ``metrics[0]`` is ``g₁``); see
        :meth:`block` for the paper's numbering."""
        return self._metrics

    def block(self, i: int) -> Metric:
        """The factor metric ``g_i`` on the ``i``-th factor, numbered from 1 as in the paper
        (``W = W_1 × … × W_L``; for a K-FAC metric the layer metric ``g^i_ind`` of layer ``i``,
        as ``independence_metric(..., layer=i)``); ``metrics[i - 1]``.

        >>> from geomkfac.spaces import AffineSpace
        >>> A, B = AffineSpace(1, "A"), AffineSpace(2, "B")
        >>> g = additive_metric([Metric(A.reference_frame, [[2.]]), Metric(B.reference_frame, [[1., 0.], [0., 3.]])])
        >>> g.block(1).matrix()
        array([[2.]])
        >>> g.block(0)
        Traceback (most recent call last):
        ...
        geomkfac.errors.ConfigurationError: blocks are numbered 1..2 (as the factors W_1..W_2), got 0
        """
        K = len(self._metrics)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 1 <= i <= K:
            raise ConfigurationError(f"blocks are numbered 1..{K} (as the factors W_1..W_{K}), got {i!r}")
        return self._metrics[int(i) - 1]

    def _display(self, frame=None):
        """The diagonal blocks in a product frame (else the matrix), see :mod:`geomkfac.display`."""
        return _display.additive_display(self, frame)

    def blocks(self, product_frame: Frame | None = None) -> list:
        """The diagonal blocks in a product frame (default: the metric's own)."""
        F = product_frame or self._frame
        if F.space is not self.space or F.factor_frames is None:
            raise SpaceMismatchError(
                f"blocks need a product frame of {self.space.name} (from product_frame / frame_from), got {F!r}"
            )
        return [m.matrix(f) for m, f in zip(self._metrics, F.factor_frames)]

    def _compute(self, frame: Frame):
        if frame.factor_frames is not None:
            blocks = self.blocks(frame)
            field = field_of(*blocks)
            return field.block_diag([field.asmatrix(b) for b in blocks])
        return super()._compute(frame)

    def rank(self) -> int:
        return sum(m.rank() for m in self._metrics)

    def is_nondegenerate(self) -> bool:
        return all(m.is_nondegenerate() for m in self._metrics)

    def is_psd(self):
        vals = [m.is_psd() for m in self._metrics]
        return False if False in vals else (None if None in vals else True)

    def sharp(self, covector: Covector) -> Vector:
        """Blockwise ``g_k⁻¹ ω_k`` in the covector's frame if it is a product frame."""
        if not isinstance(covector, Covector) or covector.space is not self.space:
            return super().sharp(covector)
        F = covector.frame
        if F.factor_frames is None:
            return super().sharp(covector)
        parts = self.space.split(covector.coords(F))
        out = []
        for k, (m, f, w) in enumerate(zip(self._metrics, F.factor_frames, parts)):
            try:
                out.append(m.sharp(Covector(f, w)).coords(f))
            except DegenerateMetricError as exc:
                raise DegenerateMetricError(f"block {k} of the additive metric: {exc}") from None
        field = field_of(*out)
        return Vector(F, field.concat(out))


def additive_metric(metrics: Sequence[Metric], product_space: ProductSpace | None = None) -> AdditiveMetric:
    """The additive metric on the product of the metrics' spaces (Eqn. B.2)."""
    return AdditiveMetric(metrics, product_space)


class SecondMoment(_SymmetricTensor):
    """``E[α ⊗ α]``: a symmetric contravariant 2-tensor on the homogeneous extension of A.

    Its matrix in a frame is ``E[ā āᵀ]`` ((n+1) × (n+1), homogeneous coordinates
    ``ā = [a; 1]``) and transforms as ``[B]_H M [B]_Hᵀ``.

    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace, Point
    >>> A = AffineSpace(1, "A")
    >>> S = second_moment([Point(A.reference_frame, [1.]), Point(A.reference_frame, [3.])])
    >>> S.matrix()
    array([[5., 2.],
           [2., 1.]])
    >>> S.matrix(A.reference_frame.derive([[1.]], [-2.]))         # centered: a' = a − 2
    array([[1., 0.],
           [0., 1.]])
    """

    _label = "second moment"
    _symbol = "A"

    def __init__(self, frame: Frame, matrix, check: bool = True):
        field = field_of(matrix)
        self._setup(frame, field)
        self._matrices[frame] = self._validate(field.asmatrix(matrix), check)

    def _size(self) -> int:
        return self.space.dim + 1

    @classmethod
    def from_coords(cls, frame: Frame, X, weights=None) -> "SecondMoment":
        """From coordinates ``X`` (N × n, one example per row) in ``frame``, vectorized."""
        field = field_of(X, weights)
        n = frame.space.dim
        if field.symbolic:
            rows = [field.asvector(x) for x in (list(X) if not isinstance(X, sympy.MatrixBase) else [X.row(i).T for i in range(X.rows)])]
            return cls._from_symbolic_rows(frame, rows, weights)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != n:
            raise DimensionError(f"coordinates of points of {frame.space.name} must be (N, {n}), got {X.shape}")
        N = X.shape[0]
        if N == 0:
            raise DimensionError("a second moment needs at least one point")
        w = _weights(weights, N)
        Xb = np.hstack([X, np.ones((N, 1))])
        M = (Xb * w[:, None]).T @ Xb
        return cls(frame, 0.5 * (M + M.T), check=False)

    @classmethod
    def _from_symbolic_rows(cls, frame, rows, weights):
        N = len(rows)
        if N == 0:
            raise DimensionError("a second moment needs at least one point")
        n = frame.space.dim
        w = _symbolic_weights(weights, N, "points")
        M = SYMBOLIC.zeros((n + 1, n + 1))
        for wi, x in zip(w, rows):
            xb = SYMBOLIC.concat([x, SYMBOLIC.ones(1)])
            M = M + wi * xb * xb.T
        return cls(frame, sympy.ImmutableMatrix(M), check=False)

    def _compute(self, frame: Frame):
        """``[B]_H M [B]_Hᵀ`` from the own frame."""
        ch = self._frame.change_to(frame)
        M = self.matrix(self._frame)
        if ch.is_identity:
            return M
        field = field_of(M, ch)
        H = field.asmatrix(ch.homogeneous())
        return field.symmetrize(field.matmul(H, field.matmul(field.asmatrix(M), field.transpose(H))))

    def __add__(self, other: "SecondMoment") -> "SecondMoment":
        if not isinstance(other, SecondMoment):
            return NotImplemented
        if other.space is not self.space:
            raise SpaceMismatchError(f"cannot add second moments on {self.space.name} and {other.space.name}")
        a, b = self.matrix(), other.matrix(self._frame)
        field = field_of(a, b)
        return SecondMoment(self._frame, field.asmatrix(a) + field.asmatrix(b), check=False)

    def __mul__(self, s) -> "SecondMoment":
        if not _is_scalar(s):
            return NotImplemented
        _check_nonneg_scalar(s, "scaling a second moment")
        M = self.matrix()
        field = field_of(M, s)
        return SecondMoment(self._frame, field.asmatrix(M) * (s if not field.symbolic else field.scalar(s)), check=False)

    __rmul__ = __mul__


def _symbolic_weights(weights, N: int, what: str) -> list:
    """Exact weights of a mean over ``N`` items: ``1/N`` each, or ``weights`` normalized."""
    if weights is None:
        return [sympy.Rational(1, N)] * N
    w = [SYMBOLIC.scalar(x) for x in weights]
    if len(w) != N:
        raise DimensionError(f"{N} {what} but {len(w)} weights")
    tot = sum(w)
    return [x / tot for x in w]


def _weights(weights, N: int) -> np.ndarray:
    if weights is None:
        return np.full(N, 1.0 / N)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != N:
        raise DimensionError(f"{N} items but {w.shape[0]} weights")
    if np.any(w < 0) or not np.sum(w) > 0:
        raise NotPSDError("weights of an expectation must be nonnegative with a positive sum")
    return w / np.sum(w)


def second_moment(points: Sequence[Point], weights=None, frame: Frame | None = None) -> SecondMoment:
    """``E[α ⊗ α]`` from points: the weighted mean of ``ā āᵀ`` (coordinates in ``frame``,
    default the first point's frame)."""
    points = list(points)
    if not points:
        raise DimensionError("a second moment needs at least one point")
    for p in points:
        if not isinstance(p, Point):
            raise SpaceMismatchError(f"second_moment needs Points, got {type(p).__name__}")
        if p.space is not points[0].space:
            raise SpaceMismatchError(
                f"second_moment got points of {points[0].space.name} and of {p.space.name}"
            )
    F = frame or points[0].frame
    coords = [p.coords(F) for p in points]
    field = field_of(*coords, weights)
    if field.symbolic:
        return SecondMoment._from_symbolic_rows(F, [SYMBOLIC.asvector(x) for x in coords], weights)
    return SecondMoment.from_coords(F, np.stack(coords), weights)


class KroneckerMetric(Metric):
    """``E[α ⊗ α] ⊗ g``: a metric on ``Aff(A, Z)`` kept factored (Prop. 3.5, Eqn. 3.3/3.4).

    In the frame of ``Aff(A, Z)`` induced by frames ``(κ_A, κ_Z)`` the matrix is
    ``kron(A, G)`` with ``A`` the second moment's matrix in ``κ_A`` and ``G`` the
    metric's in ``κ_Z`` (coordinates ``vec([W b])``, column-stacking). ``♯`` is
    ``vec(G⁻¹ V A⁻¹)`` -- the inverse of the product is the product of the
    inverses -- and the Kronecker product is never formed there.

    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace, Point, Covector
    >>> A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    >>> S = SecondMoment(A.reference_frame, [[2., 1.], [1., 1.]])
    >>> g = KroneckerMetric(S, Metric(Z.reference_frame, [[4.]]))
    >>> g.space is AffineMaps(A, Z)
    True
    >>> g.matrix(g.frame)
    array([[8., 4.],
           [4., 4.]])
    >>> g.sharp(Covector(g.frame, [1., 0.])).coords()
    array([ 0.25, -0.25])
    """

    _label = "Kronecker metric"

    def __init__(self, second_moment: SecondMoment, metric_on_Z: Metric):
        if not isinstance(second_moment, SecondMoment):
            raise SpaceMismatchError(
                f"KroneckerMetric needs a SecondMoment first (E[a ⊗ a]), got {type(second_moment).__name__}"
            )
        if not isinstance(metric_on_Z, Metric):
            raise SpaceMismatchError(f"KroneckerMetric needs a Metric second, got {type(metric_on_Z).__name__}")
        self._A = second_moment
        self._g = metric_on_Z
        space = AffineMaps(second_moment.space, metric_on_Z.space)
        frame = space.frame(second_moment.frame, metric_on_Z.frame)
        self._setup(frame, common_field([second_moment.field, metric_on_Z.field]))

    @property
    def second_moment(self) -> SecondMoment:
        return self._A

    @property
    def metric_on_Z(self) -> Metric:
        return self._g

    def _induced(self, frame: Frame | None) -> tuple[Frame, Frame]:
        F = frame or self._frame
        if F.space is not self.space or F.induced_by is None:
            raise SpaceMismatchError(
                f"factors need a frame of {self.space.name} induced by frames on "
                f"{self.space.domain.name} and {self.space.codomain.name} (AffineMaps.frame), got {F!r}"
            )
        return F.induced_by

    def factors(self, frame_A: Frame | None = None, frame_Z: Frame | None = None):
        """``(A, G)``: the second moment's matrix in ``frame_A`` and the metric's in ``frame_Z``."""
        fA = frame_A or self._A.frame
        fZ = frame_Z or self._g.frame
        return self._A.matrix(fA), self._g.matrix(fZ)

    def _compute(self, frame: Frame):
        if frame.induced_by is not None:
            A, G = self.factors(*frame.induced_by)
            field = field_of(A, G)
            return field.kron(field.asmatrix(A), field.asmatrix(G))
        return Metric._compute(self, frame)

    def _factor_coords(self, F: Frame):
        return self.factors(*self._induced(F))

    def __call__(self, u: Vector, v: Vector):
        """``vec(U)ᵀ (A ⊗ G) vec(V) = Σ U ∘ (G V A)`` without forming the Kronecker product."""
        F = self._frame
        x = self._vector_coords(u, F, "u")
        y = self._vector_coords(v, F, "v")
        A, G = self._factor_coords(F)
        field = field_of(A, G, x, y)
        shape = self.space.shape
        U, V = field.unvec(field.asvector(x), shape), field.unvec(field.asvector(y), shape)
        GVA = field.matmul(field.matmul(field.asmatrix(G), V), field.asmatrix(A))
        return field.dot(field.vec(U), field.vec(GVA))

    def flat(self, vector: Vector) -> Covector:
        """``vec(G V A)`` in the vector's frame if induced (else the metric's own)."""
        F = vector.frame if isinstance(vector, Vector) and vector.frame.induced_by is not None and vector.space is self.space else self._frame
        x = self._vector_coords(vector, F, "the vector")
        A, G = self._factor_coords(F)
        field = field_of(A, G, x)
        V = field.unvec(field.asvector(x), self.space.shape)
        return Covector(F, field.vec(field.matmul(field.matmul(field.asmatrix(G), V), field.asmatrix(A))))

    def rank(self) -> int:
        return self._A.rank() * self._g.rank()

    def is_nondegenerate(self) -> bool:
        return self._A.is_nondegenerate() and self._g.is_nondegenerate()

    def is_psd(self):
        a, g = self._A.is_psd(), self._g.is_psd()
        return False if False in (a, g) else (None if None in (a, g) else True)

    def min_eigenvalue(self, frame: Frame | None = None):
        """``λ_min(A) λ_min(G)`` in an induced frame (eigenvalues of a Kronecker product multiply)."""
        F = frame or self._frame
        if F.induced_by is None:
            return Metric.min_eigenvalue(self, F)
        fA, fZ = F.induced_by
        return self._A.min_eigenvalue(fA) * self._g.min_eigenvalue(fZ)

    def _require_nondegenerate(self) -> None:
        for name, part in (("E[a ⊗ a] (the A factor)", self._A), ("the metric on Z (the G factor)", self._g)):
            if not part.is_nondegenerate():
                raise DegenerateMetricError(
                    f"the Kronecker metric on {self.space.name} is degenerate: {name} has "
                    f"{part._degeneracy_report()}; add damping to that factor or use a nondegenerate one"
                )

    def sharp(self, covector: Covector) -> Vector:
        """``vec(G⁻¹ V A⁻¹)`` with ``V = unvec(ω)`` in an induced frame (the covector's if induced)."""
        if not isinstance(covector, Covector):
            raise SpaceMismatchError(f"sharp turns a Covector into a Vector, got {type(covector).__name__}")
        if covector.space is not self.space:
            raise SpaceMismatchError(f"a metric on {self.space.name} cannot raise a covector of {covector.space.name}")
        self._require_nondegenerate()
        F = covector.frame if covector.frame.induced_by is not None else self._frame
        A, G = self._factor_coords(F)
        w = covector.coords(F)
        field = field_of(A, G, w)
        V = field.unvec(field.asvector(w), self.space.shape)
        try:
            X = field.solve(field.asmatrix(G), V)  # G⁻¹ V
            Y = field.transpose(field.solve(field.asmatrix(A), field.transpose(X)))  # (A⁻¹ Xᵀ)ᵀ = X A⁻¹ (A symmetric)
        except SingularMatrixError as exc:
            raise DegenerateMetricError(f"a factor of the Kronecker metric could not be inverted ({exc})") from None
        return Vector(F, field.vec(Y))

    def __mul__(self, s) -> "KroneckerMetric":
        if not _is_scalar(s):
            return NotImplemented
        return KroneckerMetric(self._A, self._g * s)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"KroneckerMetric(on {self.space.name}: {self._A!r} ⊗ {self._g!r})"

    def _sympystr(self, printer) -> str:
        A, G = self.factors()
        return f"KroneckerMetric(on {self.space.name}: {printer.doprint(sympy.Matrix(A))} ⊗ {printer.doprint(sympy.Matrix(G))})"

    def _display(self, frame=None):
        """``A ⊗ G`` in an induced frame (default: its own), kept factored."""
        return _display.kronecker_display(self, frame)


#: the tensor product of ``E[α ⊗ α]`` and a metric, kept factored
tensor_product = KroneckerMetric


class Pullback(Metric):
    """The pullback ``φ*g`` of a metric (field) ``g`` on Z along a map ``φ : A → Z`` (B.4).

    ``(φ*g)_p(u, v) = g_{φ(p)}(φ_* u, φ_* v)``: a metric field on the domain, evaluated at the
    base point ``at``.  Without ``at`` it stays a field — for an affine ``φ`` and a constant
    ``g`` a constant one, usable at once; otherwise one to evaluate with :meth:`at` (or to pull
    back further: ``Pullback(Pullback(g, h), f, at=p)`` evaluates ``h*g`` at ``f(p)``).  Its matrix in the frame of ``at``
    (default: ``φ``'s domain frame) is ``Jᵀ G J``, with ``J`` the Jacobian between that frame
    and the frame ``g`` is given in; in other frames the law ``B⁻ᵀ G B⁻¹`` applies as for every
    :class:`Metric`.

    ``g`` may be a :class:`Metric` (a constant field), another :class:`Pullback`, or any metric
    field with ``.at(point) -> Metric`` on Z (e.g. an output metric such as
    :class:`~geomkfac.output_metrics.CategoricalFisher`); it is evaluated at ``φ(at)``.  The
    construction is functorial: ``Pullback(g, h ∘ f, at=p)`` equals
    ``Pullback(Pullback(g, h), f, at=p)``, and the identity map gives ``g`` back.

    Parameters
    ----------
    metric : Metric or metric field on ``phi.codomain``
    phi : Map (AffineMap, SmoothMap, ComposedMap, …)
    at : Point of ``phi.domain``, optional for affine maps

    Examples
    --------
    A metric on Z pulled back along ``z = 2 a₁ + a₂``, in two frames of A:

    >>> import sympy
    >>> from geomkfac.spaces import AffineSpace
    >>> from geomkfac.maps import AffineMap
    >>> A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
    >>> f = AffineMap(A.reference_frame, Z.reference_frame, sympy.Matrix([[2, 1]]))
    >>> g = Pullback(Metric(Z.reference_frame, sympy.Matrix([[3]])), f)
    >>> g.matrix()
    Matrix([
    [12, 6],
    [ 6, 3]])
    >>> kappa = A.reference_frame.derive(sympy.Matrix([[1, 0], [1, 1]]), name="κ")
    >>> g.matrix(kappa)                         # B⁻ᵀ G B⁻¹ with B = [[1, 0], [1, 1]]
    Matrix([
    [3, 3],
    [3, 3]])
    """

    _label = "pullback metric"

    def __init__(self, metric, phi: Map, at: Point | None = None):
        if not isinstance(phi, Map):
            raise SpaceMismatchError(f"Pullback needs a map (AffineMap, SmoothMap, …), got {type(phi).__name__}")
        if not hasattr(metric, "at"):
            raise SpaceMismatchError(
                f"Pullback needs a Metric or a metric field with .at(point), got {type(metric).__name__}"
            )
        if isinstance(metric, Metric) and metric.space is not phi.codomain:
            raise SpaceMismatchError(
                f"cannot pull back a metric on {metric.space.name} along a map into {phi.codomain.name}"
            )
        if at is not None and (not isinstance(at, Point) or at.space is not phi.domain):
            raise SpaceMismatchError(f"the base point of a pullback along a map from {phi.domain.name} "
                                     f"must be a Point of it, got {at!r}")
        constant = isinstance(phi, AffineMap) and getattr(metric, "is_constant", False)
        self._g, self._phi, self._at = metric, phi, at
        self._constant = constant
        if at is None and not constant:
            # a metric field (e.g. h*g for a smooth h): evaluated by .at(point) when needed
            self._setup(phi.domain_frame, common_field([getattr(metric, "field", NUMERIC)]))
            self._g_at = None
            return
        frame = at.frame if at is not None else phi.domain_frame
        g_at = metric.at(phi(at)) if at is not None else metric
        if not isinstance(g_at, Metric) or g_at.space is not phi.codomain:
            raise SpaceMismatchError(
                f"the metric field gave {g_at!r} at φ(p); expected a Metric on {phi.codomain.name}"
            )
        self._g_at = g_at
        J = phi.jacobian(at, frame, g_at.frame)
        G = g_at.matrix(g_at.frame)
        field = field_of(J, G)
        J, G = field.asmatrix(J), field.asmatrix(G)
        M = field.symmetrize(field.matmul(field.transpose(J), field.matmul(G, J)))
        self._setup(frame, field)
        self._matrices[frame] = M

    def matrix(self, frame: Frame | None = None):
        """The matrix in ``frame`` (default: the frame of the base point); a field that is
        not evaluated at a point has none: use :meth:`at` first."""
        if self._g_at is None:
            raise ConfigurationError(
                f"the pullback along {type(self._phi).__name__} {self._phi!r} is a metric field: "
                "evaluate it at a point first (.at(Point)) or pass at=Point"
            )
        return super().matrix(frame)

    @property
    def is_constant(self) -> bool:
        """True when the field does not depend on the point (affine ``φ``, constant ``g``)."""
        return self._constant

    @property
    def metric(self):
        """The metric (field) ``g`` that is pulled back."""
        return self._g

    @property
    def map(self) -> Map:
        """The map ``φ`` it is pulled back along."""
        return self._phi

    @property
    def base_point(self) -> Point | None:
        """The point of the domain the field is evaluated at (``None``: constant)."""
        return self._at

    def at(self, point: Point) -> "Pullback":
        """The field ``φ*g`` evaluated at another point of the domain."""
        if not isinstance(point, Point) or point.space is not self.space:
            raise SpaceMismatchError(f"a pullback on {self.space.name} is evaluated at a Point of it, got {point!r}")
        return Pullback(self._g, self._phi, point)

    def __repr__(self) -> str:
        if self._g_at is None:
            return f"Pullback(a metric field on {self.space.name} along {self._phi!r})"
        return f"Pullback(on {self.space.name} along {self._phi!r}: {super().__repr__()})"


def pullback(metric, phi: Map, at: Point | None = None) -> Pullback:
    """The pullback ``φ*g`` at ``at`` (shortcut for :class:`Pullback`, B.4).

    ``at`` may be omitted for an affine map (its Jacobian is constant).

    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace
    >>> from geomkfac.maps import AffineMap
    >>> A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
    >>> f = AffineMap(A.reference_frame, Z.reference_frame, [[1., 2.]], [0.])
    >>> pullback(Metric(Z.reference_frame, [[1.]]), f).matrix()
    array([[1., 2.],
           [2., 4.]])
    """
    return Pullback(metric, phi, at)


def expectation(metrics: Sequence[Metric], weights=None) -> Metric:
    """The weighted mean ``Σ wᵢ gᵢ / Σ wᵢ`` of metrics on one space (in the first one's frame).

    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace
    >>> A = AffineSpace(1, "A")
    >>> expectation([Metric(A.reference_frame, [[1.]]), Metric(A.reference_frame, [[3.]])]).matrix()
    array([[2.]])
    """
    metrics = list(metrics)
    if not metrics:
        raise DimensionError("an expectation needs at least one metric")
    space = metrics[0].space
    for m in metrics:
        if not isinstance(m, Metric):
            raise SpaceMismatchError(f"expectation needs Metric objects, got {type(m).__name__}")
        if m.space is not space:
            raise SpaceMismatchError(f"expectation got metrics on {space.name} and on {m.space.name}")
    F = metrics[0].frame
    mats = [m.matrix(F) for m in metrics]
    field = field_of(*mats, weights)
    if field.symbolic:
        N = len(mats)
        w = _symbolic_weights(weights, N, "metrics")
        out = SYMBOLIC.zeros((space.dim, space.dim))
        for wi, M in zip(w, mats):
            out = out + wi * SYMBOLIC.asmatrix(M)
        return Metric(F, sympy.ImmutableMatrix(out), check=False)
    w = _weights(weights, len(mats))
    return Metric(F, np.tensordot(w, np.stack(mats), axes=1), check=False)


def natural_gradient(metric: Metric, covector: Covector) -> Vector:
    """The natural gradient ``g⁻¹ ω`` (:meth:`Metric.sharp`)."""
    return metric.sharp(covector)
