"""K-FAC (Martens & Grosse 2015) and EKFAC (George et al. 2018) for MLPs.

The K-FAC metric is the block-diagonal ``⊕_i A_{i-1} ⊗ G_i`` (Eqn. 2.8, Def. 3.7); its
natural gradient per layer is ``G_i⁻¹ DW̄_i A_i⁻¹`` (paper-notes §1). Only the factored form
is ever used: Kronecker products are never formed.
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError
from geomkfac.nn.optim.base import MAX_MC_SAMPLES, MC_SAMPLES_HINT, Optimizer, StepInfo, layer_dot
from geomkfac.nn.optim.gvp import ggn_quadratic_form
from geomkfac.nn.optim.kronecker import (
    Eig,
    damped_inverse,
    pi_correction,
    precondition_eigenbasis,
    precondition_exact,
    precondition_factored,
    precondition_factored_rows,
    rows_are_cheaper,
    safe_eigh,
    safe_inverse,
    use_cholesky,
)
from geomkfac.nn.optim.quadratic import (
    levenberg_marquardt,
    lm_omega,
    reduction_ratio,
    solve_lr_momentum,
)
from geomkfac.nn.optim.statistics import FISHER_TYPES, backprop_samples, ekfac_scalings
from geomkfac.nn.optim.temporal import (
    TEMPORAL_OPTIONS,
    TemporalBlock,
    lag_moment,
    temporal_block,
    temporal_solve,
)

__all__ = ["KFAC", "EKFAC"]


def _ema(old, new, eps):
    """``eps·old + (1−eps)·new``, written over ``new`` (a fresh statistic of this step; the
    state ``old`` is kept for a rollback): one temporary instead of three arrays, the same
    two products and sum, so the same bits.

    >>> import numpy as np
    >>> _ema(np.array([1.0, 2.0]), np.array([3.0, 4.0]), 0.75).tolist()
    [1.5, 2.5]
    """
    t = np.multiply(old, eps)
    np.multiply(new, 1 - eps, out=new)
    new += t
    return new


class KFAC(Optimizer):
    r"""Kronecker-factored approximate curvature with the features of the reference
    implementations.

    Each step, with gradient ``DW̄_i`` (Eqn. 2.2, plus weight decay ``η W̄_i``):

    1. **factors** (every ``factor_update_period`` steps): ``A_i = (1/N) Σ ā āᵀ`` and
       ``G_i = (1/N) Σ Dz Dzᵀ`` (Eqn. 2.7) for the Fisher type ``fisher`` ("exact": columns of
       a square root of the output Fisher; "mc": ``mc_samples`` sampled targets; "empirical":
       data targets), averaged as ``X ← ε X + (1 − ε) X_new`` (``ε = ema_decay``; the first
       update sets the factors);
    2. **inverses** (every ``inverse_update_period`` steps): eigendecompositions of ``A_i`` and
       ``G_i`` with the eigenvalue floor ``eig_floor`` and a float64 retry
       (``inverse_method="eigh"``, always used by exact damping and EKFAC), or, for factored
       damping with ``inverse_method="inv"`` (its default, several times cheaper), the
       damped inverses ``(A + π√λ I)⁻¹``, ``(G + √λ/π I)⁻¹`` directly (float64 retry too;
       λ changes take effect at the next inverse update);
    3. **preconditioned gradient** ``P_i`` with damping ``λ`` (``+ η``):
       ``damping_mode="factored"``: ``(G + √λ/π I)⁻¹ DW̄ (A + π√λ I)⁻¹`` with the π correction
       (M&G §6.3; ``pi_correction=False`` sets π = 1); ``damping_mode="exact"``:
       ``Q_G [(Q_Gᵀ DW̄ Q_A) / (e_G e_Aᵀ + λ)] Q_Aᵀ = (A ⊗ G + λI)⁻¹ DW̄``; EKFAC
       (``ekfac=True``): ``Q_G [(Q_Gᵀ DW̄ Q_A) / (S + λ)] Q_Aᵀ`` with the scalings
       ``S = E[(Q_Gᵀ Dz āᵀ Q_A)²]`` re-estimated from per-example gradients;
    4. **update** ``δ``: with a fixed learning rate, ``δ = μ δ_prev − lr · ν P`` (heavy ball on
       the preconditioned update, ``μ = momentum``) where ``ν = min(1, sqrt(kl_clip /
       (lr² Σ_i ⟨P_i, DW̄_i⟩)))`` is the KL clipping of kfac-pytorch (1 if ``kl_clip`` is
       None): it bounds the quadratic KL estimate ``lr² (νP)ᵀ F̃ (νP) = lr² ν² Σ⟨P, DW̄⟩``
       by ``kl_clip``; with
       ``adaptive_lr=True``, ``δ = α Δ + μ δ_prev`` with ``Δ = −P`` and ``(α, μ)`` minimizing
       the quadratic model ``M(δ) = ½ δᵀ(F + (λ+η)I)δ + ∇hᵀδ`` with exact GGN products
       (M&G §7);
    5. **damping** (``adapt_damping=True``, every ``lm_period = T₁`` steps): the reduction
       ratio ``ρ = (h(θ+δ) − h(θ)) / M(δ)`` and the Levenberg–Marquardt rule
       ``λ ← ω₁ λ`` if ``ρ > 3/4``, ``λ ← λ/ω₁`` if ``ρ < 1/4``, ``ω₁ = (19/20)^T₁``
       (M&G §6.5), within ``[min_damping, max_damping]``.

    With ``damping=0``, ``eig_floor=None`` (or a nondegenerate metric) and exact updates
    (``inverse_update_period=1``, ``factor_update_period=1``, ``ema_decay=0``) the step is the
    exact K-FAC natural gradient, invariant under affine reparameterizations (Theorem 2.1).

    ``step(X, Y)`` returns a :class:`StepInfo`: ``loss`` before the update, ``grad_norm``
    (weight decay included), ``extras``: ``lr``, ``momentum``, ``kl_scale`` (ν; fixed
    learning rate) or ``lr``, ``momentum`` from the quadratic model (``adaptive_lr``),
    ``damping`` (λ used), ``next_damping``, ``eig_retries``, ``eig_floored`` (at inverse
    updates), ``rho`` and ``model_decrease`` (at LM updates). ``exact=True`` selects
    :attr:`exact_preset` (Theorem 2.1's exact K-FAC step).

    Parameters
    ----------
    model : MLP or Sequential
    loss : str or Loss
    lr : float, default 0.1
    momentum : float in [0, 1), default 0
    damping : float >= 0, default 1e-3
    damping_mode : {"factored", "exact"}, default "factored" ("exact" for EKFAC)
    pi_correction : bool, default True
    fisher : {"exact", "mc", "empirical"}, default "mc"
    mc_samples : int in [1, 1024], default 1 (sampled targets per example for fisher="mc")
    ema_decay : float in [0, 1), default 0.95
    factor_update_period, inverse_update_period : int, defaults 1 and 5
    inverse_method : {"inv", "eigh"}, default "inv" for factored damping ("eigh" otherwise)
    eig_floor : float or None, default 0.0 (eigendecompositions only)
    kl_clip : float or None, default 1e-2 (None disables it; it is off by default with
        ``adaptive_lr=True``, where the quadratic model sets the step size)
    adaptive_lr : bool, default False
    adapt_damping : bool, default False
    lm_period : int, default 5
    min_damping, max_damping : float, defaults 1e-8 and 1e4
    weight_decay : float, default 0
    ekfac : bool, default False
    temporal : {"independent", "option1", "option2"}, default "independent"
        For layers used at every step of a sequence (recurrent layers and the dense layers
        after them): independence across time (Eqn. 4.7), or the temporally correlated
        Options 1 / 2 of Martens, Ba & Johnson (2018) (:mod:`geomkfac.nn.optim.temporal`),
        which also track the lag-one moments ``A_1``, ``G_1`` (EMA as the factors) and
        replace the factored block of those layers; other layers are unchanged. Their
        damping takes effect at inverse updates.
    seed : int, default 0 (Monte Carlo targets)

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([4, 6, 2], "tanh", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((32, 4)); Y = np.tanh(X[:, :2])
    >>> opt = KFAC(net, "mse", lr=0.5, damping=1e-2, fisher="exact")
    >>> losses = [opt.step(X, Y).loss for _ in range(20)]
    >>> losses[-1] < 0.5 * losses[0]
    True
    """

    name = "kfac"
    defaults = {
        "lr": 0.1,
        "momentum": 0.0,
        "damping": 1e-3,
        "damping_mode": None,
        "pi_correction": True,
        "fisher": "mc",
        "mc_samples": 1,
        "ema_decay": 0.95,
        "factor_update_period": 1,
        "inverse_update_period": 5,
        "inverse_method": None,
        "eig_floor": 0.0,
        "kl_clip": 1e-2,
        "adaptive_lr": False,
        "adapt_damping": False,
        "lm_period": 5,
        "min_damping": 1e-8,
        "max_damping": 1e4,
        "weight_decay": 0.0,
        "ekfac": False,
        "temporal": "independent",
        "seed": 0,
    }
    #: ``exact=True``: the exact K-FAC natural gradient of Theorem 2.1 — exact Fisher,
    #: undamped, no moving average, factors and inverses every step, no KL clipping, no
    #: eigenvalue floor (a degenerate block is refused), no damping adaptation
    exact_preset = {
        "fisher": "exact",
        "damping": 0.0,
        "damping_mode": "exact",
        "ema_decay": 0.0,
        "factor_update_period": 1,
        "inverse_update_period": 1,
        "kl_clip": None,
        "eig_floor": None,
        "adapt_damping": False,
        "ekfac": False,
    }

    def _validate(self, h):
        self._number(h, "momentum", 0, 1, hi_open=True)
        self._number(h, "damping", 0)
        ekfac = self._flag(h, "ekfac")
        if h["damping_mode"] is None:
            h["damping_mode"] = "exact" if ekfac else "factored"
        h["damping_mode"] = self._choice(h, "damping_mode", ("factored", "exact"))
        if ekfac and h["damping_mode"] != "exact":
            raise ConfigurationError(
                "EKFAC damps its eigenbasis scalings (S + λ); use damping_mode='exact'"
            )
        if h["inverse_method"] is None:
            h["inverse_method"] = "inv" if h["damping_mode"] == "factored" else "eigh"
        h["inverse_method"] = self._choice(h, "inverse_method", ("inv", "eigh"))
        if h["inverse_method"] == "inv" and h["damping_mode"] != "factored":
            raise ConfigurationError(
                "inverse_method='inv' applies to damping_mode='factored'; exact damping and "
                "EKFAC need eigendecompositions (inverse_method='eigh')"
            )
        self._flag(h, "pi_correction")
        h["fisher"] = self._choice(h, "fisher", FISHER_TYPES)
        self._integer(h, "mc_samples", hi=MAX_MC_SAMPLES, why=MC_SAMPLES_HINT)
        self._number(h, "ema_decay", 0, 1, hi_open=True)
        self._integer(h, "factor_update_period")
        self._integer(h, "inverse_update_period")
        if h["eig_floor"] is not None:
            self._number(h, "eig_floor", 0)
        if h["kl_clip"] is not None:
            self._number(h, "kl_clip", 0, lo_open=True)
        adaptive = self._flag(h, "adaptive_lr")
        if adaptive and h["kl_clip"] is not None:
            raise ConfigurationError(
                "kl_clip bounds a fixed-learning-rate step; with adaptive_lr=True the quadratic "
                "model already sets the step size — drop one of them"
            )
        h["temporal"] = self._choice(h, "temporal", TEMPORAL_OPTIONS)
        if h["temporal"] != "independent" and (ekfac or h["damping_mode"] != "factored"):
            raise ConfigurationError(
                f"temporal={h['temporal']!r} replaces the factored K-FAC block of layers used "
                "at every time step; it needs damping_mode='factored' and no EKFAC"
            )
        adapt = self._flag(h, "adapt_damping")
        self._integer(h, "lm_period")
        self._number(h, "min_damping", 0)
        self._number(h, "max_damping", 0, lo_open=True)
        if h["min_damping"] > h["max_damping"]:
            raise ConfigurationError("min_damping must not exceed max_damping")
        if adapt and h["damping"] == 0:
            raise ConfigurationError(
                "adapt_damping=True cannot move λ = 0 (the rule is multiplicative); "
                "start from a positive damping"
            )

    def _lr_is_used(self):
        if self.hyper["adaptive_lr"]:
            raise ConfigurationError(
                "with adaptive_lr=True the quadratic model chooses the step size each step and "
                "lr is not used; build K-FAC with adaptive_lr=False to schedule lr")

    def __init__(self, model, loss, **hyper):
        if hyper.get("adaptive_lr") and "kl_clip" not in hyper:
            hyper["kl_clip"] = None
        super().__init__(model, loss, **hyper)
        self.damping = float(self.hyper["damping"])
        self.A = None  # per-layer factors (EMA)
        self.G = None
        self.eigA = None  # per-layer Eig
        self.eigG = None
        self.pis = None  # π per layer, at the last inverse update
        self.invs = None  # [(A_inv, G_inv)] damped inverses (inverse_method="inv")
        self.S = None  # EKFAC scalings
        self.A1 = None  # lag-one moments of temporal layers (None entries elsewhere)
        self.G1 = None
        self.Ts = None  # the scale T of every layer at the last factor update
        self.tblocks = None  # TemporalBlock per layer (None entries elsewhere)
        self.prev_delta = None  # the previous update δ (momentum)
        self.eig_retries = 0
        self._inv_cache = None  # (key, [(A_inv, G_inv)]) for factored damping
        self._eig_version = 0
        self._stack_buffers = None  # scratch of _directions (no state)

    # ------------------------------------------------------------------ statistics
    def _new_factors(self, cache, f, Y, Dz):
        """Fresh ``[(T_i A_i, G_i)]`` and, for EKFAC, the backpropagated samples.

        A layer with ``T`` locations / steps has the block ``T · A ⊗ G`` (Eqns. 4.4, 4.7);
        the scale is carried by the first factor, ``T·A = (1/N) Σ_{n,t} ā āᵀ``, so that
        damping, π, the inverses and EKFAC treat every layer alike (π and the factored
        damping are those of ``(T A) ⊗ G``)."""
        h = self.hyper
        N = f.shape[0]
        if h["temporal"] != "independent":
            Dzs, w = backprop_samples(self.model, cache, f, Y, self.loss_fn, h["fisher"], self.rng,
                                      int(h["mc_samples"]))
            fac, lags = [], []
            for ab, D, T, temp in zip(cache.abar, Dzs, cache.T, cache.temporal):
                D2 = D.reshape(-1, D.shape[-1])
                fac.append(((ab.T @ ab) / N, (w / T) * (D2.T @ D2)))
                # E[ā_t ā_{t+1}ᵀ], E[Dz_t Dz_{t+1}ᵀ] over the N(T−1) pairs (w·N = 1/mc_samples)
                lags.append((lag_moment(ab, T), (w * N) * lag_moment(D, T, K_axis=True))
                            if temp else None)
            return fac, ("lags", lags)
        if h["ekfac"]:
            Dzs, w = backprop_samples(self.model, cache, f, Y, self.loss_fn, h["fisher"], self.rng,
                                      int(h["mc_samples"]))
            fac = []
            for ab, D, T in zip(cache.abar, Dzs, cache.T):
                D2 = D.reshape(-1, D.shape[-1])
                fac.append(((ab.T @ ab) / N, (w / T) * (D2.T @ D2)))
            return fac, (Dzs, w)
        if h["fisher"] == "empirical":  # reuse the gradient pass's Dz
            return [((ab.T @ ab) / N, (D.T @ D) / (N * T))
                    for ab, D, T in zip(cache.abar, Dz, cache.T)], None
        from geomkfac.nn.curvature import kfac_factors_from_cache

        fac = kfac_factors_from_cache(self.model, cache, f, Y, self.loss_fn, h["fisher"], self.rng,
                                      int(h["mc_samples"]))
        return [(A if blk.T == 1 else blk.T * A, G) for blk, (A, G) in zip(fac, fac)], None

    def _eigs(self, A, G):
        floor = self.hyper["eig_floor"]
        eA = [safe_eigh(a, floor, f"factor A of layer {i}") for i, a in enumerate(A, start=1)]
        eG = [safe_eigh(g, floor, f"factor G of layer {i}") for i, g in enumerate(G, start=1)]
        return eA, eG

    def _factored_inverses(self, damping):
        if self.invs is not None:
            return self.invs
        key = (damping, self._eig_version)
        if self._inv_cache is None or self._inv_cache[0] != key:
            inv = []
            r = np.sqrt(damping)
            for eA, eG, pi in zip(self.eigA, self.eigG, self.pis):
                inv.append((damped_inverse(eA, pi * r), damped_inverse(eG, r / pi)))
            self._inv_cache = (key, inv)
        return self._inv_cache[1]

    def _precondition(self, grads, damping, rows=None):
        """The preconditioned gradients. ``rows = (Dz, abar, N)``: the gradients are exactly
        ``(1/N) Dzᵀ Ā`` (no weight decay), so a factored block may be applied to the rows
        when that is cheaper (:func:`~geomkfac.nn.optim.kronecker.rows_are_cheaper`)."""
        mode = self.hyper["damping_mode"]
        if self.hyper["ekfac"]:
            return [precondition_eigenbasis(g, a, q, s, damping, f"the EKFAC block of layer {i}")
                    for i, (g, a, q, s) in enumerate(zip(grads, self.eigA, self.eigG, self.S), start=1)]
        if mode == "exact":
            return [precondition_exact(g, a, q, damping, f"the K-FAC block of layer {i}")
                    for i, (g, a, q) in enumerate(zip(grads, self.eigA, self.eigG), start=1)]
        tb = self.tblocks or [None] * len(grads)
        out = []
        for i, (g, (Ai, Gi), b) in enumerate(zip(grads, self._factored_inverses(damping), tb)):
            if b is not None:
                out.append(temporal_solve(g, b))
            elif rows is not None and rows_are_cheaper(len(rows[1][i]), *g.shape):
                out.append(precondition_factored_rows(rows[0][i], rows[1][i], rows[2], Ai, Gi))
            else:
                out.append(precondition_factored(g, Ai, Gi))
        return out

    # ------------------------------------------------------------------ the step
    def _step(self, X, Y):
        h = self.hyper
        t = self.step_count
        eta = float(h["weight_decay"])
        Wbars = self.model.get_Wbars() if eta else None  # a copy of θ: only weight decay reads it
        loss, grads, f, cache, Dz = self._forward_backward(X, Y)
        grads = self._add_weight_decay(grads, Wbars)

        # 1. factors (EMA; the first update sets them)
        A, G, S, samples = self.A, self.G, self.S, None
        factor_step = A is None or t % int(h["factor_update_period"]) == 0
        if factor_step:
            fac, samples = self._new_factors(cache, f, Y, Dz)
            for i, (a, g) in enumerate(fac, start=1):
                self._check(f"curvature factor A of layer {i}", a)
                self._check(f"curvature factor G of layer {i}", g)
            lags = samples[1] if samples is not None and samples[0] == "lags" else None
            first = A is None
            if first:
                A, G = [a for a, _ in fac], [g for _, g in fac]
            else:
                eps = float(h["ema_decay"])
                A = [_ema(a0, a, eps) for a0, (a, _) in zip(A, fac)]
                G = [_ema(g0, g, eps) for g0, (_, g) in zip(G, fac)]
            Ts = list(cache.T)
            if lags is not None:
                for i, lg in enumerate(lags, start=1):
                    if lg is not None:
                        self._check(f"lag-one moments of layer {i}", lg)
                if first or self.A1 is None:
                    A1, G1 = [None if lg is None else lg[0] for lg in lags], \
                        [None if lg is None else lg[1] for lg in lags]
                else:
                    A1 = [None if lg is None else (lg[0] if a0 is None else eps * a0 + (1 - eps) * lg[0])
                          for a0, lg in zip(self.A1, lags)]
                    G1 = [None if lg is None else (lg[1] if g0 is None else eps * g0 + (1 - eps) * lg[1])
                          for g0, lg in zip(self.G1, lags)]
        else:
            Ts = self.Ts
        if not factor_step or lags is None:
            A1, G1 = self.A1, self.G1

        # 2. eigendecompositions (no state is touched until they all succeed)
        eigA, eigG, pis, invs = self.eigA, self.eigG, self.pis, self.invs
        retried = floored = 0
        new_basis = (eigA is None and invs is None) or t % int(h["inverse_update_period"]) == 0
        if new_basis:
            pis = [pi_correction(a, g) if h["pi_correction"] else 1.0 for a, g in zip(A, G)]
            if h["inverse_method"] == "eigh":
                eigA, eigG = self._eigs(A, G)
                retried = sum(e.retried for e in eigA + eigG)
                floored = sum(e.floored for e in eigA + eigG)
            else:
                r = np.sqrt(self.damping + float(h["weight_decay"]))
                invs = []
                chol = use_cholesky(A + G)
                for i, (a, g, pi) in enumerate(zip(A, G, pis), start=1):
                    Ai, ra = safe_inverse(a, pi * r, f"factor A of layer {i}", chol)
                    Gi, rg = safe_inverse(g, r / pi, f"factor G of layer {i}", chol)
                    invs.append((Ai, Gi))
                    retried += ra + rg

        # temporally correlated blocks (Options 1, 2) of the layers used at every step
        tblocks = self.tblocks
        if new_basis and h["temporal"] != "independent":
            lam_t = self.damping + float(h["weight_decay"])
            tblocks = [None if a1 is None else
                       temporal_block(h["temporal"], a / T, g, a1, g1, T, lam_t, pi)
                       for a, g, a1, g1, T, pi in zip(A, G, A1 or [None] * len(A),
                                                      G1 or [None] * len(A), Ts, pis)]

        # EKFAC scalings in the (possibly new) eigenbasis
        if h["ekfac"]:
            if samples is not None:
                Dzs, w = samples
                S_new = [ekfac_scalings(D, ab, ea.Q, eg.Q, w)
                         for D, ab, ea, eg in zip(Dzs, cache.abar, eigA, eigG)]
                for i, s in enumerate(S_new, start=1):
                    self._check(f"EKFAC scalings of layer {i}", s)
                if S is None or new_basis:
                    S = S_new
                else:
                    eps = float(h["ema_decay"])
                    S = [eps * s0 + (1 - eps) * s for s0, s in zip(S, S_new)]
            elif new_basis:  # no fresh statistics: start from K-FAC's eigenvalues
                S = [np.outer(eg.e, ea.e) for ea, eg in zip(eigA, eigG)]

        # commit the curvature state (the model is still untouched)
        old = (self.A, self.G, self.eigA, self.eigG, self.pis, self.S, self.invs, self.A1,
               self.G1, self.Ts, self.tblocks)
        (self.A, self.G, self.eigA, self.eigG, self.pis, self.S, self.invs, self.A1, self.G1,
         self.Ts, self.tblocks) = (A, G, eigA, eigG, pis, S, invs, A1, G1, Ts, tblocks)
        self._eig_version += int(new_basis)
        try:
            lam = self.damping
            rows = None if eta else (Dz, cache.abar, f.shape[0])
            P = self._precondition(grads, lam + eta, rows)
            self._check("the preconditioned gradient", P)
            delta, extras, model_value = self._update(grads, P, cache, f, lam, eta)
            self._check("the update", delta)
        except Exception:
            (self.A, self.G, self.eigA, self.eigG, self.pis, self.S, self.invs, self.A1, self.G1,
             self.Ts, self.tblocks) = old
            raise
        if new_basis:
            self.eig_retries += int(retried)
            extras["eig_floored"] = int(floored)
        extras["eig_retries"] = self.eig_retries

        self.prev_delta = delta
        self._apply(Wbars, delta)

        # 5. Levenberg–Marquardt adaptation of λ
        if h["adapt_damping"] and (t + 1) % int(h["lm_period"]) == 0:
            if model_value is None:
                model_value = self._model_value(grads, delta, cache, f, lam + eta)
            with np.errstate(all="ignore"):
                h_new = float(self.loss_fn.value(self.model.forward(X), Y))
            reg_old = 0.0
            if eta:
                reg_old = 0.5 * eta * layer_dot(Wbars, Wbars)
                new = self.model.get_Wbars()
                h_new += 0.5 * eta * layer_dot(new, new)
            rho = reduction_ratio(h_new, loss + reg_old, model_value)
            self.damping = levenberg_marquardt(
                lam, rho, lm_omega(int(h["lm_period"])), float(h["min_damping"]),
                float(h["max_damping"]))
            extras["rho"] = rho
            extras["model_decrease"] = model_value
        extras["damping"] = lam
        extras["next_damping"] = self.damping
        return StepInfo(t, loss, self._grad_norm(grads), extras)

    def _model_value(self, grads, delta, cache, f, damping):
        """``M(δ) = ½ δᵀ(F + damping·I)δ + ∇hᵀδ`` with the exact GGN (its quadratic form by
        forward mode, :func:`~geomkfac.nn.optim.gvp.ggn_quadratic_form`)."""
        dFd = ggn_quadratic_form(self.model, cache, f, self.loss_fn, [d[None] for d in delta])[0, 0]
        return (0.5 * float(dFd) + 0.5 * damping * layer_dot(delta, delta)
                + layer_dot(grads, delta))

    def _directions(self, P, d0):
        """``[P_i; δ₀_i]`` stacked per layer (``[P_i]`` without a previous update), copied into
        buffers that are kept between steps: a fresh stack every step costs its page faults
        (on the deep autoencoder ~5× the copy itself)."""
        k = 1 if d0 is None else 2
        buf = self._stack_buffers
        if buf is None or len(buf) != len(P) or any(
                b.shape != (k,) + p.shape or b.dtype != p.dtype for b, p in zip(buf, P)):
            buf = self._stack_buffers = [np.empty((k,) + p.shape, dtype=p.dtype) for p in P]
        for i, b in enumerate(buf):
            b[0] = P[i]
            if k == 2:
                b[1] = d0[i]
        return buf

    def _update(self, grads, P, cache, f, lam, eta):
        h = self.hyper
        if h["adaptive_lr"]:
            # the candidate Δ = −P and the previous update δ₀, as the Gram matrix of (P, δ₀)
            # with the signs of Δ put back: no array for Δ itself
            has_prev = self.prev_delta is not None
            d0 = self.prev_delta
            V = self._directions(P, d0)  # (P, δ₀) stacked in buffers kept between steps
            Q = ggn_quadratic_form(self.model, cache, f, self.loss_fn, V)
            c = lam + eta
            q00 = float(Q[0, 0]) + c * layer_dot(P, P)
            q01 = -(float(Q[0, 1]) + c * layer_dot(P, d0)) if has_prev else 0.0
            q11 = float(Q[1, 1]) + c * layer_dot(d0, d0) if has_prev else 0.0
            b = [-layer_dot(grads, P), layer_dot(grads, d0) if has_prev else 0.0]
            alpha, mu, mval = solve_lr_momentum([[q00, q01], [q01, q11]], b, has_prev)
            delta = [np.multiply(p, -alpha) for p in P]  # α Δ
            if has_prev:
                for dl, v in zip(delta, V):  # + μ δ₀, scaled in the buffer's copy of δ₀
                    dl += np.multiply(v[1], mu, out=v[1])
            return delta, {"lr": alpha, "momentum": mu}, mval
        lr, mu = float(h["lr"]), float(h["momentum"])
        nu = 1.0
        if h["kl_clip"] is not None:
            vg = lr * lr * layer_dot(P, grads)
            if vg > float(h["kl_clip"]):
                nu = float(np.sqrt(float(h["kl_clip"]) / vg))
        delta = [-lr * nu * p for p in P]
        if mu > 0 and self.prev_delta is not None:
            delta = [d + mu * d0 for d, d0 in zip(delta, self.prev_delta)]
        return delta, {"lr": lr, "momentum": mu, "kl_scale": nu}, None

    # ------------------------------------------------------------------ state
    def _state(self):
        d = {"damping": float(self.damping), "eig_retries": int(self.eig_retries)}
        self._put_list(d, "A", self.A)
        self._put_list(d, "G", self.G)
        for key, eigs in (("eigA", self.eigA), ("eigG", self.eigG)):
            self._put_list(d, f"{key}.e", None if eigs is None else [e.e for e in eigs])
            self._put_list(d, f"{key}.Q", None if eigs is None else [e.Q for e in eigs])
        d["pis"] = np.array([] if self.pis is None else self.pis, dtype=np.float64)
        d["has_pis"] = self.pis is not None
        self._put_list(d, "S", self.S)
        self._put_list(d, "invA", None if self.invs is None else [a for a, _ in self.invs])
        self._put_list(d, "invG", None if self.invs is None else [g for _, g in self.invs])
        self._put_list(d, "prev_delta", self.prev_delta)
        empty = np.zeros((0, 0))
        for key in ("A1", "G1"):
            val = getattr(self, key)
            self._put_list(d, key, None if val is None else [empty if v is None else v for v in val])
        d["Ts"] = np.array([] if self.Ts is None else self.Ts, dtype=np.int64)
        d["has_Ts"] = self.Ts is not None
        d["tblocks.n"] = -1 if self.tblocks is None else len(self.tblocks)
        for i, b in enumerate(self.tblocks or []):
            d[f"tblocks.{i}.option"] = "" if b is None else b.option
            if b is not None:
                d[f"tblocks.{i}.T"] = b.T
                d[f"tblocks.{i}.names"] = ",".join(sorted(b.mats))
                for k, v in b.mats.items():
                    d[f"tblocks.{i}.{k}"] = np.array(v, copy=True)
        return d

    def _load_state(self, d):
        self.damping = float(d["damping"])
        self.eig_retries = int(d["eig_retries"])
        self.A = self._get_list(d, "A")
        self.G = self._get_list(d, "G")
        for key in ("eigA", "eigG"):
            es, Qs = self._get_list(d, f"{key}.e"), self._get_list(d, f"{key}.Q")
            setattr(self, key, None if es is None else [Eig(e, Q) for e, Q in zip(es, Qs)])
        self.pis = [float(p) for p in d["pis"]] if bool(d["has_pis"]) else None
        self.S = self._get_list(d, "S")
        ia, ig = self._get_list(d, "invA"), self._get_list(d, "invG")
        self.invs = None if ia is None else list(zip(ia, ig))
        self.prev_delta = self._get_list(d, "prev_delta")
        self._inv_cache = None
        if "A1.n" in d:  # states written before temporal K-FAC existed lack these entries
            for key in ("A1", "G1"):
                val = self._get_list(d, key)
                setattr(self, key, None if val is None else [None if v.size == 0 else v for v in val])
            self.Ts = [int(t) for t in d["Ts"]] if bool(d["has_Ts"]) else None
            n = int(d["tblocks.n"])
            blocks = None if n < 0 else []
            for i in range(max(n, 0)):
                opt = str(d[f"tblocks.{i}.option"])
                if not opt:
                    blocks.append(None)
                    continue
                names = str(d[f"tblocks.{i}.names"]).split(",")
                blocks.append(TemporalBlock(opt, int(d[f"tblocks.{i}.T"]),
                                            {k: np.array(d[f"tblocks.{i}.{k}"], copy=True) for k in names}))
            self.tblocks = blocks


class EKFAC(KFAC):
    """Eigenvalue-corrected K-FAC (George et al. 2018): :class:`KFAC` with ``ekfac=True``.

    The Kronecker eigenbasis ``Q_A, Q_G`` is recomputed every ``inverse_update_period``
    steps; the diagonal scalings ``S = E[(Q_Gᵀ Dz āᵀ Q_A)²]`` every ``factor_update_period``
    steps (EMA with ``ema_decay`` between basis changes); the step is
    ``Q_G [(Q_Gᵀ DW̄ Q_A) / (S + λ)] Q_Aᵀ``.
    """

    name = "ekfac"
    defaults = {k: v for k, v in KFAC.defaults.items() if k != "ekfac"}
    #: EKFAC's rescaled eigenbasis is not the K-FAC metric: no exact preset
    exact_preset = None

    def _validate(self, h):
        h["ekfac"] = True
        super()._validate(h)
