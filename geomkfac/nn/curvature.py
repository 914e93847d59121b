"""Gradients and curvature of a model (an :class:`~geomkfac.nn.model.MLP` or a
:class:`~geomkfac.nn.layers.Sequential` of dense, convolutional, pooling and recurrent
layers): the loss gradient, the K-FAC factors (Eqns. 2.7, 4.4, 4.7), and dense GGN /
empirical Fisher / per-example gradients / Jacobians for small nets.

Only the parameter blocks are seen, never the layer kinds: per parametrized layer the rows
``ā`` (``N·T`` of them, example-major), the backpropagated ``Dz`` rows and the scale ``T``
(locations of a convolution, steps of a recurrent layer, 1 for a dense layer on vectors).
Then ``A = (1/(N T)) Σ_{n,t} ā āᵀ``, ``G = (1/(N T)) Σ_{n,t} Dz Dzᵀ`` and the K-FAC block
is ``T · A ⊗ G`` (:class:`KroneckerBlock`). For sequence outputs ``(N, T, C)`` the loss is
summed over steps (:class:`~geomkfac.nn.losses.StepwiseLoss`). The MLP case below is
``T = 1``.

Conventions (paper-notes §1): θ = ``[vec(W̄_1); …; vec(W̄_L)]`` with column-stacking
``vec``; the objective is the mean of the per-example loss; ``Dz`` is the per-example
gradient (not divided by N). The per-example gradient of layer ``i`` is
``vec(Dz āᵀ) = ā ⊗ Dz``, so the K-FAC block is ``A ⊗ G`` with

- ``A = (1/N) Σ_n ā_n ā_nᵀ`` ((in+1)×(in+1)),
- ``G = (1/N) Σ_n Dz_n Dz_nᵀ`` (out×out), where the ``Dz`` come from

  * ``"exact"``: backpropagating each column ``s_k`` of a square root ``S`` of the output
    Fisher (``S Sᵀ = F_out``), summed over the K columns — so ``G = (1/N) Σ_n J_nᵀ F_out J_n``
    restricted to the layer's pre-activations (the "type-2" factor);
  * ``"mc"``: the gradient at targets sampled from the model's predictive distribution,
    averaged over ``mc_samples`` draws per example;
  * ``"empirical"``: the gradient at the data targets.

All K directions are backpropagated at once as a ``(K, N, C)`` batch (in chunks that bound
the memory), never in a loop over examples.

>>> import numpy as np
>>> from geomkfac.nn import MLP, get_loss, kfac_factors
>>> net = MLP([3, 4, 2], "tanh", seed=0)
>>> X = np.random.default_rng(0).standard_normal((10, 3))
>>> (A0, G0), (A1, G1) = kfac_factors(net, X, None, get_loss("mse"))
>>> A0.shape, G0.shape, A1.shape, G1.shape
((4, 4), (4, 4), (5, 5), (2, 2))
>>> bool(np.allclose(G1, np.eye(2)))  # identity last layer, squared error: G_L = I
True
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError, DataError, DimensionError, NonFiniteError
from geomkfac.nn.layers.base import rows_product
from geomkfac.nn.losses import get_loss, loss_for_model
from geomkfac.nn.model import MLP, Cache

__all__ = [
    "FISHER_TYPES",
    "KroneckerBlock",
    "loss_and_grad",
    "layer_grads",
    "flatten_layer_grads",
    "activation_factors",
    "kfac_factors",
    "kfac_factors_from_cache",
    "per_example_grads",
    "empirical_fisher",
    "ggn",
    "jacobian",
    "kfac_matrix",
    "kfac_solve",
]

#: the Fisher types of :func:`kfac_factors`
FISHER_TYPES = ("exact", "mc", "empirical")

#: aliases accepted for the Fisher type
_FISHER_ALIASES = {
    "exact": "exact",
    "type2": "exact",
    "type-2": "exact",
    "true": "exact",
    "mc": "mc",
    "sampled": "mc",
    "empirical": "empirical",
    "emp": "empirical",
}

#: upper bound on the entries of one stacked backward pass (K·N·width), to bound memory
_CHUNK_ELEMENTS = 1 << 24


class KroneckerBlock(tuple):
    """The K-FAC block of one parametrized layer, ``T · kron(A, G)`` (Eqns. 2.7, 4.4, 4.7).

    A pair ``(A, G)`` (so ``for A, G in factors`` unpacks it) with the layer's scale ``T``
    (number of locations / steps; 1 for a dense layer on vectors) as the attribute ``.T``.
    ``A = (1/(N T)) Σ_{n,t} ā āᵀ`` and ``G = (1/(N T)) Σ_{n,t} Dz Dzᵀ``.

    >>> import numpy as np
    >>> blk = KroneckerBlock(np.eye(2), np.ones((1, 1)), T=4)
    >>> A, G = blk
    >>> blk.T, A.shape
    (4, (2, 2))
    """

    def __new__(cls, A, G, T=1):
        self = super().__new__(cls, (A, G))
        self.T = int(T)
        return self

    def __getnewargs__(self):
        return (self[0], self[1], self.T)


def _scale(block) -> int:
    return getattr(block, "T", 1)


def _fisher_type(fisher: str) -> str:
    key = str(fisher).strip().lower()
    if key not in _FISHER_ALIASES:
        raise ConfigurationError(
            f"unknown Fisher type {fisher!r}; choose one of: {', '.join(FISHER_TYPES)}"
        )
    return _FISHER_ALIASES[key]


def _forward(model: MLP, X):
    """``model.forward_cache(X)`` for the averaging functions: an empty batch has no mean."""
    f, cache = model.forward_cache(X)
    if f.shape[0] == 0:
        raise DataError("got an empty batch (N = 0): the mean over examples is undefined")
    return f, cache


def _prepare(model: MLP, X, Y, loss, need_targets=True):
    loss = loss_for_model(model, loss)
    f, cache = _forward(model, X)
    if need_targets:
        Y = loss.check_targets(Y, f.shape[-1], f.shape[0])
    return loss, f, cache, Y


def layer_grads(model: MLP, cache: Cache, Dz_list, N: int | None = None) -> list:
    """Per-layer gradients ``DW̄_i = (1/N) Dz_iᵀ ā_i`` (shape ``(out_i, in_i + 1)``).

    Parameters
    ----------
    model : MLP or Sequential
    cache : Cache
        From ``model.forward_cache``.
    Dz_list : list of ndarray (N, out_i)
        Per-example ``Dz`` from ``model.backward``.
    N : int, optional
        The divisor (default: the batch size).
    """
    N = cache.N if N is None else N
    return [rows_product(Dz, abar) / N for Dz, abar in zip(Dz_list, cache.abar)]


def flatten_layer_grads(mats) -> np.ndarray:
    """Stack per-layer ``(out, in+1)`` matrices into one vector in θ order (column-stacking)."""
    return np.concatenate([M.reshape(-1, order="F") for M in mats])


def loss_and_grad(model: MLP, X, Y, loss):
    """The mean loss and its gradient in θ order.

    Returns
    -------
    loss_value : scalar of the model dtype
    grad : ndarray, shape (num_params,)

    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([2, 2], "identity", seed=0)
    >>> X, Y = np.eye(2), np.zeros((2, 2))
    >>> val, g = loss_and_grad(net, X, Y, "mse")
    >>> g.shape
    (6,)
    """
    loss, f, cache, Y = _prepare(model, X, Y, loss)
    value = loss.value(f, Y)
    Dz = model.backward(cache, loss.grad(f, Y))
    return value, flatten_layer_grads(layer_grads(model, cache, Dz))


def activation_factors(cache: Cache) -> list:
    """``A_i = (1/(N T_i)) Σ_{n,t} ā āᵀ`` for every layer (Eqn. 2.7 / 4.4 / 4.7, first
    factor)."""
    N = cache.N
    out = [abar.T @ abar for abar in cache.abar]
    for a, T in zip(out, cache.T):  # fresh arrays: scaled in place
        a /= N * T
    return out


def _chunks(K: int, N: int, width: int):
    step = max(1, _CHUNK_ELEMENTS // max(1, N * width))
    for k0 in range(0, K, step):
        yield k0, min(K, k0 + step)


def _gram_of_backprop(model: MLP, cache: Cache, directions, K: int) -> list:
    """``Σ_{k,n} Dz_{k,n} Dz_{k,n}ᵀ`` per layer, the ``Dz`` backpropagated from output
    directions given by ``directions(k0, k1) -> (k1-k0, N, C)``; processed in chunks."""
    N = cache.N
    width = cache.width
    acc = [np.zeros((l.out_dim, l.out_dim), dtype=model.dtype) for l in model.param_layers]
    for k0, k1 in _chunks(K, N, width):
        Dz = model.backward(cache, directions(k0, k1))
        for i, D in enumerate(Dz):
            D2 = D.reshape(-1, D.shape[-1])
            acc[i] += D2.T @ D2
    return acc


def kfac_factors_from_cache(
    model: MLP,
    cache: Cache,
    f,
    Y,
    loss,
    fisher: str = "exact",
    rng: np.random.Generator | None = None,
    mc_samples: int = 1,
) -> list:
    """K-FAC factors ``[(A_i, G_i)]`` from an existing forward pass (Eqn. 2.7).

    Parameters
    ----------
    model : MLP or Sequential
    cache : Cache
        From ``f, cache = model.forward_cache(X)``.
    f : ndarray (N, C)
        The network output of that pass.
    Y : array_like or None
        Data targets (needed only for ``fisher="empirical"``).
    loss : str or Loss
    fisher : {"exact", "mc", "empirical"}
    rng : numpy.random.Generator, optional
        Source of the Monte Carlo targets (``fisher="mc"``); default ``default_rng(0)``.
    mc_samples : int
        Number of sampled targets per example for ``"mc"`` (G is their average).
    """
    loss = loss_for_model(model, loss)
    fisher = _fisher_type(fisher)
    N = cache.N
    A = activation_factors(cache)
    if fisher == "exact":
        K = loss.fisher_rank_bound(f)
        sums = _gram_of_backprop(model, cache, lambda k0, k1: loss.fisher_sqrt_columns(f, k0, k1), K)
        G = sums  # fresh accumulators: scaled in place
        for S, T in zip(G, cache.T):
            S /= N * T
    elif fisher == "mc":
        mc_samples = int(mc_samples)
        if mc_samples < 1:
            raise ConfigurationError(f"mc_samples must be a positive integer, got {mc_samples}")
        if rng is None:
            rng = np.random.default_rng(0)
        # one draw per sample; the backward passes of all draws are stacked
        grads = np.stack([loss.grad(f, loss.sample(f, rng)) for _ in range(mc_samples)])
        sums = _gram_of_backprop(model, cache, lambda k0, k1: grads[k0:k1], mc_samples)
        G = sums
        for S, T in zip(G, cache.T):
            S /= N * T * mc_samples
    else:
        Y = loss.check_targets(Y, f.shape[-1], N)
        Dz = model.backward(cache, loss.grad(f, Y))
        G = [(D.T @ D) / (N * T) for D, T in zip(Dz, cache.T)]
    return [KroneckerBlock(a, g, T) for a, g, T in zip(A, G, cache.T)]


def kfac_factors(model: MLP, X, Y, loss, fisher: str = "exact", mc_samples: int = 1, seed=0) -> list:
    """K-FAC factors ``[(A_i, G_i)]`` per parametrized layer, as :class:`KroneckerBlock` s
    with the layer's scale ``.T``; the block of layer i is ``T_i · kron(A_i, G_i)``
    (``A``, ``G`` normalized by ``N·T_i``; Eqns. 2.7, 4.4, 4.7).

    Parameters
    ----------
    model : MLP or Sequential
    X : array_like (N, ...)
        Inputs: ``(N, d_0)`` for an MLP, images ``(N, C, H, W)`` or sequences ``(N, T, d)``
        for a Sequential.
    Y : array_like or None
        Data targets; used (and required) only by ``fisher="empirical"``.
    loss : str or Loss
    fisher : {"exact", "mc", "empirical"}
        See the module docstring.
    mc_samples : int
        Sampled targets per example for ``"mc"``.
    seed : int or numpy.random.Generator
        Seed of the Monte Carlo targets.

    Examples
    --------
    One linear layer with squared error: ``kron(A, G)`` is the exact GGN.

    >>> import numpy as np
    >>> from geomkfac.nn import MLP
    >>> net = MLP([3, 2], "identity", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((6, 3))
    >>> [(A, G)] = kfac_factors(net, X, None, "mse")
    >>> bool(np.allclose(np.kron(A, G), ggn(net, X, None, "mse")))
    True
    """
    loss = loss_for_model(model, loss)
    fisher = _fisher_type(fisher)
    f, cache = _forward(model, X)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    factors = kfac_factors_from_cache(model, cache, f, Y, loss, fisher, rng, mc_samples)
    for i, (A, G) in enumerate(factors, start=1):
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(G))):
            raise NonFiniteError(
                f"the K-FAC factors of layer {i} are not finite (NaN or inf): the inputs or the "
                "weights overflow; scale the data or check the model"
            )
    return factors


def _per_example_from_Dz(cache: Cache, Dz_list) -> np.ndarray:
    """Per-example gradients ``ā ⊗ Dz`` in θ order: ``(..., N, P)`` from ``Dz`` ``(..., N, out)``."""
    blocks = []
    N = cache.N
    for D, abar, T in zip(Dz_list, cache.abar, cache.T):
        # vec(Σ_t Dz_t ā_tᵀ) index = col * out + row, col over ā, row over Dz
        a3 = abar.reshape(N, T, abar.shape[-1])
        D3 = D.reshape(D.shape[:-2] + (N, T, D.shape[-1]))
        B = np.einsum("nti,...nto->...nio", a3, D3)
        blocks.append(B.reshape(B.shape[:-2] + (-1,)))
    return np.concatenate(blocks, axis=-1)


def per_example_grads(model: MLP, X, Y, loss) -> np.ndarray:
    """Gradients of the per-example losses ``∇_θ ℓ_n`` (not divided by N): ``(N, P)``.

    Their mean is the gradient of :func:`loss_and_grad`.
    """
    loss, f, cache, Y = _prepare(model, X, Y, loss)
    Dz = model.backward(cache, loss.grad(f, Y))
    return _per_example_from_Dz(cache, Dz)


def empirical_fisher(model: MLP, X, Y, loss) -> np.ndarray:
    """Dense empirical Fisher ``(1/N) Σ_n ∇ℓ_n ∇ℓ_nᵀ`` (P×P, θ order); small nets only."""
    g = per_example_grads(model, X, Y, loss)
    return (g.T @ g) / g.shape[0]


def jacobian(model: MLP, X) -> np.ndarray:
    """Per-example Jacobians ``J_n = ∂f_n/∂θ``: shape ``(N, C, P)``; small nets only."""
    f, cache = model.forward_cache(X)
    N, C = f.shape[0], int(np.prod(f.shape[1:]))
    E = np.broadcast_to(np.eye(C, dtype=model.dtype)[:, None, :], (C, N, C))
    Dz = model.backward(cache, E.reshape((C,) + f.shape))
    J = _per_example_from_Dz(cache, Dz)  # (C, N, P)
    return np.ascontiguousarray(np.swapaxes(J, 0, 1))


def ggn(model: MLP, X, Y, loss) -> np.ndarray:
    """Dense generalized Gauss-Newton ``(1/N) Σ_n J_nᵀ H_n J_n`` (P×P, θ order).

    ``H_n`` is the Hessian of the loss in the network output, which for these losses is the
    output Fisher (independent of the targets, so ``Y`` may be None): the GGN equals the
    Fisher (Example 3.3). Computed as ``(1/N) Σ_{n,k} (J_nᵀ s_k)(J_nᵀ s_k)ᵀ`` with the
    columns ``s_k`` of the output Fisher's square root; small nets only.
    """
    loss = loss_for_model(model, loss)
    f, cache = _forward(model, X)
    N = f.shape[0]
    K = loss.fisher_rank_bound(f)
    Dz = model.backward(cache, loss.fisher_sqrt_columns(f, 0, K))
    B = _per_example_from_Dz(cache, Dz)  # (K, N, P)
    B = B.reshape(-1, B.shape[-1])
    return (B.T @ B) / N


def kfac_matrix(factors) -> np.ndarray:
    """The dense K-FAC matrix: block diagonal of ``T_i · kron(A_i, G_i)`` (Eqns. 2.8, 4.4,
    4.7; ``T_i`` from :class:`KroneckerBlock`, 1 for plain pairs), θ order.

    For tests on small nets only; the training path never forms Kronecker products.
    """
    blocks = [_scale(b) * np.kron(b[0], b[1]) for b in factors]
    P = sum(b.shape[0] for b in blocks)
    dtype = np.result_type(*blocks)
    M = np.zeros((P, P), dtype=dtype)
    o = 0
    for b in blocks:
        n = b.shape[0]
        M[o : o + n, o : o + n] = b
        o += n
    return M


def kfac_solve(factors, grad, damping: float = 0.0, factored: bool = False) -> np.ndarray:
    """Apply the inverse of the (damped) K-FAC matrix to a vector in θ order.

    Per layer, with ``V`` the block of ``grad`` reshaped to ``(out, in+1)`` (column-stacking):

    - ``factored=False``: ``(A ⊗ G + λ I)⁻¹ vec(V)`` exactly, via the eigendecompositions
      ``A = Q_A diag(α) Q_Aᵀ``, ``G = Q_G diag(β) Q_Gᵀ``:
      ``vec(Q_G [(Q_Gᵀ V Q_A) / (β αᵀ + λ)] Q_Aᵀ)``;
    - ``factored=True``: ``((A + √λ I) ⊗ (G + √λ I))⁻¹ vec(V) = vec((G + √λ I)⁻¹ V (A + √λ I)⁻¹)``
      (Tikhonov damping split evenly between the factors, no π correction).

    For a layer with ``T`` locations / steps (a :class:`KroneckerBlock`) the block is
    ``T · A ⊗ G`` and ``A`` stands for ``T · A`` above: the scale is carried by the ``A``
    side (``((T A + √λ I) ⊗ (G + √λ I))⁻¹`` when factored, as in the oracle README).

    With ``damping=0`` both are the undamped K-FAC natural gradient ``vec(G⁻¹ V A⁻¹)``.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A = np.cov(rng.standard_normal((3, 9))); G = np.cov(rng.standard_normal((2, 9)))
    >>> v = rng.standard_normal(6)
    >>> exact = np.linalg.solve(np.kron(A, G) + 0.1 * np.eye(6), v)
    >>> bool(np.allclose(kfac_solve([(A, G)], v, 0.1), exact))
    True
    """
    grad = np.asarray(grad)
    out = []
    o = 0
    lam = float(damping)
    if lam < 0:
        raise ConfigurationError(f"damping must be >= 0, got {damping}")
    P = sum(A.shape[0] * G.shape[0] for A, G in factors)
    if grad.shape != (P,):
        raise DimensionError(
            f"the factors cover {P} parameters but grad has shape {grad.shape}; pass a flat "
            "vector in θ order (e.g. the gradient from loss_and_grad)"
        )
    for block in factors:
        A, G = block
        A = _scale(block) * A  # the scale T goes with A (oracle README: natgrad_factored)
        n_in, n_out = A.shape[0], G.shape[0]
        V = grad[o : o + n_in * n_out].reshape(n_out, n_in, order="F")
        o += n_in * n_out
        if factored:
            r = np.sqrt(lam)
            X = np.linalg.solve(G + r * np.eye(n_out, dtype=G.dtype), V)
            X = np.linalg.solve((A + r * np.eye(n_in, dtype=A.dtype)).T, X.T).T
        else:
            alpha, QA = np.linalg.eigh(A)
            beta, QG = np.linalg.eigh(G)
            X = QG @ ((QG.T @ V @ QA) / (beta[:, None] * alpha[None, :] + lam)) @ QA.T
        out.append(X.reshape(-1, order="F"))
    return np.concatenate(out)
