"""The abstract recurrent network and its K-FAC metric (paper §4.2, Appendix G).

An abstract recurrent network with ``T`` steps (Appendix G.1) has

* the affine spaces ``A`` (hidden states), ``X`` (inputs), ``Z`` (pre-activations) and
  ``Y`` (outputs), shared by all steps;
* the recurrent step ``ζ_t = ω(α_{t−1})`` (Eqn. 4.5/G.1) with ``α_{t−1}`` the pair
  ``(hidden state, input)``, a point of the product ``A × X``, and ``ω`` a point of the
  weight space ``W = Aff(A × X, Z)``; then ``α_t = φ(ζ_t)``;
* a readout ``ρ ∈ Aff(A, Y)`` shared over steps: ``υ_t = ρ(α_t)`` at every step
  (``output="seq"``, outputs in ``Y^T``) or only ``υ = ρ(α_T)`` (``output="last"``);
* the initial state ``α_0``, a **point** of ``A`` (in another frame its coordinates are
  ``Ω a_0 + γ``).

The weights are a point of ``Aff(A × X, Z) × Aff(A, Y)``.  A choice of frames
(:class:`RNNFrames`: one frame on each of ``A``, ``X``, ``Z``, ``Y``, shared across time)
gives coordinates: ``W̄ = [W_r b_r]`` with the columns of ``h_{t−1}`` first, then ``x_t``
(the product frame of ``A × X``), so ``ā_{t−1} = [h_{t−1}; x_t; 1]``, and ``[W_o b_o]``
for the readout — the conventions of the reference files (oracle README, "Convolutional and
recurrent cases").  Deriving frames with changes ``(Ω, γ)`` on ``A``, ``(Φ, τ)`` on ``Z``,
``(Ω_x, γ_x)`` on ``X`` and ``(Ω_y, γ_y)`` on ``Y`` is the reparameterization (4.6, D.2);
:func:`reparameterize_rnn` is the same change in closed form on arrays.

K-FAC (Def. G.2, Eqn. G.3/4.7) through the abstract pipeline
(:mod:`geomkfac.pipeline`): for every example ξ and step t,

* ``ψ_{ξ,t} : W → Z`` is the evaluation at ``α_{t−1}`` (the weights untied per step);
* ``ϕ_{ξ,t} : Z → Y^T`` is the rest of the unrolled network with ``ζ_t`` free and
  everything else fixed: a :class:`~geomkfac.maps.ComposedMap` of core
  :class:`~geomkfac.maps.AffineMap` s (the later recurrent steps, the readouts) and
  activation :class:`~geomkfac.maps.SmoothMap` s;
* the output metric on ``Y^T`` is additive over steps (Eqn. B.2,
  :class:`StepAdditiveMetric`);
* ``g_KFAC = T · E_{ξ,t}[α ⊗ α] ⊗ E_{ξ,t}[ϕ_{ξ,t}* g]``
  (:func:`geomkfac.pipeline.independence_metric` with ``scale=T``), whose matrix in an
  induced frame is ``T (E_T[ā āᵀ] ⊗ E_T[Dz Dzᵀ])``.

The readout is handled by the same pipeline: ``ψ`` evaluates at ``α_t`` and ``ϕ`` puts
``υ_t`` into its slot of ``Y^T`` (``T₁ = T``), or is the identity of ``Y`` for
``output="last"`` (an ordinary dense layer, ``T₁ = 1``).

One code path serves NumPy and sympy (through the core's fields); numeric batches are
handled example by example (the pipeline's objects are per example), so keep the sizes
small — this module is the reference, the NumPy backend is the fast path.

Examples
--------
>>> import numpy as np
>>> net = AbstractRNN(hidden=2, inputs=1, outputs=2, T=3, activation="tanh", name="doc")
>>> rng = np.random.default_rng(0)
>>> w = net.random_weights(rng)
>>> h0 = net.initial_state(rng.normal(size=2))
>>> X = rng.normal(size=(4, 3, 1))
>>> net.forward(w, h0, X).shape
(4, 3, 2)
>>> facs = kfac_factors(net, w, h0, X, output_metric="gaussian")
>>> [(A.shape, G.shape, T) for A, G, T in facs]
[((4, 4), (2, 2), 3), ((3, 3), (2, 2), 3)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sympy as sp

from geomkfac.activations_sym import Activation, ConjugatedActivation, get_activation
from geomkfac.errors import ConfigurationError, DataError, DimensionError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.maps import AffineMap, AffineMaps, ComposedMap, Map, SmoothMap
from geomkfac.metrics import (
    AdditiveMetric,
    KroneckerMetric,
    Metric,
    additive_metric,
    second_moment,
)
from geomkfac.output_metrics import get_output_metric, loss_for
from geomkfac import pipeline
from geomkfac.reparam import LayerChange, homogeneous
from geomkfac.spaces import AffineSpace, Covector, Frame, Point, ProductSpace, Vector, power_frame, product_frame

__all__ = [
    "AbstractRNN",
    "RNNFrames",
    "CoordinateRNN",
    "StepAdditiveMetric",
    "UnrolledExample",
    "reparameterize_rnn",
    "unroll",
    "layer_samples",
    "recurrent_kfac_metric",
    "kfac_metric",
    "kfac_factors",
    "loss_differential",
    "kfac_update",
]

_OUTPUTS = ("seq", "last")


def _vec(M):
    if isinstance(M, sp.MatrixBase):
        return sp.ImmutableMatrix(M.T.reshape(M.rows * M.cols, 1))
    return np.asarray(M, dtype=float).reshape(-1, order="F")


# =========================================================================== output metric on Y^T
class StepAdditiveMetric:
    """The output metric on ``Y^T``: ``g(υ_1) + … + g(υ_T)``, additive over steps (Eqn. B.2).

    A metric field: :meth:`at` a point of ``Y^T`` returns the
    :class:`~geomkfac.metrics.AdditiveMetric` of ``g`` evaluated at every step's output.

    Parameters
    ----------
    metric : Metric or metric field on ``Y`` (e.g. an output Fisher metric)
    Y : AffineSpace
    T : int

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.output_metrics import BernoulliFisher
    >>> Y = AffineSpace(1, "Y")
    >>> g = StepAdditiveMetric(BernoulliFisher(), Y, 2)
    >>> p = Point((Y ** 2).reference_frame, [0.0, 100.0])
    >>> g.at(p).matrix().round(3)
    array([[0.25, 0.  ],
           [0.  , 0.  ]])
    """

    def __init__(self, metric, Y: AffineSpace, T: int):
        metric = get_output_metric(metric) if isinstance(metric, str) else metric
        if not hasattr(metric, "at"):
            raise SpaceMismatchError(f"StepAdditiveMetric needs a metric field on Y with .at(point), got {metric!r}")
        if int(T) < 1:
            raise DimensionError(f"a sequence needs T >= 1 steps, got {T}")
        self.metric, self.Y, self.T = metric, Y, int(T)
        self.space = ProductSpace((Y,) * self.T)

    @property
    def is_constant(self) -> bool:
        return bool(getattr(self.metric, "is_constant", False))

    def at(self, point: Point) -> AdditiveMetric:
        if not isinstance(point, Point) or point.space is not self.space:
            raise SpaceMismatchError(f"the output metric on {self.space.name} is evaluated at a Point of it, got {point!r}")
        F = point.frame if point.frame.factor_frames is not None else self.space.reference_frame
        parts = self.space.split(point.coords(F))
        return additive_metric([self.metric.at(Point(f, y)) for f, y in zip(F.factor_frames, parts)], self.space)

    def __repr__(self) -> str:
        return f"StepAdditiveMetric({self.metric!r} on {self.space.name})"


# =========================================================================== frames
class RNNFrames:
    """A frame on each of ``A``, ``X``, ``Z``, ``Y`` of an abstract RNN, shared by all steps.

    Attributes
    ----------
    A, X, Z, Y : Frame
    AX : Frame
        The product frame on ``A × X`` (coordinates ``[h; x]``).

    Examples
    --------
    >>> import numpy as np
    >>> net = AbstractRNN(2, 1, 1, T=2, name="fr")
    >>> kappa = net.reference_frames().derive(hidden=LayerChange(Omega=2 * np.eye(2), gamma=np.ones(2)))
    >>> kappa.A is net.A.reference_frame, kappa.X is net.X.reference_frame
    (False, True)
    >>> kappa.AX.factor_frames == (kappa.A, kappa.X)
    True
    """

    def __init__(self, net: "AbstractRNN", A: Frame, X: Frame, Z: Frame, Y: Frame):
        for f, sp_, what in ((A, net.A, "A"), (X, net.X, "X"), (Z, net.Z, "Z"), (Y, net.Y, "Y")):
            if not isinstance(f, Frame) or f.space is not sp_:
                raise SpaceMismatchError(f"the {what}-frame must be a frame of {sp_.name}, got {f!r}")
        self.net = net
        self.A, self.X, self.Z, self.Y = A, X, Z, Y
        self.AX = product_frame([A, X])

    def derive(self, hidden: LayerChange | None = None, inputs: LayerChange | None = None,
               outputs: LayerChange | None = None, name: str = "‡") -> "RNNFrames":
        """New frames: ``a‡ = Ω a + γ`` on A, ``z = Φ z‡ + τ`` on Z (from ``hidden``),
        ``x‡ = Ω_x x + γ_x`` on X (``inputs``), ``y‡ = Ω_y y + γ_y`` on Y (``outputs``)."""
        A, X, Z, Y = self.A, self.X, self.Z, self.Y
        n = self.net
        if hidden is not None and hidden.changes_A:
            O, g = hidden._parts(n.hidden, "A", hidden.is_symbolic)
            A = A.derive(O, g, name=f"{A.name}{name}")
        if hidden is not None and hidden.changes_Z:
            P, t = hidden._parts(n.hidden, "Z", hidden.is_symbolic)
            field = field_of(P, t)
            Pinv = field.inv(field.asmatrix(P))
            Z = Z.derive(Pinv, -field.matmul(Pinv, field.asvector(t)), name=f"{Z.name}{name}")
        for ch, what in ((inputs, "inputs"), (outputs, "outputs")):
            if ch is not None and ch.changes_Z:
                raise ConfigurationError(f"the {what} change acts on a space of points only: give Omega, gamma")
        if inputs is not None and inputs.changes_A:
            O, g = inputs._parts(n.inputs, "A", inputs.is_symbolic)
            X = X.derive(O, g, name=f"{X.name}{name}")
        if outputs is not None and outputs.changes_A:
            O, g = outputs._parts(n.outputs, "A", outputs.is_symbolic)
            Y = Y.derive(O, g, name=f"{Y.name}{name}")
        return RNNFrames(n, A, X, Z, Y)

    def weight_frame(self, layer: int) -> Frame:
        """Layer 0: the frame of ``Aff(A × X, Z)`` induced by (AX, Z); layer 1: of ``Aff(A, Y)``."""
        if layer == 0:
            return self.net.W_rec.frame(self.AX, self.Z)
        if layer == 1:
            return self.net.W_out.frame(self.A, self.Y)
        raise ConfigurationError(f"an RNN has layers 0 (recurrent) and 1 (readout), got {layer}")

    @property
    def weight_space_frame(self) -> Frame:
        """Product frame on ``W_rec × W_out``: coordinates ``[vec W̄_r; vec W̄_o]``."""
        return self.net.weight_space.frame_from([self.weight_frame(0), self.weight_frame(1)])

    @property
    def output_frame(self) -> Frame:
        """The frame of the output space (``Y^T`` for ``"seq"``, ``Y`` for ``"last"``)."""
        return power_frame(self.Y, self.net.T) if self.net.output == "seq" else self.Y

    def activation(self) -> Activation:
        """``φ : Z → A`` in these frames (Eqn. D.3): ``Ω φ(Φ z‡ + τ) + γ``."""
        base = self.net.activation
        if self.A.is_reference and self.Z.is_reference:
            return base
        chA = self.net.A.reference_frame.change_to(self.A)
        chZ = self.Z.change_to(self.net.Z.reference_frame)
        return ConjugatedActivation(base, chA.B, chA.c, chZ.B, chZ.c)

    def __repr__(self) -> str:
        return f"RNNFrames(A: {self.A.name}, X: {self.X.name}, Z: {self.Z.name}, Y: {self.Y.name})"


# =========================================================================== coordinate network
@dataclass
class CoordinateRNN:
    """An RNN in coordinates (Eqn. 4.5): ``z_t = W̄_r [h_{t−1}; x_t; 1]``, ``h_t = φ(z_t)``,
    ``y_t = W̄_o [h_t; 1]``, ``h_0 = h0`` — a direct unrolled loop over steps, vectorized
    over the batch (numeric).

    Attributes
    ----------
    Wbar_rec : (H, H + d + 1) array, columns of ``h_{t−1}`` first, then ``x_t``, then the bias
    Wbar_out : (c, H + 1) array
    h0 : (H,) array
    activation : Activation (elementwise or conjugated, Eqn. D.3)
    output : "seq" or "last"

    >>> import numpy as np
    >>> c = CoordinateRNN(np.array([[0.5, 1.0, 0.0]]), np.array([[2.0, 1.0]]), np.zeros(1), get_activation("identity"))
    >>> c.forward(np.ones((1, 2, 1)))[0, :, 0]          # h1 = 1, h2 = 1.5; y = 2h + 1
    array([3., 4.])
    """

    Wbar_rec: np.ndarray
    Wbar_out: np.ndarray
    h0: np.ndarray
    activation: Activation
    output: str = "seq"

    def states(self, X):
        """``(ā, z, h)``: ``ā (N, T, H+d+1)`` = [h_{t−1}; x_t; 1], ``z (N, T, H)``, ``h (N, T+1, H)``."""
        X = np.asarray(X, dtype=float)
        Wr = np.asarray(self.Wbar_rec, dtype=float)
        N, T, d = X.shape
        H = Wr.shape[0]
        if Wr.shape[1] != H + d + 1:
            raise DimensionError(f"W̄_r must be ({H}, {H + d + 1}) for inputs of width {d}, got {Wr.shape}")
        h = np.broadcast_to(np.asarray(self.h0, dtype=float).reshape(-1), (N, H))
        hs, zs, abars = [h], [], []
        for t in range(T):  # the recurrence is inherently sequential
            abar = np.concatenate([h, X[:, t], np.ones((N, 1))], axis=1)
            z = abar @ Wr.T
            h = self.activation(z)
            abars.append(abar)
            zs.append(z)
            hs.append(h)
        return np.stack(abars, 1), np.stack(zs, 1), np.stack(hs, 1)

    def forward(self, X):
        """Outputs ``(N, T, c)`` for ``"seq"``, ``(N, c)`` for ``"last"``."""
        _, _, hs = self.states(X)
        Wo = np.asarray(self.Wbar_out, dtype=float)
        y = hs[:, 1:] @ Wo[:, :-1].T + Wo[:, -1]
        return y if self.output == "seq" else y[:, -1]


def _change_parts(ch: LayerChange | None, n: int, which: str):
    if ch is None:
        return np.eye(n), np.zeros(n)
    return ch._parts(n, which, False)


def reparameterize_rnn(crnn: CoordinateRNN, hidden: LayerChange | None = None,
                       inputs: LayerChange | None = None, outputs: LayerChange | None = None,
                       transform_h0: bool = True) -> CoordinateRNN:
    """The same network in changed coordinates, in closed form (Eqns. 4.6, D.2, D.3).

    With ``[Ω_{AX}]_H`` the homogeneous change of ``A × X`` (blocks ``Ω, Ω_x``, shift
    ``[γ; γ_x]``) and ``[Φ]_H = [[Φ, τ], [0, 1]]``:
    ``[W̄‡_r; 0 1] = [Φ]_H⁻¹ [W̄_r; 0 1] [Ω_{AX}]_H⁻¹``,
    ``[W̄‡_o; 0 1] = [Ω_y]_H [W̄_o; 0 1] [Ω]_H⁻¹``, ``φ‡ = Ω φ(Φ · + τ) + γ`` and
    ``h‡_0 = Ω h_0 + γ`` (unless ``transform_h0=False``: a deliberate mistake for controls).
    Inputs must be changed by ``x‡ = Ω_x x + γ_x`` (:meth:`LayerChange.apply_activations`).

    >>> import numpy as np
    >>> c = CoordinateRNN(np.array([[0.5, 1.0, 0.2]]), np.array([[2.0, 1.0]]), np.array([0.3]), get_activation("tanh"))
    >>> ch = LayerChange(Omega=np.array([[2.0]]), gamma=np.array([1.0]), Phi=np.array([[3.0]]), tau=np.array([0.5]))
    >>> c2 = reparameterize_rnn(c, hidden=ch)
    >>> X = np.random.default_rng(0).normal(size=(2, 3, 1))
    >>> bool(np.allclose(c.forward(X), c2.forward(X)))
    True
    """
    Wr = np.asarray(crnn.Wbar_rec, dtype=float)
    Wo = np.asarray(crnn.Wbar_out, dtype=float)
    H, c = Wr.shape[0], Wo.shape[0]
    d = Wr.shape[1] - H - 1
    Om, ga = _change_parts(hidden if hidden is not None and hidden.changes_A else None, H, "A")
    Ph, ta = _change_parts(hidden if hidden is not None and hidden.changes_Z else None, H, "Z")
    Ox, gx = _change_parts(inputs, d, "A")
    Oy, gy = _change_parts(outputs, c, "A")
    OAX = np.zeros((H + d, H + d))
    OAX[:H, :H], OAX[H:, H:] = Om, Ox
    OAX_H = homogeneous(OAX, np.concatenate([ga, gx]))
    Wr_H = np.vstack([Wr, np.eye(1, H + d + 1, H + d)])
    Wr_new = np.linalg.solve(homogeneous(Ph, ta), Wr_H) @ np.linalg.inv(OAX_H)
    Wo_H = np.vstack([Wo, np.eye(1, H + 1, H)])
    Wo_new = homogeneous(Oy, gy) @ Wo_H @ np.linalg.inv(homogeneous(Om, ga))
    h0 = np.asarray(crnn.h0, dtype=float)
    h0_new = Om @ h0 + ga if transform_h0 else h0.copy()
    act = ConjugatedActivation(crnn.activation, Om, ga, Ph, ta)
    return CoordinateRNN(Wr_new[:H], Wo_new[:c], h0_new, act, crnn.output)


# =========================================================================== the abstract RNN
class AbstractRNN:
    """An abstract recurrent network (Appendix G.1.2): spaces, weight spaces, activation.

    Parameters
    ----------
    hidden, inputs, outputs : int
        Dimensions of ``A`` (= ``Z``), ``X`` and ``Y``.
    T : int
        Number of steps (all sequences have length ``T``).
    activation : str or Activation
        ``φ`` in the reference frames of ``Z`` and ``A``.
    output : "seq" (an output at every step) or "last" (only at step T)
    name : str

    Examples
    --------
    >>> net = AbstractRNN(3, 2, 3, T=4, name="ex")
    >>> net.W_rec.shape, net.W_out.shape, net.weight_space.dim
    ((3, 6), (3, 4), 30)
    >>> net.AX is net.A * net.X
    True
    """

    def __init__(self, hidden: int, inputs: int, outputs: int, T: int, activation="tanh",
                 output: str = "seq", name: str = "rnn"):
        for v, what in ((hidden, "hidden"), (inputs, "inputs"), (outputs, "outputs"), (T, "T")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise DimensionError(f"an RNN needs a positive integer {what}, got {v!r}")
        if output not in _OUTPUTS:
            raise ConfigurationError(f"output must be one of {_OUTPUTS}, got {output!r}")
        self.hidden, self.inputs, self.outputs, self.T = int(hidden), int(inputs), int(outputs), int(T)
        self.output = output
        self.name = name
        self.activation = get_activation(activation)
        self.A = AffineSpace(self.hidden, f"{name}.A")
        self.X = AffineSpace(self.inputs, f"{name}.X")
        self.Z = AffineSpace(self.hidden, f"{name}.Z")
        self.Y = AffineSpace(self.outputs, f"{name}.Y")
        self.AX = ProductSpace((self.A, self.X))
        self.W_rec = AffineMaps(self.AX, self.Z)
        self.W_out = AffineMaps(self.A, self.Y)
        self.weight_space = ProductSpace((self.W_rec, self.W_out), name=f"{name}.W")
        self.output_space = ProductSpace((self.Y,) * self.T) if output == "seq" else self.Y
        self._reference = None

    @property
    def scales(self) -> tuple[int, int]:
        """``(T₀, T₁)``: the number of steps each layer is shared over."""
        return (self.T, self.T if self.output == "seq" else 1)

    def reference_frames(self) -> RNNFrames:
        if self._reference is None:
            self._reference = RNNFrames(self, self.A.reference_frame, self.X.reference_frame,
                                        self.Z.reference_frame, self.Y.reference_frame)
        return self._reference

    def _frames(self, frames):
        if frames is None:
            return self.reference_frames()
        if not isinstance(frames, RNNFrames) or frames.net is not self:
            raise SpaceMismatchError(f"frames must be RNNFrames of {self.name}, got {frames!r}")
        return frames

    # ------------------------------------------------------------ weights and initial state
    def weights_from(self, Wbar_rec, Wbar_out, frames: RNNFrames | None = None) -> Point:
        """The point of ``W_rec × W_out`` with coordinates ``[vec W̄_r; vec W̄_o]`` in ``frames``."""
        frames = self._frames(frames)
        parts = []
        for W, space in ((Wbar_rec, self.W_rec), (Wbar_out, self.W_out)):
            if tuple(W.shape) != space.shape:
                raise DimensionError(f"{space.name}: W̄ must be {space.shape}, got {tuple(W.shape)}")
            parts.append(_vec(W))
        field = field_of(*parts)
        return Point(frames.weight_space_frame, field.concat([field.asvector(p) for p in parts]))

    def random_weights(self, rng, scale: float = 1.0, frames: RNNFrames | None = None) -> Point:
        """Weights with i.i.d. ``N(0, scale²/fan_in)`` coordinates in ``frames``."""
        rng = np.random.default_rng(rng)
        Wr = rng.normal(size=self.W_rec.shape) * scale / np.sqrt(self.W_rec.shape[1])
        Wo = rng.normal(size=self.W_out.shape) * scale / np.sqrt(self.W_out.shape[1])
        return self.weights_from(Wr, Wo, frames)

    def _check_weights(self, weights):
        if not isinstance(weights, Point) or weights.space is not self.weight_space:
            raise SpaceMismatchError(f"weights must be a Point of {self.weight_space.name}, got {weights!r}")

    def layer_points(self, weights: Point, frames: RNNFrames | None = None) -> tuple[Point, Point]:
        """The weights as points of ``W_rec`` and ``W_out``, in the frames induced by ``frames``."""
        frames = self._frames(frames)
        self._check_weights(weights)
        r, o = self.weight_space.split(weights.coords(frames.weight_space_frame))
        return Point(frames.weight_frame(0), r), Point(frames.weight_frame(1), o)

    def layer_weights(self, weights: Point, frames: RNNFrames | None = None) -> list:
        """``[W̄_r, W̄_o]`` in ``frames`` (law D.2 through the core's induced frames)."""
        r, o = self.layer_points(weights, frames)
        return [field_of(p.coords()).unvec(p.coords(), s.shape) for p, s in ((r, self.W_rec), (o, self.W_out))]

    def initial_state(self, h0, frames: RNNFrames | None = None) -> Point:
        """The initial state ``α_0``: the point of ``A`` with coordinates ``h0`` in ``frames.A``."""
        return Point(self._frames(frames).A, h0)

    def coordinates(self, weights: Point, h0: Point, frames: RNNFrames | None = None) -> CoordinateRNN:
        """The coordinate network in ``frames``: weights by D.2, activation by D.3,
        ``h_0`` as the coordinates of the point ``α_0``."""
        frames = self._frames(frames)
        Wr, Wo = (np.asarray(W, dtype=float) for W in self.layer_weights(weights, frames))
        h = np.asarray(self._state(h0).coords(frames.A), dtype=float).reshape(-1)
        return CoordinateRNN(Wr, Wo, h, frames.activation(), self.output)

    def _state(self, h0) -> Point:
        if not isinstance(h0, Point) or h0.space is not self.A:
            raise SpaceMismatchError(f"the initial state must be a Point of {self.A.name} (see initial_state), got {h0!r}")
        return h0

    def input_coords(self, X, frames: RNNFrames | None = None) -> np.ndarray:
        """Inputs given in the reference frame of ``X`` (N, T, d), in ``frames.X``."""
        frames = self._frames(frames)
        X = np.asarray(X, dtype=float)
        if frames.X.is_reference:
            return X
        ch = self.X.reference_frame.change_to(frames.X)
        return X @ np.asarray(ch.B, dtype=float).T + np.asarray(ch.c, dtype=float).reshape(-1)

    def forward(self, weights: Point, h0: Point, X, frames: RNNFrames | None = None) -> np.ndarray:
        """Outputs (coordinates in ``frames.Y``) for inputs given in the reference frame of X."""
        frames = self._frames(frames)
        return self.coordinates(weights, h0, frames).forward(self.input_coords(X, frames))

    def __repr__(self) -> str:
        return (f"AbstractRNN({self.name!r}, hidden={self.hidden}, inputs={self.inputs}, outputs={self.outputs}, "
                f"T={self.T}, activation={self.activation.name}, output={self.output!r})")


# =========================================================================== the pipeline
def _carry(frames: RNNFrames, k: int):
    """The space carried along the unrolled tail: ``Y^k × A`` (``A`` itself for k = 0) and its frame."""
    if k == 0:
        return frames.A
    return product_frame([frames.Y] * k + [frames.A])


def _with_prefix(frame_in: Frame, frame_out: Frame, k: int, kY: int, W, b) -> AffineMap:
    """The affine map ``(y_1..y_k, u) ↦ (y_1..y_k, W u + b)`` on ``Y^k × U`` (``U`` if k = 0)."""
    field = field_of(W, b)
    W, b = field.asmatrix(W), field.asvector(b)
    if k == 0:
        return AffineMap(frame_in, frame_out, W, b)
    m = k * kY
    top = field.hstack([field.eye(m), field.zeros((m, W.shape[1]))])
    bot = field.hstack([field.zeros((W.shape[0], m)), W])
    return AffineMap(frame_in, frame_out, field.vstack([top, bot]), field.concat([field.zeros(m), b]))


def _activation_on_carry(frame_in: Frame, frame_out: Frame, m: int, phi: Activation) -> SmoothMap:
    """``(y, z) ↦ (y, φ(z))`` on ``Y^k × Z`` (``m = k·dim Y``); ``φ`` itself for m = 0."""
    if m == 0:
        return pipeline.activation_map(frame_in, frame_out, phi)

    def f(x):
        field = field_of(x)
        x = field.asvector(x)
        head, tail = field.split(x, [m, x.shape[0] - m])
        return field.concat([head, field.asvector(phi(tail))])

    def jac(x):
        field = field_of(x)
        x = field.asvector(x)
        head, tail = field.split(x, [m, x.shape[0] - m])
        return field.block_diag([field.eye(m), field.asmatrix(phi.jacobian(tail))])

    return SmoothMap(frame_in, frame_out, f, jac)


@dataclass
class UnrolledExample:
    """One example unrolled through the abstract pipeline, in a choice of frames.

    Attributes
    ----------
    alphas : list of Point of ``A × X``
        ``α_{t−1} = (h_{t−1}, x_t)``, t = 1..T.
    zetas : list of Point of Z
        ``ζ_t``.
    states : list of Point of A
        ``α_0 … α_T``.
    outputs : Point of the output space (``Y^T`` or ``Y``)
    rests : list of Map ``Z → output space``
        ``ϕ_{ξ,t}``: the rest of the unrolled network with ``ζ_t`` free.
    readout_rests : list of Map ``Y → output space``
        For the readout: ``υ ↦`` the outputs with ``υ`` in slot t (``"seq"``), or the
        identity of ``Y`` (``"last"``, one entry).
    readout_points : list of Point of A
        Where the readout is evaluated (``α_t``; only ``α_T`` for ``"last"``).
    readout_zetas : list of Point of Y
    """

    alphas: list
    zetas: list
    states: list
    outputs: Point
    rests: list
    readout_rests: list
    readout_points: list
    readout_zetas: list


def unroll(net: AbstractRNN, weights: Point, h0: Point, x_seq, frames: RNNFrames | None = None) -> UnrolledExample:
    """Unroll one example through core maps (Eqn. 4.5) and build ``ϕ_{ξ,t}`` for every t.

    ``x_seq``: the example's inputs, ``T`` coordinate vectors in the reference frame of X
    (NumPy ``(T, d)`` or a sequence of sympy columns).  Everything else is computed in
    ``frames``: the recurrent map ``ω`` and the readout ``ρ`` are the core affine maps of
    the weight points (``AffineMaps.map_of``), the activation the SmoothMap of D.3.
    """
    frames = net._frames(frames)
    T = net.T
    if len(x_seq) != T:
        raise DimensionError(f"an example of {net.name} has T = {T} inputs, got {len(x_seq)}")
    p_rec, p_out = net.layer_points(weights, frames)
    omega = net.W_rec.map_of(p_rec)          # AffineMap in (frames.AX, frames.Z)
    rho = net.W_out.map_of(p_out)            # AffineMap in (frames.A, frames.Y)
    act = frames.activation()
    phi = pipeline.activation_map(frames.Z, frames.A, act)
    xs = [Point(net.X.reference_frame, x) for x in x_seq]
    state = net._state(h0)
    states, alphas, zetas, ys = [state], [], [], []
    for t in range(T):
        h = states[-1].coords(frames.A)
        x = xs[t].coords(frames.X)
        field = field_of(h, x)
        alpha = Point(frames.AX, field.concat([field.asvector(h), field.asvector(x)]))
        zeta = omega(alpha)
        states.append(phi(zeta))
        alphas.append(alpha)
        zetas.append(zeta)
        ys.append(rho(states[-1]))
    seq = net.output == "seq"
    out_frame = frames.output_frame
    if seq:
        yc = [y.coords(frames.Y) for y in ys]
        field = field_of(*yc)
        outputs = Point(out_frame, field.concat([field.asvector(y) for y in yc]))
    else:
        outputs = ys[-1]

    # pieces of the tail, in frames: W_h (H × H), the input part folded into the offset
    Wh = omega.linear(frames.AX, frames.Z)
    H, c = net.hidden, net.outputs
    Wh_h = Wh[:, :H]
    Wo, bo = rho.linear(frames.A, frames.Y), rho.offset(frames.A, frames.Y)

    def step_offset(s):  # ω((0, x_s)) coordinates: W_x x_s + b
        x = xs[s].coords(frames.X)
        fld = field_of(x)
        zero_h = fld.zeros(H)
        return omega(Point(frames.AX, fld.concat([zero_h, fld.asvector(x)]))).coords(frames.Z)

    rests = []
    for t in range(T):
        rests.append(_tail(net, frames, t, seq, Wh_h, Wo, bo, step_offset, ys, phi, act))
    if seq:
        readout_rests = [_slot_map(frames, T, t, ys) for t in range(T)]
        readout_points = states[1:]
        readout_zetas = ys
    else:
        readout_rests = [AffineMap.identity(frames.Y)]
        readout_points = [states[-1]]
        readout_zetas = [ys[-1]]
    return UnrolledExample(alphas, zetas, states, outputs, rests, readout_rests, readout_points, readout_zetas)


def _slot_map(frames: RNNFrames, T: int, t: int, ys) -> AffineMap:
    """``υ ↦ (υ_1, …, υ, …, υ_T)`` with ``υ`` in slot t and the other outputs fixed."""
    Y = frames.Y
    c = Y.space.dim
    yc = [y.coords(Y) for y in ys]
    field = field_of(*yc)
    blocks = [field.eye(c) if s == t else field.zeros((c, c)) for s in range(T)]
    offs = [field.zeros(c) if s == t else field.asvector(yc[s]) for s in range(T)]
    return AffineMap(Y, power_frame(Y, T), field.vstack(blocks), field.concat(offs))


def _tail(net, frames, t, seq, Wh_h, Wo, bo, step_offset, ys, phi, act) -> Map:
    """``ϕ_{ξ,t}``: ζ_t ↦ outputs, a ComposedMap of core affine maps and activations.

    For ``"seq"`` the carried space after step s is ``Y^s × A``: the outputs so far and the
    state.  Built from the end, so that the composition's chain rule is linear in T.
    """
    T, H, c = net.T, net.hidden, net.outputs
    field = field_of(Wh_h, Wo, bo)
    k0 = t if seq else 0                  # outputs before step t+1 (0-based t) kept fixed
    # first piece: ζ_t ↦ α_t (activation), then append υ_t (seq)
    pieces = []                           # applied in order
    pieces.append(phi)
    if seq:
        yprev = [field.asvector(y.coords(frames.Y)) for y in ys[:t]]
        frame_out = _carry(frames, t + 1)
        Wm = field.vstack([field.zeros((c * t, H)), field.asmatrix(Wo), field.eye(H)])
        bm = field.concat(yprev + [field.asvector(bo), field.zeros(H)])
        pieces.append(AffineMap(frames.A, frame_out, Wm, bm))
    k = t + 1 if seq else 0
    for s in range(t + 1, T):
        f_in = _carry(frames, k)
        f_z = frames.Z if k == 0 else product_frame([frames.Y] * k + [frames.Z])
        pieces.append(_with_prefix(f_in, f_z, k, c, Wh_h, step_offset(s)))
        pieces.append(_activation_on_carry(f_z, f_in, k * c, act))
        if seq:
            f_next = _carry(frames, k + 1)
            m = k * c
            Wm = field.vstack([
                field.hstack([field.eye(m), field.zeros((m, H))]),
                field.hstack([field.zeros((c, m)), field.asmatrix(Wo)]),
                field.hstack([field.zeros((H, m)), field.eye(H)]),
            ])
            bm = field.concat([field.zeros(m), field.asvector(bo), field.zeros(H)])
            pieces.append(AffineMap(f_in, f_next, Wm, bm))
            k += 1
    # last piece: drop the state (seq) or read out (last)
    f_in = _carry(frames, k)
    if seq:
        m = k * c
        pieces.append(AffineMap(f_in, frames.output_frame, field.hstack([field.eye(m), field.zeros((m, H))]), field.zeros(m)))
    else:
        pieces.append(AffineMap(frames.A, frames.Y, Wo, bo))
    chain = pieces[-1]
    for p in reversed(pieces[:-1]):
        chain = chain @ p          # outer = the later part: the chain rule stays linear in T
    return chain


def _examples(net, weights, h0, X, frames):
    if len(X) == 0:
        raise DataError("the pipeline needs at least one example (got an empty batch)")
    return [unroll(net, weights, h0, x, frames) for x in X]


def layer_samples(net: AbstractRNN, examples: Sequence[UnrolledExample], layer: int):
    """``(alphas, rests, zetas)`` over all examples and steps for layer 0 (recurrent) or 1 (readout)."""
    if layer == 0:
        return ([a for e in examples for a in e.alphas], [r for e in examples for r in e.rests],
                [z for e in examples for z in e.zetas])
    if layer == 1:
        return ([a for e in examples for a in e.readout_points], [r for e in examples for r in e.readout_rests],
                [z for e in examples for z in e.readout_zetas])
    raise ConfigurationError(f"an RNN has layers 0 (recurrent) and 1 (readout), got {layer}")


def _output_metric_field(net: AbstractRNN, output_metric):
    g = get_output_metric(output_metric) if isinstance(output_metric, str) else output_metric
    return StepAdditiveMetric(g, net.Y, net.T) if net.output == "seq" else g


def recurrent_kfac_metric(net: AbstractRNN, weights: Point, h0: Point, X, output_metric,
                          layer: int = 0, frames: RNNFrames | None = None, examples=None,
                          scaled: bool = True) -> KroneckerMetric:
    """``T · E_T[α ⊗ α] ⊗ E_T[ϕ_{ξ,t}* g]`` on ``W_rec`` (Def. G.2, Eqn. G.4), or the readout's.

    ``layer=0``: the recurrent weights (``scale = T``); ``layer=1``: the readout
    (``scale = T`` for ``"seq"``, 1 for ``"last"``).  ``scaled=False`` leaves the scale out
    (the factors ``(A, G)`` of the reference files).  Built by
    :func:`geomkfac.pipeline.independence_metric` from the unrolled examples' points and maps.
    """
    frames = net._frames(frames)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    alphas, rests, zetas = layer_samples(net, examples, layer)
    scale = net.scales[layer] if scaled else 1
    fA = frames.AX if layer == 0 else frames.A
    return pipeline.independence_metric(alphas, rests, zetas, _output_metric_field(net, output_metric),
                                        scale=scale, frame_A=fA)


def kfac_metric(net: AbstractRNN, weights: Point, h0: Point, X, output_metric,
                frames: RNNFrames | None = None, examples=None) -> AdditiveMetric:
    """The K-FAC metric on ``W_rec × W_out``: the additive metric of the two layers' metrics."""
    frames = net._frames(frames)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    blocks = [recurrent_kfac_metric(net, weights, h0, X, output_metric, i, frames, examples) for i in (0, 1)]
    return additive_metric(blocks, net.weight_space)


def _losses(net, output_metric, examples, Y):
    """Per example, the covector ``dℓ`` on the output space (reference frame) and ``ℓ``
    (for ``"seq"`` the sum of the steps' losses)."""
    loss = loss_for(output_metric if isinstance(output_metric, str) else output_metric)
    if len(Y) != len(examples):
        raise DataError(f"{len(examples)} examples but {len(Y)} targets")
    ref = net.output_space.reference_frame
    out = []
    for n, e in enumerate(examples):
        y = np.asarray(e.outputs.coords(ref), dtype=float).reshape(-1, net.outputs)
        tgt = np.asarray(Y[n])
        if net.output == "last":
            tgt = tgt[None]
        grads = np.asarray(loss.grad(y, tgt), dtype=float).reshape(-1)
        out.append((Covector(ref, grads), float(np.sum(loss.value(y, tgt)))))
    return out


def kfac_factors(net: AbstractRNN, weights: Point, h0: Point, X, Y=None, output_metric="categorical",
                 fisher: str = "type2", frames: RNNFrames | None = None) -> list:
    """Each layer's K-FAC factors ``(A, G, T)`` in the reference files' convention, via the pipeline.

    ``A = (1/(N T)) Σ ā āᵀ``; ``G = (1/(N T)) Σ`` of the pulled-back output metric
    (``fisher="type2"``: ``ϕ_{ξ,t}* g``) or of ``Dz Dzᵀ`` with ``Dz = ϕ_{ξ,t}* dℓ`` the
    pulled-back differential of the data loss (``fisher="empirical"``, needs ``Y``); the
    block is ``T · kron(A, G)``.  Layer 0 is the recurrent layer, layer 1 the readout.
    """
    frames = net._frames(frames)
    examples = _examples(net, weights, h0, X, frames)
    out = []
    if fisher == "type2":
        for i in (0, 1):
            g = recurrent_kfac_metric(net, weights, h0, X, output_metric, i, frames, examples, scaled=False)
            A, G = g.factors()
            out.append((A, G, net.scales[i]))
        return out
    if fisher != "empirical":
        raise ConfigurationError(f"fisher must be 'type2' or 'empirical', got {fisher!r}")
    if Y is None:
        raise DataError("the empirical factors need targets Y")
    dls = [d for d, _ in _losses(net, output_metric, examples, Y)]
    for i in (0, 1):
        alphas, rests, zetas = layer_samples(net, examples, i)
        per = len(alphas) // len(examples)
        diffs = [dls[k // per] for k in range(len(alphas))]
        Dz = pipeline.pulled_back_differentials(rests, zetas, diffs)
        S = second_moment(alphas, frame=frames.AX if i == 0 else frames.A)
        g = KroneckerMetric(S, pipeline.empirical_fisher(Dz))
        A, G = g.factors()
        out.append((A, G, net.scales[i]))
    return out


def loss_differential(net: AbstractRNN, weights: Point, h0: Point, X, Y, output_metric,
                      frames: RNNFrames | None = None, examples=None) -> tuple[Covector, float]:
    """``dh = E_ξ[Σ_t Ψ_{ξ,t}* dℓ_ξ]`` on ``W_rec × W_out`` and the loss ``h`` (mean over examples).

    The weights are untied per step: ``Ψ_{ξ,t} = ϕ_{ξ,t} ∘ ψ_{ξ,t}`` pulls the loss
    differential back to the step's copy of the weights, and the copies' covectors are summed
    (``T`` times their mean over steps) — the gradient ``Σ_t Dz_t ā_{t−1}ᵀ`` (Appendix G.2).
    Returned in ``frames``' weight frame.
    """
    frames = net._frames(frames)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    losses = _losses(net, output_metric, examples, Y)
    points = net.layer_points(weights, frames)
    parts = []
    for i, space in ((0, net.W_rec), (1, net.W_out)):
        alphas, rests, zetas = layer_samples(net, examples, i)
        per = len(alphas) // len(examples)
        fA, fZ = (frames.AX, frames.Z) if i == 0 else (frames.A, frames.Y)
        maps = [ComposedMap(r, space.evaluation_map(a, fA, fZ)) for a, r in zip(alphas, rests)]
        diffs = [losses[k // per][0] for k in range(len(alphas))]
        covs = pipeline.pulled_back_differentials(maps, [points[i]] * len(maps), diffs)
        parts.append(pipeline.mean_covector(covs) * per)
    field = field_of(*[p.coords() for p in parts])
    dh = Covector(frames.weight_space_frame, field.concat([field.asvector(p.coords()) for p in parts]))
    return dh, float(np.mean([v for _, v in losses]))


def kfac_update(net: AbstractRNN, weights: Point, h0: Point, X, Y, output_metric, lr,
                frames: RNNFrames | None = None) -> tuple[Point, float]:
    """One undamped K-FAC step ``ω ← ω − ε g_KFAC⁻¹ dh`` computed in ``frames`` (Thm 4.2).

    Returns the new weights (a Point) and the loss before the step.
    """
    frames = net._frames(frames)
    examples = _examples(net, weights, h0, X, frames)
    g = kfac_metric(net, weights, h0, X, output_metric, frames, examples)
    dh, value = loss_differential(net, weights, h0, X, Y, output_metric, frames, examples)
    step: Vector = g.sharp(dh)
    return weights + step * (-lr), value
