"""Pairs of layer networks of the NumPy backend related by a change of frames (Theorems 4.1
and 4.2), built by hand from the change arrays, and the largest output gap while two
optimizers train them side by side.  Shared by the proofs of Thm 4.1 / 4.2 (their backend
part: the shipped K-FAC optimizer for 50 steps) and by ``tests/test_layer_invariance.py``.

A convolutional pair: conv(2→3, pad 1, tanh) [→ pool] → conv(3→2, pad ``pad2``, tanh) →
flatten → dense(→2), and the same network in new frames — (Φ1, τ1) on Z1, (Ω1, γ1) on A1,
(Ω2, γ2) on A2, the same at every location, the patches changed by ``Ω ⊗ I`` (channel-major)
and the flattened input by ``Ω2 ⊗ I_T``.  A recurrent pair: RNN(H=3, d=2, tanh, h0) → dense
at every step, and the same network with (Ω, γ) on the hidden space (moving h0 to
``Ω h0 + γ``), (Φ, τ) on the pre-activations and (Ωx, γx) on the inputs.
"""

from __future__ import annotations

import numpy as np

import geomkfac.nn as gnn
from geomkfac.nn.activations import ConjugatedActivation
from geomkfac.nn.optim import get_optimizer

#: the shipped K-FAC as the exact, undamped K-FAC step of the theorems
KFAC = dict(fisher="exact", damping=0.0, damping_mode="exact", eig_floor=None, ema_decay=0.0,
            factor_update_period=1, inverse_update_period=1, kl_clip=None)


def frame(rng, n):
    return np.eye(n) + 0.3 * rng.standard_normal((n, n)), 0.5 * rng.standard_normal(n)


def cnn_pair(pad2=0, pool=None, per_location=False, seed=0):
    """conv(2→3, pad 1, tanh) [→ pool] → conv(3→2, pad ``pad2``, tanh) → flatten → dense(→2),
    and the same network in new frames: (Φ1, τ1) on Z1, (Ω1, γ1) on A1 (3 channels),
    (Ω2, γ2) on A2 (2 channels), output frame kept."""
    rng = np.random.default_rng(seed)
    W1, b1 = 0.5 * rng.standard_normal((3, 2, 3, 3)), 0.1 * rng.standard_normal(3)
    W2, b2 = 0.5 * rng.standard_normal((2, 3, 3, 3)), 0.1 * rng.standard_normal(2)
    side = 6 if pool is None else 3
    T2 = (side + 2 * pad2 - 2) ** 2
    W3, b3 = 0.5 * rng.standard_normal((2, 2 * T2)), 0.1 * rng.standard_normal(2)
    mid = [] if pool is None else [gnn.MaxPool2d(2)]
    net = gnn.Sequential([gnn.Conv2d(W1, b1, "tanh", padding=1), *mid,
                          gnn.Conv2d(W2, b2, "tanh", padding=pad2), gnn.Flatten(),
                          gnn.Dense(W3, b3)])
    Om1, ga1 = frame(rng, 3)
    Ph1, ta1 = frame(rng, 3)
    Om2, ga2 = frame(rng, 2)
    # layer 1: z1 = Φ1 z1‡ + τ1 → W̄1‡ = Φ1⁻¹ [W1 b1 − τ1]
    Pi = np.linalg.inv(Ph1)
    W1n = np.einsum("ij,jckl->ickl", Pi, W1)
    b1n = Pi @ (b1 - ta1)
    act1 = ConjugatedActivation("tanh", Om1, ga1, Ph1, ta1)
    # layer 2: patches (c, dy, dx) change by Ω1 ⊗ I9 and γ1 ⊗ 1
    M = np.kron(Om1, np.eye(9))
    W2r = W2.reshape(2, 27) @ np.linalg.inv(M)
    b2n = b2 - W2r @ np.repeat(ga1, 9)
    act2 = ConjugatedActivation("tanh", Om2, ga2)
    # dense after a channel-major flatten: the input frame is Ω2 ⊗ I_T, γ2 ⊗ 1
    P = np.kron(Om2, np.eye(T2))
    if per_location:
        # control: the dense layer is rewritten for a frame that differs at location 0
        # (Ω2' there, Ω2 elsewhere), while the shared conv activation can only apply Ω2
        Om2b, _ = frame(rng, 2)
        idx = np.arange(2) * T2  # the coordinates (c, t = 0) in channel-major order
        P[np.ix_(idx, idx)] = Om2b
    W3n = W3 @ np.linalg.inv(P)
    b3n = b3 - W3n @ np.repeat(ga2, T2)
    net2 = gnn.Sequential([gnn.Conv2d(W1n, b1n, act1, padding=1), *mid,
                           gnn.Conv2d(W2r.reshape(W2.shape), b2n, act2, padding=pad2),
                           gnn.Flatten(), gnn.Dense(W3n, b3n)])
    X = rng.standard_normal((40, 2, 6, 6))
    Y = rng.standard_normal((40, 2))
    return net, net2, X, Y


def gap_after(net, net2, X, Y, name, hyper, steps=50, X2=None):
    """Train ``net`` on ``(X, Y)`` and ``net2`` on ``(X2, Y)`` (default ``X2 = X``: the same
    coordinates) with two copies of optimizer ``name``; the largest output gap over the
    steps and the first network's losses."""
    X2 = X if X2 is None else X2
    o1 = get_optimizer(name, net, "mse", **hyper)
    o2 = get_optimizer(name, net2, "mse", **hyper)
    gap, losses = 0.0, []
    for _ in range(steps):
        losses.append(o1.step(X, Y).loss)
        o2.step(X2, Y)
        gap = max(gap, np.abs(net2.forward(X2) - net.forward(X)).max())
    return gap, losses


def rnn_pair(transform_h0=True, per_step=False, seed=0):
    """RNN(H=3, d=2, tanh, h0) → dense at every step (→2), and the same network with (Ω, γ)
    on the hidden space (also moving h0 to Ω h0 + γ), (Φ, τ) on the pre-activations,
    (Ωx, γx) on the inputs."""
    rng = np.random.default_rng(seed)
    H, d = 3, 2
    W, b, h0 = 0.6 * rng.standard_normal((H, H + d)), 0.1 * rng.standard_normal(H), rng.standard_normal(H)
    Wo, bo = rng.standard_normal((2, H)), 0.1 * rng.standard_normal(2)
    net = gnn.Sequential([gnn.RNN(W, b, "tanh", h0=h0), gnn.Dense(Wo, bo)])
    Om, ga = frame(rng, H)
    Ph, ta = frame(rng, H)
    Omx, gax = frame(rng, d)
    # ā‡ = [Ω h + γ; Ωx x + γx; 1] = M ā, and z = Φ z‡ + τ: W̄‡ = Φ⁻¹ (W̄ M⁻¹ − [0 τ])
    M = np.eye(H + d + 1)
    M[:H, :H], M[:H, -1] = Om, ga
    M[H:H + d, H:H + d], M[H:H + d, -1] = Omx, gax
    Wb = np.concatenate([W, b[:, None]], 1) @ np.linalg.inv(M)
    Wb[:, -1] -= ta
    Wb = np.linalg.inv(Ph) @ Wb
    h0n = Om @ h0 + ga if transform_h0 else h0
    Won = Wo @ np.linalg.inv(Om)
    bon = bo - Won @ ga
    net2 = gnn.Sequential([gnn.RNN(Wb[:, :-1], Wb[:, -1], ConjugatedActivation("tanh", Om, ga, Ph, ta),
                                   h0=h0n), gnn.Dense(Won, bon)])
    X = rng.standard_normal((30, 5, d))
    X2 = X @ Omx.T + gax
    if per_step:  # control: the input frame differs between steps
        X2[:, 2] = X2[:, 2] @ (np.eye(d) + 0.2 * rng.standard_normal((d, d))).T
    Y = rng.standard_normal((30, 5, 2))
    return net, net2, X, X2, Y
