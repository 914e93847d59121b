"""The abstract recurrent network (paper §4.2, Appendix G) and its K-FAC metric through the
abstract pipeline: the reference case of an independent library, laws under random frames
(hypothesis), closed forms from independent code, and a negative control beside every invariance.

Tolerances: exact float64 computations of the same sums by different code agree to ~1e-15
(1e-10 allowed, as for the other reference cases); finite differences with h = 1e-6 carry
~1e-10 errors (1e-7 allowed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import ConfigurationError, DataError, DegenerateMetricError, DimensionError, SpaceMismatchError
from geomkfac.networks.rnn import AbstractRNN, CoordinateRNN, reparameterize_rnn
from geomkfac.networks.rnn_kfac import (
    StepAdditiveMetric,
    expected_pullback,
    kfac_factors,
    kfac_metric,
    kfac_update,
    loss_differential,
    recurrent_kfac_metric,
    unroll,
)
from geomkfac.output_metrics import BernoulliFisher, GaussianFisher
from geomkfac.reparam import LayerChange, random_affine
from geomkfac.spaces import AffineSpace, Covector, Point

ORACLE = Path(__file__).parent / "oracle"
RTOL, ATOL = 1e-10, 1e-12
FD_TOL = 1e-7


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def small(seed, H=2, d=1, c=2, T=3, N=3, activation="tanh", output="seq"):
    rng = np.random.default_rng(seed)
    net = AbstractRNN(H, d, c, T=T, activation=activation, output=output, name=f"t{seed}")
    w = net.random_weights(rng, scale=1.5)
    h0 = net.initial_state(rng.normal(size=H))
    X = rng.normal(size=(N, T, d))
    return net, w, h0, X, rng


def changes(net, rng):
    return dict(hidden=random_affine(net.hidden, rng), inputs=random_affine(net.inputs, rng).on_A_only(),
                outputs=random_affine(net.outputs, rng).on_A_only())


def to_reference(y, ch):
    O, g = ch._parts(y.shape[-1], "A", False)
    return (y - g) @ np.linalg.inv(O).T


# ----------------------------------------------------------------------------- reference case
@pytest.fixture(scope="module")
def oracle():
    import json

    case = np.load(ORACLE / "rnn_seq_ce.npz")
    ref = np.load(ORACLE / "rnn_seq_ce.oracle.npz")
    arch = json.loads(str(case["arch"]))
    net = AbstractRNN(arch["hidden"], arch["in"], arch["out"], T=arch["T"], activation=arch["act"],
                      output=arch["output"], name="oracle")
    w = net.weights_from(np.hstack([case["W0"], case["b0"][:, None]]), np.hstack([case["W1"], case["b1"][:, None]]))
    return net, w, net.initial_state(case["h0"]), case, ref


@pytest.mark.parametrize("fisher", ["type2", "empirical"])
def test_pipeline_factors_reproduce_the_reference_case(oracle, fisher):
    net, w, h0, case, ref = oracle
    facs = kfac_factors(net, w, h0, case["X"], case["Y"], "categorical", fisher=fisher)
    blocks = []
    for i, (A, G, T) in enumerate(facs):
        np.testing.assert_allclose(A, ref[f"A{i}"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(G, ref[f"G{i}_{fisher}"], rtol=RTOL, atol=ATOL)
        assert T == int(ref[f"T{i}"])
        blocks.append(T * np.kron(A, G))
    import scipy.linalg

    np.testing.assert_allclose(scipy.linalg.block_diag(*blocks), ref[f"kfac_{fisher}"], rtol=RTOL, atol=ATOL)


def test_pipeline_metric_forward_loss_and_gradient_reproduce_the_reference_case(oracle):
    net, w, h0, case, ref = oracle
    np.testing.assert_allclose(net.forward(w, h0, case["X"]), ref["f"], rtol=RTOL, atol=ATOL)
    dh, value = loss_differential(net, w, h0, case["X"], case["Y"], "categorical")
    np.testing.assert_allclose(dh.coords(), ref["grad"], rtol=RTOL, atol=ATOL)
    assert value == pytest.approx(float(ref["loss"]), rel=RTOL)
    g = kfac_metric(net, w, h0, case["X"], "categorical")
    np.testing.assert_allclose(g.matrix(), ref["kfac_type2"], rtol=RTOL, atol=ATOL)


def test_pulled_back_differentials_are_the_reference_dz(oracle):
    from geomkfac import pipeline
    from geomkfac.networks.rnn_kfac import _examples, _losses, layer_samples

    net, w, h0, case, ref = oracle
    examples = _examples(net, w, h0, case["X"], net.reference_frames())
    dls = [d for d, _ in _losses(net, "categorical", examples, case["Y"])]
    for i in (1, 2):                           # layer i; the reference files number from 0
        alphas, rests, zetas = layer_samples(net, examples, i)
        Dz = pipeline.pulled_back_differentials(rests, zetas, [dls[k // net.T] for k in range(len(rests))])
        got = np.array([d.coords() for d in Dz]).reshape(ref[f"Dz{i - 1}_empirical"].shape)
        np.testing.assert_allclose(got, ref[f"Dz{i - 1}_empirical"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(np.array([a.coords() for a in alphas]).reshape(ref[f"abar{i - 1}"][..., :-1].shape),
                                   ref[f"abar{i - 1}"][..., :-1], rtol=RTOL, atol=ATOL)


def test_direct_loop_reproduces_the_reference_abar_and_the_state_input_order(oracle):
    net, w, h0, case, ref = oracle
    abar, _, hs = net.coordinates(w, h0).states(case["X"])
    np.testing.assert_allclose(abar, ref["abar0"], rtol=RTOL, atol=ATOL)
    # control: the (input, state) order is not the reference convention
    swapped = np.concatenate([abar[..., 3:5], abar[..., :3], abar[..., 5:]], axis=-1)
    assert np.max(np.abs(swapped - ref["abar0"])) > 1e-2


# ----------------------------------------------------------------------------- G.1/G.2
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), H=st.integers(1, 3), d=st.integers(1, 2), c=st.integers(1, 2),
       T=st.integers(1, 3), output=st.sampled_from(["seq", "last"]))
def test_two_frame_choices_compute_the_same_function(seed, H, d, c, T, output):
    net, w, h0, X, rng = small(seed, H, d, c, T, 3, output=output)
    ch = changes(net, rng)
    kappa = net.reference_frames().derive(**ch)
    via_frames = net.coordinates(w, h0, kappa)
    closed = reparameterize_rnn(net.coordinates(w, h0), **ch)
    for a, b in ((via_frames.Wbar_rec, closed.Wbar_rec), (via_frames.Wbar_out, closed.Wbar_out), (via_frames.h0, closed.h0)):
        assert rel(a, b) < RTOL
    Xk = ch["inputs"].apply_activations(X)
    f = net.forward(w, h0, X)
    assert rel(to_reference(via_frames.forward(Xk), ch["outputs"]), f) < RTOL
    assert rel(to_reference(closed.forward(Xk), ch["outputs"]), f) < RTOL


def test_initial_state_not_transformed_computes_another_function():
    net, w, h0, X, rng = small(3, 3, 2, 2, 3, 4)
    ch = changes(net, rng)
    Xk = ch["inputs"].apply_activations(X)
    f = net.forward(w, h0, X)
    good = reparameterize_rnn(net.coordinates(w, h0), **ch)
    bad = reparameterize_rnn(net.coordinates(w, h0), **ch, transform_h0=False)
    assert rel(to_reference(good.forward(Xk), ch["outputs"]), f) < RTOL
    assert rel(to_reference(bad.forward(Xk), ch["outputs"]), f) > 1e-3


def test_the_initial_state_is_a_point_not_a_vector():
    net, w, h0, X, rng = small(4)
    kappa = net.reference_frames().derive(hidden=LayerChange(Omega=2 * np.eye(2), gamma=np.array([1.0, -1.0])))
    np.testing.assert_allclose(net.coordinates(w, h0, kappa).h0, 2 * h0.coords() + np.array([1.0, -1.0]))


def test_sigmoid_network_in_tanh_frames_is_a_tanh_network():
    from geomkfac.activations_sym import get_activation
    from geomkfac.reparam import sigmoid_to_tanh

    net, w, h0, X, rng = small(5, activation="sigmoid")
    cnet = net.coordinates(w, h0, net.reference_frames().derive(hidden=sigmoid_to_tanh(2)))
    cnet.activation = get_activation("tanh")
    assert rel(cnet.forward(X), net.forward(w, h0, X)) < RTOL


# ----------------------------------------------------------------------------- Eqn. 4.7/G.3
def _fd_dz(crnn, X, h=1e-6):
    """J[n, t] = ∂ outputs / ∂ z_t by central differences of an independent loop."""
    N, T, _ = X.shape
    H = crnn.Wbar_rec.shape[0]

    def run(t, dz):
        hs = np.broadcast_to(crnn.h0, (N, H))
        ys = []
        for s in range(T):
            z = np.concatenate([hs, X[:, s], np.ones((N, 1))], 1) @ crnn.Wbar_rec.T + (dz if s == t else 0)
            hs = crnn.activation(z)
            ys.append(hs @ crnn.Wbar_out[:, :-1].T + crnn.Wbar_out[:, -1])
        y = np.stack(ys, 1)
        return (y if crnn.output == "seq" else y[:, -1]).reshape(N, -1)

    return np.stack([np.stack([(run(t, h * e) - run(t, -h * e)) / (2 * h) for e in np.eye(H)], 2) for t in range(T)], 1)


@pytest.mark.parametrize("output", ["seq", "last"])
def test_pipeline_equals_closed_form_from_loop_arrays(output):
    net, w, h0, X, rng = small(7, 3, 2, 2, 3, 4, output=output)
    crnn = net.coordinates(w, h0)
    abar, _, hs = crnn.states(X)
    J = _fd_dz(crnn, X)                       # Gaussian output: H = I on every step
    N, T = X.shape[:2]
    A = np.einsum("nti,ntj->ij", abar, abar) / (N * T)
    G = np.einsum("ntki,ntkj->ij", J, J) / (N * T)
    assert rel(recurrent_kfac_metric(net, w, h0, X, "gaussian", 1).matrix(), T * np.kron(A, G)) < FD_TOL
    if output == "seq":
        a1 = np.concatenate([hs[:, 1:], np.ones((N, T, 1))], 2)
        K1 = T * np.kron(np.einsum("nti,ntj->ij", a1, a1) / (N * T), np.eye(2))
    else:
        a1 = np.concatenate([hs[:, -1], np.ones((N, 1))], 1)
        K1 = np.kron(a1.T @ a1 / N, np.eye(2))
    assert rel(recurrent_kfac_metric(net, w, h0, X, "gaussian", 2).matrix(), K1) < RTOL
    # Remark G.1 control: the exact block of the tied weights has the cross-time terms
    Wr = crnn.Wbar_rec
    cols = []
    for k in range(Wr.size):
        e = np.zeros(Wr.size)
        e[k] = 1e-6
        p = CoordinateRNN(Wr + e.reshape(Wr.shape, order="F"), crnn.Wbar_out, crnn.h0, crnn.activation, output)
        m = CoordinateRNN(Wr - e.reshape(Wr.shape, order="F"), crnn.Wbar_out, crnn.h0, crnn.activation, output)
        cols.append((p.forward(X).reshape(N, -1) - m.forward(X).reshape(N, -1)) / 2e-6)
    Jw = np.stack(cols, 2)
    F = np.einsum("nki,nkj->ij", Jw, Jw) / N
    assert np.max(np.abs(F - T * np.kron(A, G))) / np.max(np.abs(F)) > 1e-2


def test_t1_reduces_to_the_mlp_case():
    from geomkfac.nn import MLP, get_loss
    from geomkfac.nn import kfac_factors as nn_factors

    net, w, h0, X, rng = small(8, 3, 2, 3, 1, 6)
    facs = kfac_factors(net, w, h0, X, output_metric="categorical")
    Wr, Wo = (np.asarray(M, dtype=float) for M in net.layer_weights(w))
    mlp = MLP([5, 3, 3], ["tanh", "identity"], seed=0)
    mlp.set_Wbars([Wr, Wo])
    Xin = np.concatenate([np.broadcast_to(h0.coords(), (6, 3)), X[:, 0]], 1)
    for (A, G, T), (Am, Gm) in zip(facs, nn_factors(mlp, Xin, None, get_loss("softmax_ce"), fisher="exact")):
        assert T == 1
        np.testing.assert_allclose(A, Am, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(G, Gm, rtol=RTOL, atol=ATOL)


def test_gradient_through_untied_pullbacks_equals_finite_differences_of_the_tied_loss():
    net, w, h0, X, rng = small(9, 2, 2, 2, 3, 3)
    Y = rng.normal(size=(3, 3, 2))
    dh, value = loss_differential(net, w, h0, X, Y, "gaussian")
    x0 = np.asarray(w.coords(), dtype=float)

    def loss(x):
        p = Point(w.frame, x)
        return 0.5 * np.sum((net.forward(p, h0, X) - Y) ** 2) / 3

    assert value == pytest.approx(loss(x0), rel=1e-12)
    fd = np.array([(loss(x0 + 1e-6 * e) - loss(x0 - 1e-6 * e)) / 2e-6 for e in np.eye(x0.size)])
    assert rel(dh.coords(), fd) < FD_TOL


def test_symbolic_and_numeric_pipelines_agree_on_one_code_path():
    R = sp.Rational
    net = AbstractRNN(1, 1, 2, T=2, activation="identity", name="sym")
    Wr, Wo = sp.Matrix([[R(1, 2), R(1, 3), R(-1, 4)]]), sp.Matrix([[R(2), R(1, 5)], [R(-1), R(1)]])
    xs = [[R(1), R(-2)], [R(3, 2), R(1, 2)]]
    gs = recurrent_kfac_metric(net, net.weights_from(Wr, Wo), net.initial_state(sp.Matrix([R(1, 7)])),
                               [[sp.Matrix([x]) for x in ex] for ex in xs], "gaussian", 1).matrix()
    assert isinstance(gs, sp.MatrixBase) and all(v.is_Rational for v in gs)
    gn = recurrent_kfac_metric(net, net.weights_from(np.array(Wr, dtype=float), np.array(Wo, dtype=float)),
                               net.initial_state(np.array([1 / 7])), np.array(xs, dtype=float)[:, :, None],
                               "gaussian", 1).matrix()
    assert rel(gn, np.array(gs, dtype=float)) < 1e-14


# ----------------------------------------------------------------------------- Thm G.3
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10**6), output=st.sampled_from(["seq", "last"]))
def test_kfac_metric_is_one_coordinate_free_psd_object(seed, output):
    net, w, h0, X, rng = small(seed, 2, 1, 2, 2, 3, output=output)
    g = kfac_metric(net, w, h0, X, BernoulliFisher())
    M = np.asarray(g.matrix(), dtype=float)
    assert np.allclose(M, M.T, atol=0) and np.linalg.eigvalsh(M)[0] >= -1e-12 * np.max(np.abs(M))
    kappa = net.reference_frames().derive(**changes(net, rng))
    F = kappa.weight_space_frame
    Mk = np.asarray(kfac_metric(net, w, h0, X, BernoulliFisher(), frames=kappa).matrix(F), dtype=float)
    Bi = np.asarray(net.reference_frames().weight_space_frame.change_to(F).B_inv, dtype=float)
    assert rel(Mk, Bi.T @ M @ Bi) < 1e-9
    # control: the same matrix read in κ without the law is a different matrix
    assert rel(Mk, M) > 1e-3


def test_nondegenerate_under_the_hypothesis_degenerate_when_it_fails():
    net, w, h0, X, rng = small(11, 2, 1, 2, 3, 3)
    assert expected_pullback(net, w, h0, X, "gaussian", 1).is_nondegenerate()
    assert recurrent_kfac_metric(net, w, h0, X, "gaussian", 1).is_nondegenerate()
    # control: one example of two steps, hypothesis and conclusion both fail
    net, w, h0, X, rng = small(11, 3, 2, 2, 2, 1)
    assert not expected_pullback(net, w, h0, X, "gaussian", 1).is_nondegenerate()
    g = recurrent_kfac_metric(net, w, h0, X, "gaussian", 1)
    assert not g.is_nondegenerate() and g.rank() < net.W_rec.dim
    with pytest.raises(DegenerateMetricError):
        g.sharp(Covector(g.frame, np.ones(net.W_rec.dim)))
    # the converse is false: one output, T = 2, N = 2 — E[Ψ*g] degenerate, g_KFAC not
    net, w, h0, X, rng = small(12, 2, 1, 1, 2, 2)
    assert expected_pullback(net, w, h0, X, "gaussian", 1).rank() < net.W_rec.dim
    assert recurrent_kfac_metric(net, w, h0, X, "gaussian", 1).is_nondegenerate()


# ----------------------------------------------------------------------------- Thm 4.2
def test_kfac_steps_stay_equal_in_two_frames_and_sgd_does_not():
    net, w, h0, X, rng = small(12, 2, 2, 2, 3, 4)
    Y = rng.normal(size=(4, 3, 2))
    ch = changes(net, rng)
    kappa = net.reference_frames().derive(**ch)
    closed = reparameterize_rnn(net.coordinates(w, h0), **ch)
    wk, h0k = net.weights_from(closed.Wbar_rec, closed.Wbar_out, kappa), net.initial_state(closed.h0, kappa)
    Xk = ch["inputs"].apply_activations(X)
    wa, wb = w, wk
    sa, sb = w, wk
    for _ in range(3):
        wa = kfac_update(net, wa, h0, X, Y, "gaussian", 0.1)[0]
        wb = kfac_update(net, wb, h0k, X, Y, "gaussian", 0.1, frames=kappa)[0]
        da = loss_differential(net, sa, h0, X, Y, "gaussian")[0]
        db = loss_differential(net, sb, h0k, X, Y, "gaussian", frames=kappa)[0]
        from geomkfac.spaces import Vector

        sa = sa + Vector(da.frame, -0.1 * da.coords())
        sb = sb + Vector(db.frame, -0.1 * db.coords())
    f = net.coordinates(wa, h0).forward(X)
    assert rel(to_reference(net.coordinates(wb, h0k, kappa).forward(Xk), ch["outputs"]), f) < 1e-8
    fs = net.coordinates(sa, h0).forward(X)
    assert rel(to_reference(net.coordinates(sb, h0k, kappa).forward(Xk), ch["outputs"]), fs) > 1e-2


# ----------------------------------------------------------------------------- objects and errors
def test_output_metric_on_sequences_is_additive_over_steps():
    Y = AffineSpace(2, "Yt")
    g = StepAdditiveMetric(GaussianFisher(np.diag([2.0, 4.0])), Y, 3)
    M = g.at(Point((Y ** 3).reference_frame, np.zeros(6))).matrix()
    np.testing.assert_allclose(M, np.kron(np.eye(3), np.diag([0.5, 0.25])))
    with pytest.raises(SpaceMismatchError):
        g.at(Point(Y.reference_frame, np.zeros(2)))


def test_unrolled_tail_is_made_of_core_maps():
    from geomkfac.maps import AffineMap, ComposedMap, SmoothMap

    net, w, h0, X, rng = small(13, T=3)
    e = unroll(net, w, h0, X[0])
    kinds = set()

    def walk(m):
        if isinstance(m, ComposedMap):
            walk(m.outer)
            walk(m.inner)
        else:
            kinds.add(type(m))

    walk(e.rests[0])
    assert kinds == {AffineMap, SmoothMap}
    assert e.rests[0].domain is net.Z and e.rests[0].codomain is net.output_space
    assert rel(e.rests[0](e.zetas[0]).coords(), e.outputs.coords()) < RTOL


def test_errors_say_what_is_wrong():
    with pytest.raises(DimensionError):
        AbstractRNN(0, 1, 1, T=2)
    with pytest.raises(ConfigurationError):
        AbstractRNN(1, 1, 1, T=2, output="every")
    net, w, h0, X, rng = small(14)
    with pytest.raises(DimensionError):
        net.weights_from(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(SpaceMismatchError):
        net.coordinates(w, h0.coords())
    with pytest.raises(DimensionError):
        unroll(net, w, h0, X[0, :2])
    with pytest.raises(DataError):
        kfac_factors(net, w, h0, X, fisher="empirical")
    with pytest.raises(DataError):
        recurrent_kfac_metric(net, w, h0, X[:0], "gaussian")
    with pytest.raises(ConfigurationError):
        net.reference_frames().derive(inputs=LayerChange(Phi=np.eye(1)))
    other = AbstractRNN(2, 1, 2, T=3, name="other")
    with pytest.raises(SpaceMismatchError):
        net.forward(w, h0, X, frames=other.reference_frames())
