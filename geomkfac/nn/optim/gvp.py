"""Exact Gauss-Newton (GGN) – vector products, vectorized over several directions.

For the mean objective ``h = (1/N) Σ_n ℓ(f(x_n; θ), y_n)`` the GGN is
``F = (1/N) Σ_n J_nᵀ H_n J_n`` with ``J_n = ∂f(x_n)/∂θ`` and ``H_n = ∇²_f ℓ`` (the output
Fisher for the three losses of :mod:`geomkfac.nn.losses`). ``F v`` is computed without
forming ``J`` or ``F``:

1. a forward-mode Jacobian-vector product ``J v`` (``dz_i = V_i ā_i + W_i da_{i-1}``,
   ``da_i = φ_i'(z_i) dz_i``), for ``k`` directions at once (batch of ``k·N`` rows);
2. ``H (J v)`` at the output (closed form per loss);
3. one backward pass ``Jᵀ (H J v)`` through the network (the model's own backward with
   ``k`` leading directions), ``(F v)_i = (1/N) Σ_n Dz_{i,n} ā_{i,n}ᵀ``.

Per-layer directions and results are in ``W̄`` layout (``out × (in+1)``), optionally with a
leading axis of ``k`` directions.

The quadratic forms ``v_iᵀ F v_j`` that K-FAC's quadratic model needs take only step 1 and 2:
``(1/N) Σ_n (J_n v_i)ᵀ H_n (J_n v_j)`` (:func:`ggn_quadratic_form`), no backward pass.
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import DimensionError
from geomkfac.nn.layers.base import rows_product

__all__ = ["activation_jvp", "output_hvp", "ggn_vector_products", "ggn_vector_product",
           "ggn_quadratic_form"]


def activation_jvp(act, z, a, dz):
    """Jacobian-vector product of an activation: ``∂φ(z)/∂z · dz`` row by row.

    Handles elementwise activations (``.derivative``), conjugated activations
    ``φ‡(z) = Ω φ(Φ z + τ) + γ`` (Eqn. D.3: ``dφ‡ = Ω φ'(Φz+τ) Φ dz``), objects with their own
    ``jvp``, and otherwise any activation through its ``backward`` (one pass per unit).
    """
    if hasattr(act, "jvp"):
        return act.jvp(z, a, dz)
    if all(hasattr(act, k) for k in ("base", "Omega", "Phi", "tau")):
        dt = z.dtype
        Om, Ph, ta = (np.asarray(getattr(act, k), dtype=dt) for k in ("Omega", "Phi", "tau"))
        u = z @ Ph.T + ta
        du = activation_jvp(act.base, u, act.base.forward(u), dz @ Ph.T)
        return du @ Om.T
    if hasattr(act, "_derivative_from"):  # φ'(z) from the cached a = φ(z) where cheaper
        return act._derivative_from(z, a) * dz
    if hasattr(act, "derivative"):
        return act.derivative(z) * dz
    d = z.shape[-1]  # generic: row j of the Jacobian is backward(e_j)
    out = np.empty_like(dz)
    for j in range(d):
        e = np.zeros_like(z)
        e[..., j] = 1
        out[..., j] = np.sum(act.backward(z, a, e) * dz, axis=-1)
    return out


def output_hvp(loss, f, v):
    """``H_n v_n`` for the loss Hessian in the output (= output Fisher), rows of ``v``
    shaped like ``f`` (any number of leading copies of ``f``'s batch).

    >>> import numpy as np
    >>> from geomkfac.nn.losses import get_loss
    >>> f = np.array([[0.3, -1.0, 2.0]]); v = np.array([[1.0, 2.0, -1.0]])
    >>> L = get_loss("ce")
    >>> bool(np.allclose(output_hvp(L, f, v), L.output_fisher(f)[0] @ v[0]))
    True
    """
    name = getattr(loss, "name", "")
    if name == "mse":
        return v
    if name == "bernoulli":
        p = 0.5 * np.tanh(0.5 * f) + 0.5
        return p * (1 - p) * v
    if name == "softmax_ce":
        s = f - f.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        return p * v - p * np.sum(p * v, axis=-1, keepdims=True)
    H = loss.output_fisher(f)
    return np.einsum("nij,...nj->...ni", H, v)


def ggn_vector_products(model, cache, f, loss, V):
    """``F V`` for per-layer directions ``V`` (each ``(k, out, in+1)`` or ``(out, in+1)``).

    Parameters
    ----------
    model : MLP or Sequential
    cache : the cache of ``model.forward_cache(X)`` at the current parameters
    f : ndarray (N, C)
        The network output of that forward pass.
    loss : Loss
    V : list of ndarray

    Returns
    -------
    list of ndarray, shaped like ``V``.
    """
    single = V[0].ndim == 2
    if single:
        V = [v[None] for v in V]
    N = f.shape[0]
    # 1. forward mode through the model's layers
    da = model.jvp(cache, V)
    # 2. output Hessian, 3. backward pass (the model's, with k leading directions)
    Dz = model.backward(cache, output_hvp(loss, f, da))
    out = [rows_product(D, ab) / N for D, ab in zip(Dz, cache.abar)]
    return [o[0] for o in out] if single else out


def ggn_quadratic_form(model, cache, f, loss, V) -> np.ndarray:
    """The ``k × k`` Gram matrix ``[v_iᵀ F v_j]`` of ``k`` directions under the GGN, by
    forward mode only: ``(1/N) Σ_n (J_n v_i)ᵀ H_n (J_n v_j)`` with the ``k`` directions stacked
    in one Jacobian-vector pass (no backward pass, no per-layer products).

    Parameters
    ----------
    model, cache, f, loss
        As for :func:`ggn_vector_products`.
    V : list of ndarray
        Per-layer directions, each ``(k, out, in+1)``.

    Returns
    -------
    ndarray (k, k), symmetric.

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP, get_loss
    >>> net = MLP([3, 4, 2], "tanh", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((5, 3))
    >>> f, cache = net.forward_cache(X)
    >>> rng = np.random.default_rng(1)
    >>> V = [rng.standard_normal((2,) + W.shape) for W in net.get_Wbars()]
    >>> Q = ggn_quadratic_form(net, cache, f, get_loss("mse"), V)
    >>> FV = ggn_vector_products(net, cache, f, get_loss("mse"), V)
    >>> ref = [[sum(np.vdot(a[i], b[j]) for a, b in zip(V, FV)) for j in range(2)] for i in range(2)]
    >>> bool(np.allclose(Q, ref))
    True
    """
    N = f.shape[0]
    da = model.jvp(cache, V)  # (k, N, *out)
    k = da.shape[0]
    Hda = output_hvp(loss, f, da)
    Q = da.reshape(k, -1) @ Hda.reshape(k, -1).T / N
    return 0.5 * (Q + Q.T)


def ggn_vector_product(model, X, loss, v):
    """``F v`` for a flat θ-vector ``v`` on inputs ``X`` (convenience for tests and users).

    Examples
    --------
    >>> import numpy as np
    >>> from geomkfac.nn import MLP, ggn, get_loss
    >>> net = MLP([3, 4, 2], "tanh", seed=0)
    >>> X = np.random.default_rng(0).standard_normal((5, 3)); Y = np.zeros((5, 2))
    >>> v = np.random.default_rng(1).standard_normal(net.num_params)
    >>> bool(np.allclose(ggn_vector_product(net, X, "mse", v), ggn(net, X, Y, "mse") @ v))
    True
    """
    from geomkfac.nn.losses import loss_for_model
    from geomkfac.nn.optim.base import flatten

    loss = loss_for_model(model, loss)
    v = np.asarray(v)
    if v.ndim != 1:
        raise DimensionError(f"v must be a flat vector in θ order, got shape {v.shape}")
    f, cache = model.forward_cache(np.asarray(X, dtype=model.dtype))
    return flatten(ggn_vector_products(model, cache, f, loss, model.split_flat(v)))
