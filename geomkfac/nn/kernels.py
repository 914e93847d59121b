"""Fused elementwise kernels of the training step, compiled by numba where it is installed.

NumPy runs every elementwise operation as its own pass over memory; in a training step these
passes, not the GEMMs, are what geomkfac spends beyond a fused XLA step (benchmarks/README.md
§6). Three groups of them are fused here into single loops:

* :func:`tanh_backward_` and :func:`sigmoid_backward_`: ``g ← g ⊙ φ'`` with ``φ'`` from the
  activation's output (``1 − a²``; ``(1 − a) a``), without forming ``φ'``;
* :func:`bernoulli_value_and_grad`: the Bernoulli loss and its gradient, whose arithmetic
  around NumPy's ``exp``, ``log1p`` and ``tanh`` passes is fused into two loops;
* :func:`momentum_update_`: the heavy-ball step ``v_t = μ v_{t−1} + g``, ``W̄ ← W̄ − lr v_t``.

Each kernel performs **the same floating-point operations in the same order** as its NumPy
fallback (no fused multiply-add, no reassociation: numba's default, non-``fastmath``
semantics), so both routes give the same bits and a run does not depend on whether numba is
installed (``tests/test_kernels.py`` checks this kernel by kernel and on whole training
runs). The transcendental functions stay NumPy's: numba from the package index has no
vectorized ``tanh`` / ``exp`` / ``log1p`` (its LLVM lacks Intel's SVML), and NumPy's SIMD ones
are many times faster than scalar calls.

numba is optional (``pip install "geomkfac[jit]"``). Without it, or with the environment
variable ``GEOMKFAC_JIT=0``, or after :func:`use_jit` ``(False)``, the NumPy fallbacks run.
The kernels are compiled on first use, once per dtype, and cached on disk by numba.
Arrays a kernel cannot take (other dtypes, not 2-D, broadcasting shapes, read-only) go to the
fallback too.

>>> import numpy as np
>>> g, a = np.array([[2.0, 2.0]]), np.array([[0.5, 1.0]])
>>> tanh_backward_(g, a)
array([[1.5, 0. ]])
"""

from __future__ import annotations

import os

import numpy as np

from geomkfac.errors import ConfigurationError

__all__ = ["ENV_VAR", "jit_available", "jit_active", "use_jit", "fusable", "tanh_backward_",
           "sigmoid_backward_", "bernoulli_value_and_grad", "momentum_update_"]

#: the environment switch: ``0`` / ``false`` / ``no`` / ``off`` keep the NumPy fallbacks
ENV_VAR = "GEOMKFAC_JIT"
_OFF, _ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on", "")

#: ``choice``: use_jit's setting (None: the environment's); ``env``: the environment's, read
#: once; ``compiled``: the kernels (False without numba); ``active``: the kernels to use now
#: (False: the fallbacks; None: not decided since the last switch)
_state: dict = {"choice": None, "env": None, "compiled": None, "active": None}


def jit_available() -> bool:
    """Whether numba can be imported (the compiled kernels exist)."""
    return _compiled() is not None


def jit_active() -> bool:
    """Whether the kernels run compiled now: numba is installed and neither
    :func:`use_jit` ``(False)`` nor ``GEOMKFAC_JIT=0`` switched them off (the variable is read
    at the first use, and again after ``use_jit(None)``).

    Raises
    ------
    ConfigurationError
        ``GEOMKFAC_JIT`` holds something other than 0/1, false/true, no/yes, off/on.
    """
    choice = _state["choice"]
    if choice is None:
        choice = _state["env"]
        if choice is None:
            raw = os.environ.get(ENV_VAR, "").strip().lower()
            if raw not in _OFF + _ON:
                raise ConfigurationError(
                    f"{ENV_VAR}={os.environ[ENV_VAR]!r}: use 0 (NumPy only) or 1 (numba where "
                    "installed, the default)")
            choice = _state["env"] = raw not in _OFF
    active = bool(choice) and jit_available()
    _state["active"] = _state["compiled"] if active else False
    return active


def use_jit(flag: bool | None) -> bool | None:
    """Switch the compiled kernels on (where numba is installed) or off; ``None`` returns to
    the environment's choice. Returns the previous setting.

    >>> previous = use_jit(False)
    >>> jit_active()
    False
    >>> _ = use_jit(previous)
    """
    if flag is not None and not isinstance(flag, (bool, np.bool_)):
        raise ConfigurationError(f"use_jit takes True, False or None, got {flag!r}")
    previous, _state["choice"] = _state["choice"], None if flag is None else bool(flag)
    if flag is None:
        _state["env"] = None  # read the environment again
    _state["active"] = None
    return previous


def _compiled():
    """The compiled kernels (a dict), or None without numba; built once."""
    if _state["compiled"] is None:
        try:
            import numba
        except ImportError:
            _state["compiled"] = False
        else:
            _state["compiled"] = _build(numba)
    return _state["compiled"] or None


def _build(numba):
    # 2-D loops: numba compiles one version per dtype and memory layout, so any strides work
    # (the row-major ones vectorize); the Python side checks only shapes and dtypes
    njit = numba.njit(cache=True, nogil=True)

    @njit
    def tanh_backward(g, a, one):
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                x = a[i, j]
                g[i, j] = g[i, j] * (one - x * x)

    @njit
    def sigmoid_backward(g, a, one):
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                x = a[i, j]
                g[i, j] = g[i, j] * ((one - x) * x)

    @njit
    def bernoulli_pre(f, t, h, half):
        for i in range(f.shape[0]):
            for j in range(f.shape[1]):
                x = f[i, j]
                t[i, j] = -abs(x)
                h[i, j] = x * half

    @njit
    def bernoulli_post(f, y, t, h, half, zero):
        for i in range(f.shape[0]):
            for j in range(f.shape[1]):
                x, yij = f[i, j], y[i, j]
                m = x if (x >= zero or x != x) else zero  # np.maximum(f, 0), NaN propagated
                t[i, j] = (t[i, j] + m) - yij * x
                h[i, j] = ((h[i, j] * half) + half) - yij

    @njit
    def momentum_update(W, v, g, vel, mu, neg_lr):
        for i in range(W.shape[0]):
            for j in range(W.shape[1]):
                s = v[i, j] * mu
                s = s + g[i, j]
                vel[i, j] = s
                W[i, j] = W[i, j] + s * neg_lr

    return {"tanh_backward": tanh_backward, "sigmoid_backward": sigmoid_backward,
            "bernoulli_pre": bernoulli_pre, "bernoulli_post": bernoulli_post,
            "momentum_update": momentum_update}


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _kernels(*arrays, writable=1):
    """The compiled kernels when they can take ``arrays`` (2-D float32 or float64 arrays of
    one shape and dtype, the first ``writable`` of them writable), else None."""
    k = _state["active"]
    if k is None:  # decide once after each switch (jit_active caches it)
        jit_active()
        k = _state["active"]
    if not k:
        return None
    first = arrays[0]
    dtype, shape = first.dtype, first.shape
    if dtype not in _FLOATS or len(shape) != 2:
        return None
    for x in arrays:
        if not isinstance(x, np.ndarray) or x.dtype != dtype or x.shape != shape:
            return None
    for x in arrays[:writable]:
        if not x.flags.writeable:
            return None
    return k


def fusable(out, *inputs) -> bool:
    """Whether a kernel would run compiled on ``out`` (written in place) and ``inputs``."""
    return _kernels(out, *inputs) is not None


# -- the kernels ---------------------------------------------------------------------------------
def tanh_backward_(g, a):
    """``g ← g ⊙ (1 − a ⊙ a)`` in place (the backward pass of ``tanh`` from its output ``a``);
    returns ``g``. The fallback: ``d = a²; d = 1 − d; g *= d``."""
    k = _kernels(g, a)
    if k is None:
        d = np.square(a)
        np.subtract(1, d, out=d)
        return np.multiply(g, d, out=g)
    k["tanh_backward"](g, a, g.dtype.type(1))
    return g


def sigmoid_backward_(g, a):
    """``g ← g ⊙ ((1 − a) ⊙ a)`` in place (the backward pass of the sigmoid from its output);
    returns ``g``. The fallback: ``d = 1 − a; d *= a; g *= d``."""
    k = _kernels(g, a)
    if k is None:
        d = np.subtract(1, a)
        d *= a
        return np.multiply(g, d, out=g)
    k["sigmoid_backward"](g, a, g.dtype.type(1))
    return g


def bernoulli_value_and_grad(f, Y):
    """The mean Bernoulli loss ``mean_n Σ_c softplus(f) − y f`` on logits ``f`` and its
    per-example gradient ``σ(f) − y`` (``Y`` already of ``f``'s dtype and shape).

    ``softplus(f) = max(f, 0) + log1p(e^{−|f|})`` and ``σ(f) = ½ tanh(f/2) + ½``, each rounded
    in this order; the row sums and their mean are NumPy's (pairwise) on both routes."""
    half = f.dtype.type(0.5)
    k = _kernels(f, Y, writable=0)
    if k is None:
        buf = np.abs(f)
        np.negative(buf, out=buf)
        np.exp(buf, out=buf)
        np.log1p(buf, out=buf)
        g = np.maximum(f, 0)
        buf += g  # softplus(f)
        np.multiply(Y, f, out=g)
        buf -= g
        value = buf.sum(axis=1).mean()
        np.multiply(f, half, out=g)  # σ(f) = ½ tanh(f/2) + ½
        np.tanh(g, out=g)
        g *= half
        g += half
        g -= Y
        return value, g
    buf, g = np.empty_like(f), np.empty_like(f)  # the layout np.abs(f) would have
    k["bernoulli_pre"](f, buf, g, half)  # −|f| and f/2
    np.exp(buf, out=buf)
    np.log1p(buf, out=buf)
    np.tanh(g, out=g)
    k["bernoulli_post"](f, Y, buf, g, half, f.dtype.type(0))
    return buf.sum(axis=1).mean(), g


def momentum_update_(Ws, vs, gs, vels, mu: float, lr: float) -> bool:
    """The heavy-ball step of every layer, one pass each: ``vel ← μ v + g`` (rounded as
    ``v·μ``, then ``+ g``) and ``W ← W + vel·(−lr)``, in place on each ``W`` and ``vel`` (lists,
    one entry per layer). Returns whether it ran compiled; ``False`` (nothing written) where
    it cannot take every layer's arrays, and the caller then takes its NumPy route."""
    k = None
    for W, v, g, vel in zip(Ws, vs, gs, vels, strict=True):
        k = _kernels(W, vel, v, g, writable=2)
        if k is None:
            return False
    for W, v, g, vel in zip(Ws, vs, gs, vels):
        t = W.dtype.type
        k["momentum_update"](W, v, g, vel, t(mu), t(-lr))
    return k is not None
