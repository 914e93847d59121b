"""Shared numeric pieces of the proof scripts: backpropagation through a coordinate MLP
(:class:`geomkfac.reparam.CoordinateMLP`, whose activations may be the non-elementwise
conjugated activations of Eqn. D.3), the K-FAC factors of Eqn. 2.7, and the update rules
compared in the invariance proofs (undamped K-FAC with exact inverses, SGD, Adam).

Conventions of paper-notes §1: batches are ``(N, n)`` arrays (rows are examples),
``W̄ = [W b]``, the loss is the mean over examples of ``½‖f − y‖²`` (Gaussian output with
unit variance, so the output Fisher is ``I`` and nondegenerate), per-example ``Dz``,
``A = (1/N) Σ ā āᵀ`` and ``G = (1/N) Σ E_y[Dz Dzᵀ]`` (the exact expectation over the
model's Gaussian predictive distribution, so ``G_i = (1/N) Σ J_iᵀ J_i`` with ``J_i`` the
Jacobian of the output with respect to ``z_i``).
"""

from __future__ import annotations

import numpy as np

from geomkfac.reparam import CoordinateMLP


def backprop(net: CoordinateMLP, trace, d_out: np.ndarray) -> list[np.ndarray]:
    """Per-example ``Dz_i`` (each ``(N, n_i)``) for the output covector batch ``d_out``.

    ``d_out`` is ``(N, n_L)``: the derivative of a per-example scalar with respect to the
    output ``a_L``.  ``Dz_i = J_φᵢ(z_i)ᵀ Da_i`` and ``Da_{i−1} = W_iᵀ Dz_i``, with the full
    (possibly non-diagonal) activation Jacobian.
    """
    abars, zs, _ = trace
    Dzs = [None] * net.L
    da = d_out
    for i in range(net.L - 1, -1, -1):
        J = net.activations[i].jacobian(zs[i])          # (N, n, n): ∂a/∂z
        dz = np.einsum("nij,ni->nj", J, da)             # Jᵀ da per example
        Dzs[i] = dz
        da = dz @ net.Wbars[i][:, :-1]                   # W_iᵀ Dz_i, as rows
    return Dzs


def loss_and_grads(net: CoordinateMLP, X, Y):
    """Mean squared-error loss ``½‖f − y‖²`` and its gradient ``DW̄_i = (1/N) Σ Dz_i āᵀ``."""
    tr = net.trace(X)
    r = tr[2][-1] - Y
    Dzs = backprop(net, tr, r)
    N = X.shape[0]
    grads = [Dz.T @ ab / N for Dz, ab in zip(Dzs, tr[0])]
    return 0.5 * float(np.mean(np.sum(r * r, axis=1))), grads, tr


def kfac_factors(net: CoordinateMLP, X, trace=None):
    """The K-FAC factors ``(A_{i−1}, G_i)`` of every layer (Eqn. 2.7), Gaussian output.

    ``G_i = (1/N) Σ_n Σ_k Dz_i^{(k)} Dz_i^{(k)ᵀ}`` where ``Dz^{(k)}`` backpropagates the
    ``k``-th output unit: the exact expectation ``E_y[Dz Dzᵀ]`` for unit-variance noise.
    """
    tr = net.trace(X) if trace is None else trace
    N, n_out = X.shape[0], net.widths[-1]
    As = [ab.T @ ab / N for ab in tr[0]]
    Gs = [np.zeros((n, n)) for n in net.widths[1:]]
    for k in range(n_out):
        e = np.zeros((N, n_out))
        e[:, k] = 1.0
        for i, Dz in enumerate(backprop(net, tr, e)):
            Gs[i] += Dz.T @ Dz / N
    return As, Gs


def kfac_direction(net: CoordinateMLP, X, Y, damping: float = 0.0):
    """``ΔW̄_i = (G_i + √λ I)⁻¹ DW̄_i (A_{i−1} + √λ I)⁻¹`` (undamped for λ = 0: exact inverses)."""
    _, grads, tr = loss_and_grads(net, X, Y)
    As, Gs = kfac_factors(net, X, tr)
    s = np.sqrt(damping)
    out = []
    for A, G, D in zip(As, Gs, grads):
        V = np.linalg.solve(G + s * np.eye(len(G)), D)
        out.append(np.linalg.solve(A + s * np.eye(len(A)), V.T).T)
    return out


def step(net: CoordinateMLP, directions, lr: float) -> CoordinateMLP:
    """``W̄_i ← W̄_i − lr · ΔW̄_i``."""
    return CoordinateMLP([W - lr * D for W, D in zip(net.Wbars, directions)], net.activations)


class Adam:
    """Plain Adam (elementwise, so coordinate dependent) on the homogeneous weights."""

    def __init__(self, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, beta1, beta2, eps
        self.m = self.v = None
        self.t = 0

    def direction(self, grads):
        if self.m is None:
            self.m = [np.zeros_like(g) for g in grads]
            self.v = [np.zeros_like(g) for g in grads]
        self.t += 1
        out = []
        for k, g in enumerate(grads):
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            mh = self.m[k] / (1 - self.b1 ** self.t)
            vh = self.v[k] / (1 - self.b2 ** self.t)
            out.append(mh / (np.sqrt(vh) + self.eps))
        return out


def train_pair(net, net_t, X, X_t, Y, rule: str, steps: int, lr: float, damping: float = 0.0):
    """Train the original and the transformed network side by side with the same rule.

    Returns the largest ``max |f(X) − f‡(X‡)|`` seen over all steps (including step 0),
    and the two losses at the end.
    """
    adams = (Adam(lr), Adam(lr)) if rule == "adam" else None
    worst = float(np.max(np.abs(net.forward(X) - net_t.forward(X_t))))
    for _ in range(steps):
        if rule == "kfac":
            d, d_t = kfac_direction(net, X, Y, damping), kfac_direction(net_t, X_t, Y, damping)
            net, net_t = step(net, d, lr), step(net_t, d_t, lr)
        elif rule == "sgd":
            net = step(net, loss_and_grads(net, X, Y)[1], lr)
            net_t = step(net_t, loss_and_grads(net_t, X_t, Y)[1], lr)
        elif rule == "adam":
            net = step(net, adams[0].direction(loss_and_grads(net, X, Y)[1]), 1.0)
            net_t = step(net_t, adams[1].direction(loss_and_grads(net_t, X_t, Y)[1]), 1.0)
        else:  # pragma: no cover - programming error in a proof script
            raise ValueError(rule)
        worst = max(worst, float(np.max(np.abs(net.forward(X) - net_t.forward(X_t)))))
    return worst, loss_and_grads(net, X, Y)[0], loss_and_grads(net_t, X_t, Y)[0]


def random_problem(rng, widths=(3, 4, 4, 2), activations=("tanh", "sigmoid", "identity"), N=64):
    """A random MLP (Gaussian output), inputs and regression targets from a teacher net."""
    Ws = [rng.normal(size=(o, i + 1)) / np.sqrt(i + 1) for i, o in zip(widths[:-1], widths[1:])]
    net = CoordinateMLP(Ws, list(activations))
    X = rng.normal(size=(N, widths[0]))
    teacher = CoordinateMLP([W + 0.5 * rng.normal(size=W.shape) for W in Ws], list(activations))
    Y = teacher.forward(X) + 0.05 * rng.normal(size=(N, widths[-1]))
    return net, X, Y
