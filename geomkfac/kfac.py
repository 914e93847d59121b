"""Metrics on the weight space of an abstract MLP, built by the abstract pipeline (paper §3).

Every metric here is made of the core objects (:mod:`geomkfac.pipeline`): per example ξ
the evaluation maps ``ψ_{α_{i-1}} : W_i → Z_i``, the rest of the network
``ϕ^i_ξ : Z_i → A_L`` (a composition of the layers' :class:`~geomkfac.maps.AffineMap` s and
the activations' :class:`~geomkfac.maps.SmoothMap` s), the network map ``Ψ_ξ : W → A_L``,
:class:`~geomkfac.metrics.Pullback` s of the output metric along them, expectations,
the tensor product ``E[α ⊗ α] ⊗ E[ϕ*g]`` kept factored, and the additive metric over layers.
Only then is a metric asked for its matrix in a frame.

* :func:`expected_pullback` — ``E_ξ[Ψ_ξ* g]`` (Eqn. 3.2): the Fisher (output Fisher metric,
  Example 3.3), the Gauss-Newton matrix (:class:`~geomkfac.output_metrics.Euclidean`) or the
  generalized Gauss-Newton matrix (:class:`~geomkfac.output_metrics.BregmanMetric`).
* :func:`empirical_fisher_metric` — ``E[dℓ ⊗ dℓ]`` with data targets, ``dℓ = Ψ_ξ* dℓ_out``.
* :func:`independence_metric` — ``E[α ⊗ α] ⊗ E[(ϕ^i)* g(ζ_i)]`` on ``W_i`` (Eqns. 3.3, 3.4),
  a :class:`~geomkfac.metrics.KroneckerMetric` kept factored.
* :func:`kfac_metric` — the additive metric ``g¹_ind + … + g^L_ind`` (Definition 3.7);
  in the induced frame block diagonal with blocks ``A_{i-1} ⊗ G_i``.
* :func:`loss_differential` and :func:`natural_gradient_update` —
  ``ω ← ω − ε g⁻¹ dh`` (Theorem 3.2), with optional Tikhonov damping ``λ I`` in a given
  frame (coordinate dependent, to show it).

Every function takes ``frames`` (a :class:`~geomkfac.networks.FrameChoice`, default the
reference frames): the maps are then built *in those frames* — weights read by the law D.2,
activations conjugated as in D.3, outputs compared with the output metric through the change
of the output frame — so the result computed in κ can be compared with the result computed
in ι and transformed by the law.  One code path serves NumPy and sympy.

Inputs are coordinates in the reference frame of ``A_0`` (the data): a numeric ``(N, n_0)``
array, or a sympy matrix with one example per row; targets are in the reference frame of
the output space.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac import pipeline
from geomkfac.activations_sym import is_symbolic
from geomkfac.errors import ConfigurationError, DataError, SpaceMismatchError
from geomkfac.fields import field_of
from geomkfac.metrics import (
    AdditiveMetric,
    KroneckerMetric,
    Metric,
    SecondMoment,
    additive_metric,
)
from geomkfac.output_metrics import OutputMetric, get_output_metric
from geomkfac.activations_sym import as_exact_sym as _to_sym
from geomkfac.spaces import Covector, Frame, Point, Vector

__all__ = [
    "samples",
    "expected_pullback",
    "empirical_fisher_metric",
    "independence_metric",
    "kfac_metric",
    "loss_value",
    "loss_differential",
    "natural_gradient_update",
    "sgd_update",
    "to_arrays",
]


# =========================================================================== samples
def _rows(inputs, n0: int) -> list:
    """The examples of a batch: rows of an ``(N, n_0)`` array or of a sympy matrix."""
    if isinstance(inputs, sp.MatrixBase):
        if inputs.cols != n0:
            raise DataError(f"symbolic inputs must have one example per row with {n0} columns, got {inputs.shape}")
        rows = [sp.ImmutableMatrix(inputs.row(r).T) for r in range(inputs.rows)]
    else:
        x = np.asarray(inputs)
        if x.ndim != 2 or x.shape[1] != n0:
            raise DataError(f"inputs must be (N, {n0}) (one example per row), got {x.shape}")
        if x.dtype == object:
            rows = [sp.ImmutableMatrix(_to_sym(r)) for r in x]
        else:
            x = np.asarray(x, dtype=float)
            if not np.all(np.isfinite(x)):
                raise DataError("inputs contain NaN or inf; clean the data first")
            rows = list(x)
    if not rows:
        raise DataError("the batch is empty: the metrics are expectations over at least one example")
    return rows


def samples(net, weights: Point, inputs, frames=None) -> list:
    """The pipeline's per-example objects (:class:`~geomkfac.networks.MLPSample`) in ``frames``."""
    frames = net._frames(frames)
    return [net.sample(weights, x, frames) for x in _rows(inputs, net.widths[0])]


def _weights_point(net, weights: Point, frames) -> Point:
    """The weights as a Point whose own frame is ``frames``' weight frame (results come in it)."""
    if not isinstance(weights, Point) or weights.space is not net.weight_space:
        raise SpaceMismatchError(f"weights must be a Point of {net.weight_space.name}, got {weights!r}")
    F = frames.weight_space_frame
    return weights if weights.frame is F else Point(F, weights.coords(F))


def _targets(targets, N: int) -> list:
    """The targets of a batch, one per example (rows of an array or of a sympy matrix)."""
    if isinstance(targets, sp.MatrixBase):
        ys = [sp.ImmutableMatrix(targets.row(r).T) for r in range(targets.rows)]
    elif isinstance(targets, list):
        ys = targets
    else:
        ys = list(np.asarray(targets))
    if len(ys) != N:
        raise DataError(f"{N} inputs but {len(ys)} targets")
    return ys


def _output_differentials(smp: list, targets, om: OutputMetric) -> list:
    """``dℓ_ξ`` at each output point: a Covector in the reference frame of the output space."""
    loss = om.loss()
    out = []
    for s, y in zip(smp, _targets(targets, len(smp))):
        ref = s.output.space.reference_frame
        out.append(Covector(ref, loss.grad(s.output.coords(ref), y)))
    return out


def _clean(metric):
    """Symbolic results only: ``cancel`` entries that are rational functions, for size and
    display (exact, no information changes); numeric results are returned as they are."""
    if not metric.field.symbolic:
        return metric
    return Metric(metric.frame, _sym_clean(metric.matrix()), check=False)


def _sym_clean(M):
    """Keep symbolic results small: entries that are rational functions of symbols go
    through ``cancel`` (cheap, exact); entries with transcendental atoms (exp, log, …
    from the activations) are left as they are."""
    M = sp.ImmutableMatrix(M)
    if not M.free_symbols:
        return M
    return sp.ImmutableMatrix(
        M.applyfunc(lambda e: sp.cancel(e) if e.free_symbols and not e.has(sp.Function) else e)
    )


# =========================================================================== Eqn. 3.2
def expected_pullback(net, weights: Point, inputs, output_metric, frames=None) -> Metric:
    """``E_ξ[Ψ_ξ* g]`` (Eqn. 3.2), in ``frames``' weight frame: its matrix is ``E_x[Jᵀ G(f(x)) J]``.

    Built by :func:`geomkfac.pipeline.expected_pullback` from the network maps
    ``Ψ_ξ`` (:class:`~geomkfac.networks.NetworkMap`) and the output metric field.  With the
    output Fisher metric this is the Fisher (Example 3.3), with the Euclidean metric the
    Gauss-Newton matrix, with a Bregman metric the generalized Gauss-Newton.

    Examples
    --------
    A single linear layer with squared error: the Gauss-Newton matrix is ``A ⊗ I``.

    >>> import numpy as np
    >>> from geomkfac.networks import AbstractMLP
    >>> net = AbstractMLP([2, 1], ["identity"], name="lin")
    >>> w = net.weights_from([np.array([[1.0, -1.0, 0.5]])])
    >>> x = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> expected_pullback(net, w, x, "euclidean").matrix()
    array([[0.5, 0. , 0.5],
           [0. , 2. , 1. ],
           [0.5, 1. , 1. ]])
    """
    frames = net._frames(frames)
    om = get_output_metric(output_metric)
    w = _weights_point(net, weights, frames)
    smp = samples(net, w, inputs, frames)
    g = pipeline.expected_pullback([s.network_map for s in smp], [w] * len(smp), om)
    return _clean(g)


def empirical_fisher_metric(net, weights: Point, inputs, targets, output_metric, frames=None) -> Metric:
    """``E[dℓ ⊗ dℓ]`` over data pairs, ``dℓ = Ψ_ξ* dℓ_out`` (matrix ``(1/N) Σ ∇ℓ_n ∇ℓ_nᵀ``)."""
    frames = net._frames(frames)
    om = get_output_metric(output_metric)
    w = _weights_point(net, weights, frames)
    smp = samples(net, w, inputs, frames)
    d = pipeline.pulled_back_differentials([s.network_map for s in smp], [w] * len(smp),
                                           _output_differentials(smp, targets, om))
    return _clean(pipeline.empirical_fisher(d))


def loss_value(net, weights: Point, inputs, targets, output_metric):
    """``h = (1/N) Σ ℓ(f(x_n), y_n)`` (frame independent: computed in reference frames).

    Numeric inputs give a float; symbolic inputs (one example per row) a sympy expression.
    """
    loss = get_output_metric(output_metric).loss()
    smp = samples(net, weights, inputs)
    vals = [loss.value(s.output.coords(s.output.space.reference_frame), y)
            for s, y in zip(smp, _targets(targets, len(smp)))]
    if any(is_symbolic(v) for v in vals):
        return sum(vals) / len(vals)
    return float(np.mean([float(np.asarray(v).reshape(-1)[0]) for v in vals]))


def loss_differential(net, weights: Point, inputs, targets, output_metric, frames=None) -> Covector:
    """``dh = E[Ψ_ξ* dℓ_out]`` with ``h`` the mean loss: a Covector on the weight space
    (coordinates in ``frames``' weight frame, ``(1/N) Σ J_nᵀ ∇_z ℓ_n``)."""
    frames = net._frames(frames)
    om = get_output_metric(output_metric)
    w = _weights_point(net, weights, frames)
    smp = samples(net, w, inputs, frames)
    d = pipeline.pulled_back_differentials([s.network_map for s in smp], [w] * len(smp),
                                           _output_differentials(smp, targets, om))
    dh = pipeline.mean_covector(d)
    if dh.field.symbolic:
        return Covector(dh.frame, _sym_clean(dh.coords()))
    return dh


# =========================================================================== Eqns. 3.3/3.4
def _check_layer(net, layer):
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 1 <= layer <= net.L:
        raise ConfigurationError(f"layers are numbered 1..{net.L}, got {layer!r}")


def _layer_metric(net, smp, om, frames, i) -> KroneckerMetric:
    g = pipeline.independence_metric(
        [s.alphas[i - 1] for s in smp], [s.rests[i] for s in smp], [s.zetas[i] for s in smp], om,
        frame_A=frames.A[i - 1],
    )
    if not g.field.symbolic:
        return g
    S, E = g.second_moment, g.metric_on_Z
    return KroneckerMetric(SecondMoment(S.frame, _sym_clean(S.matrix()), check=False), _clean(E))


def independence_metric(net, weights: Point, inputs, output_metric, layer: int, frames=None) -> KroneckerMetric:
    """The layer metric ``E[α_{i-1} ⊗ α_{i-1}] ⊗ E[(ϕ^i)* g(ζ_i)]`` on ``W_i`` (Eqns. 3.3, 3.4).

    Built by :func:`geomkfac.pipeline.independence_metric`: the second moment of the points
    ``α_{i-1}`` and the expectation of the pullbacks of the output metric along the rest of
    the network ``ϕ^i_ξ : Z_i → A_L`` at ``ζ_i`` (for the output Fisher: ``E[Dz Dzᵀ]`` with the
    exact expectation over the model's targets, Remark 3.6).  Kept factored: its matrix in
    the induced frame is ``kron(A_{i-1}, G_i)``.  Layers are numbered ``1..L``.
    """
    frames = net._frames(frames)
    _check_layer(net, layer)
    om = get_output_metric(output_metric)
    smp = samples(net, weights, inputs, frames)
    return _layer_metric(net, smp, om, frames, layer)


def kfac_metric(net, weights: Point, inputs, output_metric, frames=None) -> AdditiveMetric:
    """The K-FAC metric ``g¹_ind + … + g^L_ind`` (Definition 3.7, Eqn. B.2).

    In the weight frame induced by ``frames`` its matrix is block diagonal with blocks
    ``A_{i-1} ⊗ G_i`` (kept factored: ``.metrics[i-1].factors()``); its ``sharp`` works
    block by block through ``G⁻¹ V A⁻¹``.

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.networks import AbstractMLP
    >>> net = AbstractMLP([2, 3, 1], ["tanh", "identity"], name="kf")
    >>> w = net.random_weights(0)
    >>> g = kfac_metric(net, w, np.random.default_rng(1).normal(size=(8, 2)), "gaussian")
    >>> [blk.shape for blk in g.blocks()]
    [(9, 9), (4, 4)]
    >>> A, G = g.metrics[0].factors()
    >>> bool(np.allclose(g.blocks()[0], np.kron(A, G)))
    True
    """
    frames = net._frames(frames)
    om = get_output_metric(output_metric)
    smp = samples(net, weights, inputs, frames)
    metrics = [_layer_metric(net, smp, om, frames, i) for i in range(1, net.L + 1)]
    return additive_metric(metrics, product_space=net.weight_space)


# =========================================================================== Theorem 3.2
def natural_gradient_update(metric: Metric, weights: Point, dh: Covector, lr, damping=0.0, damping_frame: Frame | None = None) -> Point:
    """One step ``ω ← ω − ε g⁻¹ dh`` (Theorem 3.2); optional Tikhonov damping.

    Parameters
    ----------
    metric : Metric on the weight space (any: Fisher, GN, K-FAC, empirical Fisher)
    weights : Point
    dh : Covector (e.g. :func:`loss_differential`)
    lr : float (or sympy expression)
    damping : float
        ``λ ≥ 0``.  With ``λ > 0`` the step is ``(G_F + λ I)⁻¹ dh_F`` in
        ``damping_frame`` ``F`` (default: the reference frame of the weight space) — a
        coordinate-dependent rule, so the result depends on ``F``.
    damping_frame : Frame, optional

    Returns
    -------
    Point
        The new weights (a coordinate-free point).
    """
    if not isinstance(weights, Point) or weights.space is not metric.space:
        raise SpaceMismatchError(f"weights must be a Point of {metric.space.name}, got {weights!r}")
    if not isinstance(dh, Covector) or dh.space is not metric.space:
        raise SpaceMismatchError(f"dh must be a Covector on {metric.space.name}, got {dh!r}")
    for name, val in (("lr", lr), ("damping", damping)):
        if isinstance(val, bool) or not (isinstance(val, (int, float, np.number)) or is_symbolic(val)):
            raise ConfigurationError(f"{name} must be a number (or a sympy expression), got {val!r}")
        if not is_symbolic(val) and not np.isfinite(float(val)):
            raise ConfigurationError(f"{name} must be finite, got {val!r}")
    if damping == 0:
        v = metric.sharp(dh)
    else:
        if (not is_symbolic(damping)) and damping < 0:
            raise ConfigurationError(f"damping must be ≥ 0, got {damping}")
        F = damping_frame or metric.space.reference_frame
        if F.space is not metric.space:
            raise SpaceMismatchError(f"damping_frame must be a frame of {metric.space.name}")
        G = metric.matrix(F)
        w = dh.coords(F)
        field = field_of(G, w, damping)
        M = field.asmatrix(G) + field.eye(metric.space.dim) * (damping if not field.symbolic else field.scalar(damping))
        v = Vector(F, field.solve(M, field.asvector(w)))
    if v.field.symbolic:  # keep exact results small (solves grow rational functions)
        v = Vector(v.frame, _sym_clean(v.coords()))
    return weights + v * (-lr)


def sgd_update(weights: Point, dh: Covector, lr, frame: Frame | None = None) -> Point:
    """``w ← w − ε dh`` read in ``frame`` (the Euclidean metric of that frame): coordinate
    dependent; used as the negative control of Theorems 2.1/3.2."""
    F = frame or weights.space.reference_frame
    return natural_gradient_update(Metric.identity(F), weights, dh, lr)


# =========================================================================== arrays
def to_arrays(obj, net=None, frames=None):
    """Plain NumPy matrices in the weight frame induced by ``frames`` (default reference).

    * AdditiveMetric of KroneckerMetrics (K-FAC) → list of ``(A_{i-1}, G_i)`` per layer;
    * KroneckerMetric → ``(A, G)``;
    * other Metric on the weight space → dense matrix;
    * Covector / Vector on the weight space → 1-D array ``[vec W̄_1; …]``;
    * Point of the weight space → list of ``W̄_i`` matrices (needs ``net``).
    """

    def frame_for(space):
        if net is not None:
            fr = net._frames(frames)
            if space is net.weight_space:
                return fr.weight_space_frame
            for i in range(1, net.L + 1):
                if space is net.weight_spaces[i]:
                    return fr.weight_frame(i)
        return space.reference_frame

    def num(M):
        return np.array(M, dtype=float) if not isinstance(M, np.ndarray) else M

    if isinstance(obj, AdditiveMetric) and all(isinstance(m, KroneckerMetric) for m in obj.metrics):
        F = frame_for(obj.space)
        fac = F.factor_frames
        return [tuple(num(x) for x in m.factors(*f.induced_by)) for m, f in zip(obj.metrics, fac)]
    if isinstance(obj, KroneckerMetric):
        F = frame_for(obj.space)
        return tuple(num(x) for x in obj.factors(*F.induced_by))
    if isinstance(obj, Metric):
        return num(obj.matrix(frame_for(obj.space)))
    if isinstance(obj, (Covector, Vector)):
        return num(obj.coords(frame_for(obj.space))).reshape(-1)
    if isinstance(obj, Point):
        if net is None:
            raise ConfigurationError("to_arrays of weights needs net= to split the layers")
        return [num(W) for W in net.layer_weights(obj, frames)]
    raise ConfigurationError(f"to_arrays does not know {type(obj).__name__}")
