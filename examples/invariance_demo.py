"""One abstract MLP, two coordinate networks, one K-FAC trajectory (Theorem 2.1 / 3.2).

The same abstract network is read in the reference frames and in frames changed by a
random non-diagonal affine change on every hidden space (plus sigmoid → tanh on the
first layer).  Both coordinate networks compute the same function; K-FAC updates
computed in either frame are the same point of the weight space, step after step.
SGD, and K-FAC with Tikhonov damping, computed in the two frames drift apart.

Each K-FAC step is ``ω ← ω − ε g⁻¹ dh`` with ``ε = 0.2`` halved until the loss does not
increase (at most 30 times).  Undamped K-FAC needs this safeguard: at a random start a
saturated tanh unit makes a K-FAC factor nearly singular (with ``--seed 3`` the smallest
eigenvalue of layer 3's A factor is 5e-7), and a full step along that direction throws
the network into saturation, where the metric becomes exactly degenerate.  The rule
depends only on the loss, a function on the weight space, so it does not break the
invariance: both frames shorten the same steps.  A run that still fails (a degenerate
metric, a non-finite loss) is reported and stopped; the others go on.

Run: ``python examples/invariance_demo.py [--steps 20] [--seed 0]``
"""

from __future__ import annotations

import argparse

import numpy as np

from geomkfac.errors import GeomKFACError
from geomkfac.kfac import kfac_metric, loss_differential, loss_value, natural_gradient_update, sgd_update
from geomkfac.networks import AbstractMLP, random_affine, reparameterize, sigmoid_to_tanh
from geomkfac.reparam import LayerChange


def main(steps: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    net = AbstractMLP([3, 4, 4, 4], ["sigmoid", "tanh", "identity"], name="demo")
    x = rng.normal(size=(64, 3))
    y = np.sin(x @ rng.normal(size=(3, 4))) + 0.1 * rng.normal(size=(64, 4))
    w0 = net.random_weights(rng, scale=1.5)

    s2t = sigmoid_to_tanh(4)
    r1 = random_affine(4, rng)
    # sigmoid → tanh followed by a random affine change on A_1 / Z_1
    layer1 = LayerChange(Omega=r1.Omega @ s2t.Omega, gamma=r1.Omega @ s2t.gamma + r1.gamma, Phi=s2t.Phi)
    changes = {0: random_affine(3, rng).on_A_only(), 1: layer1, 2: random_affine(4, rng)}
    ref = net.reference_frames()
    kappa = ref.derive(changes)

    f_ref, f_kappa = net.coordinates(w0, ref), net.coordinates(w0, kappa)
    print("coordinate network in ι:", f_ref)
    print("coordinate network in κ:", f_kappa)
    same = reparameterize(f_ref, changes)
    print(
        "D.2 by the core's induced frames vs reparameterize on arrays: "
        f"{max(np.abs(a - b).max() for a, b in zip(same.Wbars, f_kappa.Wbars)):.2e}"
    )
    print(f"same function at start: {np.abs(net.forward(w0, x, kappa) - net.forward(w0, x)).max():.2e}\n")

    def loss(w) -> float:
        """The mean squared-error loss ½‖f − y‖² of the abstract network at ``w``."""
        return float(0.5 * np.mean(np.sum((net.forward(w, x) - y) ** 2, axis=1)))

    def step(kind, w, frames, lam=0.0):
        """One update in ``frames``; returns the new weights and the number of halvings."""
        dh = loss_differential(net, w, x, y, "gaussian", frames)
        if kind == "sgd":
            return sgd_update(w, dh, 0.05, frames.weight_space_frame), 0
        g = kfac_metric(net, w, x, "gaussian", frames)
        h, lr = loss(w), 0.2
        for halvings in range(31):
            new = natural_gradient_update(g, w, dh, lr, damping=lam, damping_frame=frames.weight_space_frame)
            h_new = loss(new)
            if np.isfinite(h_new) and h_new <= h:
                return new, halvings
            lr /= 2
        raise GeomKFACError(f"no step of length 0.2·2⁻ᵏ (k ≤ 30) decreases the loss {h:.6g}")

    names = {("kfac", 0.0): "K-FAC", ("kfac", 1e-2): "damped K-FAC", ("sgd", 0.0): "SGD"}
    out = {"kfac": np.nan, "kfac_damped": np.nan, "sgd": np.nan}
    keys = dict(zip(names, out))
    print(f"{'step':>4}  {'loss (K-FAC, ι)':>16}  {'K-FAC ι vs κ':>13}  {'damped λ=1e-2':>13}  {'SGD ι vs κ':>11}")
    state = {k: (w0, w0) for k in names}
    halved = {k: [0, 0] for k in names}
    stopped = {}
    for t in range(1, steps + 1):
        for run, (wa, wb) in state.items():
            if run in stopped:
                continue
            kind, lam = run
            try:
                (wa, ka), (wb, kb) = step(kind, wa, ref, lam), step(kind, wb, kappa, lam)
            except GeomKFACError as exc:  # a diverged run is reported, not a traceback
                stopped[run] = f"{names[run]} stopped at step {t}: {exc}"
                continue
            state[run] = (wa, wb)
            halved[run][0] += ka
            halved[run][1] += kb
            out[keys[run]] = float(np.abs(net.forward(wa, x) - net.forward(wb, x)).max())
        if t in (1, 2, 5) or t % 5 == 0:
            kfac = ("kfac", 0.0)
            lv = "stopped" if kfac in stopped else f"{loss_value(net, state[kfac][0], x, y, 'gaussian'):.6f}"
            cells = ["stopped" if r in stopped else f"{out[keys[r]]:.2e}" for r in names]
            print(f"{t:>4}  {lv:>16}  {cells[0]:>13}  {cells[1]:>13}  {cells[2]:>11}")
    for run in ("kfac", 0.0), ("kfac", 1e-2):
        if any(halved[run]):
            print(f"{names[run]}: the learning rate was halved {halved[run][0]} times in ι, "
                  f"{halved[run][1]} times in κ")
    for msg in stopped.values():
        print(msg)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    main(a.steps, a.seed)
