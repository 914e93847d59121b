"""The fast NumPy backend against the abstract geometric pipeline, in numbers.

For small networks and the three losses, print the largest entrywise difference between
what :mod:`geomkfac.nn` computes (backpropagation on arrays) and what the abstract
pipeline (:mod:`geomkfac.kfac` on the core's spaces, frames and metrics) computes:

* the K-FAC factors ``(A_i, G_i)`` (``fisher="exact"``) and the dense K-FAC matrix,
* the GGN / Fisher (expected pullback, Eqn. 3.2) and the empirical Fisher,
* the loss gradient (the covector ``dh``),
* the K-FAC factors in a randomly changed frame of the hidden layers, against
  ``kfac_factors`` on the reparameterized network (Appendix D).

All differences are float64 round-off (about 1e-16 to 1e-14).

Run:  python examples/crosscheck.py
"""

from __future__ import annotations

import numpy as np

from geomkfac.kfac import (
    empirical_fisher_metric,
    expected_pullback,
    kfac_metric,
    loss_differential,
    to_arrays,
)
from geomkfac.networks import AbstractMLP
from geomkfac.nn import MLP, empirical_fisher, ggn, kfac_factors, kfac_matrix, loss_and_grad
from geomkfac.nn import reparameterize as nn_reparameterize
from geomkfac.reparam import random_affine

#: nn loss → abstract output metric
PAIRS = {"softmax_ce": "categorical", "mse": "gaussian", "bernoulli": "bernoulli"}
NETS = [((3, 4, 2), "tanh"), ((2, 3, 3, 2), "sigmoid")]


def _targets(loss, N, C, rng):
    if loss == "softmax_ce":
        return rng.integers(0, C, size=N)
    if loss == "bernoulli":
        return rng.integers(0, 2, size=(N, C)).astype(float)
    return rng.standard_normal((N, C))


def discrepancies(sizes, act, loss, seed=0, N=16) -> dict:
    """Largest ``|nn − abstract|`` for each compared quantity (a dict of floats)."""
    rng = np.random.default_rng(seed)
    om = PAIRS[loss]
    model = MLP(sizes, act, seed=seed)
    model.set_Wbars([rng.standard_normal(l.Wbar.shape) / np.sqrt(l.in_dim + 1) for l in model.layers])
    L = len(sizes) - 1
    net = AbstractMLP(sizes, [act] * (L - 1) + ["identity"], name="cc")
    w = net.weights_from(model.get_Wbars())
    X = rng.standard_normal((N, sizes[0]))
    Y = _targets(loss, N, sizes[-1], rng)
    wf = net.reference_frames().weight_space_frame

    def diff(a, b):
        return float(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))))

    fac = kfac_factors(model, X, Y, loss, fisher="exact")
    g = kfac_metric(net, w, X, om)
    out = {
        "A, G": max(max(diff(A, Aa), diff(G, Ga)) for (A, G), (Aa, Ga) in zip(fac, to_arrays(g, net))),
        "K-FAC matrix": diff(kfac_matrix(fac), g.matrix(wf)),
        "GGN/Fisher": diff(ggn(model, X, Y, loss), expected_pullback(net, w, X, om).matrix(wf)),
        "emp. Fisher": diff(empirical_fisher(model, X, Y, loss),
                            empirical_fisher_metric(net, w, X, Y, om).matrix(wf)),
        "dh": diff(loss_and_grad(model, X, Y, loss)[1], loss_differential(net, w, X, Y, om).coords(wf)),
    }
    changes = {i: random_affine(sizes[i], rng) for i in range(1, L)}
    kappa = net.reference_frames().derive(changes)
    fac2 = kfac_factors(nn_reparameterize(model, changes), X, Y, loss, fisher="exact")
    in_kappa = to_arrays(g, net, frames=kappa)
    out["A‡, G‡ (κ)"] = max(max(diff(A, Ak), diff(G, Gk)) for (A, G), (Ak, Gk) in zip(fac2, in_kappa))
    out["control: A, G vs κ"] = max(max(diff(A, Ak), diff(G, Gk)) for (A, G), (Ak, Gk) in zip(fac, in_kappa))
    return out


def main() -> dict:
    """Print the table; return ``{(sizes, act, loss): discrepancies}``."""
    results = {}
    header = None
    for sizes, act in NETS:
        for loss in PAIRS:
            d = discrepancies(sizes, act, loss)
            if header is None:
                header = list(d)
                print(f"{'net':<22}{'loss':<12}" + "".join(f"{h:>20}" for h in header))
            label = "-".join(map(str, sizes)) + f" {act}"
            print(f"{label:<22}{loss:<12}" + "".join(f"{d[h]:>20.2e}" for h in header))
            results[(sizes, act, loss)] = d
    print("\nEvery column but the control is round-off; the control (the unchanged network's")
    print("factors against the changed frame's) is O(1): the frame change is not a no-op.")
    return results


if __name__ == "__main__":
    main()
