"""The abstract recurrent network and its coordinate networks (paper §4.2, Appendix G.1).

An abstract recurrent network with ``T`` steps (Appendix G.1.2) has

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
for the readout — the conventions of the reference files (``tests/oracle/README.md``).
Deriving frames with changes ``(Ω, γ)`` on ``A``, ``(Φ, τ)`` on ``Z``, ``(Ω_x, γ_x)`` on
``X`` and ``(Ω_y, γ_y)`` on ``Y`` is the reparameterization (4.6/G.2, D.2);
:func:`reparameterize_rnn` is the same change in closed form on arrays, and
:class:`CoordinateRNN` the coordinate network as a direct unrolled loop.

The K-FAC metric of the abstract recurrent network (Def. G.2) is built by the abstract
pipeline in :mod:`geomkfac.networks.rnn_kfac`.

Its two weight layers are numbered as in the paper's ``i = 1..L`` (:mod:`geomkfac.numbering`):
layer 1 the recurrent weights ``W_1 = Aff(A × X, Z)`` (``W_rec``), layer 2 the readout
``W_2 = Aff(A, Y)`` (``W_out``).  Every ``layer`` argument is such a number; per-layer
results keep Python's positions (position ``i - 1`` holds layer ``i``) and read by the
paper's number with ``.layer(i)``.

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
>>> kappa = net.reference_frames().derive(hidden=LayerChange(Omega=2 * np.eye(2), gamma=np.ones(2)))
>>> bool(np.allclose(net.coordinates(w, h0, kappa).forward(X), net.forward(w, h0, X)))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from geomkfac import display as _display
from geomkfac.activations_sym import Activation, ConjugatedActivation, get_activation
from geomkfac.errors import ConfigurationError, DimensionError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.maps import AffineMaps
from geomkfac.numbering import LayerList, LayerTuple, check_layer
from geomkfac.reparam import LayerChange, homogeneous
from geomkfac.spaces import AffineSpace, Frame, Point, ProductSpace, power_frame, product_frame

__all__ = [
    "AbstractRNN",
    "RNNFrames",
    "CoordinateRNN",
    "LayerChange",
    "reparameterize_rnn",
]

_OUTPUTS = ("seq", "last")


def _vec(M):
    if isinstance(M, sp.MatrixBase):
        return sp.ImmutableMatrix(M.T.reshape(M.rows * M.cols, 1))
    return np.asarray(M, dtype=float).reshape(-1, order="F")


# =========================================================================== frames
class RNNFrames(_display.Displayable):
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
        """Layer 1: the frame of ``W_1 = Aff(A × X, Z)`` induced by (AX, Z); layer 2: of
        ``W_2 = Aff(A, Y)`` induced by (A, Y).

        >>> net = AbstractRNN(2, 1, 1, T=2, name="wf")
        >>> net.reference_frames().weight_frame(2).space is net.W_out
        True
        >>> net.reference_frames().weight_frame(0)
        Traceback (most recent call last):
        ...
        geomkfac.errors.ConfigurationError: the layers of an RNN (1: recurrent, 2: readout) are numbered 1..2, got 0
        """
        layer = check_rnn_layer(layer)
        if layer == 1:
            return self.net.W_rec.frame(self.AX, self.Z)
        return self.net.W_out.frame(self.A, self.Y)

    @property
    def weight_space_frame(self) -> Frame:
        """Product frame on ``W_1 × W_2 = W_rec × W_out``: coordinates ``[vec W̄_r; vec W̄_o]``."""
        return self.net.weight_space.frame_from([self.weight_frame(1), self.weight_frame(2)])

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

    def _display(self, frame=None):
        """The network in these frames (``frame``: other RNNFrames to show instead)."""
        return _display.rnn_display(self.net, frame if frame is not None else self)

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


def check_rnn_layer(layer) -> int:
    """``layer`` as an ``int`` if it names one of an RNN's weight layers: 1 (recurrent) or
    2 (readout); otherwise a :class:`~geomkfac.errors.ConfigurationError`."""
    return check_layer(layer, 2, "the layers of an RNN (1: recurrent, 2: readout)")


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
class AbstractRNN(_display.Displayable):
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
    def L(self) -> int:
        """The number of weight layers: 2 (1: recurrent, 2: readout)."""
        return 2

    @property
    def weight_spaces(self) -> LayerTuple:
        """``(W_1, W_2) = (W_rec, W_out)``; position ``i - 1`` holds layer ``i``, ``.layer(i)`` reads it."""
        return LayerTuple((self.W_rec, self.W_out))

    @property
    def scales(self) -> LayerTuple:
        """``(T_1, T_2)``: the number of steps each layer is shared over (position ``i - 1``
        holds layer ``i``; ``.layer(i)`` reads it).

        >>> AbstractRNN(2, 1, 1, T=3, output="last").scales.layer(2)       # the readout: once
        1
        """
        return LayerTuple((self.T, self.T if self.output == "seq" else 1))

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

    def layer_points(self, weights: Point, frames: RNNFrames | None = None) -> LayerTuple:
        """``(ω_1, ω_2)``: the weights as points of ``W_1 = W_rec`` and ``W_2 = W_out``, in the
        frames induced by ``frames`` (position ``i - 1`` holds layer ``i``; ``.layer(i)``)."""
        frames = self._frames(frames)
        self._check_weights(weights)
        r, o = self.weight_space.split(weights.coords(frames.weight_space_frame))
        return LayerTuple((Point(frames.weight_frame(1), r), Point(frames.weight_frame(2), o)))

    def layer_weights(self, weights: Point, frames: RNNFrames | None = None) -> LayerList:
        """``[W̄_1, W̄_2] = [W̄_r, W̄_o]`` in ``frames`` (law D.2 through the core's induced
        frames; position ``i - 1`` holds layer ``i``, ``.layer(i)`` reads it).

        >>> import numpy as np
        >>> net = AbstractRNN(1, 1, 1, T=2, name="lw")
        >>> Ws = net.layer_weights(net.weights_from(np.array([[1., 2., 3.]]), np.array([[4., 5.]])))
        >>> Ws.layer(1).tolist(), Ws.layer(2).tolist()
        ([[1.0, 2.0, 3.0]], [[4.0, 5.0]])
        """
        r, o = self.layer_points(weights, frames)
        return LayerList(field_of(p.coords()).unvec(p.coords(), s.shape) for p, s in ((r, self.W_rec), (o, self.W_out)))

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

    # ------------------------------------------------------------ display
    def _display(self, frame=None, weights=None, h0=None):
        return _display.rnn_display(self, frame, weights, h0)

    def display(self, frame=None, weights=None, h0=None):
        """The network in the RNNFrames ``frame`` (default: reference frames): the recurrent
        step and the readout with their spaces and frames, the activation in those frames
        (D.3) and, given ``weights`` / ``h0``, ``[W̄_1]``, ``[W̄_2]`` (D.2) and ``α_0`` --
        :func:`geomkfac.display.rnn_display`."""
        return self._display(frame, weights, h0)

    def latex(self, frame=None, weights=None, h0=None) -> str:
        """The LaTeX of :meth:`display`."""
        return self._display(frame, weights, h0).latex

    def __repr__(self) -> str:
        return (f"AbstractRNN({self.name!r}, hidden={self.hidden}, inputs={self.inputs}, outputs={self.outputs}, "
                f"T={self.T}, activation={self.activation.name}, output={self.output!r})")
