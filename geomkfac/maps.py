"""Maps between affine spaces: affine maps, the space ``Aff(A, Z)``, smooth maps.

An :class:`AffineMap` ``A → Z`` is given by ``(W, b)`` in a pair of frames; in any
other pair its homogeneous matrix follows the law (Eqn. D.2)

    ``[W̄_new; 0 1] = [B_Z]_H [W̄; 0 1] [B_A]_H⁻¹``,

with ``(B_A, c_A)`` the change of frame on ``A`` and ``(B_Z, c_Z)`` the one on ``Z``.

The set of affine maps ``Aff(A, Z)`` is an affine space of dimension
``out·(in+1)`` (:class:`AffineMaps`). Frames on ``A`` and ``Z`` induce a frame on it
whose coordinates are ``vec([W b])`` -- **column-stacking**, so the bias is the
last ``out`` entries, ``vec(Dz āᵀ) = ā ⊗ Dz``, and the K-FAC block is ``A ⊗ G``.
The change between two induced frames is affine with
``B = [B_A]_H⁻ᵀ ⊗ B_Z`` and ``c = vec(c_Z e_lastᵀ)``.

A :class:`SmoothMap` is given by coordinate expressions (sympy, Jacobian by
differentiation) or numeric callables with a Jacobian; its Jacobian in other frames
is ``B_Z J B_A⁻¹``.

Examples
--------
>>> import numpy as np
>>> from geomkfac.spaces import AffineSpace, Point
>>> A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
>>> f = AffineMap(A.reference_frame, Z.reference_frame, [[2.]], [1.])
>>> f(Point(A.reference_frame, [3.])).coords()
array([7.])
>>> kA = A.reference_frame.derive([[2.]], [0.], name="κA")   # a' = 2a
>>> f.matrix(kA, Z.reference_frame)                           # z = 1·a' + 1
array([[1., 1.]])
"""

from __future__ import annotations

import weakref
from typing import Callable, Sequence

import numpy as np
import sympy

from geomkfac import display as _display
from geomkfac.errors import ConfigurationError, DimensionError, FieldMismatchError, SpaceMismatchError
from geomkfac.fields import Field, field_of
from geomkfac.spaces import AffineSpace, Frame, FrameChange, Point, Vector

__all__ = ["Map", "AffineMap", "AffineMaps", "SmoothMap", "ComposedMap"]


def _check_frame(frame, what: str) -> Frame:
    if not isinstance(frame, Frame):
        raise SpaceMismatchError(f"{what} must be a Frame, got {type(frame).__name__}")
    return frame


def _transform_jacobian(J, chA: FrameChange, chZ: FrameChange):
    """``B_Z J B_A⁻¹`` in the common field."""
    field = field_of(J, chA, chZ)
    J = field.asmatrix(J)
    if not chA.is_identity:
        J = field.matmul(J, field.asmatrix(chA.B_inv))
    if not chZ.is_identity:
        J = field.matmul(field.asmatrix(chZ.B), J)
    return J


class Map:
    """Common interface of maps between affine spaces.

    Subclasses implement ``_value(x)`` and ``_jacobian(x)`` in their own frames
    (:attr:`domain_frame`, :attr:`codomain_frame`).
    """

    def __init__(self, domain_frame: Frame, codomain_frame: Frame):
        self.domain_frame = _check_frame(domain_frame, "domain_frame")
        self.codomain_frame = _check_frame(codomain_frame, "codomain_frame")

    @property
    def domain(self) -> AffineSpace:
        return self.domain_frame.space

    @property
    def codomain(self) -> AffineSpace:
        return self.codomain_frame.space

    def _value(self, x):
        raise NotImplementedError

    def _jacobian(self, x):
        raise NotImplementedError

    def _point_coords(self, point: Point):
        if not isinstance(point, Point):
            raise SpaceMismatchError(f"a map is evaluated on a Point, got {type(point).__name__}")
        if point.space is not self.domain:
            raise SpaceMismatchError(
                f"map {self!r} has domain {self.domain.name}, got a point of {point.space.name}"
            )
        return point.coords(self.domain_frame)

    def __call__(self, point: Point) -> Point:
        """The image point ``f(p)``."""
        return Point(self.codomain_frame, self._value(self._point_coords(point)))

    def jacobian(self, point: Point, domain_frame: Frame | None = None, codomain_frame: Frame | None = None):
        """Jacobian matrix at ``point`` in the given frames (default: the map's own), ``B_Z J B_A⁻¹``."""
        J = self._jacobian(self._point_coords(point))
        df = domain_frame or self.domain_frame
        cf = codomain_frame or self.codomain_frame
        return _transform_jacobian(J, self.domain_frame.change_to(df), self.codomain_frame.change_to(cf))

    def pushforward(self, vector: Vector, at: Point | None = None) -> Vector:
        """``f_* v`` at ``at``: the vector ``J v`` of the codomain."""
        if not isinstance(vector, Vector):
            raise SpaceMismatchError(f"pushforward acts on a Vector, got {type(vector).__name__}")
        if vector.space is not self.domain:
            raise SpaceMismatchError(f"map {self!r} has domain {self.domain.name}, got a vector of {vector.space.name}")
        if at is None:
            raise ConfigurationError(f"{type(self).__name__}.pushforward needs the base point: pass at=Point")
        J = self.jacobian(at)
        v = vector.coords(self.domain_frame)
        field = field_of(J, v)
        return Vector(self.codomain_frame, field.matmul(field.asmatrix(J), field.asvector(v)))

    def pullback_covector(self, covector, at: Point | None = None):
        """``f*ω`` at ``at``: the covector ``v ↦ ω(f_* v)`` of the domain, coordinates ``Jᵀ w``.

        Computed in the frame of ``at`` (a point of the domain) and the covector's own
        frame: ``J`` is the Jacobian between those two frames (B.4 for 1-forms).
        """
        from geomkfac.spaces import Covector

        if not isinstance(covector, Covector):
            raise SpaceMismatchError(f"pullback_covector acts on a Covector, got {type(covector).__name__}")
        if covector.space is not self.codomain:
            raise SpaceMismatchError(
                f"cannot pull back a covector of {covector.space.name} along a map into {self.codomain.name}"
            )
        if at is None and not isinstance(self, AffineMap):
            raise ConfigurationError(f"{type(self).__name__}.pullback_covector needs the base point: pass at=Point")
        df = at.frame if isinstance(at, Point) and at.space is self.domain else self.domain_frame
        J = self.jacobian(at, df, covector.frame)
        w = covector.coords()
        field = field_of(J, w)
        return Covector(df, field.matmul(field.transpose(field.asmatrix(J)), field.asvector(w)))

    def compose(self, inner: "Map") -> "Map":
        """``self ∘ inner`` (first ``inner``, then ``self``)."""
        return ComposedMap(self, inner)

    def __matmul__(self, inner: "Map") -> "Map":
        if not isinstance(inner, Map):
            return NotImplemented
        return self.compose(inner)


class ComposedMap(Map):
    """``outer ∘ inner``; Jacobian by the chain rule ``J_outer(inner(p)) J_inner(p)``."""

    def __init__(self, outer: Map, inner: Map):
        if inner.codomain is not outer.domain:
            raise SpaceMismatchError(
                f"cannot compose: inner map ends in {inner.codomain.name}, outer map starts in {outer.domain.name}"
            )
        super().__init__(inner.domain_frame, outer.codomain_frame)
        self.outer, self.inner = outer, inner

    def __call__(self, point: Point) -> Point:
        return self.outer(self.inner(point))

    def _value(self, x):
        return self(Point(self.domain_frame, x)).coords(self.codomain_frame)

    def _jacobian(self, x):
        p = Point(self.domain_frame, x)
        mid = self.inner.codomain_frame
        Ji = self.inner.jacobian(p, self.domain_frame, mid)
        Jo = self.outer.jacobian(self.inner(p), mid, self.codomain_frame)
        field = field_of(Ji, Jo)
        return field.matmul(field.asmatrix(Jo), field.asmatrix(Ji))

    def __repr__(self) -> str:
        return f"ComposedMap({self.outer!r} ∘ {self.inner!r})"


class AffineMap(_display.Displayable, Map):
    """An affine map ``A → Z``, ``z = W a + b`` in (``domain_frame``, ``codomain_frame``).

    Parameters
    ----------
    domain_frame, codomain_frame : Frame
        Frames the coordinates ``W`` (out × in) and ``b`` (out) refer to.
    W : array_like or sympy Matrix
    b : array_like, optional
        Defaults to zero.

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace
    >>> A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
    >>> f = AffineMap(A.reference_frame, Z.reference_frame, [[1., 2.]], [3.])
    >>> kZ = Z.reference_frame.derive([[10.]], [1.])           # z' = 10 z + 1
    >>> f.matrix(A.reference_frame, kZ)
    array([[10., 20., 31.]])
    """

    def __init__(self, domain_frame: Frame, codomain_frame: Frame, W, b=None):
        super().__init__(domain_frame, codomain_frame)
        field = field_of(W, b)
        W = field.asmatrix(W)
        n_in, n_out = self.domain.dim, self.codomain.dim
        if tuple(W.shape) != (n_out, n_in):
            raise DimensionError(
                f"W of an affine map {self.domain.name} → {self.codomain.name} must be ({n_out}, {n_in}) "
                f"(out × in), got {tuple(W.shape)}"
            )
        b = field.zeros(n_out) if b is None else field.asvector(b)
        if b.shape[0] != n_out:
            raise DimensionError(f"b of an affine map into {self.codomain.name} needs {n_out} entries, got {b.shape[0]}")
        self._W, self._b = W, b
        self._matrices: dict = {}

    @classmethod
    def identity(cls, frame: Frame) -> "AffineMap":
        """The identity map of ``frame.space`` (``W = I``, ``b = 0`` in ``frame``, hence in every frame)."""
        _check_frame(frame, "frame")
        from geomkfac.fields import NUMERIC

        n = frame.space.dim
        return cls(frame, frame, NUMERIC.eye(n), NUMERIC.zeros(n))

    @property
    def field(self) -> Field:
        return field_of(self._W, self._b)

    @property
    def W(self):
        """Linear part in the map's own frames."""
        return self._W

    @property
    def b(self):
        """Offset in the map's own frames."""
        return self._b

    def _Wb(self, domain_frame: Frame | None, codomain_frame: Frame | None):
        df = domain_frame or self.domain_frame
        cf = codomain_frame or self.codomain_frame
        key = (df, cf)
        hit = self._matrices.get(key)
        if hit is not None:
            return hit
        chA = self.domain_frame.change_to(df)
        chZ = self.codomain_frame.change_to(cf)
        field = field_of(self, chA, chZ)
        W, b = field.asmatrix(self._W), field.asvector(self._b)
        if not chA.is_identity:
            inv = chA.inverse()  # x = B_A⁻¹ x' − B_A⁻¹ c_A
            b = b + field.matmul(W, field.asvector(inv.c))
            W = field.matmul(W, field.asmatrix(inv.B))
        if not chZ.is_identity:
            W = field.matmul(field.asmatrix(chZ.B), W)
            b = chZ.apply_point(b)
        self._matrices[key] = (W, b)
        return W, b

    def matrix(self, domain_frame: Frame | None = None, codomain_frame: Frame | None = None):
        """``[W b]`` (out × (in+1)) in the given frames (Eqn. D.2 law)."""
        W, b = self._Wb(domain_frame, codomain_frame)
        field = field_of(W, b)
        return field.hstack([W, b])

    def homogeneous(self, domain_frame: Frame | None = None, codomain_frame: Frame | None = None):
        """``[[W, b], [0, 1]]`` in the given frames."""
        W, b = self._Wb(domain_frame, codomain_frame)
        return field_of(W, b).homogeneous(W, b)

    def linear(self, domain_frame: Frame | None = None, codomain_frame: Frame | None = None):
        """``W`` in the given frames."""
        return self._Wb(domain_frame, codomain_frame)[0]

    def offset(self, domain_frame: Frame | None = None, codomain_frame: Frame | None = None):
        """``b`` in the given frames."""
        return self._Wb(domain_frame, codomain_frame)[1]

    def _value(self, x):
        field = field_of(self, x)
        W, b = self._Wb(None, None)
        return field.matmul(field.asmatrix(W), field.asvector(x)) + field.asvector(b)

    def _jacobian(self, x):
        return self._W

    def jacobian(self, point: Point | None = None, domain_frame: Frame | None = None, codomain_frame: Frame | None = None):
        """``W`` in the given frames (the point is irrelevant but checked if given)."""
        if point is not None:
            self._point_coords(point)
        return self.linear(domain_frame, codomain_frame)

    def pushforward(self, vector: Vector, at: Point | None = None) -> Vector:
        """``W v`` (the linear part; base point not needed)."""
        if not isinstance(vector, Vector):
            raise SpaceMismatchError(f"pushforward acts on a Vector, got {type(vector).__name__}")
        if vector.space is not self.domain:
            raise SpaceMismatchError(f"map {self!r} has domain {self.domain.name}, got a vector of {vector.space.name}")
        v = vector.coords(self.domain_frame)
        field = field_of(self, v)
        return Vector(self.codomain_frame, field.matmul(field.asmatrix(self._W), field.asvector(v)))

    def compose(self, inner: Map) -> Map:
        """``self ∘ inner``; affine ∘ affine is an :class:`AffineMap` in (inner's domain, self's codomain) frames."""
        if not isinstance(inner, AffineMap):
            return ComposedMap(self, inner)
        if inner.codomain is not self.domain:
            raise SpaceMismatchError(
                f"cannot compose: inner map ends in {inner.codomain.name}, outer map starts in {self.domain.name}"
            )
        Wo, bo = self._Wb(inner.codomain_frame, self.codomain_frame)
        field = field_of(Wo, bo, inner)
        Wo, bo = field.asmatrix(Wo), field.asvector(bo)
        Wi, bi = field.asmatrix(inner._W), field.asvector(inner._b)
        return AffineMap(inner.domain_frame, self.codomain_frame, field.matmul(Wo, Wi), field.matmul(Wo, bi) + bo)

    def __repr__(self) -> str:
        return f"AffineMap({self.domain.name} → {self.codomain.name}, [W b] = {self.matrix()!r} in ({self.domain_frame.name}, {self.codomain_frame.name}))"

    def _sympystr(self, printer) -> str:
        return f"AffineMap({self.domain.name} → {self.codomain.name}, [W b] = {printer.doprint(self.matrix())})"

    def _display(self, frame=None, codomain_frame=None):
        """``[W b]`` in (``frame``, ``codomain_frame``) (defaults: the map's own frames)."""
        return _display.affine_map_display(self, frame, codomain_frame)

    def display(self, frame=None, codomain_frame=None):
        """``[W b]`` in the frames (``frame`` on the domain, ``codomain_frame`` on the codomain)."""
        return self._display(frame, codomain_frame)

    def latex(self, frame=None, codomain_frame=None) -> str:
        """The LaTeX of ``[W b]`` in the frames (math mode, without ``$``)."""
        return self._display(frame, codomain_frame).latex


class AffineMaps(AffineSpace):
    """``Aff(A, Z)``: the affine space of affine maps ``A → Z`` (cached per pair).

    Dimension ``out·(in+1)``. Frames on ``A`` and ``Z`` induce a frame (:meth:`frame`)
    whose coordinates are ``vec([W b])`` with **column-stacking** (``order='F'``).

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace
    >>> A, Z = AffineSpace(2, "A"), AffineSpace(2, "Z")
    >>> Aff = AffineMaps(A, Z)
    >>> Aff.dim, Aff is AffineMaps(A, Z)
    (6, True)
    >>> f = AffineMap(A.reference_frame, Z.reference_frame, [[1., 2.], [3., 4.]], [5., 6.])
    >>> Aff.point(f).coords()                         # vec([W b]), column-stacking
    array([1., 3., 2., 4., 5., 6.])
    >>> Aff.map_of(Aff.point(f)).matrix()
    array([[1., 2., 5.],
           [3., 4., 6.]])
    """

    # weak values: a live Aff(A, Z) keeps A and Z alive, so their ids cannot be reused
    _cache: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()

    def __new__(cls, domain: AffineSpace, codomain: AffineSpace, name: str | None = None):
        for s, what in ((domain, "domain"), (codomain, "codomain")):
            if not isinstance(s, AffineSpace):
                raise SpaceMismatchError(f"AffineMaps needs an AffineSpace as {what}, got {type(s).__name__}")
        key = (id(domain), id(codomain))
        obj = cls._cache.get(key)
        if obj is None:
            obj = super().__new__(cls)
            obj._domain, obj._codomain = domain, codomain
            obj._frames = {}
            AffineSpace._init(obj, codomain.dim * (domain.dim + 1), name or f"Aff({domain.name}, {codomain.name})")
            pair = (domain.reference_frame, codomain.reference_frame)
            obj._reference._induced_by = pair
            obj._frames[pair] = obj._reference
            cls._cache[key] = obj
        return obj

    def __init__(self, domain, codomain, name=None):  # all work done in __new__ (cached)
        pass

    @property
    def domain(self) -> AffineSpace:
        return self._domain

    @property
    def codomain(self) -> AffineSpace:
        return self._codomain

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of ``[W b]``: ``(out, in+1)``."""
        return (self._codomain.dim, self._domain.dim + 1)

    def frame(self, frame_A: Frame, frame_Z: Frame) -> Frame:
        """The frame induced by ``frame_A`` on A and ``frame_Z`` on Z (cached).

        Coordinates: ``vec([W b])`` column-stacking. From the reference induced frame
        the change is ``B = [B_A]_H⁻ᵀ ⊗ B_Z``, ``c = vec(c_Z e_lastᵀ)``.
        """
        if not isinstance(frame_A, Frame) or frame_A.space is not self._domain:
            raise SpaceMismatchError(f"frame_A must be a frame of {self._domain.name}, got {frame_A!r}")
        if not isinstance(frame_Z, Frame) or frame_Z.space is not self._codomain:
            raise SpaceMismatchError(f"frame_Z must be a frame of {self._codomain.name}, got {frame_Z!r}")
        key = (frame_A, frame_Z)
        hit = self._frames.get(key)
        if hit is not None:
            return hit
        chA = self._domain.reference_frame.change_to(frame_A)
        chZ = self._codomain.reference_frame.change_to(frame_Z)
        field = field_of(chA, chZ)
        HA_inv = field.asmatrix(chA.inverse().homogeneous())
        HA = field.asmatrix(chA.homogeneous())
        BZ = field.asmatrix(chZ.B)
        BZ_inv = field.asmatrix(chZ.B_inv)
        B = field.kron(field.transpose(HA_inv), BZ)
        Binv = field.kron(field.transpose(HA), BZ_inv)
        out, cols = self.shape
        C = field.hstack([field.zeros((out, cols - 1)), field.asvector(chZ.c)])
        c = field.vec(C)
        frame = self._reference.derive(B, c, name=f"({frame_A.name}, {frame_Z.name})", _Binv=Binv)
        frame._induced_by = key
        self._frames[key] = frame
        return frame

    def point(self, affine_map: AffineMap) -> Point:
        """The point of ``Aff(A, Z)`` that ``affine_map`` is (coordinates in its own frames' induced frame)."""
        if not isinstance(affine_map, AffineMap):
            raise SpaceMismatchError(f"AffineMaps.point needs an AffineMap, got {type(affine_map).__name__}")
        if affine_map.domain is not self._domain or affine_map.codomain is not self._codomain:
            raise SpaceMismatchError(
                f"map {affine_map.domain.name} → {affine_map.codomain.name} is not a point of {self.name}"
            )
        frame = self.frame(affine_map.domain_frame, affine_map.codomain_frame)
        M = affine_map.matrix()
        return Point(frame, field_of(M).vec(M))

    def map_of(self, point: Point) -> AffineMap:
        """The affine map a point of ``Aff(A, Z)`` is (in the frames of the point's induced frame)."""
        if not isinstance(point, Point) or point.space is not self:
            raise SpaceMismatchError(f"map_of needs a Point of {self.name}, got {point!r}")
        frame = point.frame if point.frame.induced_by is not None else self._reference
        x = point.coords(frame)
        field = field_of(x)
        M = field.unvec(x, self.shape)
        fA, fZ = frame.induced_by
        return AffineMap(fA, fZ, M[:, :-1], M[:, -1])

    def evaluation_map(self, a: Point, frame_A: Frame | None = None, frame_Z: Frame | None = None) -> AffineMap:
        """``ψ_a : Aff(A, Z) → Z, ω ↦ ω(a)``: linear in ``vec([W b])`` with matrix ``āᵀ ⊗ I``.

        Returned as an :class:`AffineMap` from the induced frame of (``frame_A``,
        ``frame_Z``) to ``frame_Z`` (defaults: reference frames).
        """
        if not isinstance(a, Point) or a.space is not self._domain:
            raise SpaceMismatchError(f"evaluation_map needs a Point of {self._domain.name}, got {a!r}")
        fA = frame_A or self._domain.reference_frame
        fZ = frame_Z or self._codomain.reference_frame
        x = a.coords(fA)
        field = field_of(x)
        abar = field.concat([x, field.ones(1)])
        J = field.kron(field.transpose(field.column(abar)), field.eye(self._codomain.dim))
        return AffineMap(self.frame(fA, fZ), fZ, J)

    def __repr__(self) -> str:
        return f"AffineMaps({self._domain.name}, {self._codomain.name}, dim={self.dim})"


def _lambdify(symbols, expr):
    f = sympy.lambdify([list(symbols)], expr, modules="numpy")

    def call(x):
        return np.asarray(f(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    return call


class SmoothMap(Map):
    """A smooth map given by coordinates ``z = f(x)`` in (``domain_frame``, ``codomain_frame``).

    ``f`` is either a numeric callable (1-D array → 1-D array) with ``jacobian`` a
    callable returning the (out × in) Jacobian, or -- via :meth:`from_sympy` -- sympy
    expressions whose Jacobian is obtained by differentiation. Without ``jacobian``
    a numeric map uses central finite differences with step ``1e-6·(1+|x_i|)``
    (error ~1e-10 relative for smooth maps; prefer an analytic Jacobian).

    Examples
    --------
    >>> import sympy
    >>> from geomkfac.spaces import AffineSpace, Point
    >>> A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
    >>> x = sympy.Symbol("x")
    >>> sq = SmoothMap.from_sympy(A.reference_frame, Z.reference_frame, [x**2], [x])
    >>> sq.jacobian(Point(A.reference_frame, [sympy.Integer(3)]))
    Matrix([[6]])
    >>> k = A.reference_frame.derive(sympy.Matrix([[2]]), name="k")  # x' = 2x, exact
    >>> sq.jacobian(Point(A.reference_frame, [sympy.Integer(3)]), k)
    Matrix([[3]])
    >>> kf = A.reference_frame.derive([[2]], name="kf")  # a numeric frame: B⁻¹ = 0.5 is a float
    >>> sq.jacobian(Point(A.reference_frame, [sympy.Integer(3)]), kf)
    Matrix([[3.0]])
    """

    def __init__(self, domain_frame: Frame, codomain_frame: Frame, f: Callable, jacobian: Callable | None = None):
        super().__init__(domain_frame, codomain_frame)
        if not callable(f):
            raise ConfigurationError(
                "SmoothMap needs a callable f (or use SmoothMap.from_sympy for expressions)"
            )
        self._f = f
        self._jac = jacobian
        self.exprs = None
        self.symbols = None
        self._jac_exprs = None

    @classmethod
    def from_sympy(cls, domain_frame: Frame, codomain_frame: Frame, exprs, symbols: Sequence[sympy.Symbol]) -> "SmoothMap":
        """Map given by sympy expressions ``exprs`` (one per output coordinate) in ``symbols``."""
        exprs = sympy.ImmutableMatrix(exprs) if not isinstance(exprs, sympy.MatrixBase) else sympy.ImmutableMatrix(exprs)
        if exprs.cols != 1:
            exprs = exprs.reshape(len(exprs), 1)
        symbols = tuple(symbols)
        if len(symbols) != domain_frame.space.dim:
            raise DimensionError(
                f"a map on {domain_frame.space.name} (dim {domain_frame.space.dim}) needs "
                f"{domain_frame.space.dim} symbols, got {len(symbols)}"
            )
        if exprs.rows != codomain_frame.space.dim:
            raise DimensionError(
                f"a map into {codomain_frame.space.name} (dim {codomain_frame.space.dim}) needs "
                f"{codomain_frame.space.dim} expressions, got {exprs.rows}"
            )
        jac = sympy.ImmutableMatrix(exprs.jacobian(sympy.Matrix(symbols)))
        obj = cls.__new__(cls)
        Map.__init__(obj, domain_frame, codomain_frame)
        obj.exprs, obj.symbols, obj._jac_exprs = exprs, symbols, jac
        obj._f_num = _lambdify(symbols, exprs)
        obj._jac_num = _lambdify(symbols, jac)
        obj._f = obj._jac = None
        return obj

    def _subs(self, M, x):
        return sympy.ImmutableMatrix(M.xreplace(dict(zip(self.symbols, list(x)))))

    def _value(self, x):
        field = field_of(x)
        if self.exprs is not None:
            if field.symbolic:
                return self._subs(self.exprs, x)
            return self._f_num(x).reshape(-1)
        y = self._f(x)
        return field_of(y).asvector(y, self.codomain.dim)

    def _jacobian(self, x):
        field = field_of(x)
        if self.exprs is not None:
            if field.symbolic:
                return self._subs(self._jac_exprs, x)
            return self._jac_num(x).reshape(self.codomain.dim, self.domain.dim)
        if self._jac is not None:
            return field_of(self._jac(x)).asmatrix(self._jac(x))
        if field.symbolic:
            raise FieldMismatchError("a numeric SmoothMap without jacobian cannot differentiate symbolic points")
        x = np.asarray(x, dtype=np.float64)
        h = 1e-6 * (1.0 + np.abs(x))
        E = np.diag(h)
        cols = [(np.asarray(self._f(x + E[i])) - np.asarray(self._f(x - E[i]))) / (2 * h[i]) for i in range(x.size)]
        return np.stack(cols, axis=1).reshape(self.codomain.dim, self.domain.dim)

    def __repr__(self) -> str:
        what = f"{list(self.exprs)}" if self.exprs is not None else getattr(self._f, "__name__", "callable")
        return f"SmoothMap({self.domain.name} → {self.codomain.name}, {what} in ({self.domain_frame.name}, {self.codomain_frame.name}))"
