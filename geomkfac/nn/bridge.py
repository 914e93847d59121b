"""One network description, two readings: the coordinate network of the theory layer
(:class:`geomkfac.reparam.CoordinateMLP`, activations from :mod:`geomkfac.activations_sym`)
and the fast array network of the backend (:class:`geomkfac.nn.MLP`, activations from
:mod:`geomkfac.nn.activations`).

Both compute ``z_i = W̄_i ā_{i-1}``, ``a_i = φ_i(z_i)`` with ``W̄_i = [W_i b_i]`` (Eqn. 2.6);
the conversion copies the homogeneous weights and maps each activation by name — an
elementwise activation to the backend's class of that name, a conjugated activation
``φ‡(z‡) = Ω φ(Φ z‡ + τ) + γ`` (Eqn. D.3) to the backend's
:class:`~geomkfac.nn.activations.ConjugatedActivation` with the same ``Ω, γ, Φ, τ``
(nested conjugations merged into one). So a network reparameterized by
:func:`geomkfac.reparam.reparameterize` (Eqns. D.2/D.3) can be trained by the shipped
optimizers, and a trained :class:`~geomkfac.nn.MLP` read by the abstract pipeline.

>>> import numpy as np
>>> from geomkfac.reparam import CoordinateMLP, reparameterize, sigmoid_to_tanh
>>> rng = np.random.default_rng(0)
>>> net = CoordinateMLP([rng.normal(size=(3, 3)), rng.normal(size=(1, 4))], ["sigmoid", "identity"])
>>> model = to_mlp(reparameterize(net, {1: sigmoid_to_tanh(3)}))
>>> model
MLP([2, 3, 1], [conjugated(sigmoid),identity], dtype=float64)
>>> X = rng.normal(size=(5, 2))
>>> bool(np.allclose(model.forward(X), net.forward(X), rtol=0, atol=1e-12))
True
>>> back = to_coordinate_mlp(model)
>>> [a.name for a in back.activations]
['conj(sigmoid)', 'identity']

The one :func:`geomkfac.reparameterize` takes either reading with the same ``changes``, and
the two routes commute: reparameterizing the coordinate network and converting it gives the
network obtained by converting first and reparameterizing the backend's MLP (same weights up
to round-off; tested over random frames).

>>> fast = reparameterize(to_mlp(net), {1: sigmoid_to_tanh(3)})
>>> bool(np.allclose(fast.layers[0].Wbar, model.layers[0].Wbar, rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import numpy as np

from geomkfac import activations_sym as S
from geomkfac.errors import ConfigurationError
from geomkfac.nn import activations as F
from geomkfac.nn.model import MLP, Dense
from geomkfac.reparam import CoordinateMLP

__all__ = ["to_mlp", "to_coordinate_mlp"]

#: names of the elementwise activations both readings know (``linear`` is the theory layer's
#: alias of ``identity``)
SHARED = ("identity", "sigmoid", "tanh", "softplus")

# probe points to confirm that an activation found by name is that function
_PROBE = np.linspace(-3.0, 3.0, 13)[None, :]
# values of the same elementary function by two codes agree to a few ulps; 1e-12 leaves room
_PROBE_TOL = 1e-12


def _fast_elementwise(act: S.Activation) -> F.Activation:
    name = "identity" if act.name == "linear" else act.name
    if not isinstance(act, S.ElementwiseActivation) or name not in SHARED:
        raise ConfigurationError(
            f"activation {act.name!r} has no counterpart in geomkfac.nn; the shared ones are "
            f"{', '.join(SHARED)} and their conjugations (Eqn. D.3)"
        )
    fast = F.get_activation(name)
    if not np.allclose(act(_PROBE), fast.forward(_PROBE), rtol=0, atol=_PROBE_TOL):
        raise ConfigurationError(
            f"activation {act.name!r} is named like geomkfac.nn's {name!r} but computes a "
            "different function; give it another name or convert it by hand"
        )
    return fast


def _fast(act: S.Activation) -> F.Activation:
    if isinstance(act, S.ConjugatedActivation):  # already flattened by its constructor
        Om, ga, Ph, ta = act._floats()  # ConfigurationError if free symbols are left
        return F.ConjugatedActivation(_fast_elementwise(act.base), Om, ga, Ph, ta)
    return _fast_elementwise(act)


def _theory(act: F.Activation) -> S.Activation:
    if isinstance(act, F.ConjugatedActivation):
        # the theory layer flattens nested conjugations: Ω₂(Ω₁φ(Φ₁(Φ₂z+τ₂)+τ₁)+γ₁)+γ₂
        return S.ConjugatedActivation(_theory(act.base), np.array(act.Omega), np.array(act.gamma),
                                      np.array(act.Phi), np.array(act.tau))
    name = getattr(act, "name", None)
    known = type(act) is F.ACTIVATIONS.get(name) and name in SHARED
    if not known:
        raise ConfigurationError(
            f"activation {name or act!r} ({type(act).__name__}) has no counterpart in "
            "geomkfac.activations_sym; the shared ones "
            f"are {', '.join(SHARED)} and their conjugations (Eqn. D.3)"
        )
    return S.get_activation(name)


def to_mlp(coord_net: CoordinateMLP, dtype=np.float64) -> MLP:
    """The fast backend's :class:`~geomkfac.nn.MLP` computing the same function.

    Parameters
    ----------
    coord_net : CoordinateMLP
        Numeric (or symbolic with numbers only); activations ``identity``/``linear``,
        ``sigmoid``, ``tanh``, ``softplus`` or conjugations of them (Eqn. D.3).
    dtype : float64 or float32

    Returns
    -------
    MLP
        Layers ``Dense(W_i, b_i, φ_i)`` with ``W̄_i = [W_i b_i]`` copied from ``coord_net``.

    Raises
    ------
    ConfigurationError
        For an activation without a counterpart (or one that computes another function than
        its name says), a symbolic network with free symbols, or an unsupported dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.reparam import CoordinateMLP
    >>> net = CoordinateMLP([np.array([[1.0, 0.0, 0.5]]), np.array([[2.0, -1.0]])],
    ...                     ["tanh", "identity"])
    >>> model = to_mlp(net)
    >>> model.sizes, [l.activation.name for l in model.layers]
    ((2, 1, 1), ['tanh', 'identity'])
    >>> bool(np.array_equal(model.forward(np.array([[0.0, 3.0]])), net.forward(np.array([[0.0, 3.0]]))))
    True
    """
    if not isinstance(coord_net, CoordinateMLP):
        raise ConfigurationError(
            f"to_mlp converts a geomkfac.reparam.CoordinateMLP, got {type(coord_net).__name__}"
        )
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ConfigurationError(f"dtype must be float64 or float32, got {dtype}")
    layers = []
    for i, (Wb, act) in enumerate(zip(coord_net.Wbars, coord_net.activations), start=1):
        try:
            Wb = S.as_float_array(Wb)
            fast = _fast(act)
        except ConfigurationError as exc:
            raise ConfigurationError(f"layer {i}: {exc}") from None
        layers.append(Dense(Wb[:, :-1].astype(dtype), Wb[:, -1].astype(dtype), fast))
    return MLP.from_layers(layers)


def to_coordinate_mlp(mlp: MLP) -> CoordinateMLP:
    """The theory layer's numeric :class:`~geomkfac.reparam.CoordinateMLP` of ``mlp``.

    Weights become float64 ``W̄_i = [W_i b_i]``; activations are mapped by name (conjugated
    ones to :class:`geomkfac.activations_sym.ConjugatedActivation`, nested ones merged).

    Raises
    ------
    ConfigurationError
        For an activation the theory layer does not have (``relu`` is not smooth) or a
        user-defined one.

    Examples
    --------
    >>> from geomkfac.nn import MLP
    >>> to_coordinate_mlp(MLP([3, 4, 2], "softplus", seed=0))
    <CoordinateMLP widths=(3, 4, 2) activations=[softplus, identity] numeric>
    >>> to_coordinate_mlp(MLP([3, 4, 2], "relu", seed=0))
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: layer 1: activation 'relu' (ReLU) has no counterpart in geomkfac.activations_sym; the shared ones are identity, sigmoid, tanh, softplus and their conjugations (Eqn. D.3)
    """
    if not isinstance(mlp, MLP):
        raise ConfigurationError(
            f"to_coordinate_mlp converts a geomkfac.nn.MLP, got {type(mlp).__name__}"
        )
    acts = []
    for i, layer in enumerate(mlp.layers, start=1):
        try:
            acts.append(_theory(layer.activation))
        except ConfigurationError as exc:
            raise ConfigurationError(f"layer {i}: {exc}") from None
    return CoordinateMLP([Wb.astype(np.float64) for Wb in mlp.get_Wbars()], acts)
