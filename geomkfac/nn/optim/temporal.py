"""Temporally correlated Kronecker-factored curvature for layers shared across time steps
(Martens, Ba & Johnson 2018, "Kronecker-factored curvature approximations for recurrent
neural networks", §3.4–3.5): their Options 1 and 2, beyond the independence across time of
the paper's Eqn. 4.7.

Model. The per-example gradient of a layer used at steps ``t = 1…T`` is ``Σ_t w_t`` with
``w_t = ā_t ⊗ Dz_t``. Its Fisher block is ``F_T = Σ_{t,s} E[w_t w_sᵀ]``. The ``w_t`` are
modelled as a stationary linear Gaussian chain ``w_{t+1} = Ψ w_t + ε_t``, so that with
``V_0 = E[w_t w_tᵀ]`` and ``V_1 = E[w_t w_{t+1}ᵀ]``: ``Ψ = V_1ᵀ V_0⁻¹``,
``V_d = V_0 (Ψᵀ)^d`` and ``V_{−d} = V_dᵀ`` (d ≥ 0), and

    F_T = Σ_{d=−(T−1)}^{T−1} (T − |d|) V_d.

Kronecker statistics: ``V_0 ≈ A_0 ⊗ G_0`` and ``V_1 ≈ A_1 ⊗ G_1`` with
``A_0 = E[ā_t ā_tᵀ]``, ``G_0 = E[Dz_t Dz_tᵀ]`` (the K-FAC factors, normalized by ``N·T``) and
the lag-one moments ``A_1 = E[ā_t ā_{t+1}ᵀ]``, ``G_1 = E[Dz_t Dz_{t+1}ᵀ]`` (averaged over the
``N·(T−1)`` pairs). In whitened coordinates ``Ψ̂ = V_0^{−1/2} V_1ᵀ V_0^{−1/2} = Ψ̂_A ⊗ Ψ̂_G``
with ``Ψ̂_A = A_0^{−1/2} A_1ᵀ A_0^{−1/2}`` (likewise G):

- **Option 1** assumes ``V_1`` symmetric (``A_1``, ``G_1`` replaced by their symmetric parts),
  so ``Ψ̂`` is symmetric with eigenvalues ``ψ_A ⊗ ψ_G`` and
  ``F_T = V_0^{1/2} U ζ_T(Ψ̂) Uᵀ V_0^{1/2}``, ``ζ_T(x) = Σ_{|d|<T} (T − |d|) x^{|d|}
  = (T(1 − x²) − 2x(1 − x^T)) / (1 − x)²``;
- **Option 2** lets ``T → ∞`` in the weights (``T − |d| ≈ T``): ``F ≈ T Σ_{d∈ℤ} V_d =
  T V_0^{1/2} (I − Ψ̂)⁻¹ (I − Ψ̂ Ψ̂ᵀ) (I − Ψ̂ᵀ)⁻¹ V_0^{1/2}``, inverted with the
  eigendecompositions of ``Ψ̂_A Ψ̂_Aᵀ`` and ``Ψ̂_G Ψ̂_Gᵀ``.

With ``Ψ̂ = 0`` both are ``T · A_0 ⊗ G_0``, the independence approximation. Damping is the
factored one of that limit: ``A_0 + (π√λ/T) I`` and ``G_0 + (√λ/π) I`` with π of
``(T A_0, G_0)``, so that with zero lag moments the options reproduce factored K-FAC
exactly. For stability the whitened correlations are clipped: ``|ψ| ≤ MAX_CORR`` (Option 1)
and ``μ ≤ MAX_CORR²`` for the eigenvalues of ``Ψ̂ Ψ̂ᵀ`` (Option 2).

All operations are on the ``out × out`` and ``(in+1) × (in+1)`` factors; the Kronecker
product is never formed.

>>> import numpy as np
>>> bool(np.isclose(zeta(0.3, 4), 4 + 2 * (3 * 0.3 + 2 * 0.09 + 0.027)))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geomkfac.errors import DegenerateMetricError

__all__ = ["TEMPORAL_OPTIONS", "MAX_CORR", "zeta", "lag_moment", "TemporalBlock",
           "temporal_block", "temporal_solve"]

#: the choices of ``KFAC(temporal=...)``
TEMPORAL_OPTIONS = ("independent", "option1", "option2")

#: bound on the whitened temporal correlations (keeps the chain stationary)
MAX_CORR = 0.99


def zeta(x, T: int):
    """``ζ_T(x) = Σ_{d=−(T−1)}^{T−1} (T − |d|) x^{|d|}`` in closed form (``ζ_T(0) = T``)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = (T * (1 - x * x) - 2 * x * (1 - x ** T)) / (1 - x) ** 2
    return np.where(np.abs(1 - x) < 1e-12, float(T * T), val)


def lag_moment(rows, T: int, K_axis: bool = False):
    """``(1/(N (T−1))) Σ_n Σ_{t<T} r_{n,t} r_{n,t+1}ᵀ`` from example-major rows ``(…, N·T, d)``
    (summed over a leading axis of stacked directions when ``K_axis``)."""
    d = rows.shape[-1]
    R = rows.reshape(rows.shape[:-2] + (-1, T, d))
    if not K_axis:
        R = R[None]
    lo = R[:, :, :-1].reshape(-1, d)
    hi = R[:, :, 1:].reshape(-1, d)
    return (lo.T @ hi) / (R.shape[1] * (T - 1))


def _inv_sqrt(M, shift, name):
    e, Q = np.linalg.eigh(0.5 * (M + M.T) + shift * np.eye(len(M)))
    if not np.all(e > 0):
        raise DegenerateMetricError(
            f"the damped factor {name} is not positive definite (smallest eigenvalue {e.min():.3g}); "
            "temporal K-FAC whitens with it: use damping > 0"
        )
    return (Q / np.sqrt(e)) @ Q.T


@dataclass(frozen=True)
class TemporalBlock:
    """What the solve of one temporally correlated block needs (see the module docstring).

    ``option`` is ``"option1"`` or ``"option2"``; ``mats`` the named matrices; ``T`` the
    number of steps."""

    option: str
    T: int
    mats: dict


def temporal_block(option, A0, G0, A1, G1, T, damping=0.0, pi=1.0) -> TemporalBlock:
    """Precompute the solve of the Option 1 / Option 2 block for factors ``A_0, G_0``
    (normalized by ``N·T``), lag moments ``A_1, G_1``, ``T`` steps and damping ``λ``
    (``A_0 + (π√λ/T) I``, ``G_0 + (√λ/π) I``)."""
    r = np.sqrt(float(damping))
    dt = A0.dtype
    A0, G0, A1, G1 = (np.asarray(M, dtype=np.float64) for M in (A0, G0, A1, G1))
    Ah = _inv_sqrt(A0, pi * r / T, "A_0")
    Gh = _inv_sqrt(G0, r / pi, "G_0")
    if option == "option1":
        PA = Ah @ (0.5 * (A1 + A1.T)) @ Ah
        PG = Gh @ (0.5 * (G1 + G1.T)) @ Gh
        psiA, UA = np.linalg.eigh(PA)
        psiG, UG = np.linalg.eigh(PG)
        Z = np.clip(np.outer(psiG, psiA), -MAX_CORR, MAX_CORR)
        mats = {"LA": Ah @ UA, "LG": Gh @ UG, "inv_zeta": 1.0 / zeta(Z, T)}
    elif option == "option2":
        PA = Ah @ A1.T @ Ah
        PG = Gh @ G1.T @ Gh
        muA, EA = np.linalg.eigh(PA @ PA.T)
        muG, EG = np.linalg.eigh(PG @ PG.T)
        mu = np.clip(np.outer(np.maximum(muG, 0), np.maximum(muA, 0)), 0, MAX_CORR ** 2)
        mats = {"Ah": Ah, "Gh": Gh, "PA": PA, "PG": PG, "EA": EA, "EG": EG,
                "inv_mu": 1.0 / (1.0 - mu)}
    else:
        raise ValueError(f"unknown temporal option {option!r}")
    return TemporalBlock(option, int(T), {k: v.astype(dt) for k, v in mats.items()})


def temporal_solve(V, blk: TemporalBlock):
    """``F_T⁻¹ vec(V)`` in matrix form (``V`` is ``out × (in+1)``, column-stacked).

    Option 1: ``L_G [(L_Gᵀ V L_A) / ζ_T(ψ_G ψ_Aᵀ)] L_Aᵀ`` with ``L = C_0^{−1/2} U``.
    Option 2: ``Z = Ĝ V Â``; ``Z ← Z − Ψ̂_G Z Ψ̂_Aᵀ``; ``Z ← E_G[(E_Gᵀ Z E_A)/(1 − μ_G μ_Aᵀ)]E_Aᵀ``;
    ``Z ← Z − Ψ̂_Gᵀ Z Ψ̂_A``; result ``Ĝ Z Â / T`` (``Â = A_0^{−1/2}``, ``Ĝ = G_0^{−1/2}``).
    """
    m = blk.mats
    if blk.option == "option1":
        return m["LG"] @ ((m["LG"].T @ V @ m["LA"]) * m["inv_zeta"]) @ m["LA"].T
    Z = m["Gh"] @ V @ m["Ah"]
    Z = Z - m["PG"] @ Z @ m["PA"].T
    Z = m["EG"] @ ((m["EG"].T @ Z @ m["EA"]) * m["inv_mu"]) @ m["EA"].T
    Z = Z - m["PG"].T @ Z @ m["PA"]
    return (m["Gh"] @ Z @ m["Ah"]) / blk.T
