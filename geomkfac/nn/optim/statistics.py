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


def diagonal_fisher(Dz, abar, weight, T=1):
    """Diagonal of the layer Fisher in ``W̄`` layout (``out × (in+1)``):
    ``weight · Σ_{k,n} (Σ_t Dz_{knt} ā_{nt}ᵀ)²``. With ``T = 1`` the per-example gradient
    ``Dz āᵀ`` is rank one, so its square is ``Dz² (ā²)ᵀ`` and the sum is one GEMM; with
    ``T > 1`` (rows ``n·T + t``) the per-example gradients are formed by one batched GEMM.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Dz, ab = rng.standard_normal((1, 6, 2)), rng.standard_normal((6, 3))
    >>> g = np.einsum("nto,nti->noi", Dz[0].reshape(2, 3, 2), ab.reshape(2, 3, 3))
    >>> bool(np.allclose(diagonal_fisher(Dz, ab, 0.5, T=3), 0.5 * (g ** 2).sum(0)))
    True
    """
    if T == 1:
        return weight * (np.square(Dz).sum(axis=0).T @ np.square(abar))
    N = abar.shape[0] // T
    a3 = abar.reshape(N, T, abar.shape[-1])
    out = 0
    for D in Dz:  # the K stacked directions
        g = np.matmul(np.swapaxes(D.reshape(N, T, D.shape[-1]), 1, 2), a3)  # (N, out, in+1)
        out = out + np.square(g).sum(axis=0)
    return weight * out


def ekfac_scalings(Dz, abar, Q_A, Q_G, weight):
    """EKFAC scalings (George et al. 2018, Eqn. 9) in the Kronecker eigenbasis:
    ``S = E[(Q_Gᵀ Dz āᵀ Q_A)²] = weight · Σ_{k,n} (Q_Gᵀ Dz)² ((Q_Aᵀ ā)²)ᵀ``, shape
    ``out × (in+1)``. With ``S = e_G e_Aᵀ`` the EKFAC step equals K-FAC's.

    For a layer with ``T`` locations / steps the rows are the ``N·T`` pairs ``(n, t)`` and
    ``weight = 1/N``: the scalings of the block ``T·A ⊗ G`` under the same independence
    across locations / steps that K-FAC assumes (Eqns. 4.4, 4.7), so that with Kronecker
    statistics ``S = e_G (T e_A)ᵀ`` again."""
    pg = np.square(Dz @ Q_G).sum(axis=0)  # (N, out)
    pa = np.square(abar @ Q_A)  # (N, in+1)
    return weight * (pg.T @ pa)
