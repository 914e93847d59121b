"""Layer stacks from a short architecture string, and the default CNN / RNN architectures of
``geomkfac train``.

The string lists the layers separated by ``-``:

- ``conv{OUT}k{K}[p{P}][s{S}]``: :class:`~geomkfac.nn.layers.Conv2d` with ``OUT`` channels, a
  ``K×K`` kernel, zero padding ``P`` (default 0) and stride ``S`` (default 1);
- ``max{K}`` / ``avg{K}``: max / average pooling over ``K×K`` windows (stride ``K``);
- ``flatten``: channel-major flattening (inserted automatically before a dense layer that
  follows image layers);
- ``rnn{H}``: an Elman :class:`~geomkfac.nn.layers.RNN` with ``H`` hidden units over
  sequences ``(T, d)``; a dense layer after it acts at every step;
- ``last``: keep only the last step of a sequence;
- ``dense{OUT}``: a dense layer with ``OUT`` outputs.

Every parametrized layer but the last uses the hidden activation; the last is linear (the
loss acts on logits / means). Weights are drawn as in :class:`~geomkfac.nn.model.MLP`
(Glorot uniform on the ``(out, fan_in)`` matrix ``W̄`` without its bias; biases 0).

>>> net = build_model("conv8k3p1-max2-dense10", (1, 8, 8), act="relu", seed=0)
>>> net
Sequential([Conv2d(1->8, k=3, pad=1, stride=1, relu), MaxPool2d(2, stride=2), Flatten(), Dense(128->10, identity)], dtype=float64)
>>> build_model("rnn16-last-dense10", (8, 8)).output_shape((8, 8))
(10,)
"""

from __future__ import annotations

import re

import numpy as np

from geomkfac.errors import ConfigurationError, DimensionError
from geomkfac.nn import layers as L

__all__ = ["parse_architecture", "build_model", "default_architecture", "is_layer_string"]

_TOKENS = [
    ("conv", re.compile(r"^conv(\d+)k(\d+)(?:p(\d+))?(?:s(\d+))?$")),
    ("pool", re.compile(r"^(max|avg)(\d+)$")),
    ("flatten", re.compile(r"^flatten$")),
    ("rnn", re.compile(r"^rnn(\d+)$")),
    ("last", re.compile(r"^last$")),
    ("dense", re.compile(r"^dense(\d+)$")),
]


def is_layer_string(text: str) -> bool:
    """Whether ``text`` is a layer string (rather than MLP sizes like ``64-100-10``).

    >>> is_layer_string("64-100-10"), is_layer_string("conv8k3-dense10"), is_layer_string("64-x-64")
    (False, True, False)
    """
    keys = ("conv", "max", "avg", "flatten", "rnn", "last", "dense")
    return any(tok.strip().lower().startswith(keys) for tok in str(text).split("-"))


def parse_architecture(text: str) -> list:
    """Parse a layer string into ``[(kind, params), …]``.

    >>> parse_architecture("conv8k5p2s1-avg2-dense10")
    [('conv', {'out': 8, 'k': 5, 'pad': 2, 'stride': 1}), ('pool', {'kind': 'avg', 'k': 2}), ('dense', {'out': 10})]
    >>> parse_architecture("conv8-dense10")
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: architecture 'conv8-dense10': cannot read layer 'conv8'; ...
    """
    out = []
    for tok in str(text).strip().lower().split("-"):
        for kind, rx in _TOKENS:
            m = rx.match(tok)
            if m:
                break
        else:
            raise ConfigurationError(
                f"architecture {text!r}: cannot read layer {tok!r}; use conv{{OUT}}k{{K}}[p{{P}}][s{{S}}], "
                "max{K}, avg{K}, flatten, rnn{H}, last, dense{OUT}, separated by '-'"
            )
        g = m.groups()
        if kind == "conv":
            params = {"out": int(g[0]), "k": int(g[1]), "pad": int(g[2] or 0), "stride": int(g[3] or 1)}
        elif kind == "pool":
            params = {"kind": g[0], "k": int(g[1])}
        elif kind in ("rnn", "dense"):
            params = {"out": int(g[0])}
        else:
            params = {}
        if any(v < 1 for k, v in params.items() if k not in ("pad", "kind")):
            raise ConfigurationError(f"architecture {text!r}: sizes in {tok!r} must be >= 1")
        out.append((kind, params))
    if not any(k in ("conv", "rnn", "dense") for k, _ in out):
        raise ConfigurationError(f"architecture {text!r} has no layer with parameters")
    return out


def default_architecture(kind: str, num_outputs: int, sequence_output: bool = False) -> str:
    """The default of ``geomkfac train --model cnn|rnn``.

    >>> default_architecture("cnn", 10)
    'conv16k3p1-max2-conv32k3p1-avg2-dense10'
    >>> default_architecture("rnn", 8, sequence_output=True)
    'rnn64-dense8'
    """
    if kind == "cnn":
        return f"conv16k3p1-max2-conv32k3p1-avg2-dense{num_outputs}"
    if kind == "rnn":
        return f"rnn64-dense{num_outputs}" if sequence_output else f"rnn64-last-dense{num_outputs}"
    raise ConfigurationError(f"no default architecture for model kind {kind!r}")


def _glorot(rng, out, fan_in, dtype):
    lim = np.sqrt(6.0 / (fan_in + out))
    return rng.uniform(-lim, lim, size=(out, fan_in)).astype(dtype)


def build_model(text: str, in_shape, act="tanh", seed: int = 0, dtype=np.float64) -> L.Sequential:
    """A :class:`~geomkfac.nn.layers.Sequential` for the layer string ``text`` and inputs of
    per-example shape ``in_shape`` (``(C, H, W)`` images or ``(T, d)`` sequences).

    ``act`` is the hidden activation, or a list with one activation per parametrized layer.
    Raises :class:`ConfigurationError` for an unreadable string and
    :class:`DimensionError` when the layers do not fit the input shape.
    """
    spec = parse_architecture(text)
    nparam = sum(k in ("conv", "rnn", "dense") for k, _ in spec)
    if isinstance(act, (list, tuple)):
        if len(act) != nparam:
            raise ConfigurationError(
                f"{len(act)} activations given for {nparam} layers with parameters in {text!r}"
            )
        acts = list(act)
    else:
        acts = [act] * (nparam - 1) + ["identity"]
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in in_shape)
    layers = []
    j = 0

    def add(layer):
        nonlocal shape
        try:
            shape = tuple(layer.out_shape(shape))
        except DimensionError as exc:
            raise DimensionError(f"architecture {text!r}, its layer number {len(layers) + 1}: {exc}") from None
        layers.append(layer)

    for kind, p in spec:
        if kind == "conv":
            C = shape[0] if len(shape) == 3 else None
            if C is None:
                raise DimensionError(f"architecture {text!r}: a conv layer needs images (C, H, W), got {shape}")
            W = _glorot(rng, p["out"], C * p["k"] ** 2, dtype).reshape(p["out"], C, p["k"], p["k"])
            add(L.Conv2d(W, np.zeros(p["out"], dtype), acts[j], padding=p["pad"], stride=p["stride"]))
            j += 1
        elif kind == "pool":
            add((L.MaxPool2d if p["kind"] == "max" else L.AvgPool2d)(p["k"]))
        elif kind == "flatten":
            add(L.Flatten())
        elif kind == "last":
            add(L.LastStep())
        elif kind == "rnn":
            if len(shape) != 2:
                raise DimensionError(f"architecture {text!r}: an rnn layer needs sequences (T, d), got {shape}")
            H, d = p["out"], shape[1]
            add(L.RNN(_glorot(rng, H, H + d, dtype), np.zeros(H, dtype), acts[j]))
            j += 1
        else:  # dense
            if len(shape) == 3:
                add(L.Flatten())
            add(L.Dense(_glorot(rng, p["out"], shape[-1], dtype), np.zeros(p["out"], dtype), acts[j]))
            j += 1
    return L.Sequential(layers, dtype=dtype)
