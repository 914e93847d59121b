"""The local quadratic model of K-FAC and what is decided from it (Martens & Grosse 2015,
§6.4–§7): the reduction ratio ``ρ``, the Levenberg–Marquardt damping rule, and the learning
rate and momentum that minimize the model over ``δ = α Δ + μ δ₀``.

The model is ``M(δ) = ½ δᵀ (F + (λ + η) I) δ + ∇hᵀ δ`` with the exact GGN ``F`` (products
from :mod:`geomkfac.nn.optim.gvp`), the damping ``λ`` and the weight decay ``η``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reduction_ratio", "levenberg_marquardt", "lm_omega", "solve_lr_momentum"]


def reduction_ratio(h_new, h_old, model_decrease):
    """``ρ = (h(θ+δ) − h(θ)) / M(δ)`` (Eqn. 6.4 ff.); NaN when ``M(δ) = 0``; ``−inf`` when
    the new objective is not finite.

    >>> reduction_ratio(0.5, 1.0, -0.5)
    1.0
    """
    if not np.isfinite(h_new):
        return float("-inf")
    if model_decrease == 0 or not np.isfinite(model_decrease):
        return float("nan")
    return float((h_new - h_old) / model_decrease)


def lm_omega(period: int) -> float:
    """``ω₁ = (19/20)^T₁`` for an adaptation every ``T₁`` steps (M&G §6.5).

    >>> round(lm_omega(5), 6)
    0.773781
    """
    return (19.0 / 20.0) ** period


def levenberg_marquardt(damping, rho, omega, min_damping=0.0, max_damping=np.inf):
    """The Levenberg–Marquardt rule: ``λ ← ω₁ λ`` if ``ρ > 3/4``; ``λ ← λ / ω₁`` if
    ``ρ < 1/4``; unchanged otherwise (and for NaN ``ρ``); clipped to the bounds.

    >>> levenberg_marquardt(1.0, 0.9, 0.5), levenberg_marquardt(1.0, 0.1, 0.5)
    (0.5, 2.0)
    """
    if rho > 0.75:
        damping = damping * omega
    elif rho < 0.25:
        damping = damping / omega
    return float(min(max(damping, min_damping), max_damping))


def solve_lr_momentum(quad, lin, has_prev):
    """Minimize ``M(α Δ + μ δ₀) = ½ [α μ] Q [α μ]ᵀ + [α μ] b`` (M&G §7).

    Parameters
    ----------
    quad : (2, 2) array
        ``Q = [[ΔᵀCΔ, ΔᵀCδ₀], [δ₀ᵀCΔ, δ₀ᵀCδ₀]]`` with ``C = F + (λ+η)I``.
    lin : (2,) array
        ``b = [∇hᵀΔ, ∇hᵀδ₀]``.
    has_prev : bool
        Whether a previous update ``δ₀`` exists; if not (or the 2×2 system is singular),
        ``μ = 0`` and ``α = −∇hᵀΔ / ΔᵀCΔ``.

    Returns
    -------
    alpha, mu, model_value
        ``model_value = M(α Δ + μ δ₀) = ½ [α μ] b`` at the minimizer.

    >>> solve_lr_momentum([[2.0, 0.0], [0.0, 1.0]], [-4.0, -1.0], True)
    (2.0, 1.0, -4.5)
    """
    Q = np.asarray(quad, dtype=np.float64)
    b = np.asarray(lin, dtype=np.float64)
    if has_prev:
        det = Q[0, 0] * Q[1, 1] - Q[0, 1] * Q[1, 0]
        scale = abs(Q[0, 0] * Q[1, 1]) + 1e-300
        if np.isfinite(det) and abs(det) > 1e-12 * scale:
            alpha, mu = np.linalg.solve(Q, -b)
            return float(alpha), float(mu), float(0.5 * (alpha * b[0] + mu * b[1]))
    if Q[0, 0] <= 0:
        return 0.0, 0.0, 0.0
    alpha = -b[0] / Q[0, 0]
    return float(alpha), 0.0, float(0.5 * alpha * b[0])
