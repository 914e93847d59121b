"""Theorem G.3: the K-FAC metric of an abstract recurrent network (Def. G.2) is a metric on the
weight space — symmetric, PSD, one coordinate-free object — and it is nondegenerate when the
expected pullback ``E_{ξ,t}[Ψ_{ξ,t}* g]`` along ``Ψ_{ξ,t} = ϕ_{ξ,t} ∘ ψ_{ξ,t}`` is.

Method: numeric (float64, several seeds).  Tanh RNNs with the Gaussian output metric (unit
variance) on ``Y^T``, additive over steps; everything through the abstract pipeline
(:func:`geomkfac.networks.rnn_kfac.kfac_metric`, :func:`geomkfac.networks.rnn_kfac.expected_pullback`):

* the dense matrix of ``g_KFAC`` on ``Aff(A × X, Z) × Aff(A, Y)`` is symmetric and PSD
  (smallest eigenvalue ≥ −1e-12·scale);
* computed from scratch in a second choice of frames κ (all maps built in κ) its matrix equals
  the reference result carried to κ by the covariant law ``B⁻ᵀ G B⁻¹`` (dense, with the
  change between the two weight frames);
* under the hypothesis (H = 2, 1 input, 2 outputs, T = 3, N = 3: each layer's
  ``E_{ξ,t}[Ψ_{ξ,t}* g]`` has full rank) ``g_KFAC`` is nondegenerate: ``is_nondegenerate()``,
  full rank, ``sharp`` works and ``flat(sharp(dh)) = dh``;
* the converse is false: with one output and T = 2, N = 2, ``E_{ξ,t}[Ψ_{ξ,t}* g]`` on the
  recurrent weights is degenerate (rank ≤ 6 < 8) while ``g_KFAC`` there is nondegenerate.

Negative control (the hypothesis fails, and so does the conclusion): one example of T = 2 steps
for H = 3 units and 2 inputs gives at most 2 points ``ā`` in dimension 6, so both
``E[Ψ* g]`` and ``g_KFAC`` on the recurrent weights are degenerate: ``is_nondegenerate()`` must be
False, the rank deficit ≥ 1, and ``sharp`` must raise ``DegenerateMetricError``.
"""

from __future__ import annotations

import numpy as np
from _rnn import problem, random_changes, rel

from geomkfac.errors import DegenerateMetricError
from geomkfac.networks.rnn_kfac import expected_pullback, kfac_metric, loss_differential, recurrent_kfac_metric
from geomkfac.spaces import Covector

ID = "Thm G.3"
STATEMENT = ("the recurrent K-FAC metric g_KFAC (Def. G.2) is a metric (symmetric PSD, coordinate-free), "
             "nondegenerate when E[Ψ_{ξ,t}* g] is")
METHOD = "numeric"

# Tolerances (why):
# - PSD: −1e-12 relative (float64 eigenvalues of Gram-type matrices).
PSD_TOL = 1e-12
# - law: from scratch in κ vs B⁻ᵀ G B⁻¹, round-off through changes of condition number ≲ 1e2
#   on O(1) entries → 1e-10 relative.
LAW_TOL = 1e-10
# - flat(sharp(dh)) = dh: a solve with factor condition numbers ≲ 1e6 → 1e-8 relative.
ROUND_TOL = 1e-8


def expected_pullback_rank(net, w, h0, X, layer):
    """Rank of ``E_{ξ,t}[Ψ_{ξ,t}* g]`` on layer ``layer``'s weights (1: recurrent, 2: readout;
    the pipeline's expected pullback)."""
    E = expected_pullback(net, w, h0, X, "gaussian", layer)
    return E.rank(), net.weight_spaces.layer(layer).dim


def _seed(seed):
    out = {}
    net, w, h0, X, rng = problem(seed, H=2, d=1, c=2, T=3, N=3)
    g = kfac_metric(net, w, h0, X, "gaussian")
    M = np.asarray(g.matrix(), dtype=float)
    scale = float(np.max(np.abs(M)))
    out["symmetry"] = float(np.max(np.abs(M - M.T))) / scale
    out["PSD: −λ_min / scale"] = max(0.0, -float(np.linalg.eigvalsh(M)[0]) / scale)
    kappa = net.reference_frames().derive(**random_changes(net, rng))
    Fk = kappa.weight_space_frame
    Mk = np.asarray(kfac_metric(net, w, h0, X, "gaussian", frames=kappa).matrix(Fk), dtype=float)
    ch = net.reference_frames().weight_space_frame.change_to(Fk)
    Bi = np.asarray(ch.B_inv, dtype=float)
    out["coordinate-free: from scratch in κ vs B⁻ᵀGB⁻¹"] = rel(Mk, Bi.T @ M @ Bi)
    # nondegenerate under the hypothesis
    hyp = [expected_pullback_rank(net, w, h0, X, i) for i in (1, 2)]
    hyp_ok = all(r == n for r, n in hyp)
    nondeg = g.is_nondegenerate() and int(np.linalg.matrix_rank(M)) == M.shape[0]
    dh, _ = loss_differential(net, w, h0, X, rng.normal(size=(3, 3, 2)), "gaussian")
    back = g.flat(g.sharp(dh)).coords(dh.frame)
    out["flat(sharp(dh)) vs dh"] = rel(back, dh.coords())
    # the converse is false: E[Ψ*g] degenerate, g_KFAC nondegenerate
    net2, w2, h02, X2, _ = problem(1000 + seed, H=2, d=1, c=1, T=2, N=2)
    r2, n2 = expected_pullback_rank(net2, w2, h02, X2, 1)
    g2 = recurrent_kfac_metric(net2, w2, h02, X2, "gaussian", 1)
    converse = (r2 < n2) and g2.is_nondegenerate()
    facts = {"hypothesis holds (full-rank E[Ψ*g], both layers)": hyp_ok, "g_KFAC nondegenerate": nondeg,
             "converse false (E[Ψ*g] rank < dim, g_KFAC nondegenerate)": converse}
    return out, facts, f"E[Ψ*g] ranks {hyp}; converse case rank {r2}/{n2}"


def _control(seed):
    """Hypothesis fails (one example, T = 2, A-factor rank ≤ 2 < 6): g_KFAC must be degenerate."""
    net, w, h0, X, rng = problem(2000 + seed, H=3, d=2, c=2, T=2, N=1)
    r, n = expected_pullback_rank(net, w, h0, X, 1)
    g = recurrent_kfac_metric(net, w, h0, X, "gaussian", 1)
    raised = False
    dh, _ = loss_differential(net, w, h0, X, rng.normal(size=(1, 2, 2)), "gaussian")
    d0 = net.weight_space.split(dh.coords())[0]
    try:
        g.sharp(Covector(g.frame, d0))
    except DegenerateMetricError:
        raised = True
    deficit = n - g.rank()
    return (not g.is_nondegenerate()) and raised and deficit >= 1 and r < n, deficit


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(2)
    worst, facts_all, notes = {}, {}, []
    for seed in seeds:
        d, facts, note = _seed(seed)
        for k, v in d.items():
            worst[k] = max(worst.get(k, 0.0), v)
        for k, v in facts.items():
            facts_all[k] = facts_all.get(k, True) and bool(v)
        notes.append(note)
    ctrl = [_control(s) for s in seeds]
    ctrl_ok = all(c for c, _ in ctrl)
    deficit = min(d for _, d in ctrl)
    holds = (worst["symmetry"] <= PSD_TOL and worst["PSD: −λ_min / scale"] <= PSD_TOL
             and worst["coordinate-free: from scratch in κ vs B⁻ᵀGB⁻¹"] <= LAW_TOL
             and worst["flat(sharp(dh)) vs dh"] <= ROUND_TOL and all(facts_all.values()))
    return {
        "holds": bool(holds),
        "discrepancy": max(worst.values()),
        "negative_control": ("g_KFAC is nondegenerate although the hypothesis fails "
                             "(one example, T=2: rank E[āāᵀ] ≤ 2 < 6) — must be degenerate"),
        "negative_discrepancy": float(deficit),
        "negative_fails": bool(ctrl_ok),
        "details": {
            "networks": "tanh RNNs, Gaussian output metric additive over steps; H=2, d=1, c=2, T=3, N=3 "
                        f"({len(seeds)} seeds)",
            "largest per check": "; ".join(f"{k} {v:.1e}" for k, v in worst.items()),
            "facts": "; ".join(f"{k}: {v}" for k, v in facts_all.items()),
            "ranks": " | ".join(notes),
            "control": f"degenerate reported, sharp raised, rank deficit {deficit} (smallest over seeds)",
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
