"""The layer backend (Conv2d, Flatten, Dense, RNN, Sequential) reproduces every key of the
convolutional and recurrent golden cases in tests/oracle/ (computed by independent curvature
libraries and autograd; see tests/oracle/README.md, "Convolutional and recurrent cases").

Tolerance ``rtol=1e-10`` (``atol=1e-12`` near zero), as in tests/test_oracle.py: both sides
evaluate the same float64 quantities by different summation orders (the oracle's own
cross-library errors are ~1e-15), so round-off stays many orders below the bound, while any
convention error (patch order, location order, the 1/(N·T) normalization, the T scale, the
side that carries T in the factored damping, vec order) is O(1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import geomkfac.nn as gnn
from geomkfac.nn import (
    empirical_fisher,
    ggn,
    jacobian,
    kfac_factors,
    kfac_matrix,
    kfac_solve,
    loss_and_grad,
)

ORACLE = Path(__file__).parent / "oracle"
CASES = ["cnn_same_ce", "id_conv_linear_T16_mse", "rnn_seq_ce"]
RTOL, ATOL = 1e-10, 1e-12  # see the module docstring


def build(case):
    """The model of a case file, built from the public API the oracle README names."""
    arch = json.loads(str(case["arch"]))
    if str(case["kind"]) == "rnn":
        layers = [gnn.RNN(case["W0"], case["b0"], arch["act"], h0=case["h0"])]
        if arch["output"] == "last":
            layers.append(gnn.LastStep())
        layers.append(gnn.Dense(case["W1"], case["b1"], arch["out_act"]))
        return gnn.Sequential(layers)
    layers, i = [], 0
    for spec in arch:
        if spec["type"] == "conv":
            layers.append(gnn.Conv2d(case[f"W{i}"], case[f"b{i}"], spec["act"], padding=spec["pad"]))
            i += 1
        elif spec["type"] == "dense":
            layers.append(gnn.Dense(case[f"W{i}"], case[f"b{i}"], spec["act"]))
            i += 1
        else:
            layers.append(gnn.Flatten())
    return gnn.Sequential(layers)


@pytest.fixture(scope="module", params=CASES)
def oracle(request):
    case = np.load(ORACLE / f"{request.param}.npz")
    ref = np.load(ORACLE / f"{request.param}.oracle.npz")
    return build(case), case, ref


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def nlayers(net):
    return len(net.param_layers)


def test_offsets_and_forward(oracle):
    net, case, ref = oracle
    assert net.offsets.tolist() == ref["offsets"].tolist()
    close(net.forward(case["X"]), ref["f"])


def test_statistics_per_location(oracle):
    """ā per location / step and Dz (empirical), in the oracle's (n, t) order."""
    net, case, ref = oracle
    loss = str(case["loss"])
    f, cache = net.forward_cache(case["X"])
    L = gnn.get_loss(loss) if not net.sequence_output else gnn.losses.StepwiseLoss(loss)
    Dz = net.backward(cache, L.grad(f, case["Y"]))
    for i in range(nlayers(net)):
        assert cache.T[i] == int(ref[f"T{i}"])
        close(cache.abar[i].reshape(ref[f"abar{i}"].shape), ref[f"abar{i}"])
        close(Dz[i].reshape(ref[f"Dz{i}_empirical"].shape), ref[f"Dz{i}_empirical"])


def test_loss_and_grad(oracle):
    net, case, ref = oracle
    value, grad = loss_and_grad(net, case["X"], case["Y"], str(case["loss"]))
    close(value, ref["loss"])
    close(grad, ref["grad"])


@pytest.mark.parametrize("fisher, key", [("exact", "type2"), ("empirical", "empirical")])
def test_kfac_factors_and_blocks(oracle, fisher, key):
    net, case, ref = oracle
    factors = kfac_factors(net, case["X"], case["Y"], str(case["loss"]), fisher=fisher)
    assert len(factors) == nlayers(net)
    for i, blk in enumerate(factors):
        A, G = blk
        assert blk.T == int(ref[f"T{i}"])
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


def test_factored_damping_negative_control(oracle):
    """Putting T on the G side instead of the A side must not reproduce natgrad_factored
    (for a case with some T > 1)."""
    net, case, ref = oracle
    lam = float(ref["damping"])
    factors = kfac_factors(net, case["X"], case["Y"], str(case["loss"]), fisher="exact")
    moved = [(A, blk.T * G) for blk in factors for A, G in [blk]]
    got = kfac_solve(moved, ref["grad"], lam, factored=True)
    assert np.abs(got - ref["natgrad_factored_type2"]).max() > 1e-6 * np.abs(got).max()


def test_ggn_and_empirical_fisher(oracle):
    net, case, ref = oracle
    loss = str(case["loss"])
    close(ggn(net, case["X"], case["Y"], loss), ref["ggn"])
    close(empirical_fisher(net, case["X"], case["Y"], loss), ref["ef"])


def test_jacobian_gives_the_ggn(oracle):
    """A second route to the GGN: per-example Jacobians (one backward pass per output
    coordinate) and the output Hessians, (1/N) Σ_n J_nᵀ H_n J_n."""
    net, case, ref = oracle
    J = jacobian(net, case["X"])
    f = net.forward(case["X"])
    base = gnn.get_loss(str(case["loss"]))
    N = f.shape[0]
    H = base.output_fisher(f.reshape(-1, f.shape[-1])).reshape(N, -1, f.shape[-1], f.shape[-1])
    Hfull = np.zeros((N, J.shape[1], J.shape[1]))
    C = f.shape[-1]
    for t in range(H.shape[1]):  # block diagonal over steps
        Hfull[:, t * C:(t + 1) * C, t * C:(t + 1) * C] = H[:, t]
    close(np.einsum("ncp,ncd,ndq->pq", J, Hfull, J) / N, ref["ggn"])


def test_id_conv_kfac_equals_ggn():
    """Linear conv + squared error: T·kron(A, G) is the exact GGN (oracle case
    id_conv_linear_T16_mse); dropping the T scale breaks it (negative control)."""
    case = np.load(ORACLE / "id_conv_linear_T16_mse.npz")
    net = build(case)
    factors = kfac_factors(net, case["X"], case["Y"], "mse", fisher="exact")
    F = ggn(net, case["X"], case["Y"], "mse")
    close(kfac_matrix(factors), F)
    unscaled = kfac_matrix([(A, G) for A, G in factors])
    assert np.abs(unscaled - F).max() > 0.5 * np.abs(F).max()
