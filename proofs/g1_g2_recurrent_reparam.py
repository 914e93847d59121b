"""Appendix G.1 (Eqns. G.1/G.2, 4.5/4.6): the recurrent networks of two choices of frames —
shared by all steps — are two parameterizations of one abstract recurrent network, so they
compute the same function.

Method: numeric (float64, several seeds).  A random abstract RNN (H = 3 hidden units,
2 inputs, 2 outputs, T = 4, tanh), outputs at every step and at the last step only, and a
second choice of frames κ: random dense affine changes ``a‡ = Ω a + γ`` on the hidden space
``A``, ``z = Φ z‡ + τ`` on ``Z``, ``x‡ = Ω_x x + γ_x`` on the inputs and ``y‡ = Ω_y y + γ_y`` on
the outputs.  Two routes to the network in κ:

* through frames: the abstract weights read in the frames of ``Aff(A × X, Z)`` and
  ``Aff(A, Y)`` induced by κ (the core's law D.2), the activation of D.3, and the initial
  state as the coordinates of the **point** ``α_0`` in κ
  (:meth:`~geomkfac.networks.rnn.AbstractRNN.coordinates`);
* in closed form on arrays (:func:`~geomkfac.networks.rnn.reparameterize_rnn`:
  ``[Φ]_H⁻¹ [W̄_r; 0 1] [Ω_{AX}]_H⁻¹``, ``[Ω_y]_H [W̄_o; 0 1] [Ω]_H⁻¹``, ``h‡_0 = Ω h_0 + γ``).

Checked: the two routes give the same arrays; both networks in κ (fed ``x‡``) compute the
reference network's outputs (mapped back by ``Ω_y⁻¹(y‡ − γ_y)``); the sigmoid ↔ tanh change
(``σ(x) = ½ tanh(x/2) + ½``) on the hidden space turns a sigmoid RNN into one whose activation
is ``tanh`` exactly.

Negative control (same comparison of outputs): the closed form with the initial state *not*
transformed (``h‡_0 = h_0``, treating the point α_0 as if it were a vector of zeros' frame)
must compute a different function — relative difference ≥ 1e-4 (measured ≥ 2e-2).
"""

from __future__ import annotations

import numpy as np
from _rnn import outputs_to_reference, problem, random_changes, rel

from geomkfac.activations_sym import get_activation
from geomkfac.networks.rnn import AbstractRNN, reparameterize_rnn
from geomkfac.reparam import sigmoid_to_tanh

ID = "G.1/G.2"
STATEMENT = ("two choices of frames shared across time (initial state a point: Ω a_0 + γ) give "
             "recurrent networks computing the same function")
METHOD = "numeric"

# Tolerances (why):
# - the same function through two float64 computations with changes of condition number
#   ≲ 4 per space, on O(1) values, over T = 4 steps: round-off ~1e-14; we allow 1e-10.
TOL = 1e-10
# - control: forgetting γ and Ω on a_0 changes z_1 by W‡_h (h‡_0 − h_0), measured 2e-2 … 1e-1
#   on the outputs (the tanh recurrence contracts it at later steps); we require 1e-4, 1e6 × TOL.
CONTROL_MIN = 1e-4


def _seed(seed, output, N):
    net, w, h0, X, rng = problem(seed, output=output, N=N)
    ch = random_changes(net, rng)
    kappa = net.reference_frames().derive(**ch)
    f_ref = net.forward(w, h0, X)
    X_k = ch["inputs"].apply_activations(X)
    frames_net = net.coordinates(w, h0, kappa)
    closed = reparameterize_rnn(net.coordinates(w, h0), **ch)
    d = {
        "arrays: frames vs closed form": max(rel(frames_net.Wbar_rec, closed.Wbar_rec),
                                             rel(frames_net.Wbar_out, closed.Wbar_out),
                                             rel(frames_net.h0, closed.h0)),
        "outputs: frames in κ vs reference": rel(outputs_to_reference(frames_net.forward(X_k), ch["outputs"]), f_ref),
        "outputs: closed form in κ vs reference": rel(outputs_to_reference(closed.forward(X_k), ch["outputs"]), f_ref),
    }
    bad = reparameterize_rnn(net.coordinates(w, h0), **ch, transform_h0=False)
    ctrl = rel(outputs_to_reference(bad.forward(X_k), ch["outputs"]), f_ref)
    return d, ctrl


def _sigmoid_to_tanh(seed, N):
    """A sigmoid RNN in the frames of the sigmoid → tanh change has activation tanh."""
    rng = np.random.default_rng(100 + seed)
    net = AbstractRNN(3, 2, 2, T=4, activation="sigmoid", name=f"sig{seed}")
    w, h0 = net.random_weights(rng), net.initial_state(rng.normal(size=3))
    X = rng.normal(size=(N, 4, 2))
    kappa = net.reference_frames().derive(hidden=sigmoid_to_tanh(3))
    cnet = net.coordinates(w, h0, kappa)
    Z = rng.normal(size=(N, 3)) * 3
    act_err = rel(cnet.activation(Z), get_activation("tanh")(Z))
    cnet.activation = get_activation("tanh")          # literally a tanh network now
    return max(act_err, rel(cnet.forward(X), net.forward(w, h0, X)))


def check(fast: bool = False) -> dict:
    seeds = range(1) if fast else range(3)
    N = 4 if fast else 8
    worst, ctrl_min = {}, np.inf
    for seed in seeds:
        for output in ("seq", "last"):
            d, ctrl = _seed(seed, output, N)
            for k, v in d.items():
                key = f"{k} ({output})"
                worst[key] = max(worst.get(key, 0.0), v)
            ctrl_min = min(ctrl_min, ctrl)
        worst["sigmoid → tanh: conjugated activation is tanh, same outputs"] = max(
            worst.get("sigmoid → tanh: conjugated activation is tanh, same outputs", 0.0), _sigmoid_to_tanh(seed, N))
    disc = max(worst.values())
    return {
        "holds": bool(disc <= TOL),
        "discrepancy": disc,
        "negative_control": "the initial state not transformed (h‡_0 = h_0) computes the same function (must not)",
        "negative_discrepancy": float(ctrl_min),
        "negative_fails": bool(ctrl_min >= CONTROL_MIN),
        "details": {
            "network": f"H=3, d=2, c=2, T=4 tanh RNN, outputs 'seq' and 'last', N={N}, {len(seeds)} seeds",
            "discrepancy": "max|a − b| / max(1, max|b|)",
            "largest per comparison": "; ".join(f"{k} {v:.1e}" for k, v in worst.items()),
            "control (smallest over seeds)": float(ctrl_min),
        },
    }


if __name__ == "__main__":
    from geomkfac.prove import run_script

    raise SystemExit(run_script(__file__))
