"""Backpropagated curvature statistics that the diagonal-Fisher and EKFAC optimizers need
beyond the Kronecker factors: per-example pre-activation gradients ``Dz`` for the chosen
Fisher type, and from them the diagonal of the Fisher and the EKFAC scalings.

Fisher types (paper-notes §1): ``"exact"`` backpropagates the ``K`` columns of a square root
``S`` of the output Fisher (``S Sᵀ = F_out``); ``"mc"`` backpropagates the gradients of
targets sampled from the model (``mc_samples`` per example, averaged); ``"empirical"``
backpropagates the data targets' gradients.
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError

__all__ = ["FISHER_TYPES", "backprop_samples", "diagonal_fisher", "ekfac_scalings"]

FISHER_TYPES = ("exact", "mc", "empirical")


def backprop_samples(model, cache, f, Y, loss, fisher, rng, mc_samples=1):
    """Per-example pre-activation gradients for the Fisher type ``fisher``.

    Returns
    -------
    Dz : list of ndarray
        One ``(K, N, out_i)`` array per layer (``K`` = number of output-Fisher columns
        for ``"exact"``, ``mc_samples`` for ``"mc"``, 1 for ``"empirical"``).
    weight : float
        The factor that turns sums over the ``K·N`` rows into the expectation:
        ``1/N`` (exact, empirical) or ``1/(N·mc_samples)`` (mc), so that
        ``G_i = weight · Σ_{k,n} Dz Dzᵀ`` (Eqn. 2.7).
    """
    N = f.shape[0]
    if fisher == "empirical":
        dFs = loss.grad(f, Y)[None]
        weight = 1.0 / N
    elif fisher == "mc":
        dFs = np.stack([loss.grad(f, loss.sample(f, rng)) for _ in range(mc_samples)])
        weight = 1.0 / (N * mc_samples)
    elif fisher == "exact":
        dFs = loss.fisher_sqrt_columns(f, 0, loss.fisher_rank_bound(f))
        weight = 1.0 / N
    else:
        raise ConfigurationError(f"fisher must be one of {', '.join(FISHER_TYPES)}, got {fisher!r}")
    return model.backward(cache, dFs), weight  # K directions stacked, (K, N, out_i)


def diagonal_fisher(Dz, abar, weight):
    """Diagonal of the layer Fisher in ``W̄`` layout (``out × (in+1)``):
    ``weight · Σ_{k,n} (Dz_{kn})² (ā_n²)ᵀ`` — the per-example gradient ``Dz āᵀ`` is rank one,
    so its square is ``Dz² (ā²)ᵀ`` and the sum is one GEMM."""
    return weight * (np.square(Dz).sum(axis=0).T @ np.square(abar))


def ekfac_scalings(Dz, abar, Q_A, Q_G, weight):
    """EKFAC scalings (George et al. 2018, Eqn. 9) in the Kronecker eigenbasis:
    ``S = E[(Q_Gᵀ Dz āᵀ Q_A)²] = weight · Σ_{k,n} (Q_Gᵀ Dz)² ((Q_Aᵀ ā)²)ᵀ``, shape
    ``out × (in+1)``. With ``S = e_G e_Aᵀ`` the EKFAC step equals K-FAC's."""
    pg = np.square(Dz @ Q_G).sum(axis=0)  # (N, out)
    pa = np.square(abar @ Q_A)  # (N, in+1)
    return weight * (pg.T @ pa)
