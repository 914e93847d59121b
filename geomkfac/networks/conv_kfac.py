"""K-FAC for the abstract convolutional network through the abstract pipeline (Def. F.2,
Eqns. F.5/F.6 and 4.4).

For every sample ξ and location t of a parametrized layer (:func:`layer_samples`):

* ``α_{ξ,t}``, the patch at ``t`` (a Point of ``A^|Δ|``, cut out by the per-location patch
  map of :mod:`geomkfac.networks.conv`), or the flattened input of a dense layer (``|T| = 1``);
* ``ζ_{ξ,t}``, the local pre-activation (a Point of ``Z``);
* ``ϕ_{ξ,t} : Z → Y``, the rest of the network with the pre-activations at every other
  location fixed: ``Φ ∘ ι_t``, with ``ι_t : Z → Z^|T|`` an affine embedding and ``Φ`` the
  composition of the later layers read in the chosen frames (core
  :class:`~geomkfac.maps.AffineMap` s and activation :class:`~geomkfac.maps.SmoothMap` s);
* ``g^i_ind = |T| · E_{ξ,t}[α ⊗ α] ⊗ E_{ξ,t}[ϕ_{ξ,t}* g]``
  (:func:`geomkfac.pipeline.independence_metric` with ``scale=|T|``), whose matrix in an
  induced frame is ``|T| (E_T[ā āᵀ] ⊗ E_T[Dz Dzᵀ])``; ``g_KFAC`` is their additive metric;
* ``dh = E_ξ[dℓ_ξ]`` with ``DW̄ = Σ_t Dz_t ā_tᵀ`` (pullbacks of the loss differential).

Everything is computed from coordinates in the frames asked for (weights by F.4, activations
by D.3, padding with the padding point's coordinates), so the same abstract objects computed
in two frames are two different computations.  One code path serves NumPy and sympy.  The
objects are per sample and location: this module is the reference the NumPy backend is
checked against, not a training path.

Layers are numbered ``i = 1..L`` as in the paper (:mod:`geomkfac.networks.conv`): every
``layer`` argument is such a number, ``kfac_metric(...).block(i)`` is layer ``i``'s block, and
a per-layer list keeps Python's positions (position ``i - 1`` holds layer ``i``; ``.layer(i)``).

Examples
--------
>>> import numpy as np
>>> from geomkfac.networks.conv import AbstractCNN
>>> from geomkfac.output_metrics import GaussianFisher
>>> net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 2, "k": 2, "pad": 1, "act": "tanh"},
...                               {"type": "flatten"}, {"type": "dense", "out": 1}], name="docK")
>>> rng = np.random.default_rng(0)
>>> w, X = net.random_weights(rng), rng.normal(size=(6, 1, 3, 3))
>>> g = kfac_metric(net, w, X, GaussianFisher())           # an AdditiveMetric of two blocks
>>> [(A.shape, G.shape) for A, G in (m.factors() for m in g.metrics)]
[((5, 5), (2, 2)), ((33, 33), (1, 1))]
>>> g.block(1).space is net.weight_spaces.layer(1)         # layer 1: the convolution
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sympy as sp

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.fields import field_of
from geomkfac.maps import AffineMap, ComposedMap, Map
from geomkfac.metrics import AdditiveMetric, KroneckerMetric, Metric
from geomkfac.networks.conv import AbstractCNN, layer_input_permutation
from geomkfac.numbering import LayerList
from geomkfac.pipeline import expected_pullback, independence_metric, mean_covector
from geomkfac.spaces import Covector, Point

__all__ = [
    "LayerSamples",
    "layer_samples",
    "layer_kfac_metric",
    "layer_exact_block",
    "layer_per_location_sum",
    "kfac_metric",
    "loss_differential",
    "kfac_step",
    "oracle_kfac_factors",
]


class _Memo(Map):
    """A map with its value and Jacobian cached per base point (the rest of the network is
    evaluated at the same ``ζ^(:)`` for every location of a sample)."""

    def __init__(self, inner: Map):
        super().__init__(inner.domain_frame, inner.codomain_frame)
        self.inner = inner
        self._v, self._j = {}, {}

    @staticmethod
    def _key(x):
        return x.tobytes() if isinstance(x, np.ndarray) else sp.ImmutableMatrix(x)

    def _value(self, x):
        k = self._key(x)
        if k not in self._v:
            self._v[k] = self.inner._value(x)
        return self._v[k]

    def _jacobian(self, x):
        k = self._key(x)
        if k not in self._j:
            self._j[k] = self.inner._jacobian(x)
        return self._j[k]


class _MemoField:
    """A metric field evaluated once per point: every location of a sample has the same
    network output ``ϕ_{ξ,t}(ζ_t) = f(ξ)``, so ``g(f(ξ))`` is computed once per sample."""

    def __init__(self, field):
        self.field = field
        self._cache = {}
        self.is_constant = getattr(field, "is_constant", False)

    def at(self, point: Point):
        x = point.coords(point.space.reference_frame)
        key = (point.space, _Memo._key(x))
        if key not in self._cache:
            self._cache[key] = self.field.at(point)
        return self._cache[key]


def _chain(maps: Sequence[Map]) -> Map:
    out = maps[0]
    for m in maps[1:]:
        out = m.compose(out)
    return out


@dataclass
class LayerSamples:
    """What the pipeline needs for parametrized layer ``layer = i`` (``1..L``), per sample ξ
    and location t.

    ``alphas[ξ][t]`` the layer's input point (a patch, a Point of ``P_i``); ``zetas[ξ][t]`` the
    local pre-activation (Point of ``Z_i``); ``rests[ξ][t]`` the map ``ϕ_{ξ,t} : Z_i → Y``
    (the rest of the network with the other locations fixed at their values);
    ``outputs[ξ]`` the network output (Point of ``Y``); ``omega`` the layer's weights
    (Point of ``W_i``); ``T`` the number of locations.
    """

    layer: int
    T: int
    alphas: list
    zetas: list
    rests: list
    outputs: list
    omega: Point
    rest_all: Map
    zeta_all: list


def _embeddings(T: int, I: int) -> list:
    """``E_t`` (``T·I × I``): the linear part of ``ι_t : Z → Z^T``, ``z ↦`` the others fixed, ``z`` at ``t``."""
    out = []
    for t in range(T):
        E = np.zeros((T * I, I))
        E[t * I:(t + 1) * I, :] = np.eye(I)
        out.append(E)
    return out


def layer_samples(net: AbstractCNN, weights: Point, inputs, layer: int, frames=None, padding="point",
                  maps: list | None = None) -> LayerSamples:
    """Run the network, read in ``frames``, as core maps on each sample (Points), and
    collect the pipeline's pieces for weight layer ``layer = i`` (``1..L``; see
    :class:`LayerSamples`).

    ``inputs``: images ``(N, C, H, W)`` in the reference frame, or a list of Points of
    ``A[0]^|T|`` (e.g. from :meth:`AbstractCNN.input_points`).  ``maps``: the output of
    :meth:`AbstractCNN.maps` for these weights and frames, if already built.
    """
    F = net._frames(frames)
    rec = net._param_layer(layer)
    steps = maps if maps is not None else net.maps(weights, F, padding)
    pts = inputs if isinstance(inputs, list) else net.input_points(net.input_coords(inputs, F), F)
    k = next(i for i, (kind, _, l) in enumerate(steps) if kind == "weights" and l == layer)
    before = [m for kind, m, _ in steps[:k] if kind != "patches"]
    patch_maps = steps[k - 1][1] if steps[k - 1][0] == "patches" else None
    Wmap = steps[k][1]
    rest_all = _Memo(_chain([m for kind, m, _ in steps[k + 1:] if kind != "patches"]))
    T = rec.T
    fZ = F.Z.layer(layer)
    alphas, zetas, rests, outputs, zeta_all = [], [], [], [], []
    fin = F.layer_input_frame(layer)
    Es = None
    for p in pts:
        x = p
        for m in before:
            x = m(x)
        za = Wmap(x)
        zeta_all.append(za)
        outputs.append(rest_all(za))
        if T == 1:
            alphas.append([Point(fin, x.coords(Wmap.domain_frame))])
            zetas.append([za])
            rests.append([rest_all])
            continue
        zc = za.coords(Wmap.codomain_frame)
        field = field_of(zc)
        zs = za.space.split(zc)
        I = fZ.space.dim
        if Es is None:
            Es = _embeddings(T, I)
            if field.symbolic:
                Es = [sp.ImmutableMatrix(e.astype(int)) for e in Es]
        al, ze, re = [], [], []
        for t in range(T):
            al.append(patch_maps[t](x))
            ze.append(Point(fZ, zs[t]))
            off = field.concat([zs[s] if s != t else field.zeros(I) for s in range(T)])
            re.append(ComposedMap(rest_all, AffineMap(fZ, Wmap.codomain_frame, Es[t], off)))
        alphas.append(al)
        zetas.append(ze)
        rests.append(re)
    omega = net.layer_points(weights, F).layer(layer)
    return LayerSamples(layer, T, alphas, zetas, rests, outputs, omega, rest_all, zeta_all)


def _flat(xss):
    return [x for xs in xss for x in xs]


def layer_kfac_metric(net, weights, inputs, output_metric, layer, frames=None, padding="point",
                      samples: LayerSamples | None = None) -> KroneckerMetric:
    """``g^i_ind = |T| (E_T[α ⊗ α] ⊗ E_T[(ϕ_{ξ,t})* g(ζ)])`` on ``W_i``, ``i = layer``
    (``1..L``; Eqn. F.6, Def. F.2).

    Computed by :func:`geomkfac.pipeline.independence_metric` over all pairs (ξ, t) with
    ``scale = |T|``.  ``output_metric`` is a metric field on ``Y`` (e.g. an output Fisher of
    :mod:`geomkfac.output_metrics`), or a list with one metric (field) per sample — e.g.
    ``Metric.outer(dℓ_ξ)`` for the empirical Fisher.  In the frame of ``W_l`` induced by the
    frames its matrix is ``|T| kron(E_T[ā āᵀ], E_T[Dz Dzᵀ])`` (Eqn. 4.4 / F.5); it is
    ``kfac_metric(...).block(layer)``.

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.output_metrics import GaussianFisher
    >>> net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 1, "k": 2, "pad": 0, "act": "tanh"},
    ...                               {"type": "flatten"}, {"type": "dense", "out": 1}])
    >>> rng = np.random.default_rng(0)
    >>> w, X = net.random_weights(rng), rng.normal(size=(4, 1, 3, 3))
    >>> g = layer_kfac_metric(net, w, X, GaussianFisher(), 1)     # layer 1: the convolution
    >>> A, G = g.factors()                       # E_T[ā āᵀ] and |T|·E_T[Dz Dzᵀ]
    >>> A.shape, G.shape, bool(np.allclose(g.matrix(), np.kron(A, G)))
    ((5, 5), (1, 1), True)
    """
    S = samples or layer_samples(net, weights, inputs, layer, frames, padding)
    alphas, zetas, rests = _flat(S.alphas), _flat(S.zetas), _flat(S.rests)
    if isinstance(output_metric, (list, tuple)):
        if len(output_metric) != len(S.alphas):
            raise DimensionError(f"{len(S.alphas)} samples but {len(output_metric)} per-sample output metrics")
        gs = [g for g in output_metric for _ in range(S.T)]  # sample ξ's metric at each of its locations
    else:
        gs = _MemoField(output_metric)
    return independence_metric(alphas, rests, zetas, gs, scale=S.T)


def _stacked_evaluation(net, S: LayerSamples, xi: int, frames) -> AffineMap:
    """``ψ^(:)_ξ : W_i → Z_i^|T|``, evaluation at every location (stacked evaluation maps)."""
    F = net._frames(frames)
    i = S.layer
    Wsp = net.weight_spaces.layer(i)
    fin, fZ = F.layer_input_frame(i), F.Z.layer(i)
    Js = [Wsp.evaluation_map(a, fin, fZ).linear() for a in S.alphas[xi]]
    field = field_of(*Js)
    J = field.vstack([field.asmatrix(j) for j in Js])
    return AffineMap(Wsp.frame(fin, fZ), S.rest_all.domain_frame, J)


def layer_exact_block(net, weights, inputs, output_metric, layer, frames=None, samples=None) -> Metric:
    """``E_ξ[(Ψ^i_ξ)* g]`` on ``W_i`` (``i = layer``, ``1..L``) with ``Ψ^i_ξ = ϕ^i_ξ ∘ ψ^(:)_ξ``
    over *all* locations: the exact diagonal block of the expected pullback (Eqn. 3.2) that
    Eqn. F.5 approximates."""
    S = samples or layer_samples(net, weights, inputs, layer, frames)
    maps = [ComposedMap(S.rest_all, _stacked_evaluation(net, S, xi, frames)) for xi in range(len(S.alphas))]
    return expected_pullback(maps, [S.omega] * len(maps), output_metric)


def layer_per_location_sum(net, weights, inputs, output_metric, layer, frames=None, samples=None) -> Metric:
    """``Σ_t E_ξ[α_t ⊗ α_t] ⊗ E_ξ[(ϕ_{ξ,t})* g]`` on ``W_i`` (``i = layer``, ``1..L``): one
    independence metric per location, summed (what Eqn. F.5 would be without the
    spatial-homogeneity assumptions of Remark F.1)."""
    S = samples or layer_samples(net, weights, inputs, layer, frames)
    total = None
    for t in range(S.T):
        m = independence_metric([a[t] for a in S.alphas], [r[t] for r in S.rests],
                                [z[t] for z in S.zetas], output_metric)
        total = m if total is None else total + Metric(m.frame, m.matrix(), check=False)
    return Metric(total.frame, total.matrix(total.frame), check=False)


def kfac_metric(net, weights, inputs, output_metric, frames=None, padding="point") -> AdditiveMetric:
    """``g_KFAC = g^1_ind + … + g^L_ind`` (Definition F.2), an :class:`AdditiveMetric` on
    ``W = W_1 × … × W_L``; ``.block(i)`` is :func:`layer_kfac_metric` of layer ``i``."""
    return AdditiveMetric([layer_kfac_metric(net, weights, inputs, output_metric, i, frames, padding)
                           for i in range(1, net.L + 1)], net.weight_space)


def _output_covector(loss, y: Point, target) -> Covector:
    Y = y.space
    z = y.coords(Y.reference_frame)
    return Covector(Y.reference_frame, loss.grad(np.asarray(z, float), np.asarray(target, float)))


def loss_differential(net, weights, inputs, targets, loss, frames=None, padding="point",
                      samples: Sequence[LayerSamples] | None = None, by_location: bool = False) -> Covector:
    """``dh = E_ξ[dℓ_ξ]`` on ``W`` with ``DW̄_i = Σ_t Dz_t ā_tᵀ`` (F.1–F.3), averaged over samples;
    a Covector in ``frames``' weight-space frame.

    Per sample and layer: with ``by_location``, ``Σ_t ψ_{α_t}* (ϕ_{ξ,t}* dℓ_ξ)`` (one restricted
    pullback and one evaluation map per location); otherwise ``(ψ^(:))* (ϕ^(:)* dℓ_ξ)``, the
    pullback along the rest of the network at all locations at once and the stacked
    evaluation map (the same covector: ``ψ^(:)`` stacks the ``ψ_{α_t}``).

    ``loss`` is a :class:`~geomkfac.output_metrics.Loss` acting on output coordinates in the
    reference frame of ``Y``; ``targets`` one row per sample.  ``samples``: the layers'
    :class:`LayerSamples` if already computed (position ``i - 1`` holds layer ``i``).
    """
    F = net._frames(frames)
    parts = []
    for l in range(1, net.L + 1):
        S = samples[l - 1] if samples is not None else layer_samples(net, weights, inputs, l, F, padding)
        per = []
        for xi in range(len(S.alphas)):
            dl = _output_covector(loss, S.outputs[xi], targets[xi])
            if by_location:
                tot = None
                for a, z, r in zip(S.alphas[xi], S.zetas[xi], S.rests[xi]):
                    Dz = r.pullback_covector(dl, at=z)
                    psi = net.weight_spaces.layer(l).evaluation_map(a, F.layer_input_frame(l), F.Z.layer(l))
                    c = psi.pullback_covector(Dz, at=S.omega)
                    tot = c if tot is None else tot + c
            else:
                Dz_all = S.rest_all.pullback_covector(dl, at=S.zeta_all[xi])
                psi = _stacked_evaluation(net, S, xi, F) if S.T > 1 else net.weight_spaces.layer(l).evaluation_map(
                    S.alphas[xi][0], F.layer_input_frame(l), F.Z.layer(l))
                tot = psi.pullback_covector(Dz_all, at=S.omega)
            per.append(tot)
        parts.append(mean_covector(per).coords(F.weight_frame(l)))
    field = field_of(*parts)
    return Covector(F.weight_space_frame, field.concat(parts))


def kfac_step(net, weights, inputs, targets, output_metric, loss, lr, frames=None, padding="point",
              rule: str = "kfac") -> Point:
    """One step ``ω ← ω − ε g_KFAC⁻¹ dh`` computed in ``frames`` (``rule="sgd"``: ``ω ← ω − ε dh``
    with the covector's coordinates read as a vector in ``frames``, coordinate-dependent)."""
    F = net._frames(frames)
    maps = net.maps(weights, F, padding)
    samples = [layer_samples(net, weights, inputs, i, F, padding, maps) for i in range(1, net.L + 1)]
    dh = loss_differential(net, weights, inputs, targets, loss, F, padding, samples)
    Fw = F.weight_space_frame
    if rule == "kfac":
        g = AdditiveMetric([layer_kfac_metric(net, weights, inputs, output_metric, S.layer, F, padding, S)
                            for S in samples], net.weight_space)
        v = g.sharp(dh).coords(Fw)
    elif rule == "sgd":
        v = dh.coords(Fw)
    else:
        raise ConfigurationError(f"rule must be 'kfac' or 'sgd', got {rule!r}")
    return Point(Fw, weights.coords(Fw) - lr * v)


def oracle_kfac_factors(net: AbstractCNN, weights: Point, X, output_metric, frames=None) -> LayerList:
    """``[(A_i, G_i, T_i)]`` from the pipeline, in the reference files' convention
    (position ``i - 1`` holds layer ``i``; ``.layer(i)`` reads it).

    ``A_i = E_T[ā āᵀ]`` (patch order channel-major, flatten channel-major, 1 last),
    ``G_i = E_T[(ϕ_{ξ,t})* g]`` (both ``1/(N·T_i)`` sums), and the K-FAC block is
    ``T_i · kron(A_i, G_i)``.  ``output_metric`` as for :func:`layer_kfac_metric`.

    >>> import numpy as np
    >>> from geomkfac.output_metrics import CategoricalFisher
    >>> arch = [{"type": "conv", "in": 1, "out": 2, "k": 3, "pad": 1, "act": "tanh"},
    ...         {"type": "flatten"}, {"type": "dense", "in": 32, "out": 3, "act": "identity"}]
    >>> rng = np.random.default_rng(0)
    >>> Ws = [0.3 * rng.normal(size=(2, 1, 3, 3)), 0.3 * rng.normal(size=(3, 32))]
    >>> net, w = AbstractCNN.from_oracle((1, 4, 4), arch, Ws, [np.zeros(2), np.zeros(3)])
    >>> [(A.shape, G.shape, T) for A, G, T in oracle_kfac_factors(net, w, rng.normal(size=(3, 1, 4, 4)), CategoricalFisher())]
    [((10, 10), (2, 2), 16), ((33, 33), (3, 3), 1)]
    """
    out = LayerList()
    for l in range(1, net.L + 1):
        m = layer_kfac_metric(net, weights, X, output_metric, l, frames)
        A, G = m.factors()
        T = net._param_layer(l).T
        p = layer_input_permutation(net, l)
        A = np.asarray(A, float)[np.ix_(p, p)]
        out.append((A, np.asarray(G, float) / T, T))
    return out
