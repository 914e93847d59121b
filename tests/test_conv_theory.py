"""The abstract convolutional network (paper §4.1, Appendix F): laws, the pipeline against
independent references, and planted bugs that must turn the right proof red.

Tolerances: two float64 computations of the same sums by different code agree to ~1e-14 on
O(1) numbers; we allow 1e-10 relative (the reference files' own cross-library errors are
below 1e-14).  Controls require a difference ≥ 1e-3, far above round-off.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DataError, DimensionError
from geomkfac.metrics import Metric
from geomkfac.networks import conv as C
from geomkfac.networks import conv_kfac as CK
from geomkfac.networks.conv import AbstractCNN, ConvGeometry
from geomkfac.output_metrics import CategoricalFisher, Euclidean, GaussianFisher, SoftmaxCrossEntropy, SquaredError
from geomkfac.prove import find_proofs_dir, run_proof
from geomkfac.spaces import Covector, power_frame

ORACLE = Path(__file__).parent / "oracle"
TOL = 1e-10
CONTROL_MIN = 1e-3


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def loop_conv(x, W, b, pad, pad_value=0.0):
    """Direct convolution by loops over every output entry (reference-file layout)."""
    N, J, H, Wd = x.shape
    I, _, k, _ = W.shape
    xp = np.empty((N, J, H + 2 * pad, Wd + 2 * pad))
    xp[:] = np.asarray(pad_value, float).reshape(1, J, 1, 1) if np.ndim(pad_value) else pad_value
    xp[:, :, pad:pad + H, pad:pad + Wd] = x
    Ho, Wo = H + 2 * pad - k + 1, Wd + 2 * pad - k + 1
    z = np.zeros((N, I, Ho, Wo))
    for n in range(N):
        for i in range(I):
            for y in range(Ho):
                for xx in range(Wo):
                    z[n, i, y, xx] = np.sum(W[i] * xp[n, :, y:y + k, xx:xx + k]) + b[i]
    return z


def random_change(n, rng):
    return rng.normal(size=(n, n)) * 0.5 + np.eye(n), rng.normal(size=n)


# ----------------------------------------------------------------------------- oracle cases
def load_case(name):
    case = np.load(ORACLE / f"{name}.npz")
    ref = np.load(ORACLE / f"{name}.oracle.npz")
    arch = json.loads(str(case["arch"]))
    net = AbstractCNN(case["X"].shape[1:], arch, name=name)
    L = net.L
    Wbars = C.from_oracle_weights(net, [case[f"W{i}"] for i in range(L)], [case[f"b{i}"] for i in range(L)])
    return net, net.weights_from(Wbars), case, ref


@pytest.fixture(scope="module")
def cnn_case():
    return load_case("cnn_same_ce")


def test_oracle_weights_roundtrip_and_theta(cnn_case):
    net, w, case, ref = cnn_case
    Wbars = net.layer_weights(w)
    back = C.to_oracle_weights(net, Wbars)
    for i, (W, b) in enumerate(back):
        assert np.array_equal(W, case[f"W{i}"]) and np.array_equal(b, case[f"b{i}"])
    theta = C.oracle_theta(net, Wbars)
    assert theta.shape == ref["grad"].shape
    offs = np.concatenate([[0], np.cumsum([Wsp.dim for Wsp in net.weight_spaces])])
    assert np.array_equal(offs, ref["offsets"])


def test_oracle_cnn_forward_gradient_and_type2_factors(cnn_case):
    net, w, case, ref = cnn_case
    X = case["X"]
    assert rel(net.forward(w, X), ref["f"]) <= TOL
    Y = np.eye(4)[case["Y"].astype(int)]
    dh = CK.loss_differential(net, w, X, Y, SoftmaxCrossEntropy())
    parts = net.weight_space.split(dh.coords())
    DW = [np.asarray(p).reshape(net.weight_spaces[l].shape, order="F") for l, p in enumerate(parts)]
    assert rel(C.oracle_theta(net, DW), ref["grad"]) <= TOL
    for i, (A, G, T) in enumerate(CK.oracle_kfac_factors(net, w, X, CategoricalFisher())):
        assert T == int(ref[f"T{i}"])
        assert rel(A, ref[f"A{i}"]) <= TOL
        assert rel(G, ref[f"G{i}_type2"]) <= TOL
        o = ref["offsets"]
        assert rel(T * np.kron(A, G), ref["kfac_type2"][o[i]:o[i + 1], o[i]:o[i + 1]]) <= TOL


def _empirical_metrics(net, w, X, Y):
    loss = SoftmaxCrossEntropy()
    outs = CK.layer_samples(net, w, X, net.L).outputs
    return [Metric.outer(Covector(y.space.reference_frame, loss.grad(np.asarray(y.coords(y.space.reference_frame)), Y[n])))
            for n, y in enumerate(outs)]


def test_oracle_cnn_empirical_factors_and_closed_form_from_oracle_arrays(cnn_case):
    """Pipeline (empirical output metric dℓ ⊗ dℓ per sample) against the oracle's G and
    against |T| kron(E_T[ā āᵀ], E_T[Dz Dzᵀ]) computed only from the oracle arrays abar/Dz."""
    net, w, case, ref = cnn_case
    X = case["X"]
    Y = np.eye(4)[case["Y"].astype(int)]
    gs = _empirical_metrics(net, w, X, Y)
    for i, (A, G, T) in enumerate(CK.oracle_kfac_factors(net, w, X, gs)):
        assert rel(G, ref[f"G{i}_empirical"]) <= TOL
        abar, Dz = ref[f"abar{i}"], ref[f"Dz{i}_empirical"]
        closed = T * np.kron(np.einsum("nta,ntb->ab", abar, abar) / abar.shape[0] / T,
                             np.einsum("nta,ntb->ab", Dz, Dz) / Dz.shape[0] / T)
        assert rel(T * np.kron(A, G), closed) <= TOL


def test_oracle_linear_conv_kfac_equals_exact_ggn():
    """id_conv_linear_T16_mse: a linear conv with squared error — |T| kron(A, G) is the
    exact GGN block, in the pipeline (layer_kfac_metric vs layer_exact_block) and against the
    oracle's ggn; control: with tanh the two differ."""
    net, w, case, ref = load_case("id_conv_linear_T16_mse")
    X = case["X"]
    m = np.asarray(CK.layer_kfac_metric(net, w, X, Euclidean(), 1).matrix(), float)
    e = np.asarray(CK.layer_exact_block(net, w, X, Euclidean(), 1).matrix(), float)
    assert rel(m, e) <= TOL
    (A, G, T), = CK.oracle_kfac_factors(net, w, X, Euclidean())
    assert rel(T * np.kron(A, G), ref["ggn"]) <= TOL
    assert rel(T * np.kron(A, G), ref["kfac_type2"]) <= TOL
    # gradient (outputs: oracle flattens channel-major, the library location-major)
    perm = C.flatten_permutation(3, 16)
    Yl = np.empty_like(case["Y"])
    Yl[:, perm] = case["Y"]
    assert rel(net.forward(w, X)[:, perm], ref["f"]) <= TOL
    dh = CK.loss_differential(net, w, X, Yl, SquaredError())
    DW = [np.asarray(dh.coords()).reshape(net.weight_spaces[0].shape, order="F")]
    assert rel(C.oracle_theta(net, DW), ref["grad"]) <= TOL
    # control: a nonlinear conv layer breaks the identity
    arch = json.loads(str(case["arch"]))
    arch[0]["act"] = "tanh"
    nt = AbstractCNN(X.shape[1:], arch, name="tanh_conv")
    wt = nt.weights_from([np.asarray(M, float) for M in net.layer_weights(w)])
    mt = np.asarray(CK.layer_kfac_metric(nt, wt, X, Euclidean(), 1).matrix(), float)
    et = np.asarray(CK.layer_exact_block(nt, wt, X, Euclidean(), 1).matrix(), float)
    assert rel(mt, et) >= CONTROL_MIN


# ----------------------------------------------------------------------------- laws (hypothesis)
geometries = st.tuples(st.integers(2, 4), st.integers(2, 4), st.integers(1, 3), st.integers(0, 2),
                       st.integers(1, 2), st.integers(1, 2), st.integers(0, 2**31 - 1)).filter(
    lambda g: g[0] + 2 * g[3] >= g[2] and g[1] + 2 * g[3] >= g[2])


@settings(max_examples=20, deadline=None)
@given(geometries)
def test_im2col_equals_loop_convolution_in_any_frame(g):
    """F.1–F.3 and the padding point: in a random frame κ of A (a‡ = Ω a + γ) the coordinate
    network's first pre-activations (weights by F.4, padding γ) equal a loop convolution of
    x‡ padded with γ; the reference-frame network equals the loop convolution padded with 0."""
    H, Wd, k, pad, J, I, seed = g
    rng = np.random.default_rng(seed)
    net = AbstractCNN((J, H, Wd), [{"type": "conv", "out": I, "k": k, "pad": pad}], name="p")
    w = net.random_weights(rng)
    X = rng.normal(size=(2, J, H, Wd))
    Om, ga = random_change(J, rng)
    kap = net.reference_frames().derive(A={0: (Om, ga)})
    for frames, pv in ((net.reference_frames(), 0.0), (kap, ga)):
        (W, b), = C.to_oracle_weights(net, net.layer_weights(w, frames))
        x = net.input_coords(X, frames).transpose(0, 2, 1).reshape(X.shape)
        z = loop_conv(x, W, b, pad, pv)
        out = net.forward(w, X, frames)  # identity activation, output frame unchanged
        assert rel(out, z.reshape(2, I, -1).transpose(0, 2, 1).reshape(2, -1)) <= TOL


@settings(max_examples=20, deadline=None)
@given(geometries)
def test_patch_map_law_pads_with_gamma(g):
    """The core's law D.2 applied to the patch map built in the reference frame gives the patch
    map built in κ with padding γ; zero padding in κ differs wherever there is padding."""
    H, Wd, k, pad, J, I, seed = g
    rng = np.random.default_rng(seed)
    net = AbstractCNN((J, H, Wd), [{"type": "conv", "out": I, "k": k, "pad": pad}], name="q")
    Om, ga = random_change(J, rng)
    kap = net.A[0].reference_frame.derive(Om, ga)
    geom = net.layers[0].geom
    M_law = net.patch_map(1).matrix(power_frame(kap, geom.T_in), power_frame(power_frame(kap, geom.K), geom.T))
    assert rel(M_law, net.patch_map(1, kap).matrix()) <= TOL
    per_loc = np.vstack([np.asarray(m.matrix()) for m in net.location_patch_maps(1, kap)])
    assert rel(per_loc, net.patch_map(1, kap).matrix()) <= TOL
    if (geom.source < 0).any() and np.max(np.abs(ga)) > 1e-3:
        assert rel(M_law, net.patch_map(1, kap, padding="zeros").matrix()) >= 1e-4


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_patch_order_permutation_conjugates_offset_major_to_channel_major(J, K, seed):
    """In channel-major order the change I_K ⊗ Ω of a patch is Ω ⊗ I_K (and 1 ⊗ γ is γ ⊗ 1);
    control: without the permutation they differ (J, K > 1)."""
    rng = np.random.default_rng(seed)
    Om, ga = random_change(J, rng)
    p = C.patch_permutation(J, K)
    assert rel(np.kron(np.eye(K), Om)[np.ix_(p, p)], np.kron(Om, np.eye(K))) <= TOL
    assert rel(np.kron(np.ones(K), ga)[p], np.kron(ga, np.ones(K))) <= TOL
    if J > 1:
        assert rel(np.kron(np.eye(K), Om), np.kron(Om, np.eye(K))) >= CONTROL_MIN


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_same_function_in_two_frames_and_its_controls(seed):
    """Thm 4.1, first half: random conv → conv → avgpool → flatten → dense networks compute
    the same function in random frames (the hidden conv layer padded with its padding point's
    κ-coordinates); controls: zero padding where only the hidden space's frame moves, max
    pooling."""
    rng = np.random.default_rng(seed)
    arch = [{"type": "conv", "out": 2, "k": 3, "pad": 1, "act": "tanh"},
            {"type": "conv", "out": 2, "k": 3, "pad": 1, "act": "tanh"}, {"type": "avgpool", "k": 2},
            {"type": "flatten"}, {"type": "dense", "out": 2, "act": "sigmoid"}]
    net = AbstractCNN((2, 4, 4), arch, name="s")
    w = net.random_weights(rng)
    X = rng.normal(size=(3, 2, 4, 4))
    ref = net.reference_frames()
    kap = ref.derive(A={s: random_change(2, rng) for s in range(4)},
                     Z={i: random_change(2, rng) for i in range(1, 4)})
    chY = net.A[3].reference_frame.change_to(kap.A[3])
    f = net.forward(w, X)
    f_k = net.forward(w, X, kap)
    assert rel(f_k, f @ np.asarray(chY.B).T + np.asarray(chY.c)) <= TOL
    Om, ga = random_change(2, rng)
    hidden = ref.derive(A={1: (Om, ga + np.sign(ga))})  # |γ| ≥ 1: the padding point moves
    assert rel(net.forward(w, X, hidden), f) <= TOL
    assert rel(net.forward(w, X, hidden, padding="zeros"), f) >= CONTROL_MIN
    arch[2]["type"] = "maxpool"
    netm = AbstractCNN((2, 4, 4), arch, name="m")
    wm = netm.weights_from([np.asarray(M, float) for M in net.layer_weights(w)])
    kapm = netm.reference_frames().derive(A={2: (np.array([[1.0, 0.8], [-0.9, 1.0]]), np.zeros(2))})
    assert rel(netm.forward(wm, X, kapm), netm.forward(wm, X)) >= CONTROL_MIN


def test_average_pooling_is_the_same_affine_map_in_every_power_frame():
    rng = np.random.default_rng(3)
    net = AbstractCNN((2, 4, 4), [{"type": "avgpool", "k": 2}, {"type": "conv", "out": 1, "k": 1, "pad": 0}],
                      name="pool")
    kap = net.A[0].reference_frame.derive(*random_change(2, rng))
    ref_map = net.pool_map(0)
    law = ref_map.matrix(power_frame(kap, 16), power_frame(kap, 4))
    assert rel(law, ref_map.matrix()) <= TOL
    assert float(np.max(np.abs(np.asarray(law)[:, -1]))) <= TOL  # no translation


def test_symbolic_and_numeric_pipelines_agree():
    """One code path: the K-FAC metric of a tiny CNN with exact rational weights and inputs
    (sympy, tanh kept symbolic) evaluated at numbers equals the float64 result."""
    arch = [{"type": "conv", "out": 1, "k": 2, "pad": 1, "act": "tanh"}, {"type": "flatten"},
            {"type": "dense", "out": 1, "act": "identity"}]
    net = AbstractCNN((1, 2, 2), arch, name="sym")
    rng = np.random.default_rng(1)
    Wn = [np.round(rng.normal(size=W.shape) * 4) / 4 for W in net.weight_spaces]
    Xn = np.round(rng.normal(size=(2, 1, 2, 2)) * 4) / 4
    wn = net.weights_from(Wn)
    ws = net.weights_from([sp.Matrix(W).applyfunc(sp.nsimplify) for W in Wn])
    pts = net.input_points([sp.Matrix(x.reshape(-1)).applyfunc(sp.nsimplify) for x in net.input_coords(Xn)])
    for i in range(1, net.L + 1):
        Ms = CK.layer_kfac_metric(net, ws, pts, GaussianFisher(), i).matrix()
        assert isinstance(Ms, sp.MatrixBase) and Ms.free_symbols == set()
        Mn = np.asarray(CK.layer_kfac_metric(net, wn, Xn, GaussianFisher(), i).matrix(), float)
        assert rel(np.array(sp.Matrix(Ms).evalf(30), dtype=float), Mn) <= TOL


def test_location_patch_maps_stack_to_the_patch_map():
    net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 1, "k": 2, "pad": 1}])
    geom = net.layers[0].geom
    assert geom.T == 16 and (geom.source[0] == [-1, -1, -1, 0]).all()
    S = np.vstack([np.asarray(m.matrix()) for m in net.location_patch_maps(1)])
    assert np.array_equal(S, np.asarray(net.patch_map(1).matrix()))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("in_shape, arch, err", [
    ((1, 3, 3), [{"type": "conv", "out": 1, "k": 5, "pad": 0}], DimensionError),       # kernel too large
    ((1, 3, 3), [{"type": "conv", "out": 1, "k": 3, "pad": -1}], DimensionError),      # negative padding
    ((2, 3, 3), [{"type": "conv", "in": 3, "out": 1, "k": 3}], DimensionError),        # wrong channel count
    ((1, 3, 3), [{"type": "avgpool", "k": 2}], DimensionError),                         # windows do not tile
    ((1, 3, 3), [{"type": "flatten"}, {"type": "conv", "out": 1}], ConfigurationError),
    ((1, 3, 3), [{"type": "dense", "out": 1}], ConfigurationError),                     # dense needs flatten
    ((1, 3, 3), [{"type": "rnn"}], ConfigurationError),
    ((1, 3, 3), [{"type": "avgpool", "k": 3}], ConfigurationError),                     # no parameters
    ((1, 3), [], DimensionError),
])
def test_bad_architectures_raise_library_errors(in_shape, arch, err):
    with pytest.raises(err):
        AbstractCNN(in_shape, arch)


def test_bad_images_and_padding_mode_raise_library_errors():
    net = AbstractCNN((1, 3, 3), [{"type": "conv", "out": 1, "k": 2, "pad": 0}])
    w = net.random_weights(0)
    with pytest.raises(DataError):
        net.forward(w, np.zeros((2, 2, 3, 3)))
    with pytest.raises(ConfigurationError, match="padding must be"):
        net.patch_map(1, padding="reflect")
    with pytest.raises(DimensionError):
        ConvGeometry((2, 2), 0, 0)


# ----------------------------------------------------------------------------- planted bugs
def _proof(name):
    return find_proofs_dir() / name


def test_planted_bug_transposed_patch_order_turns_f1_f3_red(monkeypatch):
    """With the oracle conversion's patch order transposed (offset-major taken as
    channel-major), F.1–F.3 must fail; unpatched it passes."""
    assert run_proof(_proof("f1_f3_conv_layer.py"), fast=True).passed
    monkeypatch.setattr(C, "patch_permutation", lambda J, K: np.arange(J * K))
    r = run_proof(_proof("f1_f3_conv_layer.py"), fast=True)
    assert r.error is None and not r.holds


def test_planted_bug_zero_padding_turns_f4_and_thm4_1_red(monkeypatch):
    """If the padding point were the origin of whatever frame is used (zero padding in every
    frame), F.4 and Thm 4.1 must fail."""
    real = C.AbstractCNN._patch_parts

    def zero_pad(self, i, fA, padding):
        return real(self, i, fA, "zeros")

    monkeypatch.setattr(C.AbstractCNN, "_patch_parts", zero_pad)
    for name in ("f4_patch_frames.py", "thm4_1_conv_invariance.py"):
        r = run_proof(_proof(name), fast=True)
        assert r.error is None and not r.holds, name
