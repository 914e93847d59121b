"""geomkfac.nn reproduces every quantity of the golden cases in tests/oracle/, computed by
independent curvature libraries (curvlinops, BackPACK, autograd; see tests/oracle/README.md).

Tolerance for deterministic quantities: both sides evaluate the same float64 formulas in
different summation orders (the oracle's own cross-library errors are below 1e-14), so
agreement to ``rtol=1e-10`` (``atol=1e-12`` for entries near zero) leaves a wide margin for
round-off while any convention error (vec order, kron order, 1/N, bias position) is O(1).
The natural gradients involve solves with condition numbers up to ~1e3 (damping 0.1), which
amplify round-off by that factor: still far inside 1e-10.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geomkfac.nn import (
    MLP,
    Dense,
    empirical_fisher,
    ggn,
    kfac_factors,
    kfac_matrix,
    kfac_solve,
    loss_and_grad,
)
from geomkfac.nn.curvature import kfac_factors_from_cache

ORACLE = Path(__file__).parent / "oracle"
CASES = ["tanh_ce", "sigmoid_mse"]
RTOL, ATOL = 1e-10, 1e-12  # see the module docstring


def load(name):
    case = np.load(ORACLE / f"{name}.npz")
    ref = np.load(ORACLE / f"{name}.oracle.npz")
    L = len(case["acts"])
    net = MLP.from_layers(
        [Dense(case[f"W{i}"], case[f"b{i}"], str(case["acts"][i])) for i in range(L)]
    )
    return net, case, ref


@pytest.fixture(scope="module", params=CASES)
def oracle(request):
    return load(request.param)


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_architecture_and_offsets(oracle):
    net, case, ref = oracle
    assert list(net.sizes) == case["sizes"].tolist()
    assert net.offsets.tolist() == ref["offsets"].tolist()


def test_loss_and_grad(oracle):
    net, case, ref = oracle
    value, grad = loss_and_grad(net, case["X"], case["Y"], str(case["loss"]))
    close(value, ref["loss"])
    close(grad, ref["grad"])


@pytest.mark.parametrize("fisher, key", [("exact", "type2"), ("empirical", "empirical")])
def test_kfac_factors(oracle, fisher, key):
    net, case, ref = oracle
    factors = kfac_factors(net, case["X"], case["Y"], str(case["loss"]), fisher=fisher)
    assert len(factors) == len(net.layers)
    for i, (A, G) in enumerate(factors):
        close(A, ref[f"A{i}"])
        close(G, ref[f"G{i}_{key}"])
    close(kfac_matrix(factors), ref[f"kfac_{key}"])


@pytest.mark.parametrize("fisher, key", [("exact", "type2"), ("empirical", "empirical")])
def test_natural_gradients(oracle, fisher, key):
    net, case, ref = oracle
    lam = float(ref["damping"])
    factors = kfac_factors(net, case["X"], case["Y"], str(case["loss"]), fisher=fisher)
    close(kfac_solve(factors, ref["grad"], lam, factored=False), ref[f"natgrad_{key}"])
    close(kfac_solve(factors, ref["grad"], lam, factored=True), ref[f"natgrad_factored_{key}"])


def test_mc_kfac_matrix_and_natgrads_from_oracle_factors(oracle):
    """The oracle's MC factors were drawn inside PyTorch, so we cannot redraw them; but our
    assembly (kron order, vec order, block placement) and both damped solves must reproduce
    kfac_mc and natgrad_(factored_)mc from the oracle's own A and G_mc."""
    net, case, ref = oracle
    L = len(net.layers)
    factors = [(ref[f"A{i}"], ref[f"G{i}_mc"]) for i in range(L)]
    lam = float(ref["damping"])
    close(kfac_matrix(factors), ref["kfac_mc"])
    close(kfac_solve(factors, ref["grad"], lam, factored=False), ref["natgrad_mc"])
    close(kfac_solve(factors, ref["grad"], lam, factored=True), ref["natgrad_factored_mc"])


def test_natgrad_negative_control(oracle):
    """Swapping the Kronecker order (G ⊗ A instead of A ⊗ G) must not reproduce the oracle."""
    net, case, ref = oracle
    factors = kfac_factors(net, case["X"], case["Y"], str(case["loss"]), fisher="exact")
    blocks = [np.kron(G, A) for A, G in factors]
    P = sum(b.shape[0] for b in blocks)
    M = np.zeros((P, P))
    o = 0
    for b in blocks:
        M[o : o + len(b), o : o + len(b)] = b
        o += len(b)
    assert np.abs(M - ref["kfac_type2"]).max() > 1e-3


def test_ggn_and_empirical_fisher(oracle):
    net, case, ref = oracle
    loss = str(case["loss"])
    close(ggn(net, case["X"], case["Y"], loss), ref["ggn"])
    close(empirical_fisher(net, case["X"], case["Y"], loss), ref["ef"])


def _blockdiag(M, offsets):
    B = np.zeros_like(M)
    for o0, o1 in zip(offsets[:-1], offsets[1:]):
        B[o0:o1, o0:o1] = M[o0:o1, o0:o1]
    return B


def _gap(K, F):
    """The oracle's gap measure: max-abs difference relative to max-abs of the reference."""
    return np.abs(K - F).max() / np.abs(F).max()


def test_oracle_info_gaps(oracle):
    """The oracle's recorded K-FAC-vs-GGN/EF gaps follow from our own matrices too."""
    net, case, ref = oracle
    info = json.loads(str(ref["info"]))
    loss, X, Y = str(case["loss"]), case["X"], case["Y"]
    F = _blockdiag(ggn(net, X, Y, loss), net.offsets)
    E = _blockdiag(empirical_fisher(net, X, Y, loss), net.offsets)
    Kt = kfac_matrix(kfac_factors(net, X, Y, loss, fisher="exact"))
    Ke = kfac_matrix(kfac_factors(net, X, Y, loss, fisher="empirical"))
    # a ratio of quantities each correct to ~1e-15 relative
    assert _gap(Kt, F) == pytest.approx(info["kfac_type2_vs_ggn_blockdiag"], rel=1e-9)
    assert _gap(Ke, E) == pytest.approx(info["kfac_empirical_vs_ef_blockdiag"], rel=1e-9)
    assert _gap(ref["kfac_mc"], Kt) == pytest.approx(info["kfac_mc_vs_kfac_type2"], rel=1e-9)


# -- Monte Carlo factors: statistical comparison -------------------------------------------
#
# One MC draw gives G^(1) = (1/N) Σ_n Dz_n Dz_nᵀ at sampled targets, an unbiased estimate of
# the exact (type-2) G. We take R independent single-draw estimates, estimate their per-entry
# standard deviation σ, and require |mean − G_type2| ≤ Z σ/√R (CLT). Z = 6: with ~50 entries
# per case the chance of a false alarm for a correct estimator is below 1e-6 (seeds are fixed,
# so the test is deterministic anyway); the negative control shows the test has power.

R = 400
Z = 6.0


def single_draw_factors(net, case, R, seed):
    f, cache = net.forward_cache(case["X"])
    rng = np.random.default_rng(seed)
    draws = [
        [G for _, G in kfac_factors_from_cache(net, cache, f, None, str(case["loss"]), "mc", rng, 1)]
        for _ in range(R)
    ]
    return [np.stack([d[i] for d in draws]) for i in range(len(net.layers))]


@pytest.fixture(scope="module")
def mc_draws(oracle):
    net, case, ref = oracle
    return single_draw_factors(net, case, R, seed=12345)


def test_mc_factors_are_unbiased_for_type2(oracle, mc_draws):
    net, case, ref = oracle
    for i, Gs in enumerate(mc_draws):
        se = Gs.std(axis=0, ddof=1) / np.sqrt(R)
        err = np.abs(Gs.mean(axis=0) - ref[f"G{i}_type2"])
        assert np.all(err <= Z * se + 1e-12), (i, (err / (se + 1e-300)).max())


def test_mc_negative_control_empirical_is_rejected(oracle, mc_draws):
    """The same test must reject the empirical Fisher's G as the MC expectation."""
    net, case, ref = oracle
    zmax = 0.0
    for i, Gs in enumerate(mc_draws):
        se = Gs.std(axis=0, ddof=1) / np.sqrt(R)
        z = np.abs(Gs.mean(axis=0) - ref[f"G{i}_empirical"]) / (se + 1e-300)
        zmax = max(zmax, z.max())
    assert zmax > 2 * Z


def test_mc_samples_average_converges(oracle, mc_draws):
    """kfac_factors(mc_samples=M) averages M draws: its error shrinks like σ/√M."""
    net, case, ref = oracle
    M = 4000
    factors = kfac_factors(net, case["X"], None, str(case["loss"]), fisher="mc", mc_samples=M, seed=7)
    for i, (A, G) in enumerate(factors):
        close(A, ref[f"A{i}"])
        sigma = mc_draws[i].std(axis=0, ddof=1)
        assert np.all(np.abs(G - ref[f"G{i}_type2"]) <= Z * sigma / np.sqrt(M) + 1e-12)


def test_oracle_mc_factors_are_plausible_single_draws(oracle, mc_draws):
    """The oracle's G_mc (one draw per example, PyTorch's RNG) lies within Z single-draw
    standard deviations of G_type2 — and is not G_type2 itself (it is a genuine sample)."""
    net, case, ref = oracle
    for i, Gs in enumerate(mc_draws):
        sigma = Gs.std(axis=0, ddof=1)
        dev = np.abs(ref[f"G{i}_mc"] - ref[f"G{i}_type2"])
        assert np.all(dev <= Z * sigma + 1e-12)
    assert any(
        np.abs(ref[f"G{i}_mc"] - ref[f"G{i}_type2"]).max() > 1e-6 for i in range(len(net.layers))
    )
