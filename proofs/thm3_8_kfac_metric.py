"""Theorem 3.8: the K-FAC metric ``g_KFAC = g¹_ind + … + g^L_ind`` (Definition 3.7) is a
metric on the weight space — symmetric, PSD, a coordinate-free object — and it is
nondegenerate when every ``E[(Ψ^i)* g]`` is.

Method: numeric (float64, several seeds).  A 3-4-4-2 tanh MLP with the Bernoulli output
Fisher; ``geomkfac.kfac.kfac_metric``:

* its dense matrix in the induced frame is block diagonal (off-diagonal blocks exactly zero,
  Eqns. 2.8/B.2), symmetric and PSD (smallest eigenvalue ≥ −1e-12·scale);
* it is one coordinate-free object: computed from scratch in a second FrameChoice κ
  (random dense affine changes of every space) its matrix equals the reference result
  carried to κ's weight frame by the covariant law ``B⁻ᵀ G B⁻¹``;
* each layer's ``E[(Ψ^i)* g]`` — built separately by the pipeline as the expectation of the
  pullbacks along ``Ψ^i_ξ = ϕ^i_ξ ∘ ψ_{α_{i−1}}`` (and cross-checked against the diagonal block
  of the exact expected pullback along the whole network map ``Ψ_ξ``, Eqn. 3.2) — is
  nondegenerate, and so is ``g_KFAC`` (``is_nondegenerate()``, full rank, ``sharp`` works and
  ``flat(sharp(dh)) = dh``);
* where the hypothesis fails (``N = 2 ≤ n_0`` examples: ``E[(Ψ^1)* g]`` has rank ≤ 2·n_1),
  ``g_KFAC`` is degenerate too, with the rank the factors predict;
* the converse is false: a 1-2-1 tanh MLP with 3 examples (Gaussian output) has
  ``E[(Ψ^1)* g]`` of rank ≤ 3 < 4 — degenerate — while ``g_KFAC`` is nondegenerate.

Negative control: with a softmax output (rank ``C − 1`` output Fisher) the last layer's
``E[(Ψ^L)* g]`` is degenerate and ``g_KFAC`` must be reported degenerate: ``is_nondegenerate()``
False, rank ``dim − (n_{L−1}+1)``, ``sharp`` raising ``DegenerateMetricError``; and the false
converse ("``g_KFAC`` nondegenerate ⇒ every ``E[(Ψ^i)* g]`` nondegenerate") must be refuted
by the 1-2-1 example.
"""

from __future__ import annotations

import numpy as np
from _pipeline import problem, random_frames

from geomkfac import kfac as K
from geomkfac import pipeline
from geomkfac.errors import DegenerateMetricError
from geomkfac.spaces import Covector

ID = "Thm 3.8"
STATEMENT = ("g_KFAC = Σ_i g^i_ind is a metric (symmetric PSD, coordinate-free), nondegenerate "
             "when every E[(Ψ^i)* g] is")
METHOD = "numeric"

# Tolerances (why):
# - PSD: −1e-12 relative (float64 eigenvalues of a Gram-type matrix).
PSD_TOL = 1e-12
# - law: G_κ from scratch vs B⁻ᵀ G B⁻¹: round-off of two float64 computations through
#   changes of condition number ≲ 1e2 on O(1) entries → 1e-10 relative.
LAW_TOL = 1e-10
# - flat(sharp(dh)) = dh: a solve with block condition numbers ≲ 1e6 → 1e-8 relative.
ROUND_TOL = 1e-8


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def _layer_pullbacks(net, w, X, om):
    """``E[(Ψ^i)* g]`` for every layer, from the pipeline's partial network maps."""
    smp = K.samples(net, w, X)
    return [pipeline.expected_pullback([s.layer_maps(i) for s in smp], [s.weight_points[i] for s in smp],
                                       K.get_output_metric(om))
            for i in range(1, net.L + 1)]


def _hypothesis_fails(seed):
    """N = 2 ≤ n_0: layer 1's E[(Ψ¹)*g] and g_KFAC degenerate, rank as the factors predict."""
    net, w, X, rng = problem(seed, widths=(3, 4, 4, 2), activations=("tanh", "tanh", "identity"), N=2)
    E1 = _layer_pullbacks(net, w, X, "bernoulli")[0]
    g = K.kfac_metric(net, w, X, "bernoulli")
    predicted = sum(int(np.linalg.matrix_rank(A)) * int(np.linalg.matrix_rank(G))
                    for A, G in (m.factors() for m in g.metrics))
    ok = (not E1.is_nondegenerate()) and (not g.is_nondegenerate()) and g.rank() == predicted
    return ok, f"N = 2: E[(Ψ¹)*g] rank {E1.rank()}/{E1.space.dim}, g_KFAC rank {g.rank()} (predicted {predicted}) of {g.space.dim}"


def _converse(seed):
    """1-2-1 tanh, 3 examples: E[(Ψ¹)*g] degenerate (rank ≤ 3 < 4) while g_KFAC is not."""
    net, w, X, rng = problem(seed, widths=(1, 2, 1), activations=("tanh", "identity"), N=3, scale=2.0)
    E = _layer_pullbacks(net, w, X, "gaussian")
    g = K.kfac_metric(net, w, X, "gaussian")
    refuted = g.is_nondegenerate() and not E[0].is_nondegenerate()
    return refuted, (f"1-2-1, N = 3: E[(Ψ¹)*g] rank {E[0].rank()}/{E[0].space.dim}, "
                     f"g_KFAC rank {g.rank()}/{g.space.dim}")


def _seed(seed, N):
    net, w, X, rng = problem(seed, widths=(3, 4, 4, 2), activations=("tanh", "tanh", "identity"),
                             N=N)
    g = K.kfac_metric(net, w, X, "bernoulli")
    M = np.asarray(g.matrix(), dtype=float)
    sizes = net.param_counts
    offs = np.concatenate([[0], np.cumsum(sizes)])
    off_max = 0.0
    for i in range(net.L):
        sl = slice(offs[i], offs[i + 1])
        mask = np.ones(M.shape[0], bool)
        mask[sl] = False
        off_max = max(off_max, float(np.max(np.abs(M[sl][:, mask]))))
    scale = max(1.0, float(np.max(np.abs(M))))
    sym = float(np.max(np.abs(M - M.T)))
    lam_min = float(np.linalg.eigvalsh(M).min()) / scale
    kappa = random_frames(net, rng)
    Fk = kappa.weight_space_frame
    g_k = K.kfac_metric(net, w, X, "bernoulli", frames=kappa)
    law = _rel(g_k.matrix(Fk), g.matrix(Fk))
    # E[(Ψ^i)* g]: by the partial maps, and as diagonal blocks of the exact expected pullback
    layer_E = _layer_pullbacks(net, w, X, "bernoulli")
    exact_ranks = [m.rank() for m in layer_E]
    F = np.asarray(K.expected_pullback(net, w, X, "bernoulli").matrix(), dtype=float)
    partial_vs_full = max(_rel(m.matrix(), F[offs[i]:offs[i + 1], offs[i]:offs[i + 1]])
                          for i, m in enumerate(layer_E))
    dh = K.loss_differential(net, w, X, (rng.random((N, 2)) < 0.5).astype(float), "bernoulli")
    back = g.flat(g.sharp(dh)).coords(g.frame)
    roundtrip = _rel(back, dh.coords(g.frame))
    out = dict(partial_vs_full=partial_vs_full, off_max=off_max, sym=sym, lam_min=lam_min, law=law,
               exact_ranks=exact_ranks, sizes=list(sizes), nondeg=g.is_nondegenerate(),
               rank=g.rank(), dim=net.weight_space.dim, roundtrip=roundtrip)
    # negative control: softmax output
    gs = K.kfac_metric(net, w, X, "categorical")
    try:
        gs.sharp(Covector(gs.frame, np.ones(gs.space.dim)))
        raised = False
    except DegenerateMetricError:
        raised = True
    out.update(soft_nondeg=gs.is_nondegenerate(), soft_rank=gs.rank(), soft_raised=raised,
               soft_expected=net.weight_space.dim - (net.widths[-2] + 1))
    return out


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(2)
    N = 12 if fast else 24
    ok, ctrl, worst, per_seed = True, True, 0.0, {}
    for seed in seeds:
        r = _seed(seed, N)
        ok &= (r["partial_vs_full"] <= LAW_TOL and r["off_max"] == 0.0 and r["sym"] == 0.0
               and r["lam_min"] >= -PSD_TOL and r["law"] <= LAW_TOL
               and r["exact_ranks"] == r["sizes"] and r["nondeg"] and r["rank"] == r["dim"]
               and r["roundtrip"] <= ROUND_TOL)
        ctrl &= (not r["soft_nondeg"] and r["soft_raised"] and r["soft_rank"] == r["soft_expected"])
        worst = max(worst, r["partial_vs_full"], r["off_max"], r["sym"], max(0.0, -r["lam_min"]),
                    r["law"], r["roundtrip"])
        per_seed[f"seed {seed}"] = (
            f"E[(Ψ^i)*g] partial maps vs block of E[Ψ*g] {r['partial_vs_full']:.1e}, "
            f"off-diagonal {r['off_max']:.1e}, "
            f"λ_min/scale {r['lam_min']:.1e}, law {r['law']:.1e}, flat∘sharp {r['roundtrip']:.1e}; "
            f"ranks of E[(Ψ^i)*g] {r['exact_ranks']} of {r['sizes']}, g_KFAC rank "
            f"{r['rank']}/{r['dim']} | softmax: rank {r['soft_rank']} (expected "
            f"{r['soft_expected']}), sharp raised {r['soft_raised']}")
    fails_ok, fails_row = _hypothesis_fails(0)
    refuted, conv_row = _converse(0)
    ok &= fails_ok
    ctrl &= refuted
    return {
        "holds": bool(ok),
        "discrepancy": worst,
        "negative_control": ("softmax output: g_KFAC must be reported degenerate (rank "
                             "dim − (n_{L−1}+1), sharp raises DegenerateMetricError); the converse "
                             "(g_KFAC nondegenerate ⇒ each E[(Ψ^i)*g] is) must be refuted"),
        "negative_discrepancy": float(r["dim"] - r["soft_rank"]),
        "negative_fails": bool(ctrl),
        "details": {
            "network": f"3-4-4-2 tanh MLP, Bernoulli output Fisher, N={N}, {len(seeds)} seeds",
            "discrepancy column": "largest of: partial-map vs full-map layer pullbacks, "
                                  "off-diagonal/symmetry errors, −λ_min, law error, "
                                  "flat∘sharp error (relative)",
            "negative discrepancy column": "rank deficiency of g_KFAC (softmax)",
            "per seed": per_seed,
            "hypothesis fails": fails_row,
            "converse refuted": conv_row,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
