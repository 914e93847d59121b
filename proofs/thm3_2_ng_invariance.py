"""Theorem 3.2: the update ``ω ← ω − ε g⁻¹ dh`` with a coordinate-free nondegenerate metric
``g`` is exactly invariant to affine reparameterizations — for every metric built by the
abstract pipeline: Fisher, Gauss-Newton, K-FAC and empirical Fisher.

Symbolic part (exact).  For a change of weight frame ``x ↦ B x + c`` the metric's matrix
becomes ``B⁻ᵀ G B⁻¹`` and the differential's coordinates ``B⁻ᵀ d``, so the step in the new
frame is ``(B⁻ᵀ G B⁻¹)⁻¹ B⁻ᵀ d = B G⁻¹ d``, the old step pushed forward by ``B``: the updated
point ``B x + c − ε B G⁻¹ d = B (x − ε G⁻¹ d) + c`` is the same point.  Checked as sympy
matrix expressions (the difference simplifies to the zero matrix) and entrywise with a
symbolic 2×2 ``B``, symmetric ``G`` and ``d`` (``adj`` keeps it polynomial).

Numeric part (float64, several seeds).  A 2-3-2 tanh MLP; the metric (``expected_pullback``
with the Bernoulli output Fisher and with the Euclidean metric → Gauss-Newton,
``kfac_metric``, ``empirical_fisher_metric``) and ``dh`` are computed by the pipeline in the
reference frames and, from scratch, in a second FrameChoice κ (random dense affine changes
of ``A_0``, every ``Z_i``, ``A_1``, ``A_2``); ``natural_gradient_update`` in each; the two new
Points are compared (coordinates in the reference frame).

Affine changes of ``W`` that are *not* induced by frames on the layers (a random dense change
of every ``W_i``, and a permutation of the weight entries): the Fisher natural gradient
computed from scratch in the new weight coordinates (pullbacks along ``Ψ_ξ`` with the
Jacobians taken in the new frame) stays invariant — Theorem 3.2 needs no layer structure —
while K-FAC's formula applied in those coordinates (the same factors ``A_i``, ``G_i``: the
activations do not change) moves a different point: K-FAC is not invariant to such changes.
The row reports both numbers; the K-FAC drift is part of the negative control.

Negative controls (all must fail): SGD (``sgd_update``: the Euclidean metric of a frame) read
in the two frames, and one step of the shipped Adam (``geomkfac.nn.optim``, loss ``mse``) on
the network read in the reference frames and in a random κ' that keeps the output
coordinates, give different points; and Tikhonov damping
``λ I`` added in the reference frame versus in κ gives a discrepancy that grows with λ
(measured at λ = 1e-8 … 1e-4, relative to the step; must increase and be ≫ round-off).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from _pipeline import flat_weights, problem, random_frames

from geomkfac import kfac as K
from geomkfac import pipeline
from geomkfac.metrics import Metric
from geomkfac.nn import to_mlp
from geomkfac.spaces import Point
from geomkfac.nn.optim import get_optimizer

ID = "Thm 3.2"
STATEMENT = ("ω ← ω − ε g⁻¹dh with a coordinate-free nondegenerate metric (Fisher, GN, K-FAC, "
             "empirical Fisher) is exactly invariant to affine reparameterizations")
METHOD = "symbolic+numeric"

# Tolerances (why):
# - numeric invariance: the two computations differ only by round-off in solves with the
#   metric's matrix; float64 ε ≈ 2.2e-16 times the largest condition number met (measured,
#   ≲ 1e9 for the exact Fisher of an MLP in a skewed frame) times a safety factor of 1e3.
#   The tolerance is computed from the measured condition number and capped at 1e-5.
EPS64 = np.finfo(float).eps
SAFETY = 1e3
CAP = 1e-5
# - negative controls: a coordinate-dependent rule moves the point by a fraction of a step;
#   we require ≥ 1e-3 relative to the step for SGD/Adam, and for damping a discrepancy that
#   increases with λ and reaches ≥ 1e-6 (≫ round-off) at the largest λ.
DRIFT_MIN = 1e-3
DAMP_MIN = 1e-6
LAMBDAS = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4)
LR = 0.1


def _symbolic():
    n = 3
    B, G, d = sp.MatrixSymbol("B", n, n), sp.MatrixSymbol("G", n, n), sp.MatrixSymbol("d", n, 1)
    expr = ((B.T.I * G * B.I).I * (B.T.I * d) - B * G.I * d).doit()
    expr_zero = expr == 0 or expr == sp.ZeroMatrix(n, 1)
    # entrywise: (B⁻ᵀ G B⁻¹) (B adj(G) d) − det G · B⁻ᵀ d, times Bᵀ to stay polynomial
    Bm = sp.Matrix(2, 2, sp.symbols("b0:4"))
    g0, g1, g2 = sp.symbols("g0:3")
    Gm = sp.Matrix([[g0, g1], [g1, g2]])
    dm = sp.Matrix(sp.symbols("d0:2"))
    step_k = Bm * Gm.adjugate() * dm                    # det G · (claimed step in κ)
    residual = Gm * Bm.adjugate() * step_k - Gm.det() * Bm.det() * dm  # Bᵀ(G_κ step_k − detG d_κ)·det B
    nonzero = sum(sp.expand(e) != 0 for e in residual)
    # SGD: the step in κ is d_κ = B⁻ᵀ d; pushed back by B⁻¹ it must be d — it is B⁻¹B⁻ᵀ d
    sgd_res = (Bm.adjugate() * Bm.adjugate().T * dm - Bm.det() ** 2 * dm).applyfunc(sp.expand)
    return expr, expr_zero, nonzero, sum(e != 0 for e in sgd_res)


def _adam_point(net, w, X, Y, frames):
    """One step of the shipped Adam (loss ``mse``: the Gaussian ``dh``) on the network read
    in ``frames`` as a :class:`geomkfac.nn.MLP`; the new weights' reference coordinates."""
    model = to_mlp(net.coordinates(w, frames))
    get_optimizer("adam", model, "mse", lr=LR).step(net.input_coords(X, frames), Y)
    return flat_weights(net, net.weights_from(model.get_Wbars(), frames))


def _non_induced(net, w, X, Y, rng):
    """Fisher NG vs K-FAC in weight coordinates changed by non-induced affine maps.

    Returns ``{change: (fisher drift, kfac drift)}`` relative to the step."""
    w0 = flat_weights(net, w)
    ref = net.weight_space.reference_frame
    F_ref = K.expected_pullback(net, w, X, "gaussian")
    dh_ref = K.loss_differential(net, w, X, Y, "gaussian")
    p_fisher = flat_weights(net, K.natural_gradient_update(F_ref, w, dh_ref, LR))
    g_kfac = K.kfac_metric(net, w, X, "gaussian")
    p_kfac = flat_weights(net, K.natural_gradient_update(g_kfac, w, dh_ref, LR))
    blocks = [np.kron(*m.factors()) for m in g_kfac.metrics]         # K-FAC's formula, per layer
    sizes = [b.shape[0] for b in blocks]
    n = sum(sizes)
    perm = np.concatenate([o + rng.permutation(k) for o, k in zip(np.cumsum([0] + sizes[:-1]), sizes)])
    changes = {
        "dense change of each W_i": (_block_diag([rng.normal(size=(k, k)) + 2 * np.eye(k) for k in sizes]),
                                     rng.normal(size=n)),
        "permutation of the weight entries": (np.eye(n)[perm], np.zeros(n)),
    }
    out = {}
    for name, (B, c) in changes.items():
        Fw = ref.derive(B, c, name="θ'")
        at = Point(Fw, w.coords(Fw))
        smp = K.samples(net, w, X)
        maps = [s.network_map for s in smp]
        F_new = pipeline.expected_pullback(maps, [at] * len(smp), K.get_output_metric("gaussian"))
        loss = K.get_output_metric("gaussian").loss()
        douts = [K.Covector(s.output.space.reference_frame, loss.grad(s.output.coords(), y)) for s, y in zip(smp, Y)]
        dh_new = pipeline.mean_covector(pipeline.pulled_back_differentials(maps, [at] * len(smp), douts))
        q_fisher = flat_weights(net, K.natural_gradient_update(F_new, at, dh_new, LR))
        kfac_new = Metric(Fw, _block_diag(blocks))                      # the formula read in θ'
        q_kfac = flat_weights(net, K.natural_gradient_update(kfac_new, at, dh_new, LR))
        cond = float(np.linalg.cond(np.asarray(F_new.matrix(Fw), dtype=float)))
        drift = float(np.max(np.abs(q_fisher - p_fisher)) / np.max(np.abs(p_fisher - w0)))
        out[name] = (drift / min(CAP, SAFETY * EPS64 * cond), drift,
                     float(np.max(np.abs(q_kfac - p_kfac)) / np.max(np.abs(p_kfac - w0))))
    return out


def _block_diag(blocks):
    n = sum(b.shape[0] for b in blocks)
    M, o = np.zeros((n, n)), 0
    for b in blocks:
        M[o:o + b.shape[0], o:o + b.shape[0]] = b
        o += b.shape[0]
    return M


def _seed(seed, N):
    net, w, X, rng = problem(seed, widths=(2, 3, 2), activations=("tanh", "identity"), N=N)
    Y_real = rng.normal(size=(N, 2))
    Y_bin = (rng.random(size=(N, 2)) < 0.5).astype(float)
    kappa = random_frames(net, rng)
    ref = net.reference_frames()
    w0 = flat_weights(net, w)
    builders = {
        "Fisher (Bernoulli output)": ("bernoulli", Y_bin,
                                      lambda fr: K.expected_pullback(net, w, X, "bernoulli", frames=fr)),
        "Gauss-Newton (Euclidean)": ("euclidean", Y_real,
                                     lambda fr: K.expected_pullback(net, w, X, "euclidean", frames=fr)),
        "K-FAC (Gaussian)": ("gaussian", Y_real,
                             lambda fr: K.kfac_metric(net, w, X, "gaussian", frames=fr)),
        "empirical Fisher (Gaussian)": ("gaussian", Y_real,
                                        lambda fr: K.empirical_fisher_metric(net, w, X, Y_real,
                                                                             "gaussian", frames=fr)),
    }
    out = {}
    for name, (om, Y, build) in builders.items():
        pts, conds = [], []
        for fr in (ref, kappa):
            g = build(fr)
            dh = K.loss_differential(net, w, X, Y, om, frames=fr)
            pts.append(flat_weights(net, K.natural_gradient_update(g, w, dh, LR)))
            conds.append(float(np.linalg.cond(np.asarray(g.matrix(fr.weight_space_frame), dtype=float))))
        step = np.max(np.abs(pts[0] - w0))
        out[name] = (float(np.max(np.abs(pts[0] - pts[1])) / step), max(conds))

    # negative controls on the K-FAC problem
    Y = Y_real
    g = K.kfac_metric(net, w, X, "gaussian")
    dh = K.loss_differential(net, w, X, Y, "gaussian")
    Fk = kappa.weight_space_frame
    step = np.max(np.abs(flat_weights(net, K.natural_gradient_update(g, w, dh, LR)) - w0))
    sgd = np.max(np.abs(flat_weights(net, K.sgd_update(w, dh, LR))
                        - flat_weights(net, K.sgd_update(w, dh, LR, frame=Fk))))
    sgd_step = np.max(np.abs(flat_weights(net, K.sgd_update(w, dh, LR)) - w0))
    # Adam reads the loss in the network's output coordinates: a frame that keeps A_L
    kappa_out = random_frames(net, rng, output=False)
    adam_ref = _adam_point(net, w, X, Y, ref)
    adam = np.max(np.abs(adam_ref - _adam_point(net, w, X, Y, kappa_out)))
    adam_step = np.max(np.abs(adam_ref - w0))
    damp = []
    for lam in LAMBDAS:
        a = flat_weights(net, K.natural_gradient_update(g, w, dh, LR, damping=lam))
        b = flat_weights(net, K.natural_gradient_update(g, w, dh, LR, damping=lam, damping_frame=Fk))
        damp.append(float(np.max(np.abs(a - b)) / step))
    non_induced = _non_induced(net, w, X, Y, rng)
    return out, float(sgd / sgd_step), float(adam / adam_step), damp, non_induced


def check(fast: bool = False) -> dict:
    expr, expr_zero, kfac_nonzero, sgd_sym_nonzero = _symbolic()
    seeds = range(1) if fast else range(2)
    N = 24  # ≥ 17 parameters: the empirical Fisher (rank ≤ N) must be nondegenerate
    worst, worst_tol_ratio, per_seed = {}, 0.0, {}
    sgd_min = adam_min = np.inf
    damp_ok, damp_min_top = True, np.inf
    ni_fisher, ni_kfac, ni_ratio = 0.0, np.inf, 0.0
    for seed in seeds:
        out, sgd, adam, damp, non_induced = _seed(seed, N)
        for name, (ratio, df, dk) in non_induced.items():
            ni_ratio = max(ni_ratio, ratio)
            ni_fisher, ni_kfac = max(ni_fisher, df), min(ni_kfac, dk)
        for name, (d, cond) in out.items():
            tol = min(CAP, SAFETY * EPS64 * cond)
            worst[name] = max(worst.get(name, 0.0), d)
            worst_tol_ratio = max(worst_tol_ratio, d / tol)
        sgd_min, adam_min = min(sgd_min, sgd), min(adam_min, adam)
        damp_ok &= all(b > a for a, b in zip(damp, damp[1:]))
        damp_min_top = min(damp_min_top, damp[-1])
        per_seed[f"seed {seed}"] = (
            "; ".join(f"{k}: {d:.1e} (cond {c:.0e})" for k, (d, c) in out.items())
            + f" | SGD {sgd:.1e}, Adam {adam:.1e}; damping λ={LAMBDAS[0]:g}…{LAMBDAS[-1]:g}: "
            + ", ".join(f"{x:.1e}" for x in damp)
            + " | non-induced changes of W (Fisher NG, K-FAC): "
            + "; ".join(f"{k}: {df:.1e}, {dk:.1e}" for k, (_, df, dk) in non_induced.items()))
    holds = bool(expr_zero and kfac_nonzero == 0 and worst_tol_ratio <= 1.0 and ni_ratio <= 1.0)
    negative = min(sgd_min, adam_min, damp_min_top, ni_kfac)
    neg_fails = bool(sgd_min >= DRIFT_MIN and adam_min >= DRIFT_MIN and damp_ok
                     and damp_min_top >= DAMP_MIN and sgd_sym_nonzero > 0 and ni_kfac >= DRIFT_MIN)
    return {
        "holds": holds,
        "discrepancy": max(worst.values()),
        "negative_control": ("SGD and Adam read in two frames give different points (≥ 1e-3 of a "
                             "step); Tikhonov damping λI in two frames differs, growing with λ; "
                             "K-FAC under non-induced changes of W (dense, permutation) drifts"),
        "negative_discrepancy": negative,
        "negative_fails": neg_fails,
        "details": {
            "matrix expressions: (B⁻ᵀGB⁻¹)⁻¹B⁻ᵀd − BG⁻¹d": str(expr),
            "entrywise residual (2×2 symbolic B, G, d)": f"{kfac_nonzero} nonzero of 2",
            "SGD symbolic residual B⁻¹B⁻ᵀd − d": f"{sgd_sym_nonzero} nonzero of 2",
            "numeric": f"2-3-2 tanh MLP, N={N}, random dense affine changes of all spaces; "
                       "discrepancy = max|ω₁ − ω₁‡| / max|step| (reference coordinates)",
            "largest discrepancy per metric": ", ".join(f"{k} {v:.1e}" for k, v in worst.items()),
            "largest discrepancy / its tolerance (ε·cond·1e3, ≤ 1e-5)": worst_tol_ratio,
            "SGD smallest relative drift": float(sgd_min),
            "Adam smallest relative drift": float(adam_min),
            "damping discrepancy increases with λ on every seed": damp_ok,
            "non-induced changes of W: largest Fisher NG drift": ni_fisher,
            "non-induced changes of W: largest Fisher NG drift / its tolerance (ε·cond·1e3, ≤ 1e-5)":
                ni_ratio,
            "non-induced changes of W: smallest K-FAC drift (must be ≥ 1e-3)": float(ni_kfac),
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
