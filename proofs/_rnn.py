"""Shared pieces of the recurrent-network proofs (paper §4.2, Appendix G): random abstract
RNNs with a second choice of frames, and independent references to check the pipeline
against — a direct unrolled loop (:class:`geomkfac.networks.rnn.CoordinateRNN`, NumPy arrays
only) with finite-difference Jacobians, and the reference files of an independent library.

Conventions of the reference files: ``W̄_r = [W_h W_x b]`` (columns of ``h_{t−1}`` first),
``ā_{t−1} = [h_{t−1}; x_t; 1]``, the loss of an example summed over steps, the objective the
mean over examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import softmax

from geomkfac.networks.rnn import AbstractRNN, CoordinateRNN
from geomkfac.reparam import random_affine
from geomkfac.spaces import Point

ORACLE_DIR = Path(__file__).resolve().parent.parent / "tests" / "oracle"


def problem(seed, H=3, d=2, c=2, T=4, N=5, activation="tanh", output="seq", scale=1.0):
    """A random abstract RNN, a Point of its weight space, an initial state, inputs, rng."""
    rng = np.random.default_rng(seed)
    net = AbstractRNN(H, d, c, T=T, activation=activation, output=output, name=f"rnn{seed}")
    w = net.random_weights(rng, scale=scale)
    h0 = net.initial_state(rng.normal(size=H))
    X = rng.normal(size=(N, T, d))
    return net, w, h0, X, rng


def random_changes(net, rng):
    """Random dense affine changes: ``(Ω, γ, Φ, τ)`` on A/Z, ``(Ω_x, γ_x)``, ``(Ω_y, γ_y)``."""
    return dict(hidden=random_affine(net.hidden, rng),
                inputs=random_affine(net.inputs, rng).on_A_only(),
                outputs=random_affine(net.outputs, rng).on_A_only())


def outputs_to_reference(y, change_out):
    """``y = Ω_y⁻¹ (y‡ − γ_y)``: outputs in κ coordinates back to the reference frame."""
    if change_out is None:
        return y
    O, g = change_out._parts(y.shape[-1], "A", False)
    return np.linalg.solve(O, (y - g).reshape(-1, y.shape[-1]).T).T.reshape(y.shape)


def perturbed_outputs(crnn: CoordinateRNN, X, t, dz):
    """Outputs of the direct loop with ``dz`` added to ``z_t`` (0-based t), for FD Jacobians."""
    X = np.asarray(X, dtype=float)
    N, T, _ = X.shape
    Wr, Wo = np.asarray(crnn.Wbar_rec), np.asarray(crnn.Wbar_out)
    h = np.broadcast_to(crnn.h0, (N, Wr.shape[0]))
    ys = []
    for s in range(T):
        z = np.concatenate([h, X[:, s], np.ones((N, 1))], axis=1) @ Wr.T
        if s == t:
            z = z + dz
        h = crnn.activation(z)
        ys.append(h @ Wo[:, :-1].T + Wo[:, -1])
    y = np.stack(ys, 1)
    return y if crnn.output == "seq" else y[:, -1]


def fd_dz_jacobians(crnn: CoordinateRNN, X, h=1e-6):
    """``J[n, t] = ∂(outputs of example n, flattened)/∂z_t``, ``(N, T, T·c or c, H)``, by central
    differences of the direct loop (independent of the pipeline's chain rule; error ~h²)."""
    X = np.asarray(X, dtype=float)
    N, T, _ = X.shape
    H = crnn.Wbar_rec.shape[0]
    out = []
    for t in range(T):
        cols = []
        for j in range(H):
            e = np.zeros(H)
            e[j] = h
            yp = perturbed_outputs(crnn, X, t, e).reshape(N, -1)
            ym = perturbed_outputs(crnn, X, t, -e).reshape(N, -1)
            cols.append((yp - ym) / (2 * h))
        out.append(np.stack(cols, axis=2))
    return np.stack(out, axis=1)


def fd_weight_jacobian(crnn: CoordinateRNN, X, h=1e-6):
    """``∂(outputs)/∂vec W̄_r`` for the *tied* recurrent weights, ``(N, outputs, P)``, by central
    differences of the direct loop."""
    Wr = np.asarray(crnn.Wbar_rec, dtype=float)
    w0 = Wr.reshape(-1, order="F")
    cols = []
    for k in range(w0.size):
        e = np.zeros_like(w0)
        e[k] = h
        fp = CoordinateRNN((w0 + e).reshape(Wr.shape, order="F"), crnn.Wbar_out, crnn.h0, crnn.activation, crnn.output)
        fm = CoordinateRNN((w0 - e).reshape(Wr.shape, order="F"), crnn.Wbar_out, crnn.h0, crnn.activation, crnn.output)
        N = X.shape[0]
        cols.append((fp.forward(X).reshape(N, -1) - fm.forward(X).reshape(N, -1)) / (2 * h))
    return np.stack(cols, axis=2)


def categorical_fisher(y):
    """``diag(p) − p pᵀ`` per output vector (rows of ``y``, any leading shape)."""
    p = softmax(y, axis=-1)
    return p[..., :, None] * np.eye(y.shape[-1]) - p[..., :, None] * p[..., None, :]


def block_diag_steps(Hs):
    """``(N, T, c, c)`` → ``(N, T·c, T·c)``: the additive metric over steps (Eqn. B.2)."""
    N, T, c, _ = Hs.shape
    out = np.zeros((N, T * c, T * c))
    for t in range(T):
        out[:, t * c:(t + 1) * c, t * c:(t + 1) * c] = Hs[:, t]
    return out


def rel(a, b):
    """``max|a − b| / max(1, max|b|)``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def load_oracle(name="rnn_seq_ce"):
    """The case and reference arrays of an independent library, or ``None`` if absent."""
    case, ref = ORACLE_DIR / f"{name}.npz", ORACLE_DIR / f"{name}.oracle.npz"
    if not (case.exists() and ref.exists()):
        return None
    return np.load(case), np.load(ref)


def oracle_network(case):
    """The abstract RNN, weights and initial state of a reference case."""
    import json

    arch = json.loads(str(case["arch"]))
    net = AbstractRNN(arch["hidden"], arch["in"], arch["out"], T=arch["T"], activation=arch["act"],
                      output=arch["output"], name="oracle")
    w = net.weights_from(np.hstack([case["W0"], case["b0"][:, None]]), np.hstack([case["W1"], case["b1"][:, None]]))
    return net, w, net.initial_state(case["h0"])


def point_in(frame, point):
    """The same point with its coordinates held in ``frame`` (so later arithmetic runs there)."""
    return Point(frame, point.coords(frame))
