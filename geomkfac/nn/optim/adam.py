"""Adam (Kingma & Ba 2015, Algorithm 1) with optional L2 weight decay."""

from __future__ import annotations

import numpy as np

from geomkfac.nn.optim.base import Optimizer, StepInfo, layer_dot

__all__ = ["Adam"]


class Adam(Optimizer):
    """Adam, exactly the published update rule (Kingma & Ba 2015, Algorithm 1)::

        m_t = β₁ m_{t-1} + (1 − β₁) g_t,     v_t = β₂ v_{t-1} + (1 − β₂) g_t²
        m̂_t = m_t / (1 − β₁ᵗ),               v̂_t = v_t / (1 − β₂ᵗ)
        θ_t = θ_{t-1} − lr · m̂_t / (√v̂_t + ε)

    with ``t`` counted from 1 and ``g_t`` including the L2 weight decay ``η θ``.

    ``step(X, Y)`` returns a :class:`StepInfo`: ``loss`` before the update, ``grad_norm``,
    ``extras = {lr}``.

    Parameters
    ----------
    model, loss
    lr : float, default 1e-3
    beta1, beta2 : float in [0, 1), defaults 0.9, 0.999
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([3, 2], "identity", seed=1)
    >>> w0 = net.get_flat()
    >>> _ = Adam(net, "mse", lr=0.01).step(np.ones((5, 3)), np.zeros((5, 2)))
    >>> float(np.max(np.abs(net.get_flat() - w0))) <= 0.01 + 1e-12   # |step| <= lr
    True
    """

    batch_parallel = True  # the step needs only the loss and the gradient
    name = "adam"
    defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
                "seed": 0}

    def _validate(self, h):
        self._number(h, "beta1", 0, 1, hi_open=True)
        self._number(h, "beta2", 0, 1, hi_open=True)
        self._number(h, "eps", 0, lo_open=True)

    def __init__(self, model, loss, **hyper):
        super().__init__(model, loss, **hyper)
        self.m = None
        self.v = None

    def _step(self, X, Y):
        h = self.hyper
        lr, b1, b2, eps = (float(h[k]) for k in ("lr", "beta1", "beta2", "eps"))
        # a copy of θ, read only by weight decay
        Wbars = self.model.get_Wbars() if float(self.hyper["weight_decay"]) else None
        loss, grads, *_ = self._forward_backward(X, Y)
        grads = self._add_weight_decay(grads, Wbars)
        m0 = self.m or [np.zeros_like(g) for g in grads]
        v0 = self.v or [np.zeros_like(g) for g in grads]
        t = self.step_count + 1
        m = [b1 * a + (1 - b1) * g for a, g in zip(m0, grads)]
        v = [b2 * a + (1 - b2) * g * g for a, g in zip(v0, grads)]
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        deltas = [-lr * (mm / c1) / (np.sqrt(vv / c2) + eps) for mm, vv in zip(m, v)]
        self._check("the update", deltas)
        self.m, self.v = m, v
        self._apply(Wbars, deltas)
        return StepInfo(self.step_count, loss, self._grad_norm(grads),
                        {"lr": lr})

    def _state(self):
        d = {}
        self._put_list(d, "m", self.m)
        self._put_list(d, "v", self.v)
        return d

    def _load_state(self, d):
        self.m = self._get_list(d, "m")
        self.v = self._get_list(d, "v")
