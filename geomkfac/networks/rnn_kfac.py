"""K-FAC for the abstract recurrent network through the abstract pipeline (Def. G.2, Eqn. G.3/4.7).

For every example ξ and step t (:func:`unroll`):

* ``ψ_{ξ,t} : W → Z`` is the evaluation at ``α_{t−1} = (h_{t−1}, x_t) ∈ A × X``
  (:meth:`~geomkfac.maps.AffineMaps.evaluation_map`; the weights untied per step);
* ``ϕ_{ξ,t} : Z → Y^T`` is the rest of the unrolled network with ``ζ_t`` free and
  everything else fixed: a :class:`~geomkfac.maps.ComposedMap` of core
  :class:`~geomkfac.maps.AffineMap` s (the later recurrent steps, the readouts, carried on
  ``Y^k × A``) and activation :class:`~geomkfac.maps.SmoothMap` s;
* the output metric on ``Y^T`` is additive over steps (Eqn. B.2, :class:`StepAdditiveMetric`);
* ``g_KFAC = T · E_{ξ,t}[α ⊗ α] ⊗ E_{ξ,t}[ϕ_{ξ,t}* g]``
  (:func:`geomkfac.pipeline.independence_metric` with ``scale=T``), whose matrix in an
  induced frame is ``T (E_T[ā āᵀ] ⊗ E_T[Dz Dzᵀ])``;
* the loss differential ``dh = E_ξ[Σ_t Ψ_{ξ,t}* dℓ]`` with ``Ψ_{ξ,t} = ϕ_{ξ,t} ∘ ψ_{ξ,t}``
  (the copies of the untied weights summed: ``Σ_t Dz_t ā_{t−1}ᵀ``, Appendix G.2).

The readout is handled by the same pipeline: ``ψ`` evaluates at ``α_t`` and ``ϕ`` puts
``υ_t`` into its slot of ``Y^T`` (``T_2 = T``), or is the identity of ``Y`` for
``output="last"`` (an ordinary dense layer, ``T_2 = 1``).  :func:`kfac_factors` returns
each layer's ``(A, G, T)`` in the reference files' convention.

The weight layers are numbered as in the paper (:mod:`geomkfac.networks.rnn`): layer 1 the
recurrent weights, layer 2 the readout; ``kfac_metric(...).block(i)`` and
``kfac_factors(...).layer(i)`` read layer ``i``.

One code path serves NumPy and sympy (through the core's fields).  The pipeline's objects
are per example and step, so keep the sizes small: this module is the reference the NumPy
backend is checked against, not a training path.

Examples
--------
>>> import numpy as np
>>> from geomkfac.networks.rnn import AbstractRNN
>>> net = AbstractRNN(hidden=2, inputs=1, outputs=2, T=3, activation="tanh", name="docK")
>>> rng = np.random.default_rng(0)
>>> w, h0 = net.random_weights(rng), net.initial_state(rng.normal(size=2))
>>> X = rng.normal(size=(4, 3, 1))
>>> facs = kfac_factors(net, w, h0, X, output_metric="gaussian")
>>> [(A.shape, G.shape, T) for A, G, T in facs]
[((4, 4), (2, 2), 3), ((3, 3), (2, 2), 3)]
>>> g = recurrent_kfac_metric(net, w, h0, X, "gaussian")        # T · kron(A, G), kept factored
>>> bool(np.allclose(g.matrix(), 3 * np.kron(*facs.layer(1)[:2])))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from geomkfac import pipeline
from geomkfac.activations_sym import Activation
from geomkfac.errors import ConfigurationError, DataError, DimensionError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.maps import AffineMap, ComposedMap, Map, SmoothMap
from geomkfac.metrics import AdditiveMetric, KroneckerMetric, additive_metric, second_moment
from geomkfac.networks.rnn import AbstractRNN, RNNFrames, check_rnn_layer
from geomkfac.numbering import LayerList
from geomkfac.output_metrics import get_output_metric, loss_for
from geomkfac.spaces import AffineSpace, Covector, Frame, Point, ProductSpace, Vector, power_frame, product_frame

__all__ = [
    "StepAdditiveMetric",
    "UnrolledExample",
    "unroll",
    "layer_samples",
    "recurrent_kfac_metric",
    "kfac_metric",
    "expected_pullback",
    "kfac_factors",
    "loss_differential",
    "kfac_update",
]


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
    H = net.hidden
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
    """``(alphas, rests, zetas)`` over all examples and steps for layer 1 (recurrent) or 2 (readout)."""
    if check_rnn_layer(layer) == 1:
        return ([a for e in examples for a in e.alphas], [r for e in examples for r in e.rests],
                [z for e in examples for z in e.zetas])
    return ([a for e in examples for a in e.readout_points], [r for e in examples for r in e.readout_rests],
            [z for e in examples for z in e.readout_zetas])


def _output_metric_field(net: AbstractRNN, output_metric):
    g = get_output_metric(output_metric) if isinstance(output_metric, str) else output_metric
    return StepAdditiveMetric(g, net.Y, net.T) if net.output == "seq" else g


def recurrent_kfac_metric(net: AbstractRNN, weights: Point, h0: Point, X, output_metric,
                          layer: int = 1, frames: RNNFrames | None = None, examples=None,
                          scaled: bool = True) -> KroneckerMetric:
    """``T · E_T[α ⊗ α] ⊗ E_T[ϕ_{ξ,t}* g]`` on ``W_1 = W_rec`` (Def. G.2, Eqn. G.4), or the
    readout's on ``W_2 = W_out``.

    ``layer=1``: the recurrent weights (``scale = T``); ``layer=2``: the readout
    (``scale = T`` for ``"seq"``, 1 for ``"last"``); ``kfac_metric(...).block(layer)``.  ``scaled=False`` leaves the scale out
    (the factors ``(A, G)`` of the reference files).  Built by
    :func:`geomkfac.pipeline.independence_metric` from the unrolled examples' points and maps.
    """
    frames = net._frames(frames)
    layer = check_rnn_layer(layer)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    alphas, rests, zetas = layer_samples(net, examples, layer)
    scale = net.scales.layer(layer) if scaled else 1
    fA = frames.AX if layer == 1 else frames.A
    return pipeline.independence_metric(alphas, rests, zetas, _output_metric_field(net, output_metric),
                                        scale=scale, frame_A=fA)


def expected_pullback(net: AbstractRNN, weights: Point, h0: Point, X, output_metric, layer: int = 1,
                      frames: RNNFrames | None = None, examples=None):
    """``E_{ξ,t}[Ψ_{ξ,t}* g]`` on one layer's weights (``layer=1``: recurrent, ``2``: readout),
    ``Ψ_{ξ,t} = ϕ_{ξ,t} ∘ ψ_{ξ,t}`` (the
    hypothesis of Theorem G.3; the weights untied per step, no cross-time terms).

    Built by :func:`geomkfac.pipeline.expected_pullback` along the composed maps, evaluated
    at the layer's weights (in ``frames``' induced frame).
    """
    frames = net._frames(frames)
    layer = check_rnn_layer(layer)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    alphas, rests, _ = layer_samples(net, examples, layer)
    space, fA, fZ = (net.W_rec, frames.AX, frames.Z) if layer == 1 else (net.W_out, frames.A, frames.Y)
    point = net.layer_points(weights, frames).layer(layer)
    maps = [ComposedMap(r, space.evaluation_map(a, fA, fZ)) for a, r in zip(alphas, rests)]
    return pipeline.expected_pullback(maps, [point] * len(maps), _output_metric_field(net, output_metric))


def kfac_metric(net: AbstractRNN, weights: Point, h0: Point, X, output_metric,
                frames: RNNFrames | None = None, examples=None) -> AdditiveMetric:
    """The K-FAC metric on ``W_1 × W_2 = W_rec × W_out``: the additive metric of the two layers'
    metrics (``.block(1)`` the recurrent layer's, ``.block(2)`` the readout's)."""
    frames = net._frames(frames)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    blocks = [recurrent_kfac_metric(net, weights, h0, X, output_metric, i, frames, examples) for i in (1, 2)]
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
                 fisher: str = "type2", frames: RNNFrames | None = None) -> LayerList:
    """Each layer's K-FAC factors ``(A, G, T)`` in the reference files' convention, via the
    pipeline (position ``i - 1`` holds layer ``i``; ``.layer(i)`` reads it).

    ``A = (1/(N T)) Σ ā āᵀ``; ``G = (1/(N T)) Σ`` of the pulled-back output metric
    (``fisher="type2"``: ``ϕ_{ξ,t}* g``) or of ``Dz Dzᵀ`` with ``Dz = ϕ_{ξ,t}* dℓ`` the
    pulled-back differential of the data loss (``fisher="empirical"``, needs ``Y``); the
    block is ``T · kron(A, G)``.  Layer 1 is the recurrent layer, layer 2 the readout.
    ``fisher="type2"`` runs on NumPy or sympy coordinates; the empirical variant needs
    numeric outputs and targets (the losses are evaluated in float64).
    """
    frames = net._frames(frames)
    examples = _examples(net, weights, h0, X, frames)
    out = LayerList()
    if fisher == "type2":
        for i in (1, 2):
            g = recurrent_kfac_metric(net, weights, h0, X, output_metric, i, frames, examples, scaled=False)
            A, G = g.factors()
            out.append((A, G, net.scales.layer(i)))
        return out
    if fisher != "empirical":
        raise ConfigurationError(f"fisher must be 'type2' or 'empirical', got {fisher!r}")
    if Y is None:
        raise DataError("the empirical factors need targets Y")
    dls = [d for d, _ in _losses(net, output_metric, examples, Y)]
    for i in (1, 2):
        alphas, rests, zetas = layer_samples(net, examples, i)
        per = len(alphas) // len(examples)
        diffs = [dls[k // per] for k in range(len(alphas))]
        Dz = pipeline.pulled_back_differentials(rests, zetas, diffs)
        S = second_moment(alphas, frame=frames.AX if i == 1 else frames.A)
        g = KroneckerMetric(S, pipeline.empirical_fisher(Dz))
        A, G = g.factors()
        out.append((A, G, net.scales.layer(i)))
    return out


def loss_differential(net: AbstractRNN, weights: Point, h0: Point, X, Y, output_metric,
                      frames: RNNFrames | None = None, examples=None) -> tuple[Covector, float]:
    """``dh = E_ξ[Σ_t Ψ_{ξ,t}* dℓ_ξ]`` on ``W_rec × W_out`` and the loss ``h`` (mean over examples).

    The weights are untied per step: ``Ψ_{ξ,t} = ϕ_{ξ,t} ∘ ψ_{ξ,t}`` pulls the loss
    differential back to the step's copy of the weights, and the copies' covectors are summed
    (``T`` times their mean over steps) — the gradient ``Σ_t Dz_t ā_{t−1}ᵀ`` (Appendix G.2).
    Returned in ``frames``' weight frame.  Numeric (the losses are evaluated in float64);
    targets ``Y`` are given in the reference frame of ``Y`` (labels ``(N, T)`` or values
    ``(N, T, c)`` for ``"seq"``, ``(N,)`` or ``(N, c)`` for ``"last"``).
    """
    frames = net._frames(frames)
    examples = examples if examples is not None else _examples(net, weights, h0, X, frames)
    losses = _losses(net, output_metric, examples, Y)
    points = net.layer_points(weights, frames)
    parts = []
    for i, space in ((1, net.W_rec), (2, net.W_out)):
        alphas, rests, zetas = layer_samples(net, examples, i)
        per = len(alphas) // len(examples)
        fA, fZ = (frames.AX, frames.Z) if i == 1 else (frames.A, frames.Y)
        maps = [ComposedMap(r, space.evaluation_map(a, fA, fZ)) for a, r in zip(alphas, rests)]
        diffs = [losses[k // per][0] for k in range(len(alphas))]
        covs = pipeline.pulled_back_differentials(maps, [points.layer(i)] * len(maps), diffs)
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
