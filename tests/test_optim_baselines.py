"""SGD, Adam, diagonal Fisher and exact NGD against results known in closed form, plus the
shared optimizer contract (configuration errors, NaN handling, bit-exact state round trips)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.errors import CheckpointError, ConfigurationError, DataError, NonFiniteError
from geomkfac.nn import MLP, Dense
from geomkfac.nn.checkpoint import load_checkpoint, save_checkpoint
from geomkfac.nn.losses import SquaredError
from geomkfac.nn.optim import OPTIMIZERS, get_optimizer


def linear_problem(N=20, d=3, C=1, seed=0):
    """A linear layer with squared error: h(θ) = ½ θᵀ H θ − bᵀθ + c in θ = vec(W̄) order."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d))
    Y = rng.standard_normal((N, C))
    net = MLP.from_layers([Dense(rng.standard_normal((C, d)), rng.standard_normal(C), "identity")])
    Xbar = np.hstack([X, np.ones((N, 1))])
    # with vec column-stacking, θ = vec(W̄) and f_n = (x̄_nᵀ ⊗ I_C) θ
    J = np.kron(Xbar, np.eye(C)).reshape(N, C, -1)
    H = np.einsum("ncp,ncq->pq", J, J) / N
    b = np.einsum("ncp,nc->p", J, Y) / N
    theta_star = np.linalg.solve(H, b)
    return net, X, Y, H, b, theta_star


# --------------------------------------------------------------------------- SGD


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.8, False), (0.8, True)])
def test_sgd_matches_closed_form_iterate_on_quadratic(momentum, nesterov):
    net, X, Y, H, b, ts = linear_problem()
    lr, T = 0.1, 12
    P = H.shape[0]
    I = np.eye(P)
    # error dynamics e = θ − θ*, v (velocity): [e; v]_{t+1} = M [e; v]_t
    if nesterov:
        M = np.block([[I - lr * (1 + momentum) * H, -lr * momentum**2 * I], [H, momentum * I]])
    else:
        M = np.block([[I - lr * H, -lr * momentum * I], [H, momentum * I]])
    state0 = np.concatenate([net.get_flat() - ts, np.zeros(P)])
    expected = ts + (np.linalg.matrix_power(M, T) @ state0)[:P]
    opt = get_optimizer("sgd", net, "mse", lr=lr, momentum=momentum, nesterov=nesterov)
    for _ in range(T):
        opt.step(X, Y)
    # tolerance: 12 steps of float64 round-off on O(1) numbers
    np.testing.assert_allclose(net.get_flat(), expected, rtol=0, atol=1e-12)


def test_sgd_weight_decay_is_l2_gradient():
    net, X, Y, H, b, ts = linear_problem()
    eta, lr = 0.3, 0.05
    theta0 = net.get_flat()
    get_optimizer("sgd", net, "mse", lr=lr, weight_decay=eta).step(X, Y)
    expected = theta0 - lr * (H @ theta0 - b + eta * theta0)
    np.testing.assert_allclose(net.get_flat(), expected, rtol=0, atol=1e-13)  # one step, round-off


# --------------------------------------------------------------------------- Adam


def test_adam_first_steps_match_hand_computation():
    net, X, Y, H, b, ts = linear_problem()
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    opt = get_optimizer("adam", net, "mse", lr=lr, beta1=b1, beta2=b2, eps=eps)
    th0 = net.get_flat()
    g1 = H @ th0 - b
    opt.step(X, Y)
    th1 = net.get_flat()
    # step 1: m̂ = g, v̂ = g², so the step is −lr g / (|g| + ε) ≈ −lr sign(g)
    np.testing.assert_allclose(th1, th0 - lr * g1 / (np.abs(g1) + eps), rtol=0, atol=1e-15)
    g2 = H @ th1 - b
    m = b1 * (1 - b1) * g1 + (1 - b1) * g2
    v = b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2
    th2 = th1 - lr * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps)
    opt.step(X, Y)
    np.testing.assert_allclose(net.get_flat(), th2, rtol=0, atol=1e-15)  # round-off only


# --------------------------------------------------------------------------- diagonal Fisher


def test_diag_fisher_step_on_linear_model():
    net, X, Y, H, b, ts = linear_problem(C=2)
    lr, lam = 0.5, 1e-3
    th0 = net.get_flat()
    # exact Fisher of a linear layer with squared error is H = A ⊗ I; its diagonal
    expected = th0 - lr * (H @ th0 - b) / (np.diag(H) + lam)
    get_optimizer("diag_fisher", net, "mse", lr=lr, damping=lam, fisher="exact").step(X, Y)
    np.testing.assert_allclose(net.get_flat(), expected, rtol=0, atol=1e-13)  # one step


def test_diag_fisher_empirical_uses_squared_per_example_gradients():
    from geomkfac.nn import per_example_grads

    net = MLP([3, 4, 2], "tanh", seed=2)
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    pe = per_example_grads(net, X, Y, "mse")  # (N, P), per-example ∇ℓ
    g = pe.mean(axis=0)
    th0 = net.get_flat()
    expected = th0 - 0.2 * g / ((pe**2).mean(axis=0) + 1e-2)
    get_optimizer("diag_fisher", net, "mse", lr=0.2, damping=1e-2).step(X, Y)
    np.testing.assert_allclose(net.get_flat(), expected, rtol=0, atol=1e-12)  # round-off


# --------------------------------------------------------------------------- exact NGD


@pytest.mark.parametrize("C", [1, 3])
def test_ngd_undamped_reaches_least_squares_solution_in_one_step(C):
    net, X, Y, H, b, ts = linear_problem(C=C)
    info = get_optimizer("ngd", net, "mse", lr=1.0, damping=0.0).step(X, Y)
    Xbar = np.hstack([X, np.ones((X.shape[0], 1))])
    W_ls = np.linalg.lstsq(Xbar, Y, rcond=None)[0].T  # independent LS solver
    np.testing.assert_allclose(net.get_Wbars()[0], W_ls, rtol=0, atol=1e-10)  # conditioning ~10
    assert info.loss > 0.5 * np.mean(np.sum((Xbar @ W_ls.T - Y) ** 2, axis=1))


def test_ngd_damped_step_is_regularized_newton():
    net, X, Y, H, b, ts = linear_problem(C=2)
    th0 = net.get_flat()
    lam = 0.7
    get_optimizer("ngd", net, "mse", lr=0.5, damping=lam).step(X, Y)
    expected = th0 - 0.5 * np.linalg.solve(H + lam * np.eye(len(th0)), H @ th0 - b)
    np.testing.assert_allclose(net.get_flat(), expected, rtol=0, atol=1e-13)  # one solve


def test_ngd_empirical_metric():
    from geomkfac.nn import empirical_fisher, loss_and_grad

    net = MLP([3, 4, 2], "tanh", seed=1)
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((12, 3)), rng.integers(0, 2, 12)
    F = empirical_fisher(net, X, Y, "ce")
    _, g = loss_and_grad(net, X, Y, "ce")
    th0 = net.get_flat()
    get_optimizer("ngd", net, "ce", damping=0.1, metric="empirical").step(X, Y)
    np.testing.assert_allclose(net.get_flat(), th0 - np.linalg.solve(F + 0.1 * np.eye(len(g)), g),
                               rtol=0, atol=1e-12)  # one solve of a well-damped system


# --------------------------------------------------------------------------- contract


def test_unknown_and_invalid_hyperparameters():
    net = MLP([2, 1], "identity")
    with pytest.raises(ConfigurationError, match="unknown optimizer 'lbfgs'"):
        get_optimizer("lbfgs", net, "mse")
    with pytest.raises(ConfigurationError, match="unknown hyperparameter.*'betas'"):
        get_optimizer("adam", net, "mse", betas=(0.9, 0.99))
    with pytest.raises(ConfigurationError, match="'lr' must lie in"):
        get_optimizer("sgd", net, "mse", lr=-1.0)
    with pytest.raises(ConfigurationError, match="'momentum'"):
        get_optimizer("sgd", net, "mse", momentum=1.0)
    with pytest.raises(ConfigurationError, match="nesterov"):
        get_optimizer("sgd", net, "mse", nesterov=True)
    with pytest.raises(ConfigurationError, match="fisher"):
        get_optimizer("kfac", net, "mse", fisher="true")
    with pytest.raises(ConfigurationError, match="damping_mode"):
        get_optimizer("kfac", net, "mse", damping_mode="tikhonov")
    with pytest.raises(ConfigurationError, match="adaptive_lr"):
        get_optimizer("kfac", net, "mse", adaptive_lr=True, kl_clip=1e-3)
    with pytest.raises(ConfigurationError, match="λ = 0"):
        get_optimizer("kfac", net, "mse", adapt_damping=True, damping=0.0)
    with pytest.raises(ConfigurationError, match="EKFAC"):
        get_optimizer("ekfac", net, "mse", damping_mode="factored")
    with pytest.raises(ConfigurationError, match="unknown loss"):
        get_optimizer("sgd", net, "hinge")


def test_bad_batches_raise_data_errors():
    net = MLP([3, 2], "identity")
    opt = get_optimizer("sgd", net, "ce")
    with pytest.raises(DataError, match="3"):
        opt.step(np.zeros((4, 5)), np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="out of range"):
        opt.step(np.zeros((4, 3)), np.array([0, 1, 2, 5]))


ALL = [
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", dict(lr=0.01, weight_decay=1e-3)),
    ("diag_fisher", dict(lr=0.05, fisher="mc", momentum=0.5)),
    ("ngd", dict(lr=0.5, damping=1e-2, momentum=0.3)),
    ("kfac", dict(lr=0.2, damping=1e-2, fisher="mc", momentum=0.5, inverse_update_period=3,
                  adapt_damping=True, lm_period=2, kl_clip=1e-2)),
    ("kfac", dict(lr=0.2, damping=1e-2, fisher="exact", inverse_method="eigh",
                  adapt_damping=True, lm_period=1, ema_decay=0.5)),
    ("kfac", dict(damping=1e-1, fisher="mc", adaptive_lr=True, damping_mode="exact",
                  factor_update_period=2)),
    ("ekfac", dict(lr=0.2, damping=1e-2, fisher="mc", inverse_update_period=3, momentum=0.5)),
]


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    net = MLP([4, 6, 3], "tanh", seed=seed)
    X = rng.standard_normal((24, 4))
    Y = rng.integers(0, 3, 24)
    return net, X, Y


def _batches(X, Y, T, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(T):
        idx = rng.choice(len(X), 12, replace=False)
        yield X[idx], Y[idx]


@pytest.mark.parametrize("name,hyper", ALL, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ALL)])
def test_state_dict_round_trip_continues_bit_identically(name, hyper, tmp_path):
    net, X, Y = _problem()
    opt = get_optimizer(name, net, "ce", **hyper)
    batches = list(_batches(X, Y, 9))
    for Xb, Yb in batches[:4]:
        opt.step(Xb, Yb)
    save_checkpoint(tmp_path / "ck.npz", net, opt, step=4)
    state, Wbars = opt.state_dict(), net.get_Wbars()
    ref = [opt.step(Xb, Yb).loss for Xb, Yb in batches[4:]]
    ref_theta = net.get_flat()
    # resume from the in-memory dict
    net2, _, _ = _problem(seed=5)  # different initial weights, overwritten below
    net2.set_Wbars(Wbars)
    opt2 = get_optimizer(name, net2, "ce", **hyper)
    opt2.load_state_dict(state)
    got = [opt2.step(Xb, Yb).loss for Xb, Yb in batches[4:]]
    assert got == ref
    assert np.array_equal(net2.get_flat(), ref_theta)
    # resume through an atomic checkpoint file
    net3, _, _ = _problem(seed=6)
    opt3 = get_optimizer(name, net3, "ce", **hyper)
    assert load_checkpoint(tmp_path / "ck.npz").restore(net3, opt3) == 4
    got3 = [opt3.step(Xb, Yb).loss for Xb, Yb in batches[4:]]
    assert got3 == ref and np.array_equal(net3.get_flat(), ref_theta)
    # negative control: a fresh optimizer state on the same weights continues differently
    if name != "ngd" or hyper.get("momentum"):
        net4, _, _ = _problem(seed=7)
        net4.set_Wbars(Wbars)
        opt4 = get_optimizer(name, net4, "ce", **hyper)
        for Xb, Yb in batches[4:]:
            opt4.step(Xb, Yb)
        assert not np.array_equal(net4.get_flat(), ref_theta)


def test_load_state_of_another_optimizer_is_refused():
    net, X, Y = _problem()
    sgd = get_optimizer("sgd", net, "ce")
    with pytest.raises(CheckpointError, match="'adam'"):
        sgd.load_state_dict(get_optimizer("adam", net, "ce").state_dict())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nan_input_raises_before_touching_the_model(name):
    net, X, Y = _problem()
    opt = get_optimizer(name, net, "ce", damping=1e-2) if name not in ("sgd", "adam") else \
        get_optimizer(name, net, "ce")
    opt.step(X, Y)
    opt.step(X, Y)
    theta, state = net.get_flat(), opt.state_dict()
    Xbad = X.copy()
    Xbad[3, 1] = np.nan
    with pytest.raises(NonFiniteError, match="step 2.*input"):
        opt.step(Xbad, Y)
    assert np.array_equal(net.get_flat(), theta)
    after = opt.state_dict()
    assert after.keys() == state.keys()
    assert all(np.array_equal(np.asarray(after[k]), np.asarray(state[k])) for k in state)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nonfinite_loss_is_named(name):
    net, X, Y = _problem()
    opt = get_optimizer(name, net, "ce")
    W = net.get_Wbars()
    W[-1][0, 0] = np.nan  # a corrupted output weight: the loss becomes NaN
    net.set_Wbars(W)
    theta = net.get_flat()
    with pytest.raises(NonFiniteError, match="step 0: the loss"):
        opt.step(X, Y)
    assert np.array_equal(net.get_flat(), theta, equal_nan=True)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_failed_update_keeps_velocity_and_later_steps_unchanged(nesterov):
    """The velocity buffers are reused between steps; a step whose update overflows must leave
    the velocity (and the model) as they were, so that the run continues exactly as a run
    that never tried it. Control: the failing step really ran (it raised)."""
    net, X, Y = _problem()
    ref = net.copy()
    opt = get_optimizer("sgd", net, "ce", lr=0.1, momentum=0.9, nesterov=nesterov)
    opt_ref = get_optimizer("sgd", ref, "ce", lr=0.1, momentum=0.9, nesterov=nesterov)
    batches = list(_batches(X, Y, 6))
    for xb, yb in batches[:3]:
        opt.step(xb, yb)
        opt_ref.step(xb, yb)
    theta, vel = net.get_flat(), [v.copy() for v in opt.velocity]
    opt.hyper["lr"] = np.inf  # −lr·v is ±inf (NaN where v = 0)
    with pytest.raises(NonFiniteError, match="the update"):
        opt.step(*batches[3])
    assert np.array_equal(net.get_flat(), theta)
    assert all(np.array_equal(a, b) for a, b in zip(opt.velocity, vel))
    opt.hyper["lr"] = 0.1
    opt.step_count -= 1  # the failed step is not counted by the reference run either
    for xb, yb in batches[3:]:
        opt.step(xb, yb)
        opt_ref.step(xb, yb)
    assert np.array_equal(net.get_flat(), ref.get_flat())


# -------------------------------------------------- finiteness guards without extra passes
class _PlantedGradient(SquaredError):
    """Squared error whose output gradient is replaced by ``dF`` (the loss value stays finite):
    plants a non-finite or huge gradient behind a finite loss."""

    def __init__(self, dF):
        self.dF = dF

    def _value_and_grad(self, f, Y):
        value, _ = super()._value_and_grad(f, Y)
        return value, np.broadcast_to(np.asarray(self.dF, dtype=f.dtype), f.shape).copy()


@pytest.mark.parametrize("name", ["sgd", "adam", "kfac"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_behind_a_finite_loss_is_refused(name, bad):
    """The gradient's finiteness is decided from its squared norm (the pass that also gives
    ``grad_norm``); a NaN or inf entry must still stop the step before the model changes."""
    net = MLP([3, 4, 2], "tanh", seed=0)
    X, Y = np.ones((5, 3)), np.zeros((5, 2))
    dF = np.zeros((5, 2))
    dF[2, 1] = bad
    theta = net.get_flat()
    opt = get_optimizer(name, net, _PlantedGradient(dF), lr=0.1)
    with pytest.raises(NonFiniteError, match="the gradient"):
        opt.step(X, Y)
    assert np.array_equal(net.get_flat(), theta)


def test_finite_gradient_whose_squares_overflow_is_accepted():
    """Finite float32 gradient entries whose squares overflow make the squared norm inf; the
    entries are then checked one by one and the step goes on (``grad_norm`` is inf, as the
    norm itself overflows). Control: the same with a NaN entry is refused."""
    net = MLP([2, 2], "identity", seed=0, dtype=np.float32)
    X, Y = np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32)
    opt = get_optimizer("sgd", net, _PlantedGradient(1e30), lr=1e-30)
    info = opt.step(X, Y)
    assert info.grad_norm == np.inf and np.all(np.isfinite(net.get_flat()))
    net = MLP([2, 2], "identity", seed=0, dtype=np.float32)
    opt = get_optimizer("sgd", net, _PlantedGradient([1e30, np.nan]), lr=1e-30)
    with pytest.raises(NonFiniteError, match="the gradient"):
        opt.step(X, Y)


@settings(max_examples=25, deadline=None)
@given(lr=st.sampled_from([1e-3, 0.1, 1.0, 30.0]), mu=st.sampled_from([0.5, 0.9, 0.99]),
       nesterov=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 50))
def test_sgd_velocity_bound_stays_an_upper_bound(lr, mu, nesterov, dtype, seed):
    """SGD skips the pass that checks its update for NaN/inf when a carried bound of the
    velocity's norm (``‖μv + g‖ ≤ μ‖v‖ + ‖g‖``) proves the update finite; that bound must
    stay an upper bound of the true norm at every step and after a checkpoint round trip
    (where it is recomputed from the loaded velocity)."""
    net = MLP([4, 6, 3], "tanh", seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((16, 4)).astype(dtype), rng.integers(0, 3, 16)
    opt = get_optimizer("sgd", net, "ce", lr=lr, momentum=mu, nesterov=nesterov)
    for t in range(8):
        try:
            opt.step(X, Y)
        except NonFiniteError:  # a large lr may diverge: the guard then did its job
            return
        true = float(np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2) for v in opt.velocity)))
        assert opt._vel_bound >= true
        if t == 3:
            clone = get_optimizer("sgd", net, "ce", lr=lr, momentum=mu, nesterov=nesterov)
            clone.load_state_dict(opt.state_dict())
            assert clone._vel_bound is None and clone._velocity_bound() >= true


def test_sgd_update_that_overflows_under_a_finite_lr_is_refused():
    """A finite but huge learning rate that makes ``−lr·v`` overflow in float32: the bound is
    then too large to prove anything and the update is checked entry by entry. Control: a
    large lr that does not overflow is applied."""
    for lr, fails in ((1e38, True), (1e3, False)):
        net = MLP([3, 4, 2], "tanh", seed=0, dtype=np.float32)
        X, Y = np.ones((5, 3), np.float32), np.full((5, 2), 3.0, np.float32)
        opt = get_optimizer("sgd", net, "mse", lr=1e-3, momentum=0.9)
        opt.step(X, Y)
        theta = net.get_flat()
        opt.hyper["lr"] = lr
        if fails:
            with pytest.raises(NonFiniteError, match="the update"):
                opt.step(X, Y)
            assert np.array_equal(net.get_flat(), theta)
        else:
            opt.step(X, Y)
            assert np.all(np.isfinite(net.get_flat())) and not np.array_equal(net.get_flat(), theta)


def test_sgd_bound_is_not_trusted_for_huge_float32_layers(monkeypatch):
    """Above ``BOUND_MAX_ENTRIES32`` entries in a float32 layer the rounding of the norms could
    exceed the bound's margin: the update is then checked entry by entry (planted here by
    lowering the limit and counting the checks). Control: below it the check is skipped."""
    from geomkfac.nn.optim.sgd import SGD

    calls = []
    net = MLP([3, 4, 2], "tanh", seed=0, dtype=np.float32)
    X, Y = np.ones((5, 3), np.float32), np.zeros((5, 2), np.float32)
    opt = get_optimizer("sgd", net, "mse", lr=0.1, momentum=0.9)
    real = opt._check
    monkeypatch.setattr(opt, "_check", lambda name, v: (calls.append(name), real(name, v)))
    opt.step(X, Y)
    assert "the update" not in calls
    monkeypatch.setattr(SGD, "BOUND_MAX_ENTRIES32", 10)  # layer 1 has 4·4 = 16 entries
    opt.step(X, Y)
    assert "the update" in calls


# --------------------------------------------------------------------------- set_lr (schedules)


def test_sgd_scheduled_lr_matches_closed_form_heavy_ball():
    """A cosine schedule through ``set_lr`` against the heavy-ball recursion in θ-space with
    the same per-step rates (a route that never touches the optimizer)."""
    net, X, Y, H, b, ts = linear_problem()
    lr0, mu, T = 0.2, 0.8, 12
    rates = [lr0 * 0.5 * (1 + np.cos(np.pi * t / T)) + 1e-3 for t in range(T)]
    theta, v = net.get_flat(), np.zeros(H.shape[0])
    for lr in rates:
        v = mu * v + (H @ theta - b)
        theta = theta - lr * v
    opt = get_optimizer("sgd", net, "mse", lr=lr0, momentum=mu)
    for lr in rates:
        opt.set_lr(lr)
        assert opt.step(X, Y).extras["lr"] == lr
    # tolerance: 12 steps of float64 round-off on O(1) numbers
    np.testing.assert_allclose(net.get_flat(), theta, rtol=0, atol=1e-12)
    # negative control: the constant rate lr0 ends elsewhere
    net2, *_ = linear_problem()
    opt2 = get_optimizer("sgd", net2, "mse", lr=lr0, momentum=mu)
    for _ in rates:
        opt2.step(X, Y)
    assert np.max(np.abs(net2.get_flat() - theta)) > 1e-3


_SCHEDULABLE = {"sgd": {"momentum": 0.9}, "adam": {}, "diag_fisher": {"damping": 1e-2},
                "ngd": {"damping": 1e-2, "momentum": 0.5},
                "kfac": {"damping": 1e-2, "momentum": 0.5},
                "ekfac": {"damping": 1e-2, "momentum": 0.5}}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_set_lr_equals_an_optimizer_built_with_that_lr(name):
    """After ``set_lr(b)`` the steps are bit for bit those of an optimizer built with
    ``lr=b`` and given the same state (the constructor's route), and differ from ``lr=a``'s."""
    hyper = _SCHEDULABLE[name]
    net1, X, Y = _problem()
    batches = list(_batches(X, Y, 6))
    opt1 = get_optimizer(name, net1, "ce", lr=0.05, **hyper)
    for Xb, Yb in batches[:3]:
        opt1.step(Xb, Yb)
    Wbars = net1.get_Wbars()
    net2, _, _ = _problem()
    net2.set_Wbars(Wbars)
    opt2 = get_optimizer(name, net2, "ce", lr=0.02, **hyper)
    opt2.load_state_dict(opt1.state_dict())
    net3, _, _ = _problem()
    net3.set_Wbars(Wbars)
    opt3 = get_optimizer(name, net3, "ce", lr=0.05, **hyper)
    opt3.load_state_dict(opt1.state_dict())
    opt1.set_lr(0.02)
    for Xb, Yb in batches[3:]:
        i1, i2 = opt1.step(Xb, Yb), opt2.step(Xb, Yb)
        opt3.step(Xb, Yb)
        assert i1.loss == i2.loss and i1.extras == i2.extras
    assert np.array_equal(net1.get_flat(), net2.get_flat())
    assert not np.array_equal(net1.get_flat(), net3.get_flat())  # the old rate: elsewhere


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "0.1", True, None])
def test_set_lr_refuses_bad_values_and_keeps_the_old_one(bad):
    net, X, Y = _problem()
    opt = get_optimizer("sgd", net, "ce", lr=0.1)
    with pytest.raises(ConfigurationError, match="'lr'"):
        opt.set_lr(bad)
    assert opt.hyper["lr"] == 0.1 and opt.step(X, Y).extras["lr"] == 0.1


def test_set_lr_is_refused_where_the_quadratic_model_sets_the_step():
    net, X, Y = _problem()
    opt = get_optimizer("kfac", net, "ce", adaptive_lr=True, damping=1e-2)
    with pytest.raises(ConfigurationError, match="adaptive_lr=True"):
        opt.set_lr(0.5)
    assert opt.hyper["lr"] == OPTIMIZERS["kfac"].defaults["lr"]
