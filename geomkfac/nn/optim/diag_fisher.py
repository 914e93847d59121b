"""Diagonal-Fisher preconditioned gradient descent."""

from __future__ import annotations

import numpy as np

from geomkfac.nn.optim.base import MAX_MC_SAMPLES, MC_SAMPLES_HINT, Optimizer, StepInfo, layer_dot
from geomkfac.nn.optim.statistics import FISHER_TYPES, backprop_samples, diagonal_fisher

__all__ = ["DiagFisher"]


class DiagFisher(Optimizer):
    """Gradient descent preconditioned by the diagonal of the Fisher::

        d_i = E[(Dz āᵀ)²]   (EMA with ema_decay; the first estimate sets it)
        v = μ v + DW̄ / (d + λ),   θ ← θ − lr · v

    ``fisher`` chooses the expectation (``"empirical"``: data targets, the default;
    ``"mc"``: sampled targets; ``"exact"``: columns of the output-Fisher square root).
    Diagonal methods are not invariant under non-diagonal affine reparameterizations
    (paper-notes §3, negative controls).

    ``step(X, Y)`` returns a :class:`StepInfo`: ``loss`` before the update, ``grad_norm``,
    ``extras = {lr, damping}``.

    Parameters
    ----------
    model, loss
    lr : float, default 0.1
    damping : float > 0, default 1e-4
    ema_decay : float in [0, 1), default 0.95
    fisher : {"empirical", "mc", "exact"}, default "empirical"
    mc_samples : int in [1, 1024], default 1 (sampled targets per example for fisher="mc")
    momentum : float in [0, 1), default 0
    weight_decay : float, default 0
    seed : int, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([3, 1], "identity", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((16, 3)); Y = X @ np.ones((3, 1))
    >>> opt = DiagFisher(net, "mse", lr=0.3, fisher="exact")
    >>> first = opt.step(X, Y).loss
    >>> last = [opt.step(X, Y).loss for _ in range(30)][-1]
    >>> last < 0.1 * first
    True
    """

    name = "diag_fisher"
    defaults = {"lr": 0.1, "damping": 1e-4, "ema_decay": 0.95, "fisher": "empirical",
                "mc_samples": 1, "momentum": 0.0, "weight_decay": 0.0, "seed": 0}

    def _validate(self, h):
        self._number(h, "damping", 0, lo_open=True)
        self._number(h, "ema_decay", 0, 1, hi_open=True)
        h["fisher"] = self._choice(h, "fisher", FISHER_TYPES)
        self._integer(h, "mc_samples", hi=MAX_MC_SAMPLES, why=MC_SAMPLES_HINT)
        self._number(h, "momentum", 0, 1, hi_open=True)

    def __init__(self, model, loss, **hyper):
        super().__init__(model, loss, **hyper)
        self.diag = None
        self.velocity = None

    def _step(self, X, Y):
        h = self.hyper
        lr, lam, mu, eps = (float(h[k]) for k in ("lr", "damping", "momentum", "ema_decay"))
        # a copy of θ, read only by weight decay
        Wbars = self.model.get_Wbars() if float(self.hyper["weight_decay"]) else None
        loss, grads, f, cache, Dz = self._forward_backward(X, Y)
        grads = self._add_weight_decay(grads, Wbars)
        if h["fisher"] == "empirical":
            Dzs, w = [D[None] for D in Dz], 1.0 / X.shape[0]
        else:
            Dzs, w = backprop_samples(self.model, cache, f, Y, self.loss_fn, h["fisher"], self.rng,
                                      int(h["mc_samples"]))
        new = [diagonal_fisher(D, ab, w, T) for D, ab, T in zip(Dzs, cache.abar, cache.T)]
        self._check("the diagonal Fisher", new)
        diag = new if self.diag is None else [eps * d0 + (1 - eps) * d
                                              for d0, d in zip(self.diag, new)]
        P = [g / (d + lam) for g, d in zip(grads, diag)]
        vel = P if self.velocity is None or mu == 0 else [
            mu * v + p for v, p in zip(self.velocity, P)]
        deltas = [-lr * v for v in vel]
        self._check("the update", deltas)
        self.diag, self.velocity = diag, (vel if mu > 0 else None)
        self._apply(Wbars, deltas)
        return StepInfo(self.step_count, loss, self._grad_norm(grads),
                        {"lr": lr, "damping": lam})

    def _state(self):
        d = {}
        self._put_list(d, "diag", self.diag)
        self._put_list(d, "velocity", self.velocity)
        return d

    def _load_state(self, d):
        self.diag = self._get_list(d, "diag")
        self.velocity = self._get_list(d, "velocity")
