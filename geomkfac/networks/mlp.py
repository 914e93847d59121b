"""The abstract MLP and its coordinate networks (paper §3, Appendix D).

An abstract MLP with ``L`` layers is a chain of affine spaces

    ``A_0 --ω_1--> Z_1 --φ_1--> A_1 --ω_2--> … --ω_L--> Z_L --φ_L--> A_L``

with weights ``ω_i`` points of ``W_i = Aff(A_{i-1}, Z_i)`` and activations ``φ_i``
smooth maps given, in the spaces' *reference* frames, by elementwise functions. The
weight space is the product ``W = W_1 × … × W_L``.

A :class:`FrameChoice` (a frame on every ``A_i`` and ``Z_i``) turns the abstract network
into a :class:`~geomkfac.reparam.CoordinateMLP`: the weights' coordinates are read in the
frames of ``W_i`` induced by the frames on ``A_{i-1}`` and ``Z_i`` (the core's
``AffineMaps.frame``, law D.2), the activations become the conjugated activations of D.3.
Deriving a second choice of frames with :class:`~geomkfac.reparam.LayerChange` s gives the
same coordinate network as :func:`~geomkfac.reparam.reparameterize` on arrays.

Convention: ``A``, ``Z`` and ``weight_spaces`` are indexed by layer number;
``Z[0]`` and ``weight_spaces[0]`` are ``None``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import sympy as sp

from geomkfac.activations_sym import (
    Activation,
    ConjugatedActivation,
    ElementwiseActivation,
    as_exact_sym as _to_sym,
    get_activation,
    is_symbolic,
)
from geomkfac import display as _display
from geomkfac.errors import ConfigurationError, DimensionError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.maps import AffineMaps, Map
from geomkfac.pipeline import activation_map
from geomkfac.reparam import (
    CoordinateMLP,
    LayerChange,
    centering,
    normalize_changes,
    permutation,
    random_affine,
    reparameterize,
    sigmoid_to_tanh,
    tanh_to_sigmoid,
    transform_weights,
    unit_scaling,
    whitening,
)
from geomkfac.spaces import AffineSpace, Frame, Point, ProductSpace

__all__ = [
    "AbstractMLP",
    "FrameChoice",
    "MLPSample",
    "NetworkMap",
    "CoordinateMLP",
    "LayerChange",
    "Activation",
    "ElementwiseActivation",
    "ConjugatedActivation",
    "get_activation",
    "reparameterize",
    "transform_weights",
    "sigmoid_to_tanh",
    "tanh_to_sigmoid",
    "centering",
    "whitening",
    "unit_scaling",
    "permutation",
    "random_affine",
]


def _warn_layer_sizes():
    import warnings

    warnings.warn("layer_sizes is deprecated: it is the number of parameters per layer, now "
                  "param_counts; the widths of the spaces are widths", DeprecationWarning, stacklevel=3)


def _vec(M):
    """Column-stacking vec of a numeric or sympy matrix (1-D array / sympy column)."""
    if isinstance(M, sp.MatrixBase):
        return sp.ImmutableMatrix(M.T.reshape(M.rows * M.cols, 1))
    return np.asarray(M, dtype=float).reshape(-1, order="F")


class FrameChoice(_display.Displayable):
    """A frame on every ``A_i`` (i = 0..L) and ``Z_i`` (i = 1..L) of an abstract MLP.

    Attributes
    ----------
    net : AbstractMLP
    A : tuple of Frame, length L + 1
    Z : tuple of Frame or None, length L + 1 (``Z[0] is None``)

    Examples
    --------
    >>> import numpy as np
    >>> net = AbstractMLP([2, 3, 1], ["tanh", "identity"], name="ex")
    >>> ref = net.reference_frames()
    >>> kappa = ref.derive({1: centering(np.array([0.1, 0.2, 0.3]))})
    >>> kappa.A[1] is ref.A[1], kappa.A[0] is ref.A[0]
    (False, True)
    >>> kappa.weight_space_frame.space is net.weight_space
    True
    """

    def __init__(self, net: "AbstractMLP", A_frames: Sequence[Frame], Z_frames: Sequence[Frame | None]):
        L = net.L
        A_frames, Z_frames = tuple(A_frames), tuple(Z_frames)
        if len(A_frames) != L + 1 or len(Z_frames) != L + 1:
            raise DimensionError(
                f"a FrameChoice of an {L}-layer MLP needs {L + 1} frames on A_0..A_{L} and "
                f"{L + 1} entries for Z (Z[0] = None), got {len(A_frames)} and {len(Z_frames)}"
            )
        for i, f in enumerate(A_frames):
            if not isinstance(f, Frame) or f.space is not net.A[i]:
                raise SpaceMismatchError(f"A-frame {i} must be a frame of {net.A[i].name}, got {f!r}")
        for i, f in enumerate(Z_frames[1:], start=1):
            if not isinstance(f, Frame) or f.space is not net.Z[i]:
                raise SpaceMismatchError(f"Z-frame {i} must be a frame of {net.Z[i].name}, got {f!r}")
        self.net = net
        self.A = A_frames
        self.Z = (None,) + Z_frames[1:]

    # ---------------------------------------------------------------- derived frames
    def derive(self, changes, name: str | None = None) -> "FrameChoice":
        """New frames: ``a‡ = Ω_i a + γ_i`` on ``A_i`` and ``z = Φ_i z‡ + τ_i`` on ``Z_i``.

        ``changes`` as for :func:`~geomkfac.reparam.reparameterize` (``{layer: LayerChange}``,
        layer 0 = input, L = output spaces).
        """
        ch = normalize_changes(changes, self.net.L)
        tag = name or "‡"
        A_new, Z_new = [], [None]
        for i in range(self.net.L + 1):
            c = ch[i]
            n = self.net.widths[i]
            if c.changes_A:
                sym = c.is_symbolic
                O, g = c._parts(n, "A", sym)
                A_new.append(self.A[i].derive(O, g, name=f"{self.A[i].name}{tag}"))
            else:
                A_new.append(self.A[i])
            if i == 0:
                continue
            if c.changes_Z:
                sym = c.is_symbolic
                P, t = c._parts(n, "Z", sym)
                field = field_of(P, t)
                Pinv = field.inv(field.asmatrix(P))
                shift = -field.matmul(Pinv, field.asvector(t))
                Z_new.append(self.Z[i].derive(Pinv, shift, name=f"{self.Z[i].name}{tag}"))
            else:
                Z_new.append(self.Z[i])
        return FrameChoice(self.net, A_new, Z_new)

    def weight_frame(self, i: int) -> Frame:
        """The frame of ``W_i = Aff(A_{i-1}, Z_i)`` induced by ``A[i-1]`` and ``Z[i]``."""
        self._check_layer(i)
        return self.net.weight_spaces[i].frame(self.A[i - 1], self.Z[i])

    @property
    def weight_space_frame(self) -> Frame:
        """The product frame on ``W = W_1 × … × W_L`` (coordinates ``[vec W̄_1; …]``)."""
        return self.net.weight_space.frame_from([self.weight_frame(i) for i in range(1, self.net.L + 1)])

    def activation(self, i: int) -> Activation:
        """The coordinate expression of ``φ_i : Z_i → A_i`` in these frames (Eqn. D.3).

        With ``(Ω, γ)`` the change reference → ``A[i]`` and ``(Φ, τ)`` the change
        ``Z[i]`` → reference: ``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ``.
        """
        self._check_layer(i)
        base = self.net.activations[i - 1]
        fA, fZ = self.A[i], self.Z[i]
        if fA.is_reference and fZ.is_reference:
            return base
        chA = self.net.A[i].reference_frame.change_to(fA)
        chZ = fZ.change_to(self.net.Z[i].reference_frame)
        return ConjugatedActivation(base, chA.B, chA.c, chZ.B, chZ.c)

    def _check_layer(self, i):
        if not 1 <= i <= self.net.L:
            raise ConfigurationError(f"layers are numbered 1..{self.net.L}, got {i}")

    def _display(self, frame=None):
        """The network in these frames (``frame``: another FrameChoice to show instead)."""
        return _display.network_display(self.net, frame if frame is not None else self)

    def __repr__(self) -> str:
        a = ", ".join(f.name for f in self.A)
        z = ", ".join(f.name for f in self.Z[1:])
        return f"FrameChoice(A: [{a}]; Z: [{z}])"


class AbstractMLP(_display.Displayable):
    """An abstract MLP: affine spaces, weight spaces ``Aff(A_{i-1}, Z_i)``, activations.

    Parameters
    ----------
    widths : sequence of int
        ``n_0, n_1, …, n_L``.
    activations : activation or sequence of L activations (names or :class:`Activation` objects)
        ``φ_i`` in the reference frames of ``Z_i`` and ``A_i``. A single one means, as for
        :class:`geomkfac.nn.MLP`: the hidden layers use it and the last layer is
        ``"identity"``.
    name : str

    Layers are numbered as in the paper: weight spaces ``W_i`` (``weight_spaces[i]``) and
    pre-activation spaces ``Z_i`` for ``i = 1..L``, activation spaces ``A_i`` for
    ``i = 0..L`` (``A[0]`` the input); :attr:`widths` are the dimensions ``n_0..n_L`` and
    :attr:`param_counts` the number of parameters ``dim W_i`` of each layer.

    Examples
    --------
    >>> import numpy as np
    >>> net = AbstractMLP([2, 3, 1], ["sigmoid", "identity"], name="doc")
    >>> net.L, net.weight_spaces[1].dim, net.weight_space.dim
    (2, 9, 13)
    >>> rng = np.random.default_rng(0)
    >>> w = net.weights_from([rng.normal(size=(3, 3)), rng.normal(size=(1, 4))])
    >>> ref = net.reference_frames()
    >>> kappa = ref.derive({1: sigmoid_to_tanh(3)})
    >>> f_ref, f_kappa = net.coordinates(w, ref), net.coordinates(w, kappa)
    >>> x = rng.normal(size=(4, 2))
    >>> bool(np.allclose(f_ref.forward(x), f_kappa.forward(x)))     # same function
    True
    >>> bool(np.allclose(f_kappa.activations[0](x[:, :1] * np.ones(3)), np.tanh(x[:, :1] * np.ones(3))))
    True
    """

    def __init__(self, widths: Sequence[int], activations: Sequence, name: str = "net"):
        widths = tuple(int(n) for n in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise DimensionError(f"an MLP needs at least two positive widths (n_0, n_1, …), got {widths}")
        L = len(widths) - 1
        if isinstance(activations, (str, Activation)):
            # as geomkfac.nn.MLP: one activation for the hidden layers, identity for the last
            get_activation(activations)  # checked even without a hidden layer to use it
            activations = [activations] * (L - 1) + ["identity"]
        activations = tuple(get_activation(a) for a in activations)
        if len(activations) != L:
            raise DimensionError(f"{L} layers need {L} activations, got {len(activations)}")
        self.name = name
        self.widths = widths
        self.L = L
        self.activations = activations
        self.A = tuple(AffineSpace(widths[i], f"{name}.A{i}") for i in range(L + 1))
        self.Z = (None,) + tuple(AffineSpace(widths[i], f"{name}.Z{i}") for i in range(1, L + 1))
        self.weight_spaces = (None,) + tuple(AffineMaps(self.A[i - 1], self.Z[i]) for i in range(1, L + 1))
        self.weight_space = ProductSpace(self.weight_spaces[1:], name=f"{name}.W")
        self._reference = None

    @property
    def param_counts(self) -> tuple[int, ...]:
        """Number of parameters ``dim W_i = n_i (n_{i-1} + 1)`` of each layer ``i = 1..L``
        (the sizes of the spaces are :attr:`widths`).

        >>> AbstractMLP([2, 3, 1], "tanh").param_counts
        (9, 4)
        """
        return tuple(W.dim for W in self.weight_spaces[1:])

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Deprecated name of :attr:`param_counts` (it never gave the layers' widths: those
        are :attr:`widths`)."""
        _warn_layer_sizes()
        return self.param_counts

    def reference_frames(self) -> FrameChoice:
        """The reference frame of every space (cached)."""
        if self._reference is None:
            self._reference = FrameChoice(
                self,
                [A.reference_frame for A in self.A],
                [None] + [Z.reference_frame for Z in self.Z[1:]],
            )
        return self._reference

    def _frames(self, frames):
        if frames is None:
            return self.reference_frames()
        if not isinstance(frames, FrameChoice) or frames.net is not self:
            raise SpaceMismatchError(f"frames must be a FrameChoice of {self.name}, got {frames!r}")
        return frames

    # ---------------------------------------------------------------- weights ↔ coordinates
    def weights_from(self, Wbars: Sequence, frames: FrameChoice | None = None) -> Point:
        """The Point of the weight space whose coordinates in ``frames`` are ``Wbars``.

        ``Wbars[i-1] = [W_i b_i]`` (``n_i × (n_{i-1}+1)``), numeric or sympy; coordinates
        are ``[vec W̄_1; …; vec W̄_L]`` (column-stacking).
        """
        frames = self._frames(frames)
        if len(Wbars) != self.L:
            raise DimensionError(f"{self.name} has {self.L} layers, got {len(Wbars)} weight matrices")
        parts = []
        for i, W in enumerate(Wbars, start=1):
            shape = self.weight_spaces[i].shape
            if tuple(W.shape) != shape:
                raise DimensionError(f"layer {i}: W̄ must be {shape}, got {tuple(W.shape)}")
            parts.append(_vec(W))
        field = field_of(*parts)
        return Point(frames.weight_space_frame, field.concat([field.asvector(p) for p in parts]))

    def layer_weights(self, weights: Point, frames: FrameChoice | None = None) -> list:
        """``[W̄_1, …, W̄_L]``: the weights' coordinates in ``frames`` (law D.2 via the core)."""
        frames = self._frames(frames)
        if not isinstance(weights, Point) or weights.space is not self.weight_space:
            raise SpaceMismatchError(f"weights must be a Point of {self.weight_space.name}, got {weights!r}")
        x = weights.coords(frames.weight_space_frame)
        field = field_of(x)
        parts = self.weight_space.split(x)
        return [field.unvec(p, self.weight_spaces[i].shape) for i, p in enumerate(parts, start=1)]

    def coordinates(self, weights: Point, frames: FrameChoice | None = None) -> CoordinateMLP:
        """The coordinate network in ``frames``: weights by D.2, activations by D.3."""
        frames = self._frames(frames)
        Ws = self.layer_weights(weights, frames)
        acts = [frames.activation(i) for i in range(1, self.L + 1)]
        return CoordinateMLP(Ws, acts)

    def random_weights(self, rng, scale: float = 1.0, frames: FrameChoice | None = None) -> Point:
        """Weights with i.i.d. ``N(0, scale²/(n_{i-1}+1))`` coordinates in ``frames``."""
        rng = np.random.default_rng(rng)
        Ws = [
            rng.normal(size=self.weight_spaces[i].shape) * scale / np.sqrt(self.widths[i - 1] + 1)
            for i in range(1, self.L + 1)
        ]
        return self.weights_from(Ws, frames)

    def input_coords(self, inputs, frames: FrameChoice | None = None):
        """Input coordinates (given in the reference frame of ``A_0``) in ``frames.A[0]``.

        Rows are examples: a numeric ``(N, n_0)`` batch or a sympy ``(N, n_0)`` matrix is
        mapped in one step (a single sympy column is read as one example and stays a column).
        """
        frames = self._frames(frames)
        f0 = frames.A[0]
        if f0.is_reference:
            return inputs
        ch = self.A[0].reference_frame.change_to(f0)
        if is_symbolic(inputs) or ch.field.symbolic:
            x = _to_sym(inputs)
            n0 = self.widths[0]
            if np.ndim(inputs) == 1 and not isinstance(inputs, sp.MatrixBase):
                x = x.T  # one example given as a flat list: a row
            column = x.cols == 1 and x.rows == n0 and n0 != 1
            rows = x.T if column else x
            if rows.cols != n0:
                raise DimensionError(
                    f"symbolic inputs are rows (N, {n0}), one example per row, got shape {tuple(x.shape)}")
            out = rows * _to_sym(ch.B).T + sp.ones(rows.rows, 1) * _to_sym(ch.c).reshape(1, n0)
            return sp.ImmutableMatrix(out.T if column else out)
        x = np.asarray(inputs, dtype=float)
        return x @ np.asarray(ch.B, dtype=float).T + np.asarray(ch.c, dtype=float).reshape(-1)

    # ---------------------------------------------------------------- the network as maps
    def layer_maps(self, weights: Point, frames: FrameChoice | None = None):
        """The layers as core maps in ``frames``: ``(ω, φ)`` with ``ω[i]`` the
        :class:`~geomkfac.maps.AffineMap` ``A_{i-1} → Z_i`` the weights are (from their point of
        ``W_i`` read in the induced frame, law D.2) and ``φ[i]`` the activation as a
        :class:`~geomkfac.maps.SmoothMap` ``Z_i → A_i`` between ``frames.Z[i]`` and
        ``frames.A[i]`` (Eqn. D.3).  Index 0 is ``None`` in both.
        """
        frames = self._frames(frames)
        points = self.layer_points(weights, frames)
        omegas = [None] + [self.weight_spaces[i].map_of(points[i]) for i in range(1, self.L + 1)]
        phis = [None] + [activation_map(frames.Z[i], frames.A[i], frames.activation(i)) for i in range(1, self.L + 1)]
        return omegas, phis

    def layer_points(self, weights: Point, frames: FrameChoice | None = None) -> list:
        """``[None, ω_1, …, ω_L]``: the weights' factor points of ``W_i``, in the frames of
        ``W_i`` induced by ``frames``."""
        frames = self._frames(frames)
        if not isinstance(weights, Point) or weights.space is not self.weight_space:
            raise SpaceMismatchError(f"weights must be a Point of {self.weight_space.name}, got {weights!r}")
        parts = self.weight_space.split(weights.coords(frames.weight_space_frame))
        return [None] + [Point(frames.weight_frame(i), p) for i, p in enumerate(parts, start=1)]

    def sample(self, weights: Point, x, frames: FrameChoice | None = None) -> "MLPSample":
        """The pipeline's objects for one example (an input given in the reference frame of
        ``A_0``): points ``α_i``, ``ζ_i``, evaluation maps ``ψ``, the rest of the network ``ϕ^i``
        and the network map ``Ψ_ξ`` — see :class:`MLPSample`."""
        frames = self._frames(frames)
        return MLPSample(self, weights, x, frames)

    def forward(self, weights: Point, inputs, frames: FrameChoice | None = None):
        """Network output (coordinates in ``frames.A[L]``) for inputs given in the
        reference frame of ``A_0``."""
        frames = self._frames(frames)
        return self.coordinates(weights, frames).forward(self.input_coords(inputs, frames))

    def _display(self, frame=None, weights=None):
        return _display.network_display(self, frame, weights)

    def display(self, frame=None, weights=None):
        """The network in the FrameChoice ``frame`` (default: reference frames): spaces,
        frames, activations in those frames (D.3) and, given ``weights``, ``[W̄_i]`` (D.2)."""
        return self._display(frame, weights)

    def latex(self, frame=None, weights=None) -> str:
        """The LaTeX of :meth:`display`."""
        return self._display(frame, weights).latex

    def __repr__(self) -> str:
        acts = ", ".join(a.name for a in self.activations)
        return f"AbstractMLP({self.name!r}, widths={self.widths}, activations=[{acts}])"


class MLPSample:
    """One example ξ read through the core objects (paper §3, Eqns. 3.2–3.4).

    For the input ``x`` (coordinates in the reference frame of ``A_0``), the weights ``w``
    and a :class:`FrameChoice`:

    * ``alphas[i]`` — ``α_i ∈ A_i`` (``alphas[0]`` the input point), a Point in ``frames.A[i]``;
    * ``zetas[i]`` — ``ζ_i = ω_i(α_{i-1}) ∈ Z_i``, a Point in ``frames.Z[i]`` (index 0: None);
    * ``evaluations[i]`` — ``ψ_{α_{i-1}} : W_i → Z_i``, the evaluation map
      (:meth:`~geomkfac.maps.AffineMaps.evaluation_map`) in the frames induced by ``frames``;
    * ``rests[i]`` — ``ϕ^i_ξ : Z_i → A_L``, the rest of the network
      ``φ_L ∘ ω_L ∘ … ∘ ω_{i+1} ∘ φ_i`` as a :class:`~geomkfac.maps.ComposedMap`;
    * ``layer_maps(i)`` — ``Ψ^i_ξ = ϕ^i_ξ ∘ ψ_{α_{i-1}} : W_i → A_L``;
    * ``network_map`` — ``Ψ_ξ : W → A_L`` (:class:`NetworkMap`);
    * ``weight_points[i]`` — ``ω_i`` as a Point of ``W_i`` (induced frame).

    Nothing here is a coordinate formula of its own: values and Jacobians come from the core
    maps (Jacobians by the chain rule of :class:`~geomkfac.maps.ComposedMap`).

    Examples
    --------
    >>> import numpy as np
    >>> net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="smp")
    >>> w = net.weights_from([np.array([[1., 0., 0.], [0., 1., 0.]]), np.array([[1., 1., 0.]])])
    >>> s = net.sample(w, np.array([0.5, -0.5]))
    >>> s.alphas[2].coords().round(6)
    array([0.])
    >>> s.rests[1].jacobian(s.zetas[1]).round(6)          # [1 1] · diag(tanh'(z))
    array([[0.786448, 0.786448]])
    >>> s.layer_maps(1).jacobian(s.weight_points[1]).round(6)   # (āᵀ ⊗ I) then ϕ¹
    array([[ 0.393224,  0.393224, -0.393224, -0.393224,  0.786448,  0.786448]])
    """

    def __init__(self, net: AbstractMLP, weights: Point, x, frames: FrameChoice):
        L = net.L
        self.net, self.frames = net, frames
        omegas, phis = net.layer_maps(weights, frames)
        self.omegas, self.phis = omegas, phis
        self.weight_points = net.layer_points(weights, frames)
        a = Point(net.A[0].reference_frame, x)
        alphas, zetas = [a], [None]
        for i in range(1, L + 1):
            z = omegas[i](a)
            a = phis[i](z)
            zetas.append(z)
            alphas.append(a)
        self.alphas, self.zetas = tuple(alphas), tuple(zetas)
        self.network_map = NetworkMap(net, alphas[0], frames)
        # the network map is linearized at these weights most of the time: reuse this sample
        self.network_map._last = (weights.coords(frames.weight_space_frame), self)

    @functools.cached_property
    def evaluations(self) -> tuple:
        """``(None, ψ_1, …, ψ_L)``: the evaluation maps at ``α_{i-1}`` (built on first use)."""
        net, frames = self.net, self.frames
        return (None,) + tuple(
            net.weight_spaces[i].evaluation_map(self.alphas[i - 1], frames.A[i - 1], frames.Z[i])
            for i in range(1, net.L + 1)
        )

    @functools.cached_property
    def rests(self) -> tuple:
        """``(None, ϕ^1, …, ϕ^L)``: the rest of the network after each layer (built on first use)."""
        L, omegas, phis = self.net.L, self.omegas, self.phis
        rests = [None] * (L + 1)
        rest = phis[L]
        rests[L] = rest
        for i in range(L - 1, 0, -1):
            rest = rest @ (omegas[i + 1] @ phis[i])
            rests[i] = rest
        return tuple(rests)

    @property
    def output(self) -> Point:
        """``α_L``, the network's output point."""
        return self.alphas[-1]

    def layer_maps(self, i: int) -> Map:
        """``Ψ^i_ξ = ϕ^i_ξ ∘ ψ_{α_{i-1}} : W_i → A_L`` (the network as a function of layer i's weights)."""
        self.frames._check_layer(i)
        return self.rests[i] @ self.evaluations[i]


class NetworkMap(Map):
    """``Ψ_ξ : W → A_L``, the network as a function of all its weights, for one input point.

    The weight space is the product ``W_1 × … × W_L``; the differential of ``Ψ_ξ`` is the sum
    of its partial differentials, so its Jacobian in the product frame is
    ``[J(Ψ^1_ξ) … J(Ψ^L_ξ)]``, each partial map ``Ψ^i_ξ = ϕ^i_ξ ∘ ψ_{α_{i-1}}`` built from the
    core maps at the weights where it is evaluated (:class:`MLPSample`).

    Domain frame: ``frames.weight_space_frame``; codomain frame: ``frames.A[L]``.
    """

    def __init__(self, net: AbstractMLP, input_point: Point, frames: FrameChoice):
        super().__init__(frames.weight_space_frame, frames.A[net.L])
        self.net, self.input_point, self.frames = net, input_point, frames
        self._last = None

    def _sample_at(self, x) -> MLPSample:
        last = self._last
        if last is not None and last[0] is x:
            return last[1]
        s = MLPSample(self.net, Point(self.domain_frame, x), self.input_point.coords(), self.frames)
        self._last = (x, s)
        return s

    def _value(self, x):
        return self._sample_at(x).output.coords(self.codomain_frame)

    def _jacobian(self, x):
        s = self._sample_at(x)
        L = self.net.L
        parts = [
            s.layer_maps(i).jacobian(s.weight_points[i], self.frames.weight_frame(i), self.codomain_frame)
            for i in range(1, L + 1)
        ]
        field = field_of(*parts)
        return field.hstack([field.asmatrix(J) for J in parts])

    def __repr__(self) -> str:
        return f"NetworkMap({self.net.name}: W → {self.codomain.name} at input {self.input_point!r})"
