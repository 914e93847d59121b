"""Eqns. F.1–F.3: a convolution layer ``z_{i,t} = Σ_δ w_{i,j,δ} a_{j,t+δ} + b_i`` is the im2col
product ``Z = W A^exp + b 1ᵀ`` (``[Z]_H = [W]_H [A^exp]_H``), and its weight gradient is
``DW̄ = Σ_t Dz_t ā_tᵀ``.

Method: numeric (float64, several seeds).  A CNN 2×4×4 → conv 2→2 3×3 pad 1 tanh →
conv 2→2 2×2 pad 0 tanh → flatten → dense 18→2, squared error (Gaussian NLL).

* Forward: the library's coordinate network (:class:`geomkfac.networks.conv.CoordinateCNN`,
  patches gathered into ``A^exp`` and one matrix product per layer) and, for the first layer,
  the core's patch map (an :class:`~geomkfac.maps.AffineMap` applied to a Point of
  ``A^|T_in|``), against an independent shift-and-add convolution with explicit loops over
  output channels, input channels and offsets (``proofs/_conv.py``), the weights converted to
  the reference files' layout ``(I, J, k, k)`` by :func:`~geomkfac.networks.conv.to_oracle_weights`.
* Gradient: the pipeline's ``dh`` (:func:`~geomkfac.networks.conv_kfac.loss_differential`: per
  location ``Dz_t = ϕ_{ξ,t}* dℓ``, then ``Σ_t ψ_{α_t}* Dz_t``, i.e. ``Σ_t Dz_t ā_tᵀ``; and the
  same through the stacked evaluation map ``ψ^(:)``; mean over samples) against central
  finite differences of the mean loss of the direct forward.

Negative control, the same comparisons: the weights read in the *other* patch order (the
offset-major ``W̄`` taken as channel-major) give a different convolution and a gradient that
is not the finite-difference one (relative differences ≥ 1e-2).
"""

from __future__ import annotations

import numpy as np
from _conv import direct_forward, direct_patches, rel

from geomkfac.networks.conv import AbstractCNN, layer_input_permutation, to_oracle_weights
from geomkfac.networks.conv_kfac import loss_differential
from geomkfac.output_metrics import SquaredError
from geomkfac.spaces import power_frame

ID = "F.1–F.3"
STATEMENT = ("a conv layer is the im2col product Z = W A^exp + b 1ᵀ (= the direct convolution), "
             "and DW̄ = Σ_t Dz_t ā_tᵀ")
METHOD = "numeric"

# Tolerances (why):
# - forward: the same sums of O(1) products in another order: round-off ~1e-15; allow 1e-12.
FWD_TOL = 1e-12
# - gradient vs central differences (h = 1e-6): truncation ~h²·f''' ≈ 1e-12, round-off
#   ~ε·|h|/h ≈ 1e-10 on O(1) values → 1e-8 relative.
GRAD_TOL = 1e-8
# - control: a wrong patch order scrambles O(1) weights: ≥ 1e-2.
CONTROL_MIN = 1e-2

ARCH = [{"type": "conv", "out": 2, "k": 3, "pad": 1, "act": "tanh"},
        {"type": "conv", "out": 2, "k": 2, "pad": 0, "act": "tanh"},
        {"type": "flatten"},
        {"type": "dense", "out": 2, "act": "identity"}]


def _fd_grad(Ws, bs, X, Y, h=1e-6):
    """Central differences of the mean squared-error loss, in the θ order of the reference
    files (per layer: column-stacked ``[W.reshape(I, -1) b]``)."""
    def loss(Ws_, bs_):
        f = direct_forward(ARCH, Ws_, bs_, X)
        return 0.5 * np.mean(np.sum((f - Y) ** 2, axis=1))

    out = []
    for l in range(len(Ws)):
        I = Ws[l].shape[0]
        Wb = np.hstack([Ws[l].reshape(I, -1), bs[l][:, None]])
        g = np.zeros_like(Wb)
        for idx in np.ndindex(*Wb.shape):
            vals = []
            for s in (h, -h):
                M = Wb.copy()
                M[idx] += s
                Ws_ = list(Ws)
                bs_ = list(bs)
                Ws_[l], bs_[l] = M[:, :-1].reshape(Ws[l].shape), M[:, -1]
                vals.append(loss(Ws_, bs_))
            g[idx] = (vals[0] - vals[1]) / (2 * h)
        out.append(g.reshape(-1, order="F"))
    return np.concatenate(out)


def _to_theta(net, Wbars, wrong_order=False):
    parts = []
    for i, Wb in enumerate(Wbars, start=1):                # position i - 1 holds layer i
        Wb = np.asarray(Wb, float)
        p = np.arange(Wb.shape[1]) if wrong_order else layer_input_permutation(net, i)
        parts.append(Wb[:, p].reshape(-1, order="F"))
    return np.concatenate(parts)


def _seed(seed, N):
    rng = np.random.default_rng(seed)
    net = AbstractCNN((2, 4, 4), ARCH, name=f"cnn{seed}")
    w = net.random_weights(rng, scale=1.5)
    X = rng.normal(size=(N, 2, 4, 4))
    Y = rng.normal(size=(N, 2))
    Wbars = [np.asarray(M, float) for M in net.layer_weights(w)]
    pairs = to_oracle_weights(net, Wbars)
    Ws, bs = [p[0] for p in pairs], [p[1] for p in pairs]
    # (i) forward: im2col coordinate network vs direct convolution
    f_lib, kept = net.coordinates(w).forward(net.input_coords(X), keep=True)
    f_dir, kept_dir = direct_forward(ARCH, Ws, bs, X, keep=True)
    d_fwd = rel(f_lib, f_dir)
    for l in range(2):
        z_dir = kept_dir[l][1]
        d_fwd = max(d_fwd, rel(kept[l][1], z_dir.reshape(N, z_dir.shape[1], -1).transpose(0, 2, 1)))
    # (i-b) the core's patch map on Points vs patches cut out by loops
    pm = net.patch_map(1)                                  # layer 1: the first convolution
    fP = power_frame(net.reference_frames().patch_frame(1), net.layers[0].T)
    q = layer_input_permutation(net, 1)
    abar = direct_patches(X, 3, 1)
    d_patch = 0.0
    for n, p in enumerate(net.input_points(net.input_coords(X))):
        P = np.asarray(pm(p).coords(fP), float).reshape(net.layers[0].T, -1)
        d_patch = max(d_patch, rel(P[:, q[:-1]], abar[n, :, :-1]))
    # (ii) gradient: pipeline Σ_t Dz ā ᵀ vs finite differences
    g_fd = _fd_grad(Ws, bs, X, Y)
    d_grad = 0.0
    for by_location in (True, False):
        dh = loss_differential(net, w, X, Y, SquaredError(), by_location=by_location)
        parts = net.weight_space.split(dh.coords())
        DW = [np.asarray(p, float).reshape(net.weight_spaces[l].shape, order="F") for l, p in enumerate(parts)]
        d_grad = max(d_grad, rel(_to_theta(net, DW), g_fd))
    # controls: the other patch order
    Wwrong = []
    for l, Wb in enumerate(Wbars):
        W = Wb[:, :-1]
        if net.params[l].kind == "conv":
            W = W.reshape(Ws[l].shape)  # offset-major columns read as (j, dy, dx)
        Wwrong.append(W)
    c_fwd = rel(direct_forward(ARCH, Wwrong, bs, X), f_lib)
    c_grad = rel(_to_theta(net, DW, wrong_order=True), g_fd)
    return d_fwd, d_patch, d_grad, c_fwd, c_grad


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(2)
    N = 3 if fast else 6
    w_fwd = w_patch = w_grad = 0.0
    c_fwd = c_grad = np.inf
    per = {}
    for seed in seeds:
        a, b, c, d, e = _seed(seed, N)
        w_fwd, w_patch, w_grad = max(w_fwd, a), max(w_patch, b), max(w_grad, c)
        c_fwd, c_grad = min(c_fwd, d), min(c_grad, e)
        per[f"seed {seed}"] = (f"im2col vs direct {a:.1e}, patch map vs loops {b:.1e}, "
                               f"Σ_t Dz āᵀ vs FD {c:.1e} | other order: forward {d:.1e}, gradient {e:.1e}")
    holds = w_fwd <= FWD_TOL and w_patch <= FWD_TOL and w_grad <= GRAD_TOL
    ctrl = min(c_fwd, c_grad)
    return {
        "holds": bool(holds),
        "discrepancy": max(w_fwd, w_patch, w_grad),
        "negative_control": ("the weights read in the other patch order (offset-major as "
                             "channel-major): the convolution and Σ_t Dz āᵀ must not match"),
        "negative_discrepancy": float(ctrl),
        "negative_fails": bool(ctrl >= CONTROL_MIN),
        "details": {
            "network": f"2×4×4 → conv 2→2 3×3 p1 tanh → conv 2→2 2×2 tanh → flatten → dense 2; "
                       f"squared error; N={N}, {len(seeds)} seeds",
            "forward (im2col vs direct loops), relative": w_fwd,
            "core patch map vs patches by loops": w_patch,
            "gradient (pipeline vs finite differences), relative": w_grad,
            "controls (other patch order): forward, gradient": f"{c_fwd:.3e}, {c_grad:.3e}",
            "per seed": per,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
