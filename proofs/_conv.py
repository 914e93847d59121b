"""Independent references for the convolution proofs (paper §4.1, Appendix F).

Nothing here calls :mod:`geomkfac.networks.conv`: the convolution is computed directly as a
shift-and-add over output channels, input channels and kernel offsets (no patch matrix), in
the layout of the reference files (``W`` of shape ``(I, J, k, k)``, images ``(N, C, H, W)``,
flatten channel-major); the patches ``ā`` are cut out by loops over ``(j, dy, dx)``
(channel-major, homogeneous 1 last); per-location Jacobians ``∂f/∂z_t`` come from central
finite differences of that forward pass.  Activations are plain NumPy functions.
"""

from __future__ import annotations

import numpy as np

ACTS = {
    "identity": (lambda z: z),
    "tanh": np.tanh,
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z))),
}


def direct_conv(x, W, b, pad, pad_value=0.0):
    """``z[n, i, y, x] = Σ_{j,dy,dx} W[i,j,dy,dx] x_pad[n, j, y+dy, x+dx] + b[i]`` by loops.

    ``pad_value``: one number per input channel (the padding's coordinates), default 0.
    """
    N, J, H, Wd = x.shape
    I, J2, k, _ = W.shape
    assert J2 == J
    pv = np.broadcast_to(np.asarray(pad_value, float), (J,))
    xp = np.empty((N, J, H + 2 * pad, Wd + 2 * pad))
    for j in range(J):
        xp[:, j] = pv[j]
    xp[:, :, pad:pad + H, pad:pad + Wd] = x
    Ho, Wo = H + 2 * pad - k + 1, Wd + 2 * pad - k + 1
    z = np.zeros((N, I, Ho, Wo))
    for i in range(I):
        for j in range(J):
            for dy in range(k):
                for dx in range(k):
                    z[:, i] += W[i, j, dy, dx] * xp[:, j, dy:dy + Ho, dx:dx + Wo]
        z[:, i] += b[i]
    return z


def direct_patches(x, k, pad):
    """``ā`` ``(N, T, J·k·k + 1)``: patches channel-major ``(j, dy, dx)``, 1 last, by loops."""
    N, J, H, Wd = x.shape
    xp = np.zeros((N, J, H + 2 * pad, Wd + 2 * pad))
    xp[:, :, pad:pad + H, pad:pad + Wd] = x
    Ho, Wo = H + 2 * pad - k + 1, Wd + 2 * pad - k + 1
    out = np.ones((N, Ho * Wo, J * k * k + 1))
    for j in range(J):
        for dy in range(k):
            for dx in range(k):
                out[:, :, j * k * k + dy * k + dx] = xp[:, j, dy:dy + Ho, dx:dx + Wo].reshape(N, -1)
    return out


def direct_forward(arch, Ws, bs, X, perturb=None, keep=False):
    """Forward pass of an oracle-style architecture.

    ``perturb = (l, t, v)`` adds ``v`` (``(I,)`` or ``(N, I)``) to the pre-activation of
    parametrized layer ``l`` at location ``t`` (row-major).  With ``keep``, also returns
    ``[(input of layer l as (N, C, H, W) or (N, d), z)]``.
    """
    a = np.asarray(X, float)
    l, kept = 0, []
    for spec in arch:
        kind = spec["type"]
        if kind == "conv":
            inp = a
            z = direct_conv(a, Ws[l], bs[l], spec.get("pad", 0))
            if perturb is not None and perturb[0] == l:
                _, t, v = perturb
                y, x = divmod(t, z.shape[3])
                z = z.copy()
                z[:, :, y, x] += v
            kept.append((inp, z))
            a = ACTS[spec.get("act", "identity")](z)
            l += 1
        elif kind in ("avgpool", "maxpool"):
            s = spec.get("k", 2)
            N, C, H, Wd = a.shape
            r = a.reshape(N, C, H // s, s, Wd // s, s)
            a = r.mean(axis=(3, 5)) if kind == "avgpool" else r.max(axis=(3, 5))
        elif kind == "flatten":
            a = a.reshape(a.shape[0], -1)
        elif kind == "dense":
            inp = a
            z = a @ Ws[l].T + bs[l]
            if perturb is not None and perturb[0] == l:
                z = z + perturb[2]
            kept.append((inp, z))
            a = ACTS[spec.get("act", "identity")](z)
            l += 1
    return (a, kept) if keep else a


def fd_location_jacobians(arch, Ws, bs, X, l, h=1e-6):
    """``∂f/∂z_{l,t}`` per example and location, ``(N, T, C_out, I)``, by central differences
    (the pre-activations at every other location held fixed)."""
    _, kept = direct_forward(arch, Ws, bs, X, keep=True)
    z = kept[l][1]
    N = z.shape[0]
    I = z.shape[1]
    T = int(np.prod(z.shape[2:])) if z.ndim == 4 else 1
    C = direct_forward(arch, Ws, bs, X).shape[1]
    Jac = np.zeros((N, T, C, I))
    for t in range(T):
        for i in range(I):
            e = np.zeros(I)
            e[i] = h
            fp = direct_forward(arch, Ws, bs, X, perturb=(l, t, e))
            fm = direct_forward(arch, Ws, bs, X, perturb=(l, t, -e))
            Jac[:, t, :, i] = (fp - fm) / (2 * h)
    return Jac


def layer_abar(arch, Ws, bs, X, l):
    """``ā`` of parametrized layer ``l`` by loops: ``(N, T, d + 1)`` (channel-major patches;
    a dense layer's flattened input channel-major, ``T = 1``)."""
    _, kept = direct_forward(arch, Ws, bs, X, keep=True)
    inp = kept[l][0]
    spec = [s for s in arch if s["type"] in ("conv", "dense")][l]
    if spec["type"] == "conv":
        return direct_patches(inp, spec["k"], spec.get("pad", 0))
    return np.concatenate([inp, np.ones((inp.shape[0], 1))], axis=1)[:, None, :]


def rel(a, b):
    """``max|a − b| / max(1, max|b|)``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
