"""Metrics on the weight space through the abstract pipeline (Eqns. 3.2-3.4, Def. 3.7, Thm 3.2).

Reference values are computed independently: Jacobians by central finite differences of
the coordinate network, frame changes from the LayerChange arrays (not from the core),
Fisher expectations by exact enumeration of the outcomes.
"""

import numpy as np
import pytest
import sympy as sp

from geomkfac.errors import DegenerateMetricError
from geomkfac.kfac import (
    empirical_fisher_metric,
    expected_pullback,
    independence_metric,
    kfac_metric,
    loss_differential,
    loss_value,
    natural_gradient_update,
    sgd_update,
    to_arrays,
)
from geomkfac.metrics import Metric
from geomkfac.networks import AbstractMLP, LayerChange, random_affine
from geomkfac.output_metrics import BregmanMetric, CategoricalFisher


def setup(seed=0, widths=(3, 4, 2), acts=("tanh", "identity"), N=12):
    rng = np.random.default_rng(seed)
    net = AbstractMLP(list(widths), list(acts), name=f"k{seed}")
    w = net.random_weights(rng, scale=1.5)
    x = rng.normal(size=(N, widths[0]))
    return rng, net, w, x


def fd_jacobian(net, w, x, h=1e-6):
    """(N, n_L, P) Jacobian of the outputs wrt [vec W̄_1; …] in reference frames."""
    c = net.coordinates(w)
    th = c.vector()
    cols = [(c.with_vector(th + h * e).forward(x) - c.with_vector(th - h * e).forward(x)) / (2 * h)
            for e in np.eye(th.size)]
    return np.stack(cols, axis=-1)


def changes(rng, widths, output=True):
    ch = {0: random_affine(widths[0], rng).on_A_only()}
    for i in range(1, len(widths)):
        ch[i] = random_affine(widths[i], rng)
    if not output:
        ch.pop(len(widths) - 1)
    return ch


def weight_frame_change(ch, widths):
    """B of the induced weight frame change, from the arrays: blockdiag([Ω_{i-1}]_H⁻ᵀ ⊗ Φ_i⁻¹)."""
    blocks = []
    L = len(widths) - 1
    for i in range(1, L + 1):
        ci, co = ch.get(i - 1, LayerChange()), ch.get(i, LayerChange())
        OH = ci.omega_H(widths[i - 1])
        P = co._parts(widths[i], "Z", False)[0]
        blocks.append(np.kron(np.linalg.inv(OH).T, np.linalg.inv(P)))
    n = sum(b.shape[0] for b in blocks)
    B = np.zeros((n, n))
    k = 0
    for b in blocks:
        B[k:k + b.shape[0], k:k + b.shape[0]] = b
        k += b.shape[0]
    return B


# --------------------------------------------------------------------------- Eqn. 3.2
def test_gauss_newton_is_mean_JtJ_by_finite_differences():
    rng, net, w, x = setup(0)
    GN = expected_pullback(net, w, x, "euclidean")
    J = fd_jacobian(net, w, x)
    ref = np.einsum("nlp,nlq->pq", J, J) / x.shape[0]
    # FD Jacobian error O(h²) + ε/h ≈ 1e-10 per entry, squared sums of O(1) entries
    assert np.abs(GN.matrix() - ref).max() < 1e-7
    # negative control: dropping the 1/N or one example changes it
    ref_drop = np.einsum("nlp,nlq->pq", J[1:], J[1:]) / (x.shape[0] - 1)
    assert np.abs(GN.matrix() - ref_drop).max() > 1e-4


def test_fisher_of_categorical_output_is_expected_outer_gradient():
    """Example 3.3: E_ξ[Ψ* g_F,out] = E_{ξ,y}[dL ⊗ dL] (exact sum over the C classes)."""
    rng, net, w, x = setup(1, widths=(2, 3, 3), N=5)
    F = expected_pullback(net, w, x, "categorical").matrix()
    out = net.forward(w, x)
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    E = np.zeros_like(F)
    for c in range(3):
        labels = np.full(x.shape[0], c)
        # per-example gradients: empirical Fisher with weights p_c, summed over classes
        g = np.stack([loss_differential(net, w, x[n:n + 1], labels[n:n + 1], "categorical").coords()
                      for n in range(x.shape[0])])
        E += np.einsum("n,np,nq->pq", p[:, c], g, g) / x.shape[0]
    assert np.abs(F - E).max() < 1e-12  # same float64 numbers summed differently
    # and through finite-difference Jacobians with the closed-form output Fisher
    J = fd_jacobian(net, w, x)
    G = CategoricalFisher().matrix(out)
    assert np.abs(F - np.einsum("nlp,nlk,nkq->pq", J, G, J) / x.shape[0]).max() < 1e-7
    # negative control: the empirical Fisher with data labels differs from the Fisher
    Emp = empirical_fisher_metric(net, w, x, rng.integers(0, 3, x.shape[0]), "categorical").matrix()
    assert np.abs(Emp - F).max() > 1e-3


def test_bregman_gives_ggn_equal_to_categorical_fisher():
    rng, net, w, x = setup(2, widths=(2, 3, 3), N=6)
    z = sp.symbols("z1:4")
    ggn = expected_pullback(net, w, x, BregmanMetric(sp.log(sum(sp.exp(v) for v in z)), z)).matrix()
    fisher = expected_pullback(net, w, x, "categorical").matrix()
    assert np.abs(ggn - fisher).max() < 1e-12  # same Hessian formula evaluated twice
    gn = expected_pullback(net, w, x, "euclidean").matrix()
    assert np.abs(ggn - gn).max() > 1e-3  # negative control: GN ≠ GGN here


def test_single_linear_layer_kfac_equals_gauss_newton():
    """Sanity identity (paper-notes §1): one linear layer, squared error: A ⊗ I = GN."""
    rng, net, w, x = setup(3, widths=(3, 2), acts=("identity",), N=7)
    K = kfac_metric(net, w, x, "gaussian")
    GN = expected_pullback(net, w, x, "euclidean")
    assert np.abs(K.matrix() - GN.matrix()).max() < 1e-12
    A, G = to_arrays(K, net)[0]
    xb = np.hstack([x, np.ones((7, 1))])
    assert np.allclose(A, xb.T @ xb / 7) and np.allclose(G, np.eye(2))
    # negative control: with a hidden nonlinear layer K-FAC is only an approximation
    rng, net2, w2, x2 = setup(3, widths=(3, 4, 2), N=7)
    diff = np.abs(kfac_metric(net2, w2, x2, "gaussian").matrix() - expected_pullback(net2, w2, x2, "gaussian").matrix())
    assert diff.max() > 1e-3


# --------------------------------------------------------------------------- Eqns. 3.3/3.4
def test_independence_metric_is_prop_3_5_and_exact_for_one_example():
    rng, net, w, x = setup(4, N=9)
    F = expected_pullback(net, w, x[:1], "gaussian")
    K = kfac_metric(net, w, x[:1], "gaussian")
    sizes = net.param_counts
    # one example: E[ā āᵀ] ⊗ E[DᵀGD] = E[ā āᵀ ⊗ DᵀGD] → equals the Fisher's diagonal blocks
    k = 0
    for i, blk in enumerate(K.blocks(), start=1):
        assert np.abs(blk - F.matrix()[k:k + sizes[i - 1], k:k + sizes[i - 1]]).max() < 1e-12
        k += sizes[i - 1]
    # Prop 3.5 with many examples: the layer metric is kron(E[ā āᵀ], E[G_i]) with
    # E[G_i] computed here from finite-difference Jacobians wrt the biases (∂out/∂b_i = D_i)
    g2 = independence_metric(net, w, x, "gaussian", layer=2)
    A2, G2 = g2.factors()
    a1 = net.coordinates(w).trace(x)[2][1]
    ab = np.hstack([a1, np.ones((9, 1))])
    assert np.allclose(A2, ab.T @ ab / 9, atol=1e-12)
    J = fd_jacobian(net, w, x)
    Db = J[:, :, -2:]  # the last layer's bias columns
    assert np.abs(G2 - np.einsum("nlk,nlj->kj", Db, Db) / 9).max() < 1e-7
    assert np.allclose(g2.matrix(g2.frame), np.kron(A2, G2))
    # (last layer, Gaussian output: G_2 = I is constant, so this block is exact) while
    # negative control: for the hidden layer, where D_1 varies with ξ, it is not
    F9 = expected_pullback(net, w, x, "gaussian").matrix()
    assert np.abs(np.kron(A2, G2) - F9[sizes[0]:, sizes[0]:]).max() < 1e-12
    A1, G1 = independence_metric(net, w, x, "gaussian", layer=1).factors()
    assert np.abs(np.kron(A1, G1) - F9[:sizes[0], :sizes[0]]).max() > 1e-4


def test_theorem_3_4_3_8_psd_and_degenerate_softmax():
    rng, net, w, x = setup(5, widths=(2, 3, 3), N=20)
    K = kfac_metric(net, w, x, "bernoulli")
    assert K.is_psd() and K.is_nondegenerate()
    for m in K.metrics:
        assert np.linalg.eigvalsh(m.matrix(m.frame)).min() > 0
    # softmax output: the last layer's G is singular (rank C−1) → K-FAC degenerate
    Kc = kfac_metric(net, w, x, "categorical")
    assert Kc.is_psd() and not Kc.is_nondegenerate()
    dh = loss_differential(net, w, x, rng.integers(0, 3, 20), "categorical")
    with pytest.raises(DegenerateMetricError):
        natural_gradient_update(Kc, w, dh, 0.1)


# --------------------------------------------------------------------------- frame laws
def test_kfac_matrix_and_factors_follow_the_transformation_laws():
    rng, net, w, x = setup(6, widths=(3, 4, 2), N=15)
    widths = net.widths
    ch = changes(rng, widths)
    kappa = net.reference_frames().derive(ch)
    K = kfac_metric(net, w, x, "gaussian")
    K_k = kfac_metric(net, w, x, "gaussian", frames=kappa)  # built in the new frames
    B = weight_frame_change(ch, widths)
    Binv = np.linalg.inv(B)
    law = Binv.T @ K.matrix() @ Binv  # G_κ = B⁻ᵀ G B⁻¹ (Jᵀ M J with J = B⁻¹)
    scale = np.abs(law).max()
    # float64 products of condition ≤ 4⁴ matrices: relative round-off ≪ 1e-9
    assert np.abs(K_k.matrix(kappa.weight_space_frame) - law).max() < 1e-9 * scale
    assert np.abs(K.matrix(kappa.weight_space_frame) - law).max() < 1e-9 * scale
    # the factors: A‡ = [Ω]_H A [Ω]_Hᵀ, G‡ = Φᵀ G Φ
    for i, ((A, G), (Ak, Gk)) in enumerate(zip(to_arrays(K, net), to_arrays(K_k, net, kappa)), start=1):
        OH = ch[i - 1].omega_H(widths[i - 1])
        P = ch[i].Phi
        assert np.abs(Ak - OH @ A @ OH.T).max() < 1e-9 * np.abs(Ak).max()
        assert np.abs(Gk - P.T @ G @ P).max() < 1e-9 * np.abs(Gk).max()
    # the dense Fisher follows the same law
    F = expected_pullback(net, w, x, "gaussian")
    F_k = expected_pullback(net, w, x, "gaussian", frames=kappa)
    assert np.abs(F_k.matrix(kappa.weight_space_frame) - Binv.T @ F.matrix() @ Binv).max() < 1e-9 * scale
    # negative control: a diagonal approximation built in each frame is not one metric
    diag_k = np.diag(np.diag(K_k.matrix(kappa.weight_space_frame)))
    diag_law = Binv.T @ np.diag(np.diag(K.matrix())) @ Binv
    assert np.abs(diag_k - diag_law).max() > 1e-3 * scale


def test_kfac_symbolic_frames_exact():
    R = sp.Rational
    net = AbstractMLP([2, 2, 1], ["sigmoid", "identity"], name="ks")
    w = net.weights_from([sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]]),
                          sp.Matrix([[R(3, 2), -2, R(1, 4)]])])
    x = sp.Matrix([[R(1, 3), -1], [2, R(1, 2)]])
    o1, o2 = sp.symbols("o1 o2", positive=True)
    kappa = net.reference_frames().derive({1: LayerChange(Omega=sp.diag(o1, o2), gamma=sp.Matrix([1, -1]))})
    K = kfac_metric(net, w, x, "gaussian")
    K_k = kfac_metric(net, w, x, "gaussian", frames=kappa)
    D = K_k.matrix(kappa.weight_space_frame) - K.matrix(kappa.weight_space_frame)
    # the exp(·) atoms (sigmoids of the same rational pre-activations) as generic symbols
    atoms = {a: sp.Symbol(f"_e{i}", positive=True) for i, a in enumerate(sorted(D.atoms(sp.exp), key=str))}
    assert all(sp.cancel(e.xreplace(atoms)) == 0 for e in D)
    # negative control: the same factors but the old (reference) A-frame for layer 2
    A_k, G_k = K_k.metrics[1].factors()
    A_ref, _ = K.metrics[1].factors()
    wrong = sp.ImmutableMatrix(A_ref) - sp.ImmutableMatrix(A_k)
    assert any(sp.cancel(e.xreplace(atoms)) != 0 for e in wrong)


# --------------------------------------------------------------------------- Theorem 3.2
@pytest.mark.parametrize("which", ["kfac", "fisher", "gn", "empirical"])
def test_natural_gradient_update_invariant_under_random_affine_change(which):
    rng, net, w, x = setup(7, widths=(3, 4, 2), N=30)
    y = rng.normal(size=(30, 2))
    kappa = net.reference_frames().derive(changes(rng, net.widths, output=False))

    def metric(frames):
        if which == "kfac":
            return kfac_metric(net, w, x, "gaussian", frames)
        if which == "fisher":
            return expected_pullback(net, w, x, "gaussian", frames)
        if which == "gn":
            return expected_pullback(net, w, x, "euclidean", frames)
        return empirical_fisher_metric(net, w, x, y, "gaussian", frames)

    ref = net.reference_frames()
    results = {}
    for name, fr in (("ref", ref), ("kappa", kappa)):
        g = metric(fr)
        dh = loss_differential(net, w, x, y, "gaussian", fr)
        results[name] = natural_gradient_update(g, w, dh, lr=0.5)
    step = np.abs(results["ref"].coords() - w.coords()).max()
    d = np.abs(results["ref"].coords() - results["kappa"].coords()).max() / step
    # one Point up to float64 round-off amplified by the metric's condition number
    # (≲ 1e8 for the full Fisher of this small net): relative 1e-6 leaves a margin
    assert d < 1e-6
    # and the updated networks compute the same function
    f1 = net.forward(results["ref"], x)
    f2 = net.forward(results["kappa"], x)
    assert np.abs(f1 - f2).max() < 1e-6 * np.abs(f1).max()
    # g⁻¹ dh is a descent direction: a small step decreases the loss
    small = natural_gradient_update(metric(ref), w, loss_differential(net, w, x, y, "gaussian"), lr=1e-4)
    assert loss_value(net, small, x, y, "gaussian") < loss_value(net, w, x, y, "gaussian")

    # negative control 1: SGD read in the two frames is two different steps
    dh_r = loss_differential(net, w, x, y, "gaussian", ref)
    s1 = sgd_update(w, dh_r, 0.5, ref.weight_space_frame)
    s2 = sgd_update(w, dh_r, 0.5, kappa.weight_space_frame)
    assert np.abs(s1.coords() - s2.coords()).max() > 1e-3
    # negative control 2: Tikhonov damping λI in each frame breaks invariance, more with λ
    g_r, g_k = metric(ref), metric(kappa)
    discrepancy = []
    for lam in (1e-3, 1e-1):
        a = natural_gradient_update(g_r, w, dh_r, 0.5, damping=lam, damping_frame=ref.weight_space_frame)
        b = natural_gradient_update(g_k, w, dh_r, 0.5, damping=lam, damping_frame=kappa.weight_space_frame)
        discrepancy.append(np.abs(a.coords() - b.coords()).max() / np.abs(a.coords() - w.coords()).max())
    assert discrepancy[0] > 100 * max(d, 1e-12) and discrepancy[1] > discrepancy[0]


def test_update_is_a_point_and_to_arrays():
    rng, net, w, x = setup(8, N=10)
    y = rng.normal(size=(10, 2))
    K = kfac_metric(net, w, x, "gaussian")
    dh = loss_differential(net, w, x, y, "gaussian")
    new = natural_gradient_update(K, w, dh, 0.1)
    Ws = to_arrays(new, net)
    assert [W.shape for W in Ws] == [(4, 4), (2, 5)]
    # K-FAC step by hand in the reference frame: ΔW̄_i = G_i⁻¹ DW̄_i A_i⁻¹
    grads = to_arrays(dh, net)
    k = 0
    for i, ((A, G), W0, W1) in enumerate(zip(to_arrays(K, net), to_arrays(w, net), Ws), start=1):
        n = W0.size
        DW = grads[k:k + n].reshape(W0.shape, order="F")
        k += n
        step = np.linalg.solve(G, DW) @ np.linalg.inv(A)
        assert np.abs(W1 - (W0 - 0.1 * step)).max() < 1e-10
    assert isinstance(to_arrays(expected_pullback(net, w, x, "gaussian"), net), np.ndarray)
    assert isinstance(Metric.identity(net.weight_space.reference_frame), Metric)


@pytest.mark.parametrize("loss,om,C", [("mse", "gaussian", 3), ("ce", "categorical", 3), ("bernoulli", "bernoulli", 2)])
def test_numpy_backend_agrees_with_the_abstract_pipeline(loss, om, C):
    """The training backend's curvature (geomkfac.nn) against the abstract pipeline."""
    from geomkfac.nn import MLP
    from geomkfac.nn.curvature import empirical_fisher, ggn, kfac_factors, loss_and_grad

    rng = np.random.default_rng(9)
    m = MLP([4, 5, C], "tanh", seed=1)
    net = AbstractMLP([4, 5, C], ["tanh", "identity"], name=f"nn-{loss}")
    w = net.weights_from([layer.Wbar for layer in m.layers])
    X = rng.normal(size=(20, 4))
    Y = {"mse": rng.normal(size=(20, C)), "ce": rng.integers(0, C, 20),
         "bernoulli": (rng.random((20, C)) < 0.5).astype(float)}[loss]
    # two float64 implementations of the same sums: agreement to round-off (1e-12)
    for (A, G), (Am, Gm) in zip(kfac_factors(m, X, None, loss), to_arrays(kfac_metric(net, w, X, om), net)):
        assert np.abs(A - Am).max() < 1e-12 and np.abs(G - Gm).max() < 1e-12
    assert np.abs(ggn(m, X, None, loss) - to_arrays(expected_pullback(net, w, X, om), net)).max() < 1e-12
    assert np.abs(empirical_fisher(m, X, Y, loss) - to_arrays(empirical_fisher_metric(net, w, X, Y, om), net)).max() < 1e-12
    assert np.abs(loss_and_grad(m, X, Y, loss)[1] - to_arrays(loss_differential(net, w, X, Y, om), net)).max() < 1e-12


def test_kfac_update_invariance_symbolic_exact():
    """Thm 3.2 exactly: a symbolic affine change (entry o) on the hidden spaces, rational data."""
    R = sp.Rational
    net = AbstractMLP([2, 2, 2], ["identity", "identity"], name="ksu")
    w = net.weights_from([sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]]),
                          sp.Matrix([[R(3, 2), -2, R(1, 4)], [1, 1, 0]])])
    x = sp.Matrix([[R(1, 3), -1], [2, R(1, 2)], [1, 1], [0, 2]])
    y = sp.Matrix([[1, 0], [0, 1], [1, 1], [2, 0]])
    o = sp.Symbol("o", positive=True)
    kappa = net.reference_frames().derive(
        {1: LayerChange(Omega=sp.Matrix([[o, 1], [0, 2]]), gamma=sp.Matrix([1, -1]), Phi=sp.Matrix([[1, 0], [1, 1]]))}
    )
    ref = net.reference_frames()
    steps = {}
    for name, fr in (("ref", ref), ("kappa", kappa)):
        g = kfac_metric(net, w, x, "gaussian", fr)
        steps[name] = natural_gradient_update(g, w, loss_differential(net, w, x, y, "gaussian", fr), R(1, 2))
    assert all(sp.cancel(e) == 0 for e in steps["ref"].coords() - steps["kappa"].coords())
    # negative control: SGD read in the two frames differs by terms in o
    dh = loss_differential(net, w, x, y, "gaussian", ref)
    d_sgd = [sp.cancel(e) for e in sgd_update(w, dh, R(1, 2), kappa.weight_space_frame).coords()
             - sgd_update(w, dh, R(1, 2), ref.weight_space_frame).coords()]
    assert any(e != 0 and e.has(o) for e in d_sgd)
