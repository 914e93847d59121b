"""Every optimizer and every K-FAC feature on convolutional and recurrent models, checked
against results computed by a different route where one exists (the dense curvature
functions of geomkfac.nn.curvature, explicit loops, the dense GGN), and bit-exact
checkpoint / resume for a CNN and an RNN.

Tolerances: float64 throughout; the optimizer and the reference evaluate the same
mathematical quantity by different code paths (eigendecompositions vs solves, GEMMs vs
loops), so agreement to 1e-9 relative leaves round-off room (condition numbers ≲ 1e3)
while a wrong scale T, a wrong side for T or a wrong normalization is O(1).
"""

from __future__ import annotations

import numpy as np
import pytest

import geomkfac.nn as gnn
from geomkfac.nn import empirical_fisher, ggn, kfac_factors, kfac_solve, loss_and_grad
from geomkfac.nn.data import Dataset
from geomkfac.nn.checkpoint import load_checkpoint
from geomkfac.nn.optim import OPTIMIZERS, get_optimizer
from geomkfac.nn.optim.statistics import ekfac_scalings
from geomkfac.nn.train import train

RTOL = 1e-9


def cnn(seed=0):
    rng = np.random.default_rng(seed)
    return gnn.Sequential([
        gnn.Conv2d(0.5 * rng.standard_normal((3, 1, 3, 3)), np.zeros(3), "tanh", padding=1),
        gnn.AvgPool2d(2),
        gnn.Conv2d(0.5 * rng.standard_normal((2, 3, 3, 3)), np.zeros(2), "relu", padding=1),
        gnn.MaxPool2d(2),
        gnn.Flatten(),
        gnn.Dense(0.5 * rng.standard_normal((3, 8)), np.zeros(3)),
    ])


def rnn(seed=0):
    rng = np.random.default_rng(seed)
    return gnn.Sequential([
        gnn.RNN(0.5 * rng.standard_normal((4, 6)), np.zeros(4), "tanh"),
        gnn.Dense(0.5 * rng.standard_normal((3, 4)), np.zeros(3)),
    ])


def problem(kind, seed=1, N=12):
    rng = np.random.default_rng(seed)
    # learnable labels: functions of the inputs (of the current step for the RNN)
    if kind == "cnn":
        X = rng.standard_normal((N, 1, 8, 8))
        Y = (X[:, 0, :4].mean((1, 2)) > 0).astype(int) + (X[:, 0, 4:].mean((1, 2)) > 0)
        return cnn(), X, Y
    X = rng.standard_normal((N, 5, 2))
    return rnn(), X, (X[..., 0] > 0.5).astype(int) + (X[..., 1] > 0)


KINDS = ["cnn", "rnn"]


def step_delta(opt, net, X, Y):
    theta = net.get_flat()
    info = opt.step(X, Y)
    return net.get_flat() - theta, info


@pytest.mark.parametrize("kind", KINDS)
def test_exact_damping_step_is_the_damped_kfac_solve(kind):
    net, X, Y = problem(kind)
    lam = 1e-2
    ref = kfac_solve(kfac_factors(net, X, Y, "ce", fisher="exact"),
                     loss_and_grad(net, X, Y, "ce")[1], lam, factored=False)
    opt = get_optimizer("kfac", net, "ce", lr=1.0, damping=lam, damping_mode="exact",
                        fisher="exact", kl_clip=None)
    delta, _ = step_delta(opt, net, X, Y)
    np.testing.assert_allclose(delta, -ref, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_factored_damping_step(kind):
    """π = 1: the oracle's factored solve ((T A + √λ I) ⊗ (G + √λ I))⁻¹; π-corrected: the
    same with π = sqrt((tr(TA)/dim A)/(tr G/dim G)) computed here by hand."""
    net, X, Y = problem(kind)
    lam = 1e-2
    blocks = kfac_factors(net, X, Y, "ce", fisher="exact")
    g = loss_and_grad(net, X, Y, "ce")[1]
    opt = get_optimizer("kfac", net.copy(), "ce", lr=1.0, damping=lam, fisher="exact",
                        kl_clip=None, pi_correction=False)
    delta, _ = step_delta(opt, opt.model, X, Y)
    np.testing.assert_allclose(delta, -kfac_solve(blocks, g, lam, factored=True), rtol=RTOL, atol=1e-12)

    opt = get_optimizer("kfac", net.copy(), "ce", lr=1.0, damping=lam, fisher="exact", kl_clip=None)
    delta, _ = step_delta(opt, opt.model, X, Y)
    want = []
    r = np.sqrt(lam)
    for blk, V in zip(blocks, net.split_flat(g)):
        A, G = blk
        TA = blk.T * A
        pi = np.sqrt((np.trace(TA) / len(TA)) / (np.trace(G) / len(G)))
        P = np.linalg.solve(G + r / pi * np.eye(len(G)), V)
        P = np.linalg.solve(TA + pi * r * np.eye(len(TA)), P.T).T
        want.append(P.reshape(-1, order="F"))
    np.testing.assert_allclose(delta, -np.concatenate(want), rtol=RTOL, atol=1e-12)
    # negative control: without the scale T (T > 1 in the first layer) the step differs
    unscaled = kfac_solve([(A, G) for A, G in blocks], g, lam, factored=True)
    assert np.abs(delta + unscaled).max() > 1e-3 * np.abs(delta).max()


@pytest.mark.parametrize("kind", KINDS)
def test_ema_and_update_periods(kind):
    net, X1, Y1 = problem(kind, seed=1)
    _, X2, Y2 = problem(kind, seed=2)
    eps = 0.7
    opt = get_optimizer("kfac", net, "ce", lr=0.1, damping=1e-2, fisher="empirical",
                        ema_decay=eps, inverse_update_period=3, kl_clip=None)
    f1 = kfac_factors(net, X1, Y1, "ce", fisher="empirical")
    opt.step(X1, Y1)
    invs0 = [tuple(x.copy() for x in inv) for inv in opt.invs]
    f2 = kfac_factors(net, X2, Y2, "ce", fisher="empirical")
    opt.step(X2, Y2)
    for i, (b1, b2) in enumerate(zip(f1, f2)):
        np.testing.assert_allclose(opt.A[i], b1.T * (eps * b1[0] + (1 - eps) * b2[0]), rtol=RTOL)
        np.testing.assert_allclose(opt.G[i], eps * b1[1] + (1 - eps) * b2[1], rtol=RTOL)
    # inverses kept between updates (period 3), renewed at step 3
    for (a0, g0), (a1, g1) in zip(invs0, opt.invs):
        assert np.array_equal(a0, a1) and np.array_equal(g0, g1)
    opt.step(X1, Y1)
    opt.step(X2, Y2)
    assert any(not np.array_equal(a0, a1) for (a0, _), (a1, _) in zip(invs0, opt.invs))


@pytest.mark.parametrize("kind", KINDS)
def test_kl_clip_bounds_the_quadratic_kl(kind):
    net, X, Y = problem(kind)
    lr, clip = 1.0, 1e-6
    opt = get_optimizer("kfac", net, "ce", lr=lr, damping=1e-2, fisher="exact", kl_clip=clip)
    g = loss_and_grad(net, X, Y, "ce")[1]
    delta, info = step_delta(opt, net, X, Y)
    nu = info.extras["kl_scale"]
    assert nu < 1
    # δ = −lr ν P, so lr² ν² ⟨P, g⟩ = −lr ν ⟨δ, g⟩ must equal the bound
    assert -lr * nu * (delta @ g) == pytest.approx(clip, rel=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_eig_floor_step(kind):
    net, X, Y = problem(kind)
    floor = 1e-2
    blocks = kfac_factors(net, X, Y, "ce", fisher="exact")
    g = loss_and_grad(net, X, Y, "ce")[1]
    opt = get_optimizer("kfac", net, "ce", lr=1.0, damping=0.0, damping_mode="exact",
                        fisher="exact", kl_clip=None, eig_floor=floor)
    delta, info = step_delta(opt, net, X, Y)
    assert info.extras["eig_floored"] > 0
    want = []
    for blk, V in zip(blocks, net.split_flat(g)):
        eA, QA = np.linalg.eigh(blk.T * blk[0])
        eG, QG = np.linalg.eigh(blk[1])
        S = np.outer(np.maximum(eG, floor), np.maximum(eA, floor))
        want.append((QG @ ((QG.T @ V @ QA) / S) @ QA.T).reshape(-1, order="F"))
    np.testing.assert_allclose(delta, -np.concatenate(want), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_ekfac_scalings_by_explicit_loops(kind):
    """S = (1/N) Σ_{n,t} (Q_Gᵀ Dz_{nt} ā_{nt}ᵀ Q_A)² for every layer, summed row by row."""
    net, X, Y = problem(kind, N=4)
    f, cache = net.forward_cache(X)
    loss = gnn.losses.loss_for_model(net, "ce")
    Dz = net.backward(cache, loss.grad(f, Y))
    rng = np.random.default_rng(0)
    for D, ab in zip(Dz, cache.abar):
        QA = np.linalg.qr(rng.standard_normal((ab.shape[1],) * 2))[0]
        QG = np.linalg.qr(rng.standard_normal((D.shape[1],) * 2))[0]
        want = sum(np.square(QG.T @ np.outer(D[r], ab[r]) @ QA) for r in range(len(ab))) / 4
        np.testing.assert_allclose(ekfac_scalings(D[None], ab, QA, QG, 1 / 4), want, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_diag_fisher_is_the_diagonal_of_the_empirical_fisher(kind):
    net, X, Y = problem(kind)
    E = empirical_fisher(net, X, Y, "ce")
    opt = get_optimizer("diag_fisher", net.copy(), "ce", fisher="empirical")
    opt.step(X, Y)
    got = np.concatenate([d.reshape(-1, order="F") for d in opt.diag])
    np.testing.assert_allclose(got, np.diag(E), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", KINDS)
def test_adaptive_lr_minimizes_the_quadratic_model(kind):
    """First step, no previous update: α = −gᵀΔ / (Δᵀ(F + λI)Δ) with the dense GGN."""
    net, X, Y = problem(kind)
    lam = 1e-2
    F = ggn(net, X, Y, "ce")
    g = loss_and_grad(net, X, Y, "ce")[1]
    opt = get_optimizer("kfac", net, "ce", damping=lam, fisher="exact", adaptive_lr=True)
    delta, info = step_delta(opt, net, X, Y)
    alpha = info.extras["lr"]
    Delta = delta / alpha
    want = -(g @ Delta) / (Delta @ (F + lam * np.eye(len(F))) @ Delta)
    assert alpha == pytest.approx(want, rel=1e-8)


FEATURES = {
    "mc": dict(fisher="mc", mc_samples=2),
    "lm_quadratic": dict(fisher="exact", adaptive_lr=True, adapt_damping=True, lm_period=2),
    "momentum_kl": dict(momentum=0.5, kl_clip=1e-3, fisher="empirical"),
    "ekfac": dict(ekfac=True, fisher="exact", inverse_update_period=2),
    "eigh_floor": dict(damping_mode="exact", eig_floor=1e-4, inverse_method="eigh"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("feature", list(FEATURES))
def test_kfac_features_train(kind, feature):
    net, X, Y = problem(kind, N=24)
    opt = get_optimizer("kfac", net, "ce", lr=0.2, damping=1e-1, **FEATURES[feature])
    losses = [opt.step(X, Y).loss for _ in range(12)]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0]
    if feature == "lm_quadratic":
        assert opt.damping != 1e-1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name, hyper", [("sgd", dict(lr=0.3, momentum=0.9)), ("adam", dict(lr=1e-2)),
                                         ("ngd", dict(lr=0.5, damping=1.0)),
                                         ("diag_fisher", dict(lr=0.05, damping=1e-2))])
def test_baselines_train(kind, name, hyper):
    net, X, Y = problem(kind, N=24)
    opt = get_optimizer(name, net, "ce", **hyper)
    losses = [opt.step(X, Y).loss for _ in range(15)]
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", ["kfac", "ekfac", "adam"])
def test_resume_is_bit_exact(tmp_path, kind, key):
    """2k steps straight == k steps, checkpoint, fresh objects, resume, k more."""
    net, X, Y = problem(kind, N=40)
    data = Dataset(X, Y, "classification", kind, 3)
    hyper = {"kfac": dict(lr=0.1, damping=1e-2, inverse_update_period=3),
             "ekfac": dict(lr=0.1, damping=1e-2), "adam": dict(lr=1e-2)}[key]
    make = lambda m: get_optimizer(key, m, "ce", **hyper)  # noqa: E731
    k = 4
    a, b = net.copy(), net.copy()
    ra = train(a, make(a), data, steps=2 * k, batch_size=8, seed=3)
    ck = tmp_path / "c.npz"
    train(b, make(b), data, steps=k, batch_size=8, seed=3, checkpoint_path=ck, config={"k": 1})
    c = (cnn if kind == "cnn" else rnn)(seed=9)  # different weights: all must come from the file
    rc = train(c, make(c), data, steps=2 * k, batch_size=8, seed=3, checkpoint_path=ck,
               resume=True, config={"k": 1})
    assert a.get_flat().tobytes() == c.get_flat().tobytes()
    assert [r["loss"] for r in rc.history] == [r["loss"] for r in ra.history[k:]]
    d = (cnn if kind == "cnn" else rnn)(seed=9)  # negative control: weights only
    load_checkpoint(ck).restore(d)
    train(d, make(d), data, steps=k, batch_size=8, seed=3)
    assert a.get_flat().tobytes() != d.get_flat().tobytes()


def test_every_optimizer_is_covered():
    assert set(OPTIMIZERS) == {"sgd", "adam", "diag_fisher", "ngd", "kfac", "ekfac"}


def test_preconditioning_on_rows_equals_the_factored_solve():
    """A wide dense layer at a small batch (R = 6 rows ≪ widths) takes the row path
    (G⁻¹Dzᵀ)(Ā A⁻¹)/N; the step must equal the factored solve of the formed gradient."""
    from geomkfac.nn.optim.kronecker import rows_are_cheaper

    net = gnn.MLP([40, 50, 30], "tanh", seed=0)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6, 40)), rng.integers(0, 30, 6)
    assert rows_are_cheaper(6, 50, 41) and rows_are_cheaper(6, 30, 51)
    lam = 1e-2
    blocks = kfac_factors(net, X, Y, "ce", fisher="exact")
    g = loss_and_grad(net, X, Y, "ce")[1]
    opt = get_optimizer("kfac", net, "ce", lr=1.0, damping=lam, fisher="exact", kl_clip=None,
                        pi_correction=False)
    delta, _ = step_delta(opt, net, X, Y)
    np.testing.assert_allclose(delta, -kfac_solve(blocks, g, lam, factored=True), rtol=RTOL,
                               atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_ggn_quadratic_form_matches_the_dense_ggn(kind):
    """The forward-mode Gram matrix [v_iᵀ F v_j] of the quadratic model equals Vᵀ F V with
    the dense GGN of geomkfac.nn.curvature (a different route: Jacobians column by column).
    The RNN reads the class at every step (StepwiseLoss); a dropped 1/N or a missing output
    Hessian is O(1)."""
    from geomkfac.nn.losses import loss_for_model
    from geomkfac.nn.optim.gvp import ggn_quadratic_form

    net, X, Y = problem(kind)
    F = ggn(net, X, Y, "ce")
    rng = np.random.default_rng(7)
    V = rng.standard_normal((3, len(F)))
    f, cache = net.forward_cache(X)
    Q = ggn_quadratic_form(net, cache, f, loss_for_model(net, "ce"),
                           [np.stack(p) for p in zip(*(net.split_flat(v) for v in V))])
    np.testing.assert_allclose(Q, V @ F @ V.T, rtol=RTOL, atol=1e-12 * np.abs(F).max())
