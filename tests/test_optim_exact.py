"""The exact natural-gradient presets (``exact=True``) and the side-effect-free
``opt.loss(X, Y)``.

Tolerances: the preset and the spelled-out configuration run the same arithmetic, so their
weights agree exactly (compared with ``array_equal``); the invariance check compares two
float64 trainings whose frames have condition number below ~10: after 8 undamped steps their
outputs agree to ~1e-12, checked at 1e-8, while damped/averaged K-FAC drifts by > 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

import geomkfac
import geomkfac.nn as gnn
from geomkfac.errors import ConfigurationError
from geomkfac.nn.losses import get_loss
from geomkfac.nn.optim import KFAC, NGD, OPTIMIZERS, get_optimizer
from geomkfac.reparam import random_affine

#: the configuration exact=True stands for, spelled out keyword by keyword
SPELLED_OUT = dict(fisher="exact", damping=0.0, damping_mode="exact", eig_floor=None, ema_decay=0.0,
                   factor_update_period=1, inverse_update_period=1, kl_clip=None)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((30, 3))
    Y = np.tanh(X[:, :2]) + 0.1 * rng.standard_normal((30, 2))
    return X, Y


@pytest.mark.parametrize("make", [lambda: gnn.MLP([3, 4, 2], "tanh", seed=1),
                                  lambda: gnn.Sequential([gnn.Dense(np.eye(4, 3) + 0.3, np.zeros(4), "softplus"),
                                                          gnn.Dense(np.ones((2, 4)) * 0.2, np.zeros(2))])])
def test_preset_equals_the_spelled_out_configuration_step_by_step(make):
    X, Y = problem()
    a, b = make(), make()
    opt_a = get_optimizer("kfac", a, "mse", lr=0.2, exact=True)
    opt_b = get_optimizer("kfac", b, "mse", lr=0.2, **SPELLED_OUT)
    assert opt_a.exact and not opt_b.exact
    assert opt_a.hyper == opt_b.hyper
    for _ in range(6):
        ia, ib = opt_a.step(X, Y), opt_b.step(X, Y)
        assert ia.loss == ib.loss
        assert np.array_equal(a.get_flat(), b.get_flat())
    # control: the default K-FAC (damped, averaged, clipped) takes other steps
    c = make()
    opt_c = get_optimizer("kfac", c, "mse", lr=0.2)
    for _ in range(6):
        opt_c.step(X, Y)
    assert np.abs(c.get_flat() - a.get_flat()).max() > 1e-4


def test_contradicting_arguments_are_refused_and_agreeing_ones_accepted():
    net = gnn.MLP([3, 4, 2], "tanh", seed=1)
    for key, value in [("damping", 1e-3), ("fisher", "mc"), ("kl_clip", 1e-2), ("eig_floor", 0.0),
                       ("ema_decay", 0.95), ("inverse_update_period", 5), ("damping_mode", "factored"),
                       ("adapt_damping", True)]:
        with pytest.raises(ConfigurationError, match=rf"{key}=.*the preset has"):
            get_optimizer("kfac", net, "mse", exact=True, **{key: value})
    opt = get_optimizer("kfac", net, "mse", exact=True, damping=0, fisher="exact", lr=0.5, momentum=0.5)
    assert opt.hyper["damping"] == 0 and opt.hyper["lr"] == 0.5 and opt.hyper["momentum"] == 0.5
    for name in ("sgd", "adam", "diag_fisher", "ekfac"):
        with pytest.raises(ConfigurationError, match="no exact natural-gradient preset; exact=True is offered by: kfac, ngd"):
            get_optimizer(name, net, "mse", exact=True)
    with pytest.raises(ConfigurationError, match="exact must be True or False"):
        get_optimizer("kfac", net, "mse", exact="yes")
    with pytest.raises(ConfigurationError, match="damping"):
        NGD(net, "mse", exact=True, damping=1e-4)


def test_exact_ngd_is_undamped_ggn():
    X, Y = problem(1)
    a, b = gnn.MLP([3, 2, 2], "tanh", seed=2), gnn.MLP([3, 2, 2], "tanh", seed=2)
    oa, ob = NGD(a, "mse", exact=True, lr=0.5), NGD(b, "mse", damping=0.0, metric="ggn", lr=0.5)
    for _ in range(3):
        oa.step(X, Y)
        ob.step(X, Y)
    assert np.array_equal(a.get_flat(), b.get_flat())


def test_exact_kfac_keeps_reparameterized_networks_equal_damped_does_not():
    """Theorem 2.1 with the preset: the network and its reparameterization (random affine
    frames on the hidden spaces) train to the same function; control: default K-FAC."""
    X, Y = problem(2)
    net = gnn.MLP([3, 4, 2], "tanh", seed=3)
    rng = np.random.default_rng(5)
    changes = {1: random_affine(4, rng, scale=0.3, cond=3.0)}

    def gap(**hyper):
        a, b = net.copy(), geomkfac.reparameterize(net, changes)
        oa, ob = get_optimizer("kfac", a, "mse", **hyper), get_optimizer("kfac", b, "mse", **hyper)
        worst = 0.0
        for _ in range(8):
            oa.step(X, Y)
            ob.step(X, Y)
            worst = max(worst, float(np.abs(a.forward(X) - b.forward(X)).max()))
        return worst

    assert gap(lr=0.3, exact=True) < 1e-8
    assert gap(lr=0.3, damping=1e-1) > 1e-4


def _states_equal(d1, d2) -> bool:
    if d1.keys() != d2.keys():
        return False
    for k in d1:
        a, b = d1[k], d2[k]
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            if not np.array_equal(np.asarray(a), np.asarray(b)):
                return False
        elif a != b:
            return False
    return True


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_loss_has_no_side_effects_and_is_the_loss_before_the_next_step(name):
    X, Y = problem(3)
    net = gnn.MLP([3, 4, 2], "tanh", seed=4)
    hyper = {"kfac": dict(fisher="mc", damping=1e-2), "ekfac": dict(fisher="mc", damping=1e-2),
             "diag_fisher": dict(fisher="mc")}.get(name, {})
    opt = get_optimizer(name, net, "mse", lr=0.05, **hyper)
    for _ in range(2):
        opt.step(X, Y)
    before, theta = opt.state_dict(), net.get_flat()
    value = opt.loss(X, Y)
    value_again = opt.loss(X, Y)
    assert _states_equal(before, opt.state_dict())   # counters, RNG, curvature state
    assert np.array_equal(theta, net.get_flat())
    # the same number by a forward pass and the loss object, outside the optimizer
    assert value == value_again == pytest.approx(get_loss("mse").value(net.forward(X), Y), rel=1e-15)
    assert opt.step(X, Y).loss == value       # StepInfo.loss is the loss before the step
    assert opt.loss(X, Y) != value            # control: the step changed the weights


def test_bound_loss_keeps_the_loss_object_interface():
    net = gnn.MLP([3, 2], "identity", seed=0)
    opt = get_optimizer("sgd", net, "mse")
    assert opt.loss.name == "mse" and opt.loss_fn is get_loss(opt.loss)
    f = net.forward(np.ones((2, 3)))
    assert opt.loss.value(f, np.zeros((2, 2))) == opt.loss_fn.value(f, np.zeros((2, 2)))
    for cls in OPTIMIZERS.values():
        assert "before" in cls.step.__doc__ and "StepInfo" in cls.step.__doc__
    assert KFAC.exact_preset["damping"] == 0.0
