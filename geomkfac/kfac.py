"""Metrics on the weight space of an abstract MLP, through the abstract pipeline (paper §3).

* :func:`expected_pullback` — ``E_ξ[Ψ_ξ* g]`` (Eqn. 3.2) of an output metric ``g`` along
  the network map ``Ψ_ξ : W → A_L``: the Fisher (output Fisher metric, Example 3.3), the
  Gauss-Newton matrix (:class:`~geomkfac.output_metrics.Euclidean`) or the generalized
  Gauss-Newton matrix (:class:`~geomkfac.output_metrics.BregmanMetric`).
* :func:`empirical_fisher_metric` — ``E[dL ⊗ dL]`` with data targets.
* :func:`independence_metric` — ``E[α ⊗ α] ⊗ E[(ϕ^i)* g(ζ_i)]`` on ``W_i`` (Eqns. 3.3, 3.4),
  a :class:`~geomkfac.metrics.KroneckerMetric` kept factored.
* :func:`kfac_metric` — the additive metric ``g¹_ind + … + g^L_ind`` (Definition 3.7);
  in the induced frame block diagonal with blocks ``A_{i-1} ⊗ G_i``.
* :func:`loss_differential` and :func:`natural_gradient_update` —
  ``ω ← ω − ε g⁻¹ dh`` (Theorem 3.2), with optional Tikhonov damping ``λ I`` in a given
  frame (coordinate dependent, to show it).

The Jacobian of ``Ψ_ξ`` is built from the chain of pushforwards: the evaluation map
``ψ_a : W_i → Z_i`` has Jacobian ``āᵀ ⊗ I`` (the core's ``AffineMaps.evaluation_map``), and
``ϕ^i : Z_i → A_L`` has Jacobian ``D_i = Jφ_L W_L Jφ_{L-1} … W_{i+1} Jφ_i`` (activation
Jacobians in the chosen frames, D.3).  So ``∂Ψ/∂vec W̄_i = āᵀ_{i-1} ⊗ D_i``.  Every
function takes ``frames`` (a :class:`~geomkfac.networks.FrameChoice`, default the reference
frames) and returns a coordinate-free object whose matrix in any other frame follows
the transformation law; computing directly in other frames gives the same object.

Inputs are coordinates in the reference frame of ``A_0`` (the data); targets are in the
reference frame of the output space.  Numeric batches are ``(N, n)`` arrays and every
numeric path is vectorized over examples; symbolic inputs (a sympy matrix with one
example per row) are handled example by example with exact arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

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
    "NetworkJacobians",
    "network_jacobians",
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


# =========================================================================== Jacobians
@dataclass(frozen=True)
class NetworkJacobians:
    """Forward quantities and Jacobians of ``Ψ_ξ`` for a batch, in one FrameChoice.

    Numeric: ``abars[i-1]`` is ``(N, n_{i-1}+1)``, ``D[i]`` is ``(N, n_L, n_i)`` (index by
    layer, ``D[0] = None``), ``blocks(i)`` is ``(N, n_L, n_i (n_{i-1}+1))`` (formed only
    when asked, e.g. for the dense Fisher; K-FAC needs only ``abars`` and ``D``), ``outputs``
    ``(N, n_L)`` in ``frames.A[L]``; ``G_out`` ``(N, n_L, n_L)`` the output metric in that
    frame.  Symbolic: the same as lists over examples of sympy matrices.
    """

    frames: object
    symbolic: bool
    abars: list
    D: list
    outputs: object
    outputs_ref: object
    out_change: object  # FrameChange reference → frames.A[L]

    def blocks(self, i: int):
        """``∂Ψ/∂vec W̄_i = āᵀ_{i-1} ⊗ D_i`` for every example (the evaluation map's
        Jacobian ``āᵀ ⊗ I`` composed with ``D_i``)."""
        if self.symbolic:
            return [
                sp.ImmutableMatrix(sp.kronecker_product(ab[i - 1].T, D[i])) for ab, D in zip(self.abars, self.D)
            ]
        ab, Di = self.abars[i - 1], self.D[i]
        return np.einsum("nj,nlk->nljk", ab, Di).reshape(ab.shape[0], Di.shape[1], -1)


def _as_sym_batch(inputs):
    """A sympy matrix with one example per row (or a list of columns) → list of columns."""
    if isinstance(inputs, sp.MatrixBase):
        return [sp.ImmutableMatrix(inputs.row(r).T) for r in range(inputs.rows)]
    return [sp.ImmutableMatrix(_to_sym(x)).reshape(len(x), 1) if not isinstance(x, sp.MatrixBase)
            else sp.ImmutableMatrix(x) for x in inputs]


def network_jacobians(net, weights: Point, inputs, frames=None) -> NetworkJacobians:
    """Per-example Jacobians ``∂Ψ_ξ/∂vec W̄_i = āᵀ_{i-1} ⊗ D_i`` in ``frames``.

    Parameters
    ----------
    net : AbstractMLP
    weights : Point of ``net.weight_space``
    inputs : (N, n_0) array, or sympy matrix (one example per row), reference frame of A_0
    frames : FrameChoice, optional
    """
    frames = net._frames(frames)
    cnet = net.coordinates(weights, frames)
    L = net.L
    out_change = net.A[L].reference_frame.change_to(frames.A[L])
    symbolic = cnet.symbolic or is_symbolic(inputs) or frames.weight_space_frame.field.symbolic
    if symbolic:
        return _network_jacobians_sym(net, cnet, inputs, frames, out_change)
    x = np.asarray(inputs, dtype=float)
    if x.ndim != 2 or x.shape[1] != net.widths[0]:
        raise DataError(f"inputs must be (N, {net.widths[0]}), got {x.shape}")
    x = net.input_coords(x, frames)
    abars, zs, acts = cnet.trace(x)
    D = [None] * (L + 1)
    D[L] = cnet.activations[L - 1].jacobian(zs[L - 1])  # output is a_L = φ_L(z_L)
    for i in range(L - 1, 0, -1):
        W_next = cnet.Wbars[i][:, :-1]  # linear part of layer i+1
        D[i] = (D[i + 1] @ W_next) @ cnet.activations[i - 1].jacobian(zs[i - 1])
    out = acts[L]
    B = np.asarray(out_change.B, dtype=float)
    c = np.asarray(out_change.c, dtype=float).reshape(-1)
    out_ref = np.linalg.solve(B, (out - c).T).T
    return NetworkJacobians(frames, False, abars, D, out, out_ref, out_change)


def _network_jacobians_sym(net, cnet, inputs, frames, out_change):
    L = net.L
    xs = _as_sym_batch(inputs)
    if not xs:
        raise DataError("at least one input is needed")
    B = _to_sym(out_change.B)
    c = _to_sym(out_change.c).reshape(B.rows, 1)
    abars_all, D_all, outs, outs_ref = [], [], [], []
    for x in xs:
        abars, zs, acts = cnet.trace(net.input_coords(x, frames))
        D = [None] * (L + 1)
        D[L] = cnet.activations[L - 1].jacobian(zs[L - 1])
        for i in range(L - 1, 0, -1):
            W_next = _to_sym(cnet.Wbars[i])[:, :-1]
            D[i] = sp.ImmutableMatrix(D[i + 1] * W_next * cnet.activations[i - 1].jacobian(zs[i - 1]))
        abars_all.append(abars)
        D_all.append(D)
        outs.append(acts[L])
        outs_ref.append(sp.ImmutableMatrix(B.inv() * (acts[L] - c)))
    return NetworkJacobians(frames, True, abars_all, D_all, outs, outs_ref, out_change)


def _output_metric_matrices(jac: NetworkJacobians, output_metric: OutputMetric):
    """``G(z)`` in ``frames.A[L]``: the formula in the reference frame, then ``B⁻ᵀ G B⁻¹``."""
    ch = jac.out_change
    if jac.symbolic:
        Binv = _to_sym(ch.B_inv)
        return [sp.ImmutableMatrix(Binv.T * output_metric.matrix(z) * Binv) for z in jac.outputs_ref]
    G = output_metric.matrix(jac.outputs_ref)  # (N, C, C)
    if ch.is_identity:
        return G
    Binv = np.asarray(ch.B_inv, dtype=float)
    return Binv.T[None] @ G @ Binv[None]


def _full_jacobian(jac: NetworkJacobians):
    """``J = [∂Ψ/∂vec W̄_1, …, ∂Ψ/∂vec W̄_L]`` per example (numeric ``(N, n_L, P)``)."""
    L = len(jac.D[0] if jac.symbolic else jac.D) - 1
    per_layer = [jac.blocks(i) for i in range(1, L + 1)]
    if jac.symbolic:
        out = []
        for n in range(len(jac.abars)):
            J = per_layer[0][n]
            for b in per_layer[1:]:
                J = J.row_join(b[n])
            out.append(sp.ImmutableMatrix(J))
        return out
    return np.concatenate(per_layer, axis=2)


def _mean_sym(mats):
    N = len(mats)
    total = mats[0]
    for M in mats[1:]:
        total = total + M
    return sp.ImmutableMatrix(total / N)


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
    """``E_ξ[Ψ_ξ* g]`` (Eqn. 3.2): matrix ``E_x[Jᵀ G(f(x)) J]`` in ``frames``' weight frame.

    With the output Fisher metric this is the Fisher (Example 3.3), with the Euclidean
    metric the Gauss-Newton matrix, with a Bregman metric the generalized Gauss-Newton.

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
    om = get_output_metric(output_metric)
    jac = network_jacobians(net, weights, inputs, frames)
    G = _output_metric_matrices(jac, om)
    J = _full_jacobian(jac)
    frame = jac.frames.weight_space_frame
    if jac.symbolic:
        M = _mean_sym([Jn.T * Gn * Jn for Jn, Gn in zip(J, G)])
        return Metric(frame, _sym_clean(M), check=False)
    GJ = G @ J
    P = J.shape[2]
    M = J.reshape(-1, P).T @ GJ.reshape(-1, P) / J.shape[0]  # Σ_n J_nᵀ G_n J_n by one BLAS call
    return Metric(frame, 0.5 * (M + M.T), check=False)


def _per_example_loss_grads(jac, targets, om):
    """``∇_w ℓ_n = J_nᵀ ∇_z ℓ_n`` in the weight frame (z-gradient mapped to frames.A[L])."""
    loss = om.loss()
    ch = jac.out_change
    if jac.symbolic:
        J = _full_jacobian(jac)
        Binv = _to_sym(ch.B_inv)
        ys = _as_sym_batch(targets) if isinstance(targets, (sp.MatrixBase, list)) else list(targets)
        if len(ys) != len(J):
            raise DataError(f"{len(J)} inputs but {len(ys)} targets")
        return [
            sp.ImmutableMatrix(Jn.T * (Binv.T * loss.grad(z, y))) for Jn, z, y in zip(J, jac.outputs_ref, ys)
        ]
    y = np.asarray(targets)
    N = jac.abars[0].shape[0]
    if y.shape[0] != N:
        raise DataError(f"{N} inputs but {y.shape[0]} targets")
    gz = loss.grad(jac.outputs_ref, y)  # (N, C) in the reference frame of the output
    if not ch.is_identity:
        gz = gz @ np.asarray(ch.B_inv, dtype=float)  # covector: B⁻ᵀ g, row form g B⁻¹
    # per layer: Dz_i = D_iᵀ gz, then vec(Dz_i ā_{i-1}ᵀ) = ā_{i-1} ⊗ Dz_i (column-stacking)
    parts = []
    for i in range(1, len(jac.D)):
        dz = np.einsum("nlk,nl->nk", jac.D[i], gz)
        parts.append(np.einsum("nj,nk->njk", jac.abars[i - 1], dz).reshape(N, -1))
    return np.concatenate(parts, axis=1)


def empirical_fisher_metric(net, weights: Point, inputs, targets, output_metric, frames=None) -> Metric:
    """``E[dL ⊗ dL]`` over data pairs: matrix ``(1/N) Σ ∇ℓ_n ∇ℓ_nᵀ`` (per-example gradients)."""
    om = get_output_metric(output_metric)
    jac = network_jacobians(net, weights, inputs, frames)
    g = _per_example_loss_grads(jac, targets, om)
    frame = jac.frames.weight_space_frame
    if jac.symbolic:
        return Metric(frame, _sym_clean(_mean_sym([gn * gn.T for gn in g])), check=False)
    M = g.T @ g / g.shape[0]
    return Metric(frame, 0.5 * (M + M.T), check=False)


def loss_value(net, weights: Point, inputs, targets, output_metric):
    """``h = (1/N) Σ ℓ(f(x_n), y_n)`` (frame independent: computed in reference frames).

    Numeric inputs give a float; symbolic inputs (one example per row) a sympy expression.
    """
    om = get_output_metric(output_metric)
    loss = om.loss()
    if is_symbolic(inputs) or net.weight_space.reference_frame.field.symbolic or is_symbolic(weights.coords()):
        xs = _as_sym_batch(inputs)
        ys = _as_sym_batch(targets) if isinstance(targets, (sp.MatrixBase, list)) else list(targets)
        if len(xs) != len(ys):
            raise DataError(f"{len(xs)} inputs but {len(ys)} targets")
        vals = [loss.value(net.forward(weights, x), y) for x, y in zip(xs, ys)]
        return sum(vals) / len(vals)
    out = net.forward(weights, inputs)
    return float(np.mean(loss.value(out, np.asarray(targets))))


def loss_differential(net, weights: Point, inputs, targets, output_metric, frames=None) -> Covector:
    """``dh`` with ``h`` the mean loss: a Covector on the weight space (coordinates in
    ``frames``' weight frame, ``(1/N) Σ J_nᵀ ∇_z ℓ_n``)."""
    om = get_output_metric(output_metric)
    jac = network_jacobians(net, weights, inputs, frames)
    g = _per_example_loss_grads(jac, targets, om)
    frame = jac.frames.weight_space_frame
    if jac.symbolic:
        return Covector(frame, _sym_clean(_mean_sym(g)))
    return Covector(frame, g.mean(axis=0))


# =========================================================================== Eqns. 3.3/3.4
def _layer_factors(jac: NetworkJacobians, G_out, layer: int):
    """``(E[ā āᵀ], E[D_iᵀ G D_i])`` for one layer, in the jac's frames."""
    if jac.symbolic:
        A = _mean_sym([ab[layer - 1] * ab[layer - 1].T for ab in jac.abars])
        G = _mean_sym([D[layer].T * Gn * D[layer] for D, Gn in zip(jac.D, G_out)])
        return _sym_clean(A), _sym_clean(G)
    ab = jac.abars[layer - 1]
    N = ab.shape[0]
    A = ab.T @ ab / N
    Di = jac.D[layer]
    n = Di.shape[2]
    G = Di.reshape(-1, n).T @ (G_out @ Di).reshape(-1, n) / N  # E[D_iᵀ G D_i]
    return 0.5 * (A + A.T), 0.5 * (G + G.T)


def independence_metric(net, weights: Point, inputs, output_metric, layer: int, frames=None) -> KroneckerMetric:
    """The layer metric ``E[α_{i-1} ⊗ α_{i-1}] ⊗ E[(ϕ^i)* g(ζ_i)]`` on ``W_i`` (Eqns. 3.3, 3.4).

    ``ϕ^i : Z_i → A_L`` is the rest of the network; the expectation of its pullback is
    ``E[D_iᵀ G D_i]`` (for the output Fisher: ``E[Dz Dzᵀ]`` with the exact expectation
    over the model's targets, Remark 3.6).  Kept factored as a KroneckerMetric whose
    matrix in the induced frame is ``kron(A_{i-1}, G_i)``.
    """
    frames = net._frames(frames)
    if not 1 <= layer <= net.L:
        raise ConfigurationError(f"layers are numbered 1..{net.L}, got {layer}")
    om = get_output_metric(output_metric)
    jac = network_jacobians(net, weights, inputs, frames)
    G_out = _output_metric_matrices(jac, om)
    A, G = _layer_factors(jac, G_out, layer)
    return KroneckerMetric(
        SecondMoment(frames.A[layer - 1], A, check=False), Metric(frames.Z[layer], G, check=False)
    )


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
    jac = network_jacobians(net, weights, inputs, frames)
    G_out = _output_metric_matrices(jac, om)
    metrics = []
    for i in range(1, net.L + 1):
        A, G = _layer_factors(jac, G_out, i)
        metrics.append(
            KroneckerMetric(SecondMoment(frames.A[i - 1], A, check=False), Metric(frames.Z[i], G, check=False))
        )
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
