"""The invariance audit (geomkfac.audit, ``geomkfac audit``): the theory's expectations on a
tiny case, the rules in weight coordinates against the shipped optimizers, the verdict
logic, the JSON report and the command line.

Tolerances: the invariance verdicts use the audit's own INVARIANT_TOL = 1e-8 / DRIFT_MIN =
1e-6 (justified in geomkfac.audit); the identity-coordinates check uses 1e-12 relative:
both sides run the same float64 arithmetic up to summation order (measured ≤ 2e-14).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.audit import (
    DRIFT_MIN,
    INVARIANT_TOL,
    OPTIMIZERS,
    REPARAMS,
    CoordinateRule,
    PairResult,
    WeightFrame,
    activation_pair,
    build_network,
    digits_problem,
    expectation,
    run_audit,
)
from geomkfac.cli import main
from geomkfac.errors import ConfigurationError
from geomkfac.nn import get_optimizer

TINY = dict(steps=2, n_examples=256, hidden=(4,), damping_lambdas=(0.0, 1e-6, 1e-2))


@pytest.fixture(scope="module")
def tiny():
    return run_audit(**TINY)


# ----------------------------------------------------------------------------- expectations
def test_every_expectation_holds_on_the_tiny_case(tiny):
    assert tiny.ok, tiny.table()
    assert {r.reparam for r in tiny.results} == set(REPARAMS)
    assert len(tiny.results) == len(OPTIMIZERS) * len(REPARAMS)


def test_the_theorems_and_their_negative_controls(tiny):
    # Thm 2.1 / 3.2: undamped K-FAC and NGD invariant to affine changes of activation frames
    for rp in ("centering", "whitening", "random_affine", "unit_scaling", "sigmoid_tanh"):
        for opt in ("kfac", "ngd"):
            r = tiny.get(opt, rp)
            assert r.verdict == "invariant" and r.max <= INVARIANT_TOL, (opt, rp, r.max)
        # control beside it: SGD under the same change drifts
        assert tiny.get("sgd", rp).max >= DRIFT_MIN
        # and damping breaks K-FAC's invariance
        assert tiny.get("kfac_damped", rp).verdict == "not invariant"
    # §1: permuting weight entries: NGD invariant, K-FAC not
    assert tiny.get("ngd", "permutation").verdict == "invariant"
    assert tiny.get("kfac", "permutation").verdict == "not invariant"
    # the nonlinear change: nothing is invariant to it
    assert all(r.verdict == "not invariant" for r in tiny.results if r.reparam == "nonlinear")


def test_damping_curve_grows_from_round_off(tiny):
    lam, d = tiny.damping_lambdas, tiny.damping_final
    assert lam == (0.0, 1e-6, 1e-2)
    assert d[0] <= INVARIANT_TOL < DRIFT_MIN <= d[1] <= d[2]


def test_a_planted_wrong_claim_fails():
    res = run_audit(reparams=["random_affine"], optimizers=["sgd", "kfac"], steps=1,
                    n_examples=64, hidden=(3,), damping_lambdas=(),
                    expectations={("sgd", "random_affine"): "invariant"})
    assert not res.ok
    assert [(r.optimizer, r.reparam) for r in res.failures] == [("sgd", "random_affine")]
    assert "FAILED sgd x random_affine" in res.table()


def test_expectation_is_total_and_says_why():
    for opt in OPTIMIZERS:
        for rp in REPARAMS:
            claim, reason = expectation(opt, rp)
            assert claim in ("invariant", "not invariant", None) and reason


# ----------------------------------------------------------------------------- the κ side
@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
@pytest.mark.parametrize("key", list(OPTIMIZERS))
def test_rules_in_identity_coordinates_reproduce_the_shipped_optimizers(key, arch):
    """The weight-coordinate rules are written from loss_and_grad / ggn / kfac_solve / the
    backpropagated Fisher samples, not from the optimizers: with θ = u they must give the optimizers' own trajectory."""
    X, Y = digits_problem(48, seed=1, arch=arch)
    m1 = build_network(arch, (5,), seed=1)
    m2 = m1.copy()
    name, hyper = OPTIMIZERS[key]
    opt = get_optimizer(name, m1, "mse", **hyper)
    frame = WeightFrame("identity", [W.shape for W in m1.get_Wbars()], 0)
    rule = CoordinateRule(name, hyper, m2, "mse", frame)
    for _ in range(2):
        opt.step(X, Y)
        rule.step(X, Y)
    f1 = m1.forward(X)
    assert np.abs(m2.forward(X) - f1).max() <= 1e-12 * np.abs(f1).max()
    # control: the same rule in permuted coordinates leaves the optimizer's trajectory
    if key in ("kfac_damped", "ekfac"):
        m3, m4 = build_network(arch, (5,), seed=1), build_network(arch, (5,), seed=1)
        perm = WeightFrame("permutation", [W.shape for W in m3.get_Wbars()], np.random.default_rng(0))
        CoordinateRule(name, hyper, m3, "mse", perm).step(X, Y)
        get_optimizer(name, m4, "mse", **hyper).step(X, Y)
        assert np.abs(m3.forward(X) - m4.forward(X)).max() >= DRIFT_MIN


@pytest.mark.parametrize("arch", ["mlp", "cnn", "rnn"])
@pytest.mark.parametrize("name", ["centering", "whitening", "random_affine", "unit_scaling",
                                  "sigmoid_tanh"])
def test_activation_pairs_compute_the_same_function(arch, name):
    X, _ = digits_problem(40, seed=2, arch=arch)
    net = build_network(arch, (6,), seed=2)
    net2, X2, changes = activation_pair(name, net, X, np.random.default_rng(3), return_changes=True)
    f = net.forward(X)
    # D.2/D.3 with changes of condition ≤ 1e2 per space: round-off ≲ 1e-13 relative
    assert np.abs(net2.forward(X2) - f).max() <= 1e-12 * np.abs(f).max()
    # the changes are keyed by activation index 0..L and cover the spaces below the output
    assert set(changes) <= set(range(len(net.get_Wbars()) + 1)) and (name == "sigmoid_tanh" or 0 in changes)
    # control: Eqn. D.2 without D.3 (the new weights with the old activations) is another
    # function — the check above can fail
    wrong = net2.copy()
    for l, l0 in zip(wrong.layers, net.layers):
        if hasattr(l, "activation"):
            l.activation = l0.activation
    assert np.abs(wrong.forward(X2) - f).max() >= 1e-3 * np.abs(f).max()


def test_the_layer_stacks_are_audited_too():
    for arch in ("cnn", "rnn"):
        res = run_audit(arch, ["random_affine", "permutation"], ["sgd", "ngd", "kfac"], steps=1,
                        n_examples=64, damping_lambdas=())
        assert res.ok, res.table()
        assert res.get("kfac", "random_affine").verdict == "invariant"
        assert res.get("ngd", "permutation").verdict == "invariant"
        assert res.get("kfac", "permutation").verdict == "not invariant"
        assert res.get("sgd", "random_affine").verdict == "not invariant"


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["permutation", "nonlinear", "identity"]), seed=st.integers(0, 2**16),
       rows=st.integers(2, 5), cols=st.integers(2, 5))
def test_weight_frames_are_invertible_and_permutations_move_entries(kind, seed, rows, cols):
    rng = np.random.default_rng(seed)
    fr = WeightFrame(kind, [(rows, cols), (2, rows + 1)], rng)
    theta = rng.standard_normal(rows * cols + 2 * (rows + 1))
    u = fr.u_of(theta)
    assert np.allclose(fr.theta(u), theta, rtol=1e-13, atol=1e-13)
    # the Jacobian by central differences (step 1e-6: truncation ~1e-12, round-off ~1e-10)
    e = 1e-6
    J = np.stack([(fr.theta(u + e * v) - fr.theta(u - e * v)) / (2 * e) for v in np.eye(u.size)], 1)
    assert np.allclose(fr.jacobian(u), J, atol=1e-7)
    # Jᵀ layer by layer (used by the EKFAC rule) agrees with the dense Jacobian
    g = rng.standard_normal(u.size)
    pulled = np.concatenate([fr.pull_layer(i, u, g[fr.offsets[i]:fr.offsets[i + 1]]) for i in range(2)])
    assert np.allclose(pulled, fr.jacobian(u).T @ g, rtol=1e-13, atol=1e-13)
    if kind == "permutation":
        M = fr.perm[:rows * cols].reshape((rows, cols), order="F")
        # neither a permutation of rows nor of columns (§1: not a change of unit order)
        assert any(len(set((M[i] % rows).tolist())) > 1 for i in range(rows))
        assert any(len(set((M[:, j] // rows).tolist())) > 1 for j in range(cols))


# ----------------------------------------------------------------------------- verdicts
def test_verdicts_from_distances():
    def v(d, **kw):
        return PairResult("sgd", "whitening", tuple(d), None, "", **kw).verdict

    assert v([0.0, 1e-12, INVARIANT_TOL]) == "invariant"
    assert v([0.0, 1e-12, 1e-7]) == "unclear"
    assert v([0.0, DRIFT_MIN, 1e-9]) == "not invariant"
    assert v([0.0, 1e-12, float("inf")], diverged=True, error="second frame: x") == "not invariant"
    assert v([], error="reference frame: x") == "error"


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigurationError, match="choose from"):
        run_audit(reparams=["shear"])
    with pytest.raises(ConfigurationError, match="unknown architecture"):
        run_audit("transformer")
    with pytest.raises(ConfigurationError, match="steps"):
        run_audit(steps=0)


# ----------------------------------------------------------------------------- JSON
def test_json_report_schema(tiny):
    d = json.loads(tiny.to_json())
    assert d["schema"] == "geomkfac.audit/1" and d["ok"] is True and d["failures"] == []
    assert d["invariant_tol"] == INVARIANT_TOL and d["drift_min"] == DRIFT_MIN and "max |f1 - f2|" in d["norm"]
    assert d["config"]["steps"] == TINY["steps"] and d["config"]["arch"] == "mlp"
    assert d["config"]["network"].startswith("MLP([16, 4, 10]") and d["config"]["num_params"] == 118
    assert len(d["results"]) == len(tiny.results)
    keys = {"optimizer", "reparam", "distances", "first", "final", "max", "verdict", "expected",
            "reason", "holds", "error", "diverged"}
    for r, res in zip(d["results"], tiny.results):
        assert set(r) == keys
        assert len(r["distances"]) in (TINY["steps"] + 1, len(res.distances))
        assert r["verdict"] == res.verdict
        assert all(x is None or isinstance(x, float) for x in r["distances"])  # inf -> null
    assert d["damping_curve"]["lambdas"] == [0.0, 1e-6, 1e-2]


def test_the_result_is_immutable(tiny):
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.results = ()
    with pytest.raises(TypeError):
        tiny.config["arch"] = "cnn"
    with pytest.raises(TypeError):
        tiny.config["optimizers"]["sgd"]["lr"] = 1.0
    assert isinstance(tiny.results, tuple) and isinstance(tiny.results[0].distances, tuple)


# ----------------------------------------------------------------------------- CLI
_FAST = ["--reparams", "random_affine,permutation", "--optimizers", "sgd,kfac", "--steps", "1",
         "--examples", "64", "--hidden", "3", "--lambdas", ""]


def test_cli_table_json_and_exit_status(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["audit", *_FAST, "--out", str(out), "--json", str(tmp_path / "a.json")]) == 0
    text = capsys.readouterr().out
    assert "kfac         random_affine" in text and "expectations hold" in text
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "distances.png", "table.txt"]
    assert json.loads((tmp_path / "a.json").read_text())["ok"] is True
    # a non-empty --out is refused without --force (exit 2, one line), accepted with it
    assert main(["audit", *_FAST, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["audit", *_FAST, "--out", str(out), "--force"]) == 0


def test_cli_planted_failure_exits_1(capsys):
    assert main(["audit", *_FAST, "--expect", "sgd:random_affine=invariant"]) == 1
    err = capsys.readouterr().err
    assert "1 expectation(s) failed: sgd x random_affine: expected invariant, got not invariant" in err


def test_cli_usage_errors(capsys):
    assert main(["audit", "--reparams", "shear", "--steps", "1"]) == 2
    assert "unknown 'shear'" in capsys.readouterr().err
    assert main(["audit", *_FAST, "--expect", "sgd=invariant"]) == 2
    assert "OPTIMIZER:REPARAM=CLAIM" in capsys.readouterr().err
