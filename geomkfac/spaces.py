"""Affine spaces, frames (affine bases), changes of frame, and coordinate-free values.

Conventions (paper-notes §1; paper Appendix B.3, C)
---------------------------------------------------
Two frames ι, κ of an affine space are related by ``y = B x + c`` (``B`` invertible),
``x`` the coordinates in ι and ``y`` those in κ; in homogeneous form
``[B]_H = [[B, c], [0, 1]]`` and ``ȳ = [B]_H x̄`` with ``x̄ = [x; 1]``.

* points transform with ``(B, c)``,
* vectors (the tangent space is canonically the space of translations, Cor. C.2)
  with ``B`` only,
* covectors with ``B⁻ᵀ``,

so a covector applied to a vector gives the same number in every frame.

Every space has a reference frame; any other frame is derived from an existing one
by ``(B, c)``. The change between any two frames of a space is chained and inverted
on demand through the tree of derivations, and cached.

Products ``A × B`` and powers ``Aᴷ`` are :class:`ProductSpace` objects (cached: the
same factors give the same object). A tuple of frames on the factors induces a
product frame whose coordinates are the stacked factor coordinates; in stacked
*homogeneous* coordinates ``[x₁; 1; …; x_K; 1]`` the change of a power frame is
``I ⊗ [B]_H`` (Eqn. B.1), see :meth:`FrameChange.stacked_homogeneous`.

Examples
--------
>>> import numpy as np
>>> A = AffineSpace(2, "A")
>>> kappa = A.reference_frame.derive(np.array([[2., 0.], [1., 1.]]), np.array([0., -1.]), name="κ")
>>> p = Point(A.reference_frame, [1., 1.])
>>> p.coords(kappa)
array([2., 1.])
>>> v = Vector(A.reference_frame, [1., 1.])
>>> v.coords(kappa)                       # no translation for vectors
array([2., 2.])
>>> w = Covector(A.reference_frame, [1., 0.])
>>> w.coords(kappa)
array([0.5, 0. ])
>>> float(w(v)), float(Covector(kappa, w.coords(kappa))(Vector(kappa, v.coords(kappa))))
(1.0, 1.0)
"""

from __future__ import annotations

import itertools
import weakref
from typing import Sequence

import numpy as np
import sympy

from geomkfac.errors import (
    DimensionError,
    SingularFrameChangeError,
    SpaceMismatchError,
)
from geomkfac import display as _display
from geomkfac.fields import NUMERIC, Field, SingularMatrixError, field_of

__all__ = [
    "AffineSpace",
    "VectorSpace",
    "DualSpace",
    "ProductSpace",
    "Frame",
    "FrameChange",
    "Point",
    "Vector",
    "Covector",
    "product_frame",
    "power_frame",
    "stack_homogeneous",
]

_counter = itertools.count()


def _fmt_coords(x) -> str:
    if isinstance(x, np.ndarray):
        return np.array2string(x, precision=4, threshold=8, edgeitems=3)
    return str(list(x)) if isinstance(x, sympy.MatrixBase) and x.cols == 1 else str(x)


# --------------------------------------------------------------------------- spaces


class VectorSpace:
    """The vector space of translations of an affine space (its tangent space, Cor. C.2)."""

    def __init__(self, affine_space: "AffineSpace"):
        self.affine_space = affine_space
        self._dual = DualSpace(self)

    @property
    def dim(self) -> int:
        return self.affine_space.dim

    @property
    def name(self) -> str:
        return f"V({self.affine_space.name})"

    @property
    def dual(self) -> "DualSpace":
        """The dual space V* (covectors)."""
        return self._dual

    def __repr__(self) -> str:
        return f"VectorSpace({self.name!r}, dim={self.dim})"


class DualSpace:
    """The dual V* of a vector space: covectors, transforming with ``B⁻ᵀ``."""

    def __init__(self, vector_space: VectorSpace):
        self.vector_space = vector_space

    @property
    def dim(self) -> int:
        return self.vector_space.dim

    @property
    def affine_space(self) -> "AffineSpace":
        return self.vector_space.affine_space

    @property
    def name(self) -> str:
        return f"{self.vector_space.name}*"

    def __repr__(self) -> str:
        return f"DualSpace({self.name!r}, dim={self.dim})"


class AffineSpace(_display.Displayable):
    """An affine space of dimension ``dim`` with a reference frame.

    Spaces compare by identity. ``A * B`` and ``A ** K`` give (cached)
    :class:`ProductSpace` objects.

    Parameters
    ----------
    dim : int
        Dimension (>= 0).
    name : str, optional
        Display name.

    Examples
    --------
    >>> A = AffineSpace(3, "A")
    >>> A.dim, A.vector_space.dim, A.dual.dim
    (3, 3, 3)
    >>> (A ** 2).dim, (A ** 2) is (A ** 2)
    (6, True)
    """

    def __init__(self, dim: int, name: str | None = None):
        self._init(dim, name)

    def _init(self, dim: int, name: str | None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
            raise DimensionError(f"an affine space needs a nonnegative integer dimension, got {dim!r}")
        self._dim = int(dim)
        self._name = name if name is not None else f"A{next(_counter)}"
        self._vector_space = VectorSpace(self)
        self._reference = Frame(self, None, None, f"ι_{self._name}")

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    @property
    def vector_space(self) -> VectorSpace:
        return self._vector_space

    @property
    def dual(self) -> DualSpace:
        return self._vector_space.dual

    @property
    def reference_frame(self) -> "Frame":
        return self._reference

    def frame(self, B, c=None, name: str | None = None) -> "Frame":
        """Shortcut for ``self.reference_frame.derive(B, c, name)``."""
        return self._reference.derive(B, c, name=name)

    def __mul__(self, other: "AffineSpace") -> "ProductSpace":
        if not isinstance(other, AffineSpace):
            return NotImplemented
        return ProductSpace((self, other))

    def __pow__(self, K: int) -> "ProductSpace":
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
            raise DimensionError(f"a power A**K needs an integer K >= 1, got {K!r}")
        return ProductSpace((self,) * int(K))

    def __repr__(self) -> str:
        return f"AffineSpace({self.name!r}, dim={self.dim})"

    __str__ = lambda self: self.name  # noqa: E731

    def _display(self, frame=None):
        """Dimension and a frame (origin, basis) of the space (:mod:`geomkfac.display`)."""
        return _display.space_display(self, frame)


class ProductSpace(AffineSpace):
    """The direct product ``A₁ × … × A_K`` (cached per tuple of factors).

    Coordinates in a product frame are the stacked factor coordinates.

    >>> A, B = AffineSpace(2, "A"), AffineSpace(1, "B")
    >>> P = A * B
    >>> P.factors == (A, B), P.dim, P is ProductSpace([A, B])
    (True, 3, True)
    """

    # weak values: a live product keeps its factors alive, so their ids cannot be reused
    _cache: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()

    def __new__(cls, factors: Sequence[AffineSpace], name: str | None = None):
        factors = tuple(factors)
        for f in factors:
            if not isinstance(f, AffineSpace):
                raise SpaceMismatchError(f"product factors must be AffineSpace objects, got {type(f).__name__}")
        if not factors:
            raise DimensionError("a product space needs at least one factor")
        key = tuple(id(f) for f in factors)
        obj = cls._cache.get(key)
        if obj is None:
            obj = super().__new__(cls)
            obj._factors = factors
            if name is None:
                if len(set(key)) == 1 and len(factors) > 1:
                    name = f"{factors[0].name}^{len(factors)}"
                else:
                    name = " × ".join(f.name for f in factors)
            obj._product_frames = {}
            AffineSpace._init(obj, sum(f.dim for f in factors), name)
            obj._reference._factor_frames = tuple(f.reference_frame for f in factors)
            obj._product_frames[obj._reference._factor_frames] = obj._reference
            cls._cache[key] = obj
        return obj

    def __init__(self, factors, name=None):  # all work done in __new__ (cached)
        pass

    @property
    def factors(self) -> tuple[AffineSpace, ...]:
        return self._factors

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(f.dim for f in self._factors)

    def frame_from(self, frames: Sequence["Frame"]) -> "Frame":
        """The product frame induced by one frame per factor (cached)."""
        frames = tuple(frames)
        if len(frames) != len(self._factors):
            raise DimensionError(f"{self.name} has {len(self._factors)} factors, got {len(frames)} frames")
        for i, (fr, sp) in enumerate(zip(frames, self._factors)):
            if not isinstance(fr, Frame) or fr.space is not sp:
                raise SpaceMismatchError(
                    f"frame {i} ({fr!r}) is not a frame of factor {i} ({sp.name}); pass one frame per factor, in order"
                )
        hit = self._product_frames.get(frames)
        if hit is not None:
            return hit
        changes = [sp.reference_frame.change_to(fr) for sp, fr in zip(self._factors, frames)]
        field = field_of(*changes)
        B = field.block_diag([field.asmatrix(ch.B) for ch in changes])
        c = field.concat([field.asvector(ch.c) for ch in changes])
        # B⁻¹ blockwise from the factors (a symbolic inverse of the whole block matrix is slow)
        Binv = field.block_diag([field.asmatrix(ch.B_inv) for ch in changes])
        name = "(" + ", ".join(fr.name for fr in frames) + ")"
        frame = self._reference.derive(B, c, name=name, _check=False, _Binv=Binv)
        frame._factor_frames = frames
        self._product_frames[frames] = frame
        return frame

    def split(self, coords) -> list:
        """Split stacked coordinates into factor coordinates."""
        field = field_of(coords)
        return field.split(field.asvector(coords, self.dim), self.sizes)

    def __repr__(self) -> str:
        return f"ProductSpace({self.name!r}, dim={self.dim})"


def product_frame(frames: Sequence["Frame"]) -> "Frame":
    """The frame on ``A₁ × … × A_K`` induced by frames on the factors (coordinates stacked).

    >>> A = AffineSpace(1, "A")
    >>> k = A.reference_frame.derive([[2.]], [1.], name="k")
    >>> P = product_frame([k, A.reference_frame])
    >>> P.space is A * A, P.factor_frames == (k, A.reference_frame)
    (True, True)
    >>> (A * A).reference_frame.change_to(P).B
    array([[2., 0.],
           [0., 1.]])
    """
    frames = tuple(frames)
    space = ProductSpace(tuple(f.space for f in frames))
    return space.frame_from(frames)


def power_frame(frame: "Frame", K: int) -> "Frame":
    """The frame on ``Aᴷ`` induced by ``frame`` on ``A`` (Eqn. B.1)."""
    return product_frame([frame] * int(K))


def stack_homogeneous(space: ProductSpace, coords):
    """Stacked homogeneous coordinates ``[x₁; 1; …; x_K; 1]`` of product coordinates."""
    field = field_of(coords)
    parts = space.split(coords)
    one = field.ones(1)
    return field.concat([p for x in parts for p in (x, one)])


# --------------------------------------------------------------------------- frames


class FrameChange(_display.Displayable):
    """A change of coordinates ``y = B x + c`` from frame ``source`` to ``target``.

    ``B`` and ``c`` are in the change's :attr:`field`. The identity change is stored
    without matrices and applies in O(1). Inverse and compositions are cached.

    >>> A = AffineSpace(2, "A")
    >>> k = A.reference_frame.derive([[1., 1.], [0., 1.]], [0., 2.], name="k")
    >>> ch = A.reference_frame.change_to(k)
    >>> ch.homogeneous()
    array([[1., 1., 0.],
           [0., 1., 2.],
           [0., 0., 1.]])
    >>> ch.inverse().apply_point(ch.apply_point(np.array([3., 4.])))
    array([3., 4.])
    """

    def __init__(self, source: "Frame", target: "Frame", B=None, c=None, *, field: Field | None = None, _Binv=None):
        self.source = source
        self.target = target
        self._identity = B is None and c is None
        if self._identity:
            self.field = field or NUMERIC
            self._B = None
            self._c = None
        else:
            self.field = field or field_of(B, c)
            n = source.space.dim if source is not None else None
            self._B = self.field.asmatrix(B) if B is not None else self.field.eye(n)
            self._c = self.field.asvector(c) if c is not None else self.field.zeros(self._B.shape[0])
        self._Binv = _Binv
        self._Binv_parts: tuple | None = None  # (first, second) of a composition: B⁻¹ = B₁⁻¹ B₂⁻¹
        self._inverse: FrameChange | None = None
        self._cast: dict = {}

    @property
    def dim(self) -> int:
        return self.source.space.dim

    @property
    def is_identity(self) -> bool:
        return self._identity

    @property
    def B(self):
        """The linear part (``n x n``)."""
        if self._identity:
            return self.field.eye(self.dim)
        return self._B

    @property
    def c(self):
        """The translation (``n``)."""
        if self._identity:
            return self.field.zeros(self.dim)
        return self._c

    @property
    def B_inv(self):
        """``B⁻¹`` (computed once)."""
        if self._identity:
            return self.field.eye(self.dim)
        if self._Binv is None and self._Binv_parts is not None:
            first, second = self._Binv_parts
            self._Binv = self.field.matmul(self.field.asmatrix(first.B_inv), self.field.asmatrix(second.B_inv))
            self._Binv_parts = None
        if self._Binv is None:
            try:
                self._Binv = self.field.inv(self._B)
            except SingularMatrixError as exc:  # pragma: no cover - refused at derive time
                raise SingularFrameChangeError(f"change {self!r} has a singular B: {exc}") from exc
        return self._Binv

    def homogeneous(self):
        """``[B]_H = [[B, c], [0, 1]]``."""
        return self.field.homogeneous(self.B, self.c)

    def stacked_homogeneous(self):
        """For a change between product frames: ``block_diag([B₁]_H, …, [B_K]_H)``.

        This is the change in stacked homogeneous coordinates ``[x₁; 1; …; x_K; 1]``;
        for power frames it is ``I ⊗ [B]_H`` (Eqn. B.1).
        """
        sf = getattr(self.source, "factor_frames", None)
        tf = getattr(self.target, "factor_frames", None)
        if sf is None or tf is None:
            raise SpaceMismatchError(
                "stacked homogeneous coordinates need a change between two product frames "
                "(make them with product_frame / power_frame)"
            )
        changes = [a.change_to(b) for a, b in zip(sf, tf)]
        field = field_of(*changes)
        return field.block_diag([field.asmatrix(ch.homogeneous()) for ch in changes])

    def _in(self, field: Field):
        """(B, c, B_inv-or-None) converted to ``field``."""
        if field is self.field:
            return self._B, self._c
        hit = self._cast.get(field)
        if hit is None:
            hit = (field.asmatrix(self._B), field.asvector(self._c))
            self._cast[field] = hit
        return hit

    def inverse(self) -> "FrameChange":
        """The change back: ``x = B⁻¹ y − B⁻¹ c`` (cached)."""
        if self._inverse is None:
            if self._identity:
                inv = FrameChange(self.target, self.source, field=self.field)
            else:
                Binv = self.B_inv
                inv = FrameChange(
                    self.target,
                    self.source,
                    Binv,
                    -self.field.matmul(Binv, self._c),
                    field=self.field,
                    _Binv=self._B,
                )
            inv._inverse = self
            self._inverse = inv
        return self._inverse

    def then(self, nxt: "FrameChange") -> "FrameChange":
        """Composition: first ``self`` then ``nxt`` (``B = B₂ B₁``, ``c = B₂ c₁ + c₂``)."""
        if self.target is not nxt.source:
            raise SpaceMismatchError(
                f"cannot chain {self!r} then {nxt!r}: the first ends in {self.target!r}, the second starts in {nxt.source!r}"
            )
        if self._identity:
            return FrameChange(self.source, nxt.target, nxt._B, nxt._c, field=nxt.field, _Binv=nxt._Binv) if not nxt._identity else FrameChange(self.source, nxt.target, field=nxt.field)
        if nxt._identity:
            return FrameChange(self.source, nxt.target, self._B, self._c, field=self.field, _Binv=self._Binv)
        field = field_of(self, nxt)
        B1, c1 = self._in(field)
        B2, c2 = nxt._in(field)
        out = FrameChange(self.source, nxt.target, field.matmul(B2, B1), field.matmul(B2, c1) + c2, field=field)
        out._Binv_parts = (self, nxt)
        return out

    def _coords(self, x):
        field = field_of(self, x)
        return field, field.asvector(x, self.dim)

    def apply_point(self, x):
        """Point coordinates: ``y = B x + c``."""
        field, x = self._coords(x)
        if self._identity:
            return x
        B, c = self._in(field)
        return field.matmul(B, x) + c

    def apply_vector(self, v):
        """Vector coordinates: ``B v`` (no translation)."""
        field, v = self._coords(v)
        if self._identity:
            return v
        B, _ = self._in(field)
        return field.matmul(B, v)

    def apply_covector(self, w):
        """Covector coordinates: ``B⁻ᵀ w``."""
        field, w = self._coords(w)
        if self._identity:
            return w
        Binv = self.B_inv if field is self.field else field.asmatrix(self.B_inv)
        return field.matmul(field.transpose(Binv), w)

    def _display(self, frame=None):
        """``y = B x + c`` with the matrices (``frame`` is not used: a change has two)."""
        return _display.change_display(self)

    def __repr__(self) -> str:
        kind = "identity" if self._identity else f"{self.field!r}"
        return f"FrameChange({self.source.name} → {self.target.name}, {kind})"


class Frame(_display.Displayable):
    """An affine basis (origin + linear basis) of an affine space.

    Frames are hashable and compared by identity. Make new ones with :meth:`derive`;
    ask for coordinate changes with :meth:`change_to`.

    >>> A = AffineSpace(2, "A")
    >>> k = A.reference_frame.derive([[2., 0.], [0., 1.]], [1., 0.], name="κ")
    >>> k2 = k.derive([[1., 0.], [0., 3.]], name="κ2")
    >>> A.reference_frame.change_to(k2).B
    array([[2., 0.],
           [0., 3.]])
    >>> k2.change_to(A.reference_frame).c
    array([-0.5, -0. ])
    """

    __slots__ = ("space", "name", "parent", "_from_parent", "_from_root", "_changes", "_factor_frames", "_induced_by", "__weakref__")

    def __init__(self, space: AffineSpace, parent: "Frame | None", from_parent: FrameChange | None, name: str | None):
        self.space = space
        self.parent = parent
        self._from_parent = from_parent
        self.name = name if name is not None else f"frame{next(_counter)}"
        self._from_root: FrameChange | None = None
        self._changes: dict = {}
        self._factor_frames = None
        self._induced_by = None

    # -- structure
    @property
    def field(self) -> Field:
        """SYMBOLIC if any change on the way from the reference frame is symbolic."""
        return self.from_root().field

    @property
    def factor_frames(self):
        """For a product frame: the frames on the factors; else ``None``."""
        return self._factor_frames

    @property
    def induced_by(self):
        """For a frame of ``Aff(A, Z)``: the pair ``(frame_A, frame_Z)``; else ``None``."""
        return self._induced_by

    @property
    def is_reference(self) -> bool:
        return self.parent is None

    def derive(self, B, c=None, name: str | None = None, *, _check: bool = True, _Binv=None) -> "Frame":
        """A new frame κ whose coordinates are ``y = B x + c`` (``x`` in this frame).

        Raises
        ------
        DimensionError
            ``B`` is not ``n x n`` or ``c`` not of length ``n``.
        SingularFrameChangeError
            ``B`` is singular (numerically: 1-norm condition number above ``1/(n ε)``).
        """
        n = self.space.dim
        field = field_of(B, c)
        Bm = field.asmatrix(B)
        if tuple(Bm.shape) != (n, n):
            raise DimensionError(
                f"a change of frame on {self.space.name} (dim {n}) needs B of shape ({n}, {n}), got {tuple(Bm.shape)}"
            )
        cv = field.zeros(n) if c is None else field.asvector(c)
        if cv.shape[0] != n:
            raise DimensionError(
                f"a change of frame on {self.space.name} (dim {n}) needs c of length {n}, got {cv.shape[0]}"
            )
        Binv = _Binv
        try:
            if Binv is None:
                Binv = field.inv(Bm)
            else:
                _check = False
            if _check and not field.symbolic and n:
                cond = np.linalg.norm(Bm, 1) * np.linalg.norm(Binv, 1)
                if not np.isfinite(cond) or cond > 1.0 / (n * np.finfo(np.float64).eps):
                    raise SingularMatrixError(f"1-norm condition number {cond:.3g} exceeds 1/(n·eps)")
        except SingularMatrixError as exc:
            rank = field.rank(Bm)
            raise SingularFrameChangeError(
                f"B of the new frame{' ' + repr(name) if name else ''} on {self.space.name} is singular (rank {rank} < {n}; {exc}); "
                "a change of frame y = B x + c needs an invertible B"
            ) from None
        frame = Frame(self.space, self, None, name)
        frame._from_parent = FrameChange(self, frame, Bm, cv, field=field, _Binv=Binv)
        return frame

    def from_root(self) -> FrameChange:
        """The change from the space's reference frame to this frame (cached)."""
        if self._from_root is None:
            if self.parent is None:
                self._from_root = FrameChange(self, self)
            else:
                up = self.parent.from_root()
                ch = up.then(self._from_parent) if not up.is_identity else FrameChange(
                    self.space.reference_frame, self, self._from_parent._B, self._from_parent._c,
                    field=self._from_parent.field, _Binv=self._from_parent._Binv,
                )
                ch.source = self.space.reference_frame
                self._from_root = ch
        return self._from_root

    def _ancestors(self) -> list["Frame"]:
        out, f = [], self
        while f is not None:
            out.append(f)
            f = f.parent
        return out

    def change_to(self, other: "Frame") -> FrameChange:
        """The change of coordinates from this frame to ``other`` (chained, inverted, cached).

        The path goes through the nearest common ancestor in the tree of derivations.
        """
        if not isinstance(other, Frame):
            raise SpaceMismatchError(f"change_to needs a Frame, got {type(other).__name__}")
        if other.space is not self.space:
            raise SpaceMismatchError(
                f"frames {self.name} (on {self.space.name}) and {other.name} (on {other.space.name}) "
                "belong to different spaces; a change of frame is only defined within one space"
            )
        hit = self._changes.get(other)
        if hit is not None:
            return hit
        if other is self:
            ch = FrameChange(self, self)
        elif other.parent is self:
            ch = other._from_parent
        elif self.parent is other:
            ch = self._from_parent.inverse()
        else:
            mine = self._ancestors()
            theirs = other._ancestors()
            common = next(f for f in mine if f in set(theirs))
            up = FrameChange(self, self)
            for f in mine:  # self -> common, through inverses
                if f is common:
                    break
                up = up.then(f._from_parent.inverse())
            down = []
            for f in theirs:
                if f is common:
                    break
                down.append(f._from_parent)
            ch = up
            for step in reversed(down):
                ch = ch.then(step)
            ch.source, ch.target = self, other
        self._changes[other] = ch
        if other is not self:
            other._changes.setdefault(self, ch.inverse())
        return ch

    def _display(self, frame=None):
        """Origin and basis of this frame in ``frame``'s coordinates (default: the reference)."""
        return _display.frame_display(self, frame)

    def __repr__(self) -> str:
        return f"Frame({self.name!r} on {self.space.name})"

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------- values


class _Value(_display.Displayable):
    """A coordinate-free value given by coordinates in a frame; cached per frame."""

    _kind = "value"
    __array_priority__ = 1000  # so that ndarray * value defers to value.__rmul__

    def __init__(self, frame: Frame, coords):
        if not isinstance(frame, Frame):
            raise SpaceMismatchError(
                f"{type(self).__name__} needs a Frame as first argument, got {type(frame).__name__}"
            )
        field = field_of(coords)
        x = field.asvector(coords)
        if x.shape[0] != frame.space.dim:
            raise DimensionError(
                f"{type(self).__name__} of {frame.space.name} (dim {frame.space.dim}) needs "
                f"{frame.space.dim} coordinates in frame {frame.name}, got {x.shape[0]}"
            )
        self._frame = frame
        self._coords = {frame: x}

    @property
    def frame(self) -> Frame:
        """The frame the value was made in."""
        return self._frame

    @property
    def space(self) -> AffineSpace:
        """The affine space the value belongs to (vectors and covectors: the space they act on)."""
        return self._frame.space

    @property
    def field(self) -> Field:
        return field_of(self._coords[self._frame])

    def _transform(self, change: FrameChange, x):
        raise NotImplementedError

    def coords(self, frame: Frame | None = None):
        """Coordinates in ``frame`` (default: the frame it was made in); cached per frame."""
        if frame is None:
            frame = self._frame
        hit = self._coords.get(frame)
        if hit is not None:
            return hit
        if not isinstance(frame, Frame) or frame.space is not self.space:
            where = frame.space.name if isinstance(frame, Frame) else type(frame).__name__
            raise SpaceMismatchError(
                f"asked for coordinates of a {self._kind} of {self.space.name} in a frame of {where}"
            )
        x = self._transform(self._frame.change_to(frame), self._coords[self._frame])
        self._coords[frame] = x
        return x

    def _same_space(self, other, what: str):
        if other.space is not self.space:
            raise SpaceMismatchError(
                f"cannot {what} a {self._kind} of {self.space.name} and a {other._kind} of {other.space.name}"
            )

    def equals(self, other: "_Value", frame: Frame | None = None) -> bool:
        """Same kind, same space and equal coordinates (field equality) in ``frame``."""
        if type(other) is not type(self):
            return False
        self._same_space(other, "compare")
        f = frame or self._frame
        a, b = self.coords(f), other.coords(f)
        field = field_of(a, b)
        return field.equal(field.asvector(a), field.asvector(b))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space.name}, {_fmt_coords(self.coords())} in {self._frame.name})"

    def _sympystr(self, printer) -> str:
        return f"{type(self).__name__}({self.space.name}, {printer.doprint(self.coords())} in {self._frame.name})"

    def _display(self, frame=None):
        """The coordinates in ``frame`` (default: the value's own), see :mod:`geomkfac.display`."""
        return _display.value_display(self, frame)


def _is_scalar(s) -> bool:
    return isinstance(s, (int, float, np.number)) or (isinstance(s, sympy.Expr) and not isinstance(s, sympy.MatrixBase))


def _combine(a, b):
    field = field_of(a, b)
    return field, field.asvector(a), field.asvector(b)


class Point(_Value):
    """A point of an affine space: coordinates transform with ``(B, c)``.

    ``p - q`` is a :class:`Vector`, ``p + v`` a Point.

    >>> A = AffineSpace(2, "A")
    >>> p, q = Point(A.reference_frame, [1., 2.]), Point(A.reference_frame, [0., 1.])
    >>> (p - q).coords()
    array([1., 1.])
    >>> (q + (p - q)).equals(p)
    True
    """

    _kind = "point"

    def _transform(self, change, x):
        return change.apply_point(x)

    def __sub__(self, other):
        if isinstance(other, Point):
            self._same_space(other, "subtract")
            field, a, b = _combine(self.coords(), other.coords(self._frame))
            return Vector(self._frame, a - b)
        if isinstance(other, Vector):
            self._same_space(other, "subtract")
            field, a, b = _combine(self.coords(), other.coords(self._frame))
            return Point(self._frame, a - b)
        return NotImplemented

    def __add__(self, other):
        if isinstance(other, Vector):
            self._same_space(other, "add")
            field, a, b = _combine(self.coords(), other.coords(self._frame))
            return Point(self._frame, a + b)
        if isinstance(other, Point):
            raise SpaceMismatchError("points cannot be added; subtract them to get a vector, or add a vector to a point")
        return NotImplemented

    __radd__ = __add__


class _Linear(_Value):
    """Shared linear algebra of vectors and covectors."""

    def __add__(self, other):
        if type(other) is type(self):
            self._same_space(other, "add")
            field, a, b = _combine(self.coords(), other.coords(self._frame))
            return type(self)(self._frame, a + b)
        if isinstance(other, _Value):
            raise SpaceMismatchError(f"cannot add a {self._kind} and a {other._kind}")
        return NotImplemented

    def __sub__(self, other):
        if type(other) is type(self):
            self._same_space(other, "subtract")
            field, a, b = _combine(self.coords(), other.coords(self._frame))
            return type(self)(self._frame, a - b)
        if isinstance(other, _Value):
            raise SpaceMismatchError(f"cannot subtract a {other._kind} from a {self._kind}")
        return NotImplemented

    def __neg__(self):
        return type(self)(self._frame, -self.coords())

    def __mul__(self, s):
        if _is_scalar(s):
            field = field_of(self.coords(), s)
            return type(self)(self._frame, field.asvector(self.coords()) * (s if field is NUMERIC else field.scalar(s)))
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, s):
        if _is_scalar(s):
            field = field_of(self.coords(), s)
            return self * (1.0 / s if field is NUMERIC else 1 / field.scalar(s))
        return NotImplemented


class Vector(_Linear):
    """A vector of the space of translations (= tangent vector): transforms with ``B`` only.

    >>> A = AffineSpace(1, "A")
    >>> k = A.reference_frame.derive([[3.]], [5.])
    >>> Vector(A.reference_frame, [2.]).coords(k)
    array([6.])
    """

    _kind = "vector"

    @property
    def vector_space(self) -> VectorSpace:
        return self.space.vector_space

    def _transform(self, change, x):
        return change.apply_vector(x)


class Covector(_Linear):
    """A covector (element of the dual, e.g. a differential ``dh``): transforms with ``B⁻ᵀ``.

    ``omega(v)`` is a number that no frame changes.

    >>> A = AffineSpace(1, "A")
    >>> k = A.reference_frame.derive([[4.]])
    >>> w = Covector(A.reference_frame, [2.])
    >>> w.coords(k)
    array([0.5])
    >>> float(w(Vector(k, [4.])))
    2.0
    """

    _kind = "covector"

    @property
    def dual_space(self) -> DualSpace:
        return self.space.dual

    def _transform(self, change, x):
        return change.apply_covector(x)

    def __call__(self, vector: Vector):
        if not isinstance(vector, Vector):
            raise SpaceMismatchError(f"a covector acts on vectors, got {type(vector).__name__}")
        self._same_space(vector, "pair")
        field, a, b = _combine(self.coords(), vector.coords(self._frame))
        return field.dot(a, b)
