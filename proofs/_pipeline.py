"""Shared pieces of the proofs that use the abstract pipeline (paper §3): random abstract
MLPs with a second choice of frames, and independent references to check the pipeline
against — finite-difference Jacobians and the NumPy backend :mod:`geomkfac.nn` (separate
code: its own forward/backward passes, K-FAC factors, GGN and empirical Fisher).

Conventions of paper-notes §1: weight coordinates ``[vec W̄_1; …; vec W̄_L]``
(column-stacking), batches ``(N, n)``, the loss is the mean over examples.
"""

from __future__ import annotations

import numpy as np

from geomkfac.networks import AbstractMLP
from geomkfac.reparam import random_affine


def problem(seed, widths=(3, 4, 2), activations=("tanh", "identity"), N=32, scale=1.0):
    """A random abstract MLP, a Point of its weight space, inputs and a generator."""
    rng = np.random.default_rng(seed)
    net = AbstractMLP(list(widths), list(activations), name=f"net{seed}")
    w = net.random_weights(rng, scale=scale)
    X = rng.normal(size=(N, widths[0]))
    return net, w, X, rng


def random_changes(net, rng, output=True):
    """Random dense affine :class:`~geomkfac.reparam.LayerChange` s for every space.

    The input space ``A_0`` gets ``a‡ = Ω a + γ``; every ``Z_i`` and every hidden ``A_i``
    get a random change; the output layer's ``Z_L`` (and ``A_L`` if ``output``) too.
    Returned as ``{layer: LayerChange}`` (the arrays, for closed forms that must not use the
    core's frames).
    """
    L = net.L
    changes = {0: random_affine(net.widths[0], rng).on_A_only()}
    for i in range(1, L):
        changes[i] = random_affine(net.widths[i], rng)
    last = random_affine(net.widths[L], rng)
    changes[L] = last if output else type(last)(Phi=last.Phi, tau=last.tau)
    return changes


def random_frames(net, rng, output=True):
    """A second FrameChoice κ: the frames of :func:`random_changes`."""
    return net.reference_frames().derive(random_changes(net, rng, output))


def flat_weights(net, weights, frames=None):
    """The weight coordinates ``[vec W̄_1; …]`` in ``frames`` as one float array."""
    frames = net._frames(frames)
    return np.asarray(weights.coords(frames.weight_space_frame), dtype=float).reshape(-1)


def fd_jacobian(net, weights, X, h=1e-6):
    """Per-example Jacobian ``∂f(x)/∂w`` ``(N, C, P)`` by central differences in the
    reference weight frame (independent of the pipeline's chain rule)."""
    w0 = flat_weights(net, weights)
    ref = net.reference_frames()
    cols = []
    for k in range(w0.size):
        e = np.zeros_like(w0)
        e[k] = h
        Wp = _split(net, w0 + e)
        Wm = _split(net, w0 - e)
        fp = net.forward(net.weights_from(Wp, ref), X)
        fm = net.forward(net.weights_from(Wm, ref), X)
        cols.append((fp - fm) / (2 * h))
    return np.stack(cols, axis=2)


def _split(net, w):
    out, o = [], 0
    for i in range(1, net.L + 1):
        r, c = net.weight_spaces[i].shape
        out.append(w[o:o + r * c].reshape((r, c), order="F"))
        o += r * c
    return out


def nn_model(net, weights):
    """The same network (reference frames) as a :class:`geomkfac.nn.MLP`."""
    from geomkfac.nn import MLP

    names = [a.name for a in net.activations]
    model = MLP(list(net.widths), names, seed=0)
    model.set_Wbars([np.asarray(W, dtype=float) for W in net.layer_weights(weights)])
    return model


def rel(a, b):
    """``max|a − b| / max(1, max|b|)``: relative discrepancy of two arrays."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
