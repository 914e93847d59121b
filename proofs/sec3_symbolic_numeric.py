"""§3, the pipeline's two readings: the symbolic (sympy, exact) and the numeric (NumPy,
float64) abstract pipelines compute the same metrics — one code path through the core's
``Field``, not two implementations.

Method: numeric comparison of an exact result.  A 2-2-1 tanh MLP with rational weights,
rational inputs and targets, in the reference frames and in a second FrameChoice κ with
rational dense changes of the input and the hidden spaces.  The symbolic pipeline
(``geomkfac.kfac`` on sympy points: exact arithmetic, ``tanh`` of rationals kept exact) gives
the Fisher (Gaussian output), the K-FAC factors, the empirical Fisher and ``dh``; each is
evaluated in 30-digit arithmetic and compared with the numeric pipeline run on the same
numbers as float64.

Negative control: the same comparison after moving one input of the numeric run by 1e-4
(the symbolic run keeps the original): the check must see the difference.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from geomkfac import kfac as K
from geomkfac.networks import AbstractMLP, LayerChange

ID = "§3 sympy = NumPy"
STATEMENT = ("the symbolic and the numeric abstract pipelines compute the same metrics "
             "(Fisher, K-FAC factors, empirical Fisher, dh), in two choices of frames")
METHOD = "symbolic+numeric"

# Tolerances (why): the symbolic result is exact; its 30-digit evaluation is exact to
# float64.  The float64 pipeline on O(1) numbers through changes of condition number ≲ 10
# loses a few ulps per operation: 1e-12 relative is generous.  A 1e-4 move of an input
# changes the metrics by ~1e-5 relative: ≥ 1e-8 is required of the control.
TOL = 1e-12
CONTROL_MIN = 1e-8
R = sp.Rational


def _problem():
    net = AbstractMLP([2, 2, 1], ["tanh", "identity"], name="symnum")
    W1 = sp.Matrix([[1, R(-1, 2), R(1, 3)], [R(2, 3), 1, -1]])
    W2 = sp.Matrix([[R(3, 2), -2, R(1, 4)]])
    X = sp.Matrix([[R(1, 3), -1], [2, R(1, 2)], [R(-1, 2), R(3, 4)]])
    Y = sp.Matrix([[1], [R(-1, 2)], [R(1, 3)]])
    change = {0: LayerChange(Omega=sp.Matrix([[2, 1], [0, 1]]), gamma=sp.Matrix([R(1, 2), -1])),
              1: LayerChange(Omega=sp.Matrix([[1, R(1, 2)], [-1, 1]]), gamma=sp.Matrix([1, 0]),
                             Phi=sp.Matrix([[1, 0], [R(1, 3), 2]]), tau=sp.Matrix([0, R(-1, 2)]))}
    return net, (W1, W2), X, Y, change


def _quantities(net, w, X, Y, frames):
    fr = net._frames(frames)
    F = K.expected_pullback(net, w, X, "gaussian", frames=fr).matrix(fr.weight_space_frame)
    g = K.kfac_metric(net, w, X, "gaussian", frames=fr)
    facs = [f for m, i in zip(g.metrics, range(1, net.L + 1))
            for f in m.factors(fr.A[i - 1], fr.Z[i])]
    E = K.empirical_fisher_metric(net, w, X, Y, "gaussian", frames=fr).matrix(fr.weight_space_frame)
    dh = K.loss_differential(net, w, X, Y, "gaussian", frames=fr).coords(fr.weight_space_frame)
    return [F, *facs, E, dh]


def _num(M):
    """The exact matrix evaluated in 30-digit arithmetic, then rounded to float64: every
    transcendental atom (``tanh`` of a rational) is replaced by its 30-digit value, and the
    remaining rational arithmetic collapses to 30-digit floats as the tree is rebuilt."""
    M = sp.Matrix(M)
    atoms = {a: sp.Float(a.evalf(30), 30) for a in M.atoms(sp.Function)}
    return np.array(M.xreplace(atoms).evalf(30).tolist(), dtype=float)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def check(fast: bool = False) -> dict:
    net, (W1, W2), X, Y, change = _problem()
    w_sym = net.weights_from([W1, W2])
    w_num = net.weights_from([np.array(W1.tolist(), float), np.array(W2.tolist(), float)])
    X_num, Y_num = np.array(X.tolist(), float), np.array(Y.tolist(), float)
    ref = net.reference_frames()
    kappa = ref.derive(change)
    kappa_num = ref.derive({k: LayerChange(*[None if p is None else np.array(sp.Matrix(p).tolist(), float)
                                               for p in (c.Omega, c.gamma, c.Phi, c.tau)])
                            for k, c in change.items()})
    names = ["Fisher", "A_0", "G_1", "A_1", "G_2", "empirical Fisher", "dh"]
    rows, worst, ctrl = {}, 0.0, np.inf
    frames_list = [("reference", ref, ref)] + ([] if fast else [("κ", kappa, kappa_num)])
    for label, fs, fn in frames_list:
        sym = [_num(q) for q in _quantities(net, w_sym, X, Y, fs)]
        num = [np.asarray(q, dtype=float) for q in _quantities(net, w_num, X_num, Y_num, fn)]
        X_moved = X_num.copy()
        X_moved[0, 0] += 1e-4
        moved = [np.asarray(q, dtype=float) for q in _quantities(net, w_num, X_moved, Y_num, fn)]
        d = {n: _rel(a.reshape(b.shape), b) for n, a, b in zip(names, num, sym)}
        c = max(_rel(a.reshape(b.shape), b) for a, b in zip(moved, sym))
        worst, ctrl = max(worst, max(d.values())), min(ctrl, c)
        rows[label] = ", ".join(f"{k} {v:.1e}" for k, v in d.items()) + f" | input moved by 1e-4: {c:.1e}"
    return {
        "holds": bool(worst <= TOL),
        "discrepancy": worst,
        "negative_control": "one numeric input moved by 1e-4: the comparison must see it",
        "negative_discrepancy": float(ctrl),
        "negative_fails": bool(ctrl >= CONTROL_MIN),
        "details": {
            "network": "2-2-1 tanh, rational weights, 3 rational examples, Gaussian output",
            "discrepancy": "max|float64 pipeline − evalf(symbolic pipeline)| / max(1, max|symbolic|)",
            "per choice of frames": rows,
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
