"""Theorem 2.1: the transformed MLP computes the same function, and undamped K-FAC
updates stay equivalent step after step.

Symbolic part (exact).  With ``A‡ = [Ω]_H A [Ω]_Hᵀ``, ``G‡ = Φᵀ G Φ`` and
``DW̄‡ = Φᵀ DW̄ [Ω]_Hᵀ`` (paper-notes §3), the K-FAC step of the transformed layer is
``ΔW̄‡ = G‡⁻¹ DW̄‡ A‡⁻¹ = Φ⁻¹ ΔW̄ [Ω]_H⁻¹`` with ``ΔW̄ = G⁻¹ DW̄ A⁻¹``, so Eqn. D.2 maps the
updated weights back to the updated original weights.  Checked twice: (i) as sympy matrix
expressions (any sizes; the difference simplifies to the zero matrix), (ii) entrywise
with symbolic Ω, γ, Φ, A, G and ΔW̄ (layers 1→2 and 2→1, so that Ω and Φ are each a full
matrix once; fast: 1→2):
``G‡ (adj Φ ΔW̄ adj [Ω]_H) A‡ − det Φ det [Ω]_H DW̄‡`` expands to 0 (adjugates keep the
identity polynomial, so no rational simplification is needed).

Numeric part.  A 2-3-3-2 tanh MLP with Gaussian output (unit variance; nondegenerate
output Fisher) and the same network after random non-diagonal affine changes of the input
and of every hidden activation and pre-activation space (Eqns. D.2/D.3) are trained side by
side for 50 steps (fast: 10) of undamped K-FAC with exact inverses; the largest
``|f(x) − f‡(x‡)|`` over all steps stays at round-off.  The networks are built by
:func:`geomkfac.reparam.reparameterize`, read as :class:`geomkfac.nn.MLP` through
:func:`geomkfac.nn.to_mlp` and trained by the shipped optimizers
(``get_optimizer("kfac", …, damping=0, damping_mode="exact", eig_floor=None, ema_decay=0,
factor_update_period=1, inverse_update_period=1, kl_clip=None, fisher="exact")`` with the
loss ``mse``; "sgd" and "adam" for the controls).

A permutation of the *units* of the hidden layers (an affine change: ``Ω = Φ⁻¹ = P``) is
covered too: K-FAC on the permuted network stays equal (round-off).

Cross-check with the abstract pipeline: one undamped K-FAC step of ``geomkfac.kfac``
(``kfac_metric`` + ``loss_differential`` + ``natural_gradient_update``, the coordinate-free
metric's ``sharp``) equals one step of the shipped K-FAC optimizer to 1e-10 (relative), in the reference frames and read back from the frames κ.

Negative controls (all must fail):

* SGD and Adam on the same pair of networks must drift apart by at least 1e-2 (neither is
  invariant to a non-diagonal affine change); symbolically, SGD's step ``DW̄‡`` mapped back
  by D.2 is not ``ΔW̄_SGD = DW̄``;
* permuting the *entries* of ``W̄_1`` (a random permutation of ``vec W̄_1``, not of the form
  ``[Ω]_H ⊗ Φ``) is not an affine change of the activation frames, so K-FAC applied in the
  permuted coordinates (``G⁻¹ DW' A⁻¹`` with ``DW'`` the permuted gradient) moves away from
  K-FAC in the original ones: one step of size 0.1 must differ by ≥ 1e-2;
* a smooth nonlinear reparameterization of the weights ``W̄ = r(U) = U + 0.1 U³`` (entrywise)
  breaks K-FAC's invariance even with the metric pulled back exactly (step
  ``J_r⁻¹ ΔW̄``): after 10 steps of size 1e-2 the networks differ by ≥ 1e-4
  (≫ the round-off tolerance; first-order agreement only, as in §2.1).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac import kfac as K
from geomkfac.networks import AbstractMLP
from geomkfac.nn import get_loss, kfac_factors, loss_and_grad, to_mlp
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.optim.kronecker import precondition_exact, safe_eigh
from geomkfac.reparam import CoordinateMLP, permutation, random_affine, reparameterize

ID = "Thm 2.1"
STATEMENT = ("an affinely transformed MLP computes the same function, and undamped K-FAC "
             "keeps the two networks equal step after step")
METHOD = "symbolic+numeric"

# Tolerances (why):
# - K-FAC: float64 round-off (ε ≈ 2.2e-16) amplified by the factors' condition numbers
#   (≲ 1e6 here) and accumulated over ≤ 50 steps stays below 1e-8 on
#   outputs of size O(1); any non-invariance shows at the step-size scale (≥ 1e-3).
KFAC_TOL = 1e-8
# - SGD/Adam: a coordinate-dependent update moves the two networks apart by the size of
#   a step times the distortion of the change of frame; we require at least 1e-2.
DRIFT_MIN = 1e-2
# - nonlinear reparameterization: the discrepancy is second order per step (~ε²|ΔW̄|²·r''),
#   measured ≳ 1e-2 after 10 steps of 1e-2; we require ≥ 1e-4, 1e4 × KFAC_TOL.
NONLINEAR_MIN = 1e-4
# - pipeline vs coordinate step: the same solves by two code paths; float64 round-off
#   times the factors' condition numbers (≲ 1e4 here) → 1e-10 relative.
PIPELINE_TOL = 1e-10


def _sym_matrix(name, rows, cols, symmetric=False):
    if symmetric:
        return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}{min(i, j)}{max(i, j)}"))
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}{i}{j}"))


def _matrix_expression_identity(n_in=3, n_out=2):
    """(i): ``G‡⁻¹ DW̄‡ A‡⁻¹ − Φ⁻¹ (G⁻¹ DW̄ A⁻¹) [Ω]_H⁻¹`` as sympy matrix expressions."""
    Phi = sp.MatrixSymbol("Phi", n_out, n_out)
    OmH = sp.MatrixSymbol("Omega_H", n_in + 1, n_in + 1)
    A = sp.MatrixSymbol("A", n_in + 1, n_in + 1)
    G = sp.MatrixSymbol("G", n_out, n_out)
    D = sp.MatrixSymbol("DW", n_out, n_in + 1)
    A_t, G_t, D_t = OmH * A * OmH.T, Phi.T * G * Phi, Phi.T * D * OmH.T
    diff = G_t.I * D_t * A_t.I - Phi.I * (G.I * D * A.I) * OmH.I
    return diff.doit()


def _entrywise_identity(n_in, n_out, rule="kfac"):
    """(ii): the residual of the transformed layer's update equation, entrywise.

    For K-FAC, ``ΔW̄`` is free and ``DW̄ = G ΔW̄ A`` (the unique gradient producing it); the
    claimed transformed step ``Φ⁻¹ ΔW̄ [Ω]_H⁻¹`` must solve ``G‡ X A‡ = DW̄‡``.  For SGD the
    transformed step is ``DW̄‡`` itself; mapped back by D.2 it must equal ``ΔW̄ = DW̄``.
    Returns the list of residual entries, expanded.
    """
    Om = _sym_matrix("Omega", n_in, n_in)
    gamma = _sym_matrix("gamma", n_in, 1)
    OmH = sp.Matrix(sp.BlockMatrix([[Om, gamma], [sp.zeros(1, n_in), sp.ones(1, 1)]]))
    Phi = _sym_matrix("Phi", n_out, n_out)
    A = _sym_matrix("A", n_in + 1, n_in + 1, symmetric=True)
    G = _sym_matrix("G", n_out, n_out, symmetric=True)
    dW = _sym_matrix("V", n_out, n_in + 1)
    if rule == "kfac":
        D = G * dW * A
        A_t, G_t, D_t = OmH * A * OmH.T, Phi.T * G * Phi, Phi.T * D * OmH.T
        X_scaled = Phi.adjugate() * dW * OmH.adjugate()        # = det Φ det [Ω]_H · X
        residual = G_t * X_scaled * A_t - Phi.det() * OmH.det() * D_t
    else:  # SGD: step in the transformed frame is DW̄‡; D.2 maps a step Δ‡ to Φ Δ‡ [Ω]_H
        D = dW
        residual = Phi * (Phi.T * D * OmH.T) * OmH - D
    return [sp.expand(e) for e in residual]


#: the shipped K-FAC as the exact, undamped K-FAC step of Theorem 2.1: exact output Fisher,
#: factors and inverses of the current step only, no damping, floor, clipping or momentum
KFAC_EXACT = dict(damping=0.0, damping_mode="exact", eig_floor=None, ema_decay=0.0,
                  factor_update_period=1, inverse_update_period=1, kl_clip=None,
                  fisher="exact", momentum=0)
LOSS = "mse"  # ½‖f − y‖², Gaussian output with unit variance


def _optimizer(rule, model, lr):
    """The shipped optimizer ``rule`` ("kfac", "sgd", "adam") for ``model`` and the loss."""
    hyper = KFAC_EXACT if rule == "kfac" else {}
    return get_optimizer(rule, model, LOSS, lr=lr, **hyper)


def random_problem(rng, widths, activations, N):
    """A random coordinate MLP, inputs and regression targets from a perturbed teacher."""
    Ws = [rng.normal(size=(o, i + 1)) / np.sqrt(i + 1) for i, o in zip(widths[:-1], widths[1:])]
    net = CoordinateMLP(Ws, list(activations))
    X = rng.normal(size=(N, widths[0]))
    teacher = CoordinateMLP([W + 0.5 * rng.normal(size=W.shape) for W in Ws], list(activations))
    Y = teacher.forward(X) + 0.05 * rng.normal(size=(N, widths[-1]))
    return net, X, Y


def train_pair(net, net_t, X, X_t, Y, rule, steps, lr):
    """Train ``net`` (inputs ``X``) and ``net_t`` (inputs ``X_t``), both read as
    :class:`geomkfac.nn.MLP`, side by side with the shipped optimizer ``rule``.

    Returns the largest ``max |f(X) − f‡(X‡)|`` over all steps (step 0 included) and the
    final loss of the first network.
    """
    a, b = to_mlp(net), to_mlp(net_t)
    opt_a, opt_b = _optimizer(rule, a, lr), _optimizer(rule, b, lr)
    worst = float(np.max(np.abs(a.forward(X) - b.forward(X_t))))
    for _ in range(steps):
        opt_a.step(X, Y)
        opt_b.step(X_t, Y)
        worst = max(worst, float(np.max(np.abs(a.forward(X) - b.forward(X_t)))))
    return worst, float(get_loss(LOSS).value(a.forward(X), Y))


def _pipeline_cross_check(net, X, Y, changes, lr=0.1):
    """One step of ``geomkfac.kfac`` (coordinate-free K-FAC metric, read in the reference
    frames and in κ) vs one step of the shipped K-FAC optimizer; relative difference."""
    acts = [a.name for a in net.activations]
    anet = AbstractMLP(net.widths, acts, name="thm21")
    w = anet.weights_from(net.Wbars)
    model = to_mlp(net)
    _optimizer("kfac", model, lr).step(X, Y)
    expected = model.get_Wbars()
    scale = max(float(np.max(np.abs(W))) for W in expected)
    worst = 0.0
    for frames in (anet.reference_frames(), anet.reference_frames().derive(changes)):
        g = K.kfac_metric(anet, w, X, "gaussian", frames=frames)
        dh = K.loss_differential(anet, w, X, Y, "gaussian", frames=frames)
        new = anet.layer_weights(K.natural_gradient_update(g, w, dh, lr))
        worst = max(worst, max(float(np.max(np.abs(np.asarray(a, dtype=float) - b)))
                               for a, b in zip(new, expected)) / scale)
    return worst


def _kfac_direction(D, A, G):
    """``G⁻¹ D A⁻¹`` by the shipped factored linear algebra (undamped)."""
    return precondition_exact(D, safe_eigh(A, None), safe_eigh(G, None), 0.0)


def _permuted_entries_step(net, X, Y, rng, lr=0.1):
    """One shipped K-FAC step vs K-FAC in coordinates where the entries of W̄_1 are permuted
    (factors from ``geomkfac.nn.kfac_factors``), mapped back; largest output difference."""
    model = to_mlp(net)
    loss = get_loss(LOSS)
    As, Gs = zip(*kfac_factors(model, X, None, loss, fisher="exact"))
    grads = model.split_flat(loss_and_grad(model, X, Y, loss)[1])
    shape = grads[0].shape
    P = rng.permutation(grads[0].size)
    Dp = grads[0].reshape(-1, order="F")[P].reshape(shape, order="F")
    Vp = _kfac_direction(Dp, As[0], Gs[0]).reshape(-1, order="F")
    v = np.empty_like(Vp)
    v[P] = Vp
    permuted = [v.reshape(shape, order="F")] + [_kfac_direction(D, A, G) for D, A, G in
                                                 zip(grads[1:], As[1:], Gs[1:])]
    other = model.copy()
    other.set_Wbars([W - lr * D for W, D in zip(model.get_Wbars(), permuted)])
    _optimizer("kfac", model, lr).step(X, Y)
    return float(np.max(np.abs(model.forward(X) - other.forward(X))))


def _nonlinear_run(net, X, Y, steps=10, lr=1e-2, c=0.1):
    """K-FAC in W̄ vs K-FAC pulled back to U with W̄ = r(U) = U + c U³ (entrywise).

    The pulled-back step is ``U ← U − lr J_r⁻¹ ΔW̄`` with ``ΔW̄`` the shipped K-FAC step at
    ``W̄ = r(U)``: one optimizer step from ``r(U)`` lands at ``r(U) − lr ΔW̄``.
    """
    def r(U):
        return U + c * U ** 3

    def dr(U):
        return 1 + 3 * c * U ** 2

    Us = []
    for W in net.Wbars:  # invert r by Newton's method (r is strictly increasing)
        U = W.copy()
        for _ in range(50):
            U = U - (r(U) - W) / dr(U)
        Us.append(U)
    a, b = to_mlp(net), to_mlp(net)
    opt_a, opt_b = _optimizer("kfac", a, lr), _optimizer("kfac", b, lr)
    worst = 0.0
    for _ in range(steps):
        b.set_Wbars([r(U) for U in Us])
        opt_b.step(X, Y)
        Us = [U - (r(U) - W) / dr(U) for U, W in zip(Us, b.get_Wbars())]   # J_r⁻¹ (lr ΔW̄)
        b.set_Wbars([r(U) for U in Us])
        opt_a.step(X, Y)
        worst = max(worst, float(np.max(np.abs(a.forward(X) - b.forward(X)))))
    return worst


def _numeric(seeds, steps):
    kfac_worst, sgd_min, adam_min, per_seed = 0.0, np.inf, np.inf, {}
    extra = {"units": 0.0, "pipeline": 0.0, "entries": np.inf, "nonlinear": np.inf}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        net, X, Y = random_problem(rng, widths=(2, 3, 3, 2),
                                   activations=("tanh", "tanh", "identity"), N=128)
        changes = {0: random_affine(2, rng).on_A_only(), 1: random_affine(3, rng),
                   2: random_affine(3, rng)}
        net_t = reparameterize(net, changes)
        X_t = changes[0].apply_activations(X)
        k, loss = train_pair(net, net_t, X, X_t, Y, "kfac", steps, lr=0.1)
        s, _ = train_pair(net, net_t, X, X_t, Y, "sgd", steps, lr=0.1)
        a, _ = train_pair(net, net_t, X, X_t, Y, "adam", steps, lr=1e-2)
        kfac_worst, sgd_min, adam_min = max(kfac_worst, k), min(sgd_min, s), min(adam_min, a)
        perm = {i: permutation(rng.permutation(3)) for i in (1, 2)}
        u, _ = train_pair(net, reparameterize(net, perm), X, X, Y, "kfac", steps, lr=0.1)
        pipe = _pipeline_cross_check(net, X[:24], Y[:24], changes)  # per-example pipeline: a small batch
        pe = _permuted_entries_step(net, X, Y, rng)
        nl = _nonlinear_run(net, X, Y)
        extra["units"] = max(extra["units"], u)
        extra["pipeline"] = max(extra["pipeline"], pipe)
        extra["entries"] = min(extra["entries"], pe)
        extra["nonlinear"] = min(extra["nonlinear"], nl)
        per_seed[f"seed {seed}"] = (f"K-FAC max|f − f‡| {k:.1e} (final loss {loss:.4f}); "
                                    f"units permuted {u:.1e}; pipeline step vs coordinate step "
                                    f"{pipe:.1e} | SGD {s:.1e}; Adam {a:.1e}; entries of W̄_1 "
                                    f"permuted {pe:.1e}; nonlinear W̄ = r(U) {nl:.1e}")
    return kfac_worst, sgd_min, adam_min, per_seed, extra


def check(fast: bool = False) -> dict:
    expr_diff = _matrix_expression_identity()
    expr_zero = expr_diff == sp.ZeroMatrix(*expr_diff.shape) or expr_diff == 0
    shapes = [(1, 2)] if fast else [(1, 2), (2, 1)]
    kfac_res = [e for a, b in shapes for e in _entrywise_identity(a, b, "kfac")]
    kfac_exact = all(e == 0 for e in kfac_res)
    sgd_res = _entrywise_identity(1, 2, "sgd")
    sgd_nonzero = sum(e != 0 for e in sgd_res)

    steps = 10 if fast else 50
    seeds = range(1) if fast else range(2)
    kfac_worst, sgd_min, adam_min, per_seed, extra = _numeric(seeds, steps)

    holds = bool(expr_zero and kfac_exact and kfac_worst <= KFAC_TOL
                 and extra["units"] <= KFAC_TOL and extra["pipeline"] <= PIPELINE_TOL)
    negative = min(sgd_min, adam_min, extra["entries"], extra["nonlinear"])
    return {
        "holds": holds,
        "discrepancy": max(kfac_worst, extra["units"], extra["pipeline"]),
        "negative_control": ("SGD, Adam, K-FAC on permuted entries of W̄_1 must drift apart "
                             f"(≥ {DRIFT_MIN:g}), K-FAC under a nonlinear W̄ = r(U) too "
                             f"(≥ {NONLINEAR_MIN:g}); SGD's step is not mapped back by D.2"),
        "negative_discrepancy": negative,
        "negative_fails": bool(min(sgd_min, adam_min, extra["entries"]) >= DRIFT_MIN
                               and extra["nonlinear"] >= NONLINEAR_MIN and sgd_nonzero > 0),
        "details": {
            "matrix expressions: G‡⁻¹DW̄‡A‡⁻¹ − Φ⁻¹ΔW̄[Ω]_H⁻¹": str(expr_diff),
            f"entrywise residual (layers {', '.join(f'{a}→{b}' for a, b in shapes)}; symbolic Ω, γ, Φ, A, G, ΔW̄)":
                f"{sum(e != 0 for e in kfac_res)} nonzero of {len(kfac_res)} entries",
            "SGD symbolic residual": f"{sgd_nonzero} nonzero of {len(sgd_res)} entries",
            "training": f"{steps} steps, 2-3-3-2 tanh MLP, Gaussian output, N=128, "
                        "random non-diagonal affine changes of A_0, A_1, Z_1, A_2, Z_2",
            "K-FAC largest |f − f‡| over all steps": kfac_worst,
            "SGD smallest largest-drift over seeds": sgd_min,
            "Adam smallest largest-drift over seeds": adam_min,
            "K-FAC, hidden units permuted (covered): largest |f − f‡|": extra["units"],
            "geomkfac.kfac step vs coordinate step (relative, ref and κ frames)":
                extra["pipeline"],
            "K-FAC, entries of W̄_1 permuted (one step 0.1): smallest drift": extra["entries"],
            "K-FAC, nonlinear W̄ = U + 0.1U³ (10 steps 1e-2): smallest drift":
                extra["nonlinear"],
            "per seed": per_seed,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
