"""Eqns. 4.4 / F.5 (with Def. F.2, Eqn. F.6): the K-FAC metric of a convolution layer,
``g^l_ind = |T| (E_T[α ⊗ α] ⊗ E_T[(ϕ_{ξ,t})* g])`` built by the abstract pipeline, has in the
induced frame the matrix ``F̂ = |T| kron(E_T[ā āᵀ], E_T[Dz Dzᵀ])``.

Method: numeric (float64, several seeds).  A CNN 2×4×4 → conv 2→2 3×3 pad 1 tanh →
conv 2→2 2×2 pad 0 tanh → flatten → dense 18→2, Gaussian output Fisher (unit variance).

* Pipeline: :func:`geomkfac.networks.conv_kfac.layer_kfac_metric` — per sample ξ and location t the
  patch ``α_{ξ,t}`` (a Point), the rest of the network ``ϕ_{ξ,t}`` (core maps, the other
  locations fixed), pullbacks of the output metric, expectations over (ξ, t), ``scale = |T|``.
* Closed form, from arrays computed by independent code (``proofs/_conv.py``): ``ā`` cut out by
  loops over ``(j, dy, dx)`` from a shift-and-add convolution, and ``E_T[Dz Dzᵀ] =
  E_{ξ,t}[J_{ξ,t}ᵀ J_{ξ,t}]`` with ``J_{ξ,t} = ∂f/∂z_t`` by central finite differences; then
  ``|T| kron(A, G)``, reordered from the reference files' channel-major patch order to the
  library's offset-major one.

Negative controls (Remark F.1), the same comparison with the closed form, conv layers:
the exact Fisher block ``E_ξ[(Ψ^l_ξ)* g]`` (all locations at once) and the per-location sum
``Σ_t E_ξ[ā_t ā_tᵀ] ⊗ E_ξ[G_t]`` are *not* ``F̂``: relative differences must be ≥ 1e-2.
"""

from __future__ import annotations

import numpy as np
from _conv import fd_location_jacobians, layer_abar, rel

from geomkfac.networks.conv import AbstractCNN, layer_input_permutation, to_oracle_weights
from geomkfac.networks.conv_kfac import (
    layer_exact_block,
    layer_kfac_metric,
    layer_per_location_sum,
    layer_samples,
)
from geomkfac.output_metrics import GaussianFisher

ID = "Eqn. 4.4/F.5"
STATEMENT = ("the pipeline's K-FAC metric of a conv layer, |T| E_T[α⊗α] ⊗ E_T[ϕ*g], has the "
             "matrix |T| kron(E_T[ā āᵀ], E_T[Dz Dzᵀ])")
METHOD = "numeric"

# Tolerances (why):
# - the closed form's G uses central differences with h = 1e-6 on a smooth O(1) network:
#   truncation O(h²)·f''' ≈ 1e-12 plus round-off ε/h ≈ 1e-10 per Jacobian entry → 1e-8 relative.
TOL = 1e-8
# - control: the spatial-homogeneity assumptions behind F.5 are off by O(10 %) on a random
#   tanh CNN; require ≥ 1e-2 (≫ TOL).
CONTROL_MIN = 1e-2

ARCH = [{"type": "conv", "out": 2, "k": 3, "pad": 1, "act": "tanh"},
        {"type": "conv", "out": 2, "k": 2, "pad": 0, "act": "tanh"},
        {"type": "flatten"},
        {"type": "dense", "out": 2, "act": "identity"}]


def _closed_form(net, arch, Ws, bs, X, i):
    """Layer ``i`` (1..L); the loop helpers take the position ``i - 1`` in the lists ``Ws``, ``bs``."""
    abar = layer_abar(arch, Ws, bs, X, i - 1)             # (N, T, d+1), channel-major
    Jac = fd_location_jacobians(arch, Ws, bs, X, i - 1)   # (N, T, C, I)
    N, T = abar.shape[:2]
    A = np.einsum("nta,ntb->ab", abar, abar) / (N * T)
    G = np.einsum("ntci,ntcj->ij", Jac, Jac) / (N * T)   # output metric = I
    q = np.argsort(layer_input_permutation(net, i))       # channel-major → offset-major
    return T * np.kron(A[np.ix_(q, q)], G)


def _seed(seed, N):
    rng = np.random.default_rng(seed)
    net = AbstractCNN((2, 4, 4), ARCH, name=f"cnn{seed}")
    w = net.random_weights(rng, scale=1.5)
    X = rng.normal(size=(N, 2, 4, 4))
    pairs = to_oracle_weights(net, net.layer_weights(w))
    Ws, bs = [p[0] for p in pairs], [p[1] for p in pairs]
    g = GaussianFisher()
    disc, ctrl_exact, ctrl_sum = {}, np.inf, np.inf
    for i in range(1, net.L + 1):
        S = layer_samples(net, w, X, i)
        M = np.asarray(layer_kfac_metric(net, w, X, g, i, samples=S).matrix(), float)
        C = _closed_form(net, ARCH, Ws, bs, X, i)
        disc[i] = rel(M, C)
        if net.params.layer(i).kind == "conv":
            E = np.asarray(layer_exact_block(net, w, X, g, i, samples=S).matrix(), float)
            P = np.asarray(layer_per_location_sum(net, w, X, g, i, samples=S).matrix(), float)
            ctrl_exact = min(ctrl_exact, rel(E, C))
            ctrl_sum = min(ctrl_sum, rel(P, C))
    return disc, ctrl_exact, ctrl_sum


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(2)
    N = 3 if fast else 5
    worst, ce, cs, per = 0.0, np.inf, np.inf, {}
    for seed in seeds:
        d, e, s = _seed(seed, N)
        worst = max(worst, max(d.values()))
        ce, cs = min(ce, e), min(cs, s)
        per[f"seed {seed}"] = ("pipeline vs closed form per layer: "
                               + ", ".join(f"layer {l} {v:.1e}" for l, v in d.items())
                               + f" | exact block vs F̂ {e:.1e}, Σ_t A_t⊗G_t vs F̂ {s:.1e}")
    ctrl = min(ce, cs)
    return {
        "holds": bool(worst <= TOL),
        "discrepancy": worst,
        "negative_control": ("Remark F.1: the exact Fisher block E_ξ[(Ψ^i_ξ)*g] and Σ_t A_t ⊗ G_t "
                             "equal |T| kron(E_T[āāᵀ], E_T[DzDzᵀ]) (must not)"),
        "negative_discrepancy": float(ctrl),
        "negative_fails": bool(ctrl >= CONTROL_MIN),
        "details": {
            "network": f"2×4×4 → conv 2→2 3×3 p1 tanh → conv 2→2 2×2 tanh → flatten → dense 2; "
                       f"Gaussian output; N={N}, {len(seeds)} seeds",
            "discrepancy": "max|pipeline − closed form| / max(1, max|closed form|), all layers",
            "smallest control: exact block vs F̂": float(ce),
            "smallest control: Σ_t A_t ⊗ G_t vs F̂": float(cs),
            "per seed": per,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
