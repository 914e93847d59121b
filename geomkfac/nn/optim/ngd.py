"""Exact natural gradient with a dense GGN / Fisher (small networks)."""

from __future__ import annotations

import numpy as np

from geomkfac.errors import DegenerateMetricError
from geomkfac.nn.optim.base import Optimizer, StepInfo, flatten, layer_dot, unflatten

__all__ = ["NGD"]


class NGD(Optimizer):
    """Exact natural gradient descent (Thm 3.2): ``θ ← θ + δ``,
    ``δ = μ δ_prev − lr (F + λ I)⁻¹ ∇h`` with the dense metric ``F``:

    - ``metric="ggn"`` (default): the Gauss-Newton ``(1/N) Σ Jᵀ H J``, which equals the
      Fisher for the losses of :mod:`geomkfac.nn.losses` (Example 3.3);
    - ``metric="empirical"``: the empirical Fisher ``(1/N) Σ ∇ℓ ∇ℓᵀ``.

    ``F`` is ``P × P``: meant for small networks (tests, invariance experiments). With
    ``damping=0`` a singular ``F`` raises :class:`~geomkfac.errors.DegenerateMetricError`.

    ``step(X, Y)`` returns a :class:`StepInfo`: ``loss`` before the update, ``grad_norm``,
    ``extras = {lr, damping, momentum}``. ``exact=True``: ``damping=0``, ``metric="ggn"``.

    Parameters
    ----------
    model, loss
    lr : float, default 1.0
    damping : float >= 0, default 1e-4
    metric : {"ggn", "empirical"}, default "ggn"
    momentum : float in [0, 1), default 0
    weight_decay : float, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([3, 2], "identity", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((10, 3)); Y = X[:, :2] * 2.0
    >>> _ = NGD(net, "mse", damping=0.0).step(X, Y)   # one Gauss-Newton step solves LS
    >>> bool(np.allclose(net.forward(X), Y))
    True
    """

    name = "ngd"
    defaults = {"lr": 1.0, "damping": 1e-4, "metric": "ggn", "momentum": 0.0,
                "weight_decay": 0.0, "seed": 0}
    #: ``exact=True``: the undamped natural gradient with the exact Fisher (the GGN, which
    #: equals the Fisher for the losses here, Example 3.3)
    exact_preset = {"damping": 0.0, "metric": "ggn"}

    def _validate(self, h):
        self._number(h, "damping", 0)
        h["metric"] = self._choice(h, "metric", ("ggn", "empirical"))
        self._number(h, "momentum", 0, 1, hi_open=True)

    def __init__(self, model, loss, **hyper):
        super().__init__(model, loss, **hyper)
        self.prev_delta = None

    def _step(self, X, Y):
        from geomkfac.nn.curvature import empirical_fisher, ggn

        h = self.hyper
        lr, lam, mu = float(h["lr"]), float(h["damping"]), float(h["momentum"])
        eta = float(h["weight_decay"])
        # a copy of θ, read only by weight decay
        Wbars = self.model.get_Wbars() if float(self.hyper["weight_decay"]) else None
        loss, grads, *_ = self._forward_backward(X, Y)
        grads = self._add_weight_decay(grads, Wbars)
        F = (ggn if h["metric"] == "ggn" else empirical_fisher)(self.model, X, Y, self.loss_fn)
        self._check(f"the {h['metric']} matrix", F)
        g = flatten(grads)
        M = F + (lam + eta) * np.eye(F.shape[0], dtype=F.dtype)
        try:
            p = np.linalg.solve(M, g)
        except np.linalg.LinAlgError:
            raise DegenerateMetricError(
                f"step {self.step_count}: the {h['metric']} metric is singular; use damping > 0"
            ) from None
        delta = -lr * p
        if mu > 0 and self.prev_delta is not None:
            delta = delta + mu * self.prev_delta
        self._check("the update", delta)
        self.prev_delta = delta
        self._apply(Wbars, unflatten(delta, self._shapes))
        return StepInfo(self.step_count, loss, self._grad_norm(grads),
                        {"lr": lr, "damping": lam, "momentum": mu})

    def _state(self):
        d = {"has_prev": self.prev_delta is not None}
        d["prev_delta"] = (np.zeros(0) if self.prev_delta is None
                           else np.array(self.prev_delta, copy=True))
        return d

    def _load_state(self, d):
        self.prev_delta = np.array(d["prev_delta"], copy=True) if bool(d["has_prev"]) else None
