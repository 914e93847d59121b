"""Stochastic gradient descent with (Nesterov) momentum and weight decay."""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError
from geomkfac.nn.kernels import momentum_update_
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

    batch_parallel = True  # the step needs only the loss and the gradient
    name = "sgd"
    defaults = {"lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "seed": 0}

    def _validate(self, h):
        self._number(h, "momentum", 0, 1, hi_open=True)
        if self._flag(h, "nesterov") and h["momentum"] == 0:
            raise ConfigurationError("nesterov=True needs momentum > 0")

    def __init__(self, model, loss, **hyper):
        super().__init__(model, loss, **hyper)
        self.velocity = None
        self._spare = None  # the previous velocity's buffers, reused for the next one
        self._vel_bound = None  # an upper bound of ‖velocity‖ (None: not known yet)

    def _velocity_buffers(self):
        """Arrays for ``v_t`` (``self.velocity`` is kept until the step succeeds): the
        buffers of ``v_{t-2}`` when they fit."""
        prev, spare = self.velocity, self._spare
        if spare is None or any(s.shape != v.shape or s.dtype != v.dtype
                                for s, v in zip(spare, prev)) or len(spare) != len(prev):
            spare = [np.empty_like(v) for v in prev]
        return spare

    def _next_velocity(self, grads, mu):
        """``v_t = μ v_{t-1} + g_t`` in new arrays (:meth:`_velocity_buffers`)."""
        prev = self.velocity
        if prev is None:
            return [g.copy(order="K") for g in grads]  # the layout of the gradient
        vel = [np.multiply(v, mu, out=s) for v, s in zip(prev, self._velocity_buffers())]
        for v, g in zip(vel, grads):
            v += g
        return vel

    def _fused_heavy_ball(self, grads, lr, mu, vel_bound) -> bool:
        """The heavy-ball step in one compiled pass per layer (``v_t`` and ``W̄ −= lr v_t``
        together, :func:`geomkfac.nn.kernels.momentum_update_`), where every layer's
        ``W̄`` is one contiguous array, numba is installed and the bound proves the update
        finite (else nothing is written and the caller takes the NumPy route, which gives
        the same bits)."""
        if self.velocity is None or not self._surely_finite(max(lr, 1.0) * vel_bound, grads):
            return False
        stores = [getattr(l, "Wbar_view", None) for l in self.model.param_layers]
        if any(W is None for W in stores):
            return False
        vel = self._velocity_buffers()
        if not momentum_update_(stores, self.velocity, grads, vel, mu, lr):
            return False
        self._spare, self.velocity, self._vel_bound = self.velocity, vel, vel_bound
        return True

    def _step(self, X, Y):
        h = self.hyper
        lr, mu = float(h["lr"]), float(h["momentum"])
        loss, grads, *_ = self._forward_backward(X, Y)  # fresh arrays, ours to overwrite
        if float(h.get("weight_decay", 0.0)):
            grads = self._add_weight_decay(grads, self.model.get_Wbars())
        grad_norm = self._grad_norm(grads)
        info = StepInfo(self.step_count, loss, grad_norm, {"lr": lr, "momentum": mu})
        if mu > 0:
            vel_bound = self._norm_bound(mu * self._velocity_bound() + grad_norm)
            if not h["nesterov"] and self._fused_heavy_ball(grads, lr, mu, vel_bound):
                return info
            vel = self._next_velocity(grads, mu)
            direction = [g + mu * v for g, v in zip(grads, vel)] if h["nesterov"] else vel
            bound = self._norm_bound(grad_norm + mu * vel_bound) if h["nesterov"] else vel_bound
        else:
            vel, direction, bound, vel_bound = None, grads, grad_norm, 0.0
        # δ = −lr · direction, written over the gradient (its norm is taken)
        deltas = [np.multiply(d, -lr, out=g) for d, g in zip(direction, grads)]
        # ‖δ‖ ≤ lr·bound and ‖v_t‖ ≤ vel_bound: both finite when these are far from overflow
        if not self._surely_finite(max(lr, 1.0) * max(bound, vel_bound), deltas):
            self._check("the update", deltas)
        if mu > 0:
            self._spare, self.velocity, self._vel_bound = self.velocity, vel, vel_bound
        self._apply(None, deltas)
        return info

    # -- the finiteness guard of the update without a pass over it --------------------------------
    @staticmethod
    def _norm_bound(x: float) -> float:
        """``x`` raised by a relative ``2⁻²⁰`` for the rounding of the bound's own scalar
        operations (the rounding of the norms themselves is absorbed by the margin of
        :meth:`_surely_finite`)."""
        return x * (1.0 + 2.0 ** -20)

    def _velocity_bound(self) -> float:
        """An upper bound of ``‖v_{t-1}‖``: carried from step to step (``‖μ v + g‖ ≤ μ‖v‖ +
        ‖g‖``), computed by one pass after a checkpoint is loaded; 0 before the first step."""
        if self.velocity is None:
            return 0.0
        if self._vel_bound is None:
            with np.errstate(over="ignore", invalid="ignore"):
                self._vel_bound = self._norm_bound(
                    float(np.sqrt(layer_dot(self.velocity, self.velocity))))
        return self._vel_bound

    #: above this many entries in one float32 array the margin of :meth:`_surely_finite` no
    #: longer covers the worst-case rounding of a float32 sum of squares (relative error up to
    #: ``n·ε₃₂``), so the update is checked entry by entry
    BOUND_MAX_ENTRIES32 = 10**7

    @classmethod
    def _surely_finite(cls, bound: float, arrays) -> bool:
        """Whether ``bound`` (an upper bound of the norms of ``δ`` and of the new velocity, hence
        of each of their entries, computed from a finite gradient and a finite previous
        velocity) proves that neither has a NaN or inf: it is finite and below a quarter of
        the dtype's largest value. NaN or inf could then only come from an overflow, which the
        bound excludes; otherwise the caller checks ``δ`` entry by entry (``δ = −lr·v``: a
        non-finite ``v`` makes ``δ`` non-finite too). The factor 4 absorbs the rounding of the
        norms: a float32 sum of ``n`` squares may fall short by a relative ``n·ε₃₂`` (≤ 0.6 for
        ``n ≤`` :attr:`BOUND_MAX_ENTRIES32`; larger float32 arrays are always checked)."""
        if not arrays or any(a.dtype.itemsize <= 4 and a.size > cls.BOUND_MAX_ENTRIES32
                             for a in arrays):
            return False
        top = min(float(np.finfo(a.dtype).max) for a in arrays)
        return bool(np.isfinite(bound)) and bound < 0.25 * top

    def _state(self):
        d = {}
        self._put_list(d, "velocity", self.velocity)
        return d

    def _load_state(self, d):
        self.velocity = self._get_list(d, "velocity")
        self._spare, self._vel_bound = None, None
