"""Stochastic gradient descent with (Nesterov) momentum and weight decay."""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError
from geomkfac.nn.optim.base import Optimizer, StepInfo, layer_dot

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD with heavy-ball or Nesterov momentum (the PyTorch convention).

    With gradient ``g_t`` (plus weight decay ``η θ_t``) and momentum ``μ``::

        v_t = μ v_{t-1} + g_t                       (v_{-1} = 0)
        θ_{t+1} = θ_t − lr · v_t                    (heavy ball)
        θ_{t+1} = θ_t − lr · (g_t + μ v_t)          (nesterov=True)

    ``step(X, Y)`` returns a :class:`StepInfo`: ``loss`` before the update, ``grad_norm``,
    ``extras = {lr, momentum}``.

    Parameters
    ----------
    model : MLP or Sequential
    loss : str or Loss
    lr : float, default 0.01
    momentum : float in [0, 1), default 0
    nesterov : bool, default False (needs ``momentum > 0``)
    weight_decay : float >= 0, default 0

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([2, 1], "identity", seed=0)
    >>> opt = SGD(net, "mse", lr=0.1, momentum=0.9)
    >>> info = opt.step(np.ones((4, 2)), np.zeros((4, 1)))
    >>> info.extras["lr"]
    0.1
    """

    name = "sgd"
    defaults = {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "seed": 0}

    def _validate(self, h):
        self._number(h, "momentum", 0, 1, hi_open=True)
        if self._flag(h, "nesterov") and h["momentum"] == 0:
            raise ConfigurationError("nesterov=True needs momentum > 0")

    def __init__(self, model, loss, **hyper):
        super().__init__(model, loss, **hyper)
        self.velocity = None

    def _step(self, X, Y):
        h = self.hyper
        lr, mu = float(h["lr"]), float(h["momentum"])
        Wbars = self.model.get_Wbars()
        loss, grads, *_ = self._forward_backward(X, Y)
        grads = self._add_weight_decay(grads, Wbars)
        if mu > 0:
            prev = self.velocity or [np.zeros_like(g) for g in grads]
            vel = [mu * v + g for v, g in zip(prev, grads)]
            direction = [g + mu * v for g, v in zip(grads, vel)] if h["nesterov"] else vel
        else:
            vel, direction = None, grads
        deltas = [-lr * d for d in direction]
        self._check("the update", deltas)
        self.velocity = vel
        self._apply(Wbars, deltas)
        return StepInfo(self.step_count, loss, float(np.sqrt(layer_dot(grads, grads))),
                        {"lr": lr, "momentum": mu})

    def _state(self):
        d = {}
        self._put_list(d, "velocity", self.velocity)
        return d

    def _load_state(self, d):
        self.velocity = self._get_list(d, "velocity")
