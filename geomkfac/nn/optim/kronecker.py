"""Kronecker-factored linear algebra for K-FAC and EKFAC, always in the factored form: the
per-layer operations are ``G⁻¹ V A⁻¹``-shaped products of ``out × out``, ``out × (in+1)``
and ``(in+1) × (in+1)`` matrices; ``A ⊗ G`` is never formed.

Identities used (paper-notes §1, column-stacking ``vec``):

- ``(A ⊗ G)⁻¹ vec(V) = vec(G⁻¹ V A⁻¹)``;
- with ``A = Q_A diag(e_A) Q_Aᵀ``, ``G = Q_G diag(e_G) Q_Gᵀ``, the eigenvalues of ``A ⊗ G``
  are ``e_A ⊗ e_G`` and
  ``(A ⊗ G + λI)⁻¹ vec(V) = vec(Q_G [(Q_Gᵀ V Q_A) / (e_G e_Aᵀ + λ)] Q_Aᵀ)`` (exact damping);
- factored Tikhonov damping (Martens & Grosse 2015, §6.3):
  ``(A + π√λ I) ⊗ (G + √λ/π I)`` with ``π = sqrt((tr A / dim A) / (tr G / dim G))``;
- EKFAC (George et al. 2018): ``vec(Q_G [(Q_Gᵀ V Q_A) / (S + λ)] Q_Aᵀ)`` with the
  re-estimated scalings ``S`` in place of ``e_G e_Aᵀ``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from geomkfac.errors import DegenerateMetricError

__all__ = [
    "Eig",
    "safe_eigh",
    "pi_correction",
    "precondition_exact",
    "precondition_factored",
    "precondition_factored_rows",
    "rows_are_cheaper",
    "precondition_eigenbasis",
    "check_nondegenerate",
    "damped_inverse",
    "safe_inverse",
    "use_cholesky",
]


@dataclass(frozen=True)
class Eig:
    """A symmetric eigendecomposition ``M = Q diag(e) Qᵀ`` (eigenvalues ascending).

    ``retried`` records whether the float64 fallback was needed; ``floored`` how many
    eigenvalues were raised to the floor.
    """

    e: np.ndarray
    Q: np.ndarray
    retried: bool = False
    floored: int = 0


def _eigh(M):
    """The eigensolver (a seam so tests can make the float32 attempt fail)."""
    return np.linalg.eigh(M)


def safe_eigh(M, eig_floor=0.0, name="factor") -> Eig:
    """Eigendecomposition of the symmetric part of ``M`` with an eigenvalue floor and a
    float64 retry.

    If the decomposition in ``M``'s dtype fails (``LinAlgError``) or yields NaN/inf, it is
    recomputed in float64 and cast back. Eigenvalues below ``eig_floor`` are raised to it
    (``eig_floor=None`` keeps them as they are — the exact, unfloored decomposition).

    >>> import numpy as np
    >>> eg = safe_eigh(np.array([[2.0, 0.0], [0.0, -1e-9]]), eig_floor=1e-6)
    >>> eg.e.tolist(), eg.floored
    ([1e-06, 2.0], 1)
    """
    M = np.asarray(M)
    dtype = M.dtype
    S = 0.5 * (M + M.T)
    retried = False
    try:
        e, Q = _eigh(S)
        ok = bool(np.all(np.isfinite(e)) and np.all(np.isfinite(Q)))
    except np.linalg.LinAlgError:
        ok = False
    if not ok:
        if dtype == np.float64:
            raise DegenerateMetricError(
                f"the eigendecomposition of {name} failed in float64; the factor is not a "
                "finite symmetric matrix — raise the damping or check the data"
            )
        retried = True
        try:
            e, Q = _eigh(S.astype(np.float64))
        except np.linalg.LinAlgError:
            raise DegenerateMetricError(
                f"the eigendecomposition of {name} failed in {dtype} and in float64; "
                "raise the damping or check the data"
            ) from None
        if not (np.all(np.isfinite(e)) and np.all(np.isfinite(Q))):
            raise DegenerateMetricError(f"the eigendecomposition of {name} is not finite")
        e, Q = e.astype(dtype), Q.astype(dtype)
    floored = 0
    if eig_floor is not None:
        floored = int(np.count_nonzero(e < eig_floor))
        e = np.maximum(e, dtype.type(eig_floor))
    return Eig(e, Q, retried, floored)


#: a network whose largest factor has at least this size inverts all its factors by
#: Cholesky through SciPy's LAPACK, smaller networks by NumPy's LU, unless the BLAS runs one
#: thread. Measured on the benchmarks' 2-core machine: Cholesky is 1.7–3.6× faster for
#: n ≈ 1000 but gains nothing for n ≲ 130 with two threads, and switching between SciPy's and
#: NumPy's BLAS thread pools is expensive there (the digits autoencoder's K-FAC step went from
#: 6.4 to 19.8 ms with Cholesky; with inverses every step, 34.7 against 63.0 ms; mixing the
#: two methods within one inverse update of the deep autoencoder doubled its cost). So the
#: choice is made once per network, not per factor (see :func:`use_cholesky`). With one
#: thread in every loaded BLAS there are no pools to switch, and Cholesky is faster at every
#: size (the same digits step with inverses every step, one core: 27.0 against 29.7 ms).
CHOLESKY_MIN_SIZE = 256


def use_cholesky(factors, blas_threads=None) -> bool:
    """Whether to invert these factors by Cholesky: their largest size is at least
    :data:`CHOLESKY_MIN_SIZE`, or every loaded BLAS library runs one thread.

    Parameters
    ----------
    factors : list of ndarray
    blas_threads : int, optional
        The largest thread count of the loaded BLAS libraries; by default read from them
        (:func:`geomkfac.threads.max_blas_threads`; where it cannot be read, more than one is
        assumed).

    >>> import numpy as np
    >>> small, large = [np.eye(65), np.eye(129)], [np.eye(30), np.eye(1001)]
    >>> use_cholesky(small, blas_threads=2), use_cholesky(large, blas_threads=2)
    (False, True)
    >>> use_cholesky(small, blas_threads=1)
    True
    """
    if max((len(F) for F in factors), default=0) >= CHOLESKY_MIN_SIZE:
        return True
    if blas_threads is None:
        from geomkfac.threads import max_blas_threads

        blas_threads = max_blas_threads()
    return blas_threads == 1


def _inv(M, cholesky=False):
    """Inverse of a symmetric positive-definite factor: by Cholesky (``potrf`` + ``potri``,
    ``n³`` FLOPs against LU's ``2n³``) when ``cholesky``, else by ``np.linalg.inv``, which
    is also the fallback when the Cholesky factorization fails (a matrix that is not
    positive definite within round-off). A seam so tests can make the float32 attempt fail.

    The Cholesky route reads only the upper triangle of ``M`` and returns an exactly
    symmetric matrix (its upper triangle mirrored). ``M`` is not modified (the fallback
    needs it whole).
    """
    if not cholesky:
        return np.linalg.inv(M)
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (M,))
    # LAPACK works on Fortran order: the transpose of a C-ordered symmetric matrix is itself,
    # so its lower triangle (as LAPACK sees the C-ordered buffer) is M's upper one
    c, info = potrf(M.T, lower=True, overwrite_a=False, clean=False)
    if info == 0:
        inv, info = potri(c, lower=True, overwrite_c=True)
        if info == 0:
            return _mirror_upper(inv.T)
    return np.linalg.inv(M)


def _mirror_upper(U):
    """The symmetric matrix whose upper triangle is ``U``'s (the lower one is overwritten), in
    one pass over blocks of rows: block ``i`` of the lower part is the transpose of a block
    of columns of the upper part."""
    n = U.shape[0]
    step = 64
    for i in range(step, n + step, step):
        lo = i - step
        hi = min(i, n)
        # rows lo:hi, columns 0:hi below the diagonal take the upper part's columns lo:hi
        block = U[:hi, lo:hi].T  # (hi−lo, hi): row r is column lo+r of the upper part
        rows = U[lo:hi, :hi]
        mask = np.tri(hi - lo, hi, k=lo - 1, dtype=bool)  # strictly below the diagonal
        np.copyto(rows, block, where=mask)
    return U


def safe_inverse(M, shift=0.0, name="factor", cholesky=False):
    """``(M + shift·I)⁻¹`` of a symmetric factor, with a float64 retry when the inversion
    fails or is not finite in ``M``'s dtype. Returns ``(inverse, retried)``; ``M`` itself is
    not modified.

    The LU route inverts ``(M + Mᵀ)/2`` and symmetrizes its result; the Cholesky route
    (``cholesky=True``) reads one triangle of ``M`` and its result is exactly symmetric, so
    neither symmetrization (each a pass that mixes row- and column-order) is needed there.

    >>> import numpy as np
    >>> inv, retried = safe_inverse(np.diag([2.0, 4.0]), shift=2.0)
    >>> inv.diagonal().tolist(), retried
    ([0.25, 0.1666...], False)
    """
    M = np.asarray(M)
    dtype = M.dtype
    attempts = [dtype] if dtype == np.float64 else [dtype, np.dtype(np.float64)]
    for k, dt in enumerate(attempts):
        S = np.array(M, dtype=dt, order="C") if cholesky else 0.5 * (M + M.T).astype(dt)
        S.flat[:: len(S) + 1] += dt.type(shift)  # + shift·I on the diagonal only
        try:
            with np.errstate(all="ignore"):
                inv = _inv(S, cholesky)
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(inv)):
            if not cholesky:
                inv = 0.5 * (inv + inv.T)
            return inv.astype(dtype, copy=False), k > 0
    raise DegenerateMetricError(
        f"the damped {name} is singular (inversion failed in {', '.join(map(str, attempts))}); "
        "use damping > 0 or damping_mode='exact' with an eig_floor"
    )


def pi_correction(A, G) -> float:
    """``π = sqrt((tr A / dim A) / (tr G / dim G))`` (Martens & Grosse 2015, Eqn. 6.3 ff.);
    1 when a trace is not positive.

    >>> import numpy as np
    >>> pi_correction(4 * np.eye(3), np.eye(2))
    2.0
    """
    ta = float(np.trace(A)) / A.shape[0]
    tg = float(np.trace(G)) / G.shape[0]
    if not (ta > 0 and tg > 0 and np.isfinite(ta) and np.isfinite(tg)):
        return 1.0
    return float(np.sqrt(ta / tg))


def check_nondegenerate(S, damping, name="the K-FAC block"):
    """Refuse an undamped inverse of a degenerate block.

    With ``damping == 0`` the scalings ``S`` (the block's eigenvalues) must all be clearly
    positive: an eigenvalue at or below ``max|S| · size · eps`` is round-off of a zero (a
    softmax output's ``G`` has rank C−1), and dividing by it would make the step's size in
    that direction an accident of round-off. Raises :class:`DegenerateMetricError` naming
    the rank, as the abstract pipeline's ``Metric.sharp`` does.

    >>> import numpy as np
    >>> check_nondegenerate(np.array([[1.0, 2.0]]), 0.0)
    >>> check_nondegenerate(np.array([[1.0, 1e-18]]), 0.0)
    Traceback (most recent call last):
    ...
    geomkfac.errors.DegenerateMetricError: the K-FAC block is degenerate: rank 1 of 2 ...
    """
    if damping != 0:
        return
    S = np.asarray(S)
    scale = float(np.max(np.abs(S))) if S.size else 0.0
    tol = scale * max(S.shape) * float(np.finfo(S.dtype).eps)
    small = S <= tol
    if np.any(small):
        raise DegenerateMetricError(
            f"{name} is degenerate: rank {S.size - int(np.count_nonzero(small))} of {S.size} "
            f"(smallest eigenvalue {float(np.min(S)):.3g}, tolerance {tol:.3g}); an undamped "
            "natural gradient is not defined — use damping > 0 or an eig_floor, or an output "
            "distribution whose Fisher is nondegenerate (Gaussian, Bernoulli)"
        )


def precondition_eigenbasis(V, eA: Eig, eG: Eig, S, damping, name="the K-FAC block"):
    """``Q_G [(Q_Gᵀ V Q_A) / (S + λ)] Q_Aᵀ`` — exact damping (``S = e_G e_Aᵀ``) or EKFAC.

    Undamped (``λ = 0``), a degenerate block raises :class:`DegenerateMetricError`
    (see :func:`check_nondegenerate`)."""
    check_nondegenerate(S, damping, name)
    P = eG.Q.T @ V @ eA.Q
    with np.errstate(divide="ignore", invalid="ignore"):  # callers check finiteness
        P = P / (S + damping)
    return eG.Q @ P @ eA.Q.T


def precondition_exact(V, eA: Eig, eG: Eig, damping, name="the K-FAC block"):
    """``(A ⊗ G + λI)⁻¹ vec(V)`` in matrix form (exact Tikhonov damping).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A = np.cov(rng.standard_normal((3, 9))); G = np.cov(rng.standard_normal((2, 9)))
    >>> V = rng.standard_normal((2, 3))
    >>> U = precondition_exact(V, safe_eigh(A, None), safe_eigh(G, None), 0.1)
    >>> ref = np.linalg.solve(np.kron(A, G) + 0.1 * np.eye(6), V.reshape(-1, order="F"))
    >>> bool(np.allclose(U.reshape(-1, order="F"), ref))
    True
    """
    return precondition_eigenbasis(V, eA, eG, np.outer(eG.e, eA.e), damping, name)


def damped_inverse(eig: Eig, shift):
    """``(M + shift·I)⁻¹ = Q diag(1/(e + shift)) Qᵀ``."""
    with np.errstate(divide="ignore", invalid="ignore"):  # callers check finiteness
        return (eig.Q / (eig.e + shift)) @ eig.Q.T


def precondition_factored(V, A_inv, G_inv):
    """``((A + π√λ I) ⊗ (G + √λ/π I))⁻¹ vec(V) = vec(G_d⁻¹ V A_d⁻¹)`` given the damped
    inverses (see :func:`damped_inverse`)."""
    return G_inv @ V @ A_inv


def rows_are_cheaper(R: int, out: int, d: int) -> bool:
    """Whether :func:`precondition_factored_rows` (``2R(out² + d² + out·d)`` FLOPs) is cheaper
    than :func:`precondition_factored` (``2(out² d + out d²)``) for a gradient made of
    ``R`` rows (a layer with ``N·T`` rows of width ``d`` and ``out`` outputs).

    >>> rows_are_cheaper(128, 1024, 3137), rows_are_cheaper(25088, 64, 801)
    (True, False)
    """
    return R * (out * out + d * d + out * d) < out * d * (out + d)


def precondition_factored_rows(Dz, abar, N, A_inv, G_inv):
    """:func:`precondition_factored` of the gradient ``V = (1/N) Dzᵀ Ā`` without forming it
    first: ``G_d⁻¹ V A_d⁻¹ = (1/N) (Dz G_d⁻¹)ᵀ (Ā A_d⁻¹)`` (the damped inverses are
    symmetric). When the ``R = N·T`` rows are fewer than the layer's widths (a wide dense
    layer at a small batch) this costs ``2R(out² + d² + out·d)`` instead of
    ``2(out² d + out d²)`` FLOPs.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Dz, ab = rng.standard_normal((3, 5)), rng.standard_normal((3, 7))
    >>> Ai, Gi = np.eye(7) + 0.1, np.eye(5) * 2.0
    >>> full = precondition_factored(Dz.T @ ab / 3, Ai, Gi)
    >>> bool(np.allclose(precondition_factored_rows(Dz, ab, 3, Ai, Gi), full))
    True
    """
    return ((Dz @ G_inv).T @ (abar @ A_inv)) / N
