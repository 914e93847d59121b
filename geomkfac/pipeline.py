"""The abstract pipeline of the paper (§3, Def. F.2, Def. G.2), made of the core objects.

Every metric on a weight space in this package is built from the same few steps, and
only then asked for its matrix in a frame:

1. ``ψ_α : W → Z``, evaluation of an affine map at a point ``α`` of its domain
   (:meth:`~geomkfac.maps.AffineMaps.evaluation_map`, an :class:`~geomkfac.maps.AffineMap`);
2. ``ϕ_ξ : Z → Y``, the rest of the network for the sample ξ, a composition of
   :class:`~geomkfac.maps.AffineMap` s (the later layers) and :class:`~geomkfac.maps.SmoothMap`
   s (the activations, :func:`activation_map`) — a :class:`~geomkfac.maps.ComposedMap` whose
   Jacobian is the chain rule;
3. the pullback of an output metric (field) ``g`` on ``Y`` along them
   (:class:`~geomkfac.metrics.Pullback`), evaluated at the sample's point;
4. expectations over samples (:func:`~geomkfac.metrics.expectation`,
   :func:`~geomkfac.metrics.second_moment`);
5. the tensor product ``E[α ⊗ α] ⊗ E[ϕ*g]`` kept factored
   (:class:`~geomkfac.metrics.KroneckerMetric`), and the additive metric over layers
   (:class:`~geomkfac.metrics.AdditiveMetric`, Eqn. B.2).

The functions here know nothing of layers or architectures: an architecture (MLP,
convolution, recurrent network) supplies, per sample, the maps and points, and gets the
metric back. One code path serves NumPy and sympy (the core's :class:`~geomkfac.fields.Field`).

Examples
--------
One linear layer ``z = W a + b`` with the Euclidean output metric: the pipeline gives
``E[ā āᵀ] ⊗ I`` (Lemma E.1, Prop. 3.5), whatever frame it is asked in.

>>> import numpy as np
>>> from geomkfac.spaces import AffineSpace, Point
>>> from geomkfac.maps import AffineMap, AffineMaps
>>> from geomkfac.metrics import Metric
>>> A, Z = AffineSpace(1, "A"), AffineSpace(1, "Z")
>>> alphas = [Point(A.reference_frame, [x]) for x in (1.0, 3.0)]
>>> ident = AffineMap.identity(Z.reference_frame)
>>> zetas = [Point(Z.reference_frame, [0.0])] * 2
>>> g = independence_metric(alphas, [ident, ident], zetas, Metric.identity(Z.reference_frame))
>>> g.matrix(g.frame)                                   # E[ā āᵀ] ⊗ 1
array([[5., 2.],
       [2., 1.]])
>>> kA = A.reference_frame.derive([[1.0]], [-2.0], name="κ")   # centred: a' = a − 2
>>> g.matrix(AffineMaps(A, Z).frame(kA, Z.reference_frame))
array([[1., 0.],
       [0., 1.]])
"""

from __future__ import annotations

from typing import Sequence

from geomkfac.errors import DataError, DimensionError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.maps import Map, SmoothMap
from geomkfac.metrics import KroneckerMetric, Metric, Pullback, expectation, second_moment
from geomkfac.spaces import Covector, Frame, Point

__all__ = [
    "activation_map",
    "expected_pullback",
    "independence_metric",
    "pulled_back_differentials",
    "mean_covector",
    "empirical_fisher",
]


def activation_map(frame_Z: Frame, frame_A: Frame, activation) -> SmoothMap:
    """The activation ``φ : Z → A`` as a :class:`~geomkfac.maps.SmoothMap` between two frames.

    ``activation`` is a coordinate expression from ``frame_Z`` to ``frame_A``
    (:mod:`geomkfac.activations_sym`: elementwise, or conjugated by changes of frames as in
    Eqn. D.3); it works on NumPy vectors and sympy columns alike, and supplies its Jacobian.

    >>> import numpy as np
    >>> from geomkfac.spaces import AffineSpace, Point
    >>> from geomkfac.activations_sym import get_activation
    >>> Z, A = AffineSpace(2, "Z"), AffineSpace(2, "A")
    >>> phi = activation_map(Z.reference_frame, A.reference_frame, get_activation("tanh"))
    >>> phi(Point(Z.reference_frame, [0.0, 1.0])).coords().round(4)
    array([0.    , 0.7616])
    >>> phi.jacobian(Point(Z.reference_frame, [0.0, 0.0]))
    array([[1., 0.],
           [0., 1.]])
    """
    for f, what in ((frame_Z, "frame_Z"), (frame_A, "frame_A")):
        if not isinstance(f, Frame):
            raise SpaceMismatchError(f"activation_map needs a Frame as {what}, got {type(f).__name__}")
    if frame_Z.space.dim != frame_A.space.dim:
        raise DimensionError(
            f"an activation maps {frame_Z.space.name} (dim {frame_Z.space.dim}) to a space of the same "
            f"dimension, got {frame_A.space.name} (dim {frame_A.space.dim})"
        )
    return SmoothMap(frame_Z, frame_A, activation, activation.jacobian)


def _same_length(*seqs):
    n = len(seqs[0])
    if n == 0:
        raise DataError("the pipeline needs at least one sample (got an empty batch)")
    for s in seqs[1:]:
        if len(s) != n:
            raise DimensionError(f"one map, one point and one output per sample: got lengths {[len(x) for x in seqs]}")
    return n


def _per_sample(output_metric, n: int) -> list:
    """One metric (field) per sample: a sequence is taken as given, a single one repeated."""
    if isinstance(output_metric, (list, tuple)):
        if len(output_metric) != n:
            raise DimensionError(f"{n} samples but {len(output_metric)} output metrics")
        return list(output_metric)
    return [output_metric] * n


def expected_pullback(maps: Sequence[Map], points: Sequence[Point], output_metric, weights=None) -> Metric:
    """``E_ξ[Ψ_ξ* g]`` (Eqn. 3.2): the expectation of the pullbacks of the output metric.

    Parameters
    ----------
    maps : sequence of Map
        ``Ψ_ξ : W → Y``, one per sample.
    points : sequence of Point
        The point of ``W`` each pullback is evaluated at (for a network: the weights, in the
        frame the result is wanted in).
    output_metric : Metric or metric field on ``Y`` (``.at(point)``), or one per sample
        E.g. an output Fisher metric (:mod:`geomkfac.output_metrics`), evaluated at ``Ψ_ξ(w)``.
    weights : sequence of numbers, optional
        Sample weights (default uniform).
    """
    n = _same_length(maps, points)
    gs = _per_sample(output_metric, n)
    return expectation([Pullback(g, m, at=p) for g, m, p in zip(gs, maps, points)], weights)


def independence_metric(alphas: Sequence[Point], rests: Sequence[Map], zetas: Sequence[Point],
                        output_metric, scale=1, frame_A: Frame | None = None, weights=None) -> KroneckerMetric:
    """``scale · E[α ⊗ α] ⊗ E[(ϕ_ξ)* g(ζ)]`` on ``Aff(A, Z)`` (Eqns. 3.3/3.4, F.5, G.3).

    Parameters
    ----------
    alphas : sequence of Point of A
        The layer's input point per sample (for a convolution: the patch per sample and
        location; for a recurrent layer: the pair (state, input) per sample and step).
    rests : sequence of Map ``Z → Y``
        ``ϕ_ξ``: the rest of the network per sample.
    zetas : sequence of Point of Z
        The pre-activation per sample, where ``ϕ_ξ`` is linearized.
    output_metric : Metric or metric field on Y, or one per sample
    scale : number
        ``|T|`` for a layer shared over ``|T|`` locations or steps (Eqn. 4.4, 4.7), else 1.
    frame_A : Frame, optional
        The frame of A the second moment is kept in (default: the first alpha's).
    weights : sequence of numbers, optional
        Sample weights of both expectations (default uniform).

    Returns
    -------
    KroneckerMetric
        Kept factored; in the frame of ``Aff(A, Z)`` induced by frames on A and Z its matrix
        is ``scale · kron(E[ā āᵀ], E[G])``.
    """
    n = _same_length(alphas, rests, zetas)
    gs = _per_sample(output_metric, n)
    S = second_moment(list(alphas), weights, frame=frame_A)
    E = expectation([Pullback(g, phi, at=z) for g, phi, z in zip(gs, rests, zetas)], weights)
    g = KroneckerMetric(S, E)
    return g if _is_one(scale) else g * scale


def _is_one(s) -> bool:
    try:
        return bool(s == 1)
    except TypeError:  # pragma: no cover - exotic scalars
        return False


def pulled_back_differentials(maps: Sequence[Map], points: Sequence[Point], differentials: Sequence[Covector]) -> list:
    """``Ψ_ξ* dℓ_ξ`` for every sample: the covectors ``Jᵀ ∇ℓ`` on ``W`` (in each point's frame)."""
    _same_length(maps, points, differentials)
    return [m.pullback_covector(d, at=p) for m, p, d in zip(maps, points, differentials)]


def mean_covector(covectors: Sequence[Covector], weights=None) -> Covector:
    """The weighted mean of covectors on one space, in the first one's frame (``dh = E[dℓ]``)."""
    covectors = list(covectors)
    if not covectors:
        raise DataError("a mean needs at least one covector (got an empty batch)")
    F = covectors[0].frame
    for c in covectors:
        if not isinstance(c, Covector) or c.space is not F.space:
            raise SpaceMismatchError(f"mean_covector needs covectors on {F.space.name}, got {c!r}")
    coords = [c.coords(F) for c in covectors]
    field = field_of(*coords)
    n = len(coords)
    if weights is None:
        w = [field.scalar(1) / n if field.symbolic else 1.0 / n] * n
    else:
        w = list(weights)
        if len(w) != n:
            raise DimensionError(f"{n} covectors but {len(w)} weights")
        tot = sum(w)
        w = [x / tot for x in w]
    out = field.asvector(coords[0]) * w[0]
    for x, wi in zip(coords[1:], w[1:]):
        out = out + field.asvector(x) * wi
    return Covector(F, out)


def empirical_fisher(differentials: Sequence[Covector], weights=None) -> Metric:
    """``E[dℓ ⊗ dℓ]`` over data pairs (empirical Fisher): the mean of ``Metric.outer(dℓ)``."""
    differentials = list(differentials)
    if not differentials:
        raise DataError("the empirical Fisher needs at least one sample (got an empty batch)")
    return expectation([Metric.outer(d) for d in differentials], weights)
