"""Train the digits autoencoder with K-FAC and SGD-momentum from the same initialization
and plot both loss curves on one figure.

    python examples/train_digits.py [--steps 300] [--seed 0] [--out digits-example]

A run that stops on a non-finite value (NaN/inf: a diverged run) is reported, not raised.

The same run from the command line::

    geomkfac train --arch 64-128-64-32-64-128-64 --act tanh --task autoencoder \\
        --optimizer kfac,sgd --lr kfac=1,sgd=0.02 --momentum sgd=0.9 --damping 0.1 \\
        --opt-arg kfac:kl_clip=0.01 --steps 300 --out digits-example
"""

from __future__ import annotations

import argparse
import os

from geomkfac.nn import MLP, get_loss
from geomkfac.nn.data import load_digits
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.plots import plot_loss_curves
from geomkfac.nn.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="digits-example")
    parser.add_argument("--seed", type=int, default=0, help="initialization and mini-batch order")
    args = parser.parse_args()
    main_with(args.steps, args.out, args.seed)


def main_with(steps: int, out: str, seed: int = 0) -> dict:
    """Train both optimizers; returns ``{name: TrainResult}``."""
    data = load_digits("autoencoder")          # 1797 images, 64 pixels in [0, 1]
    loss = get_loss("bernoulli")               # pixels as Bernoulli probabilities (logits out)
    init = MLP([64, 128, 64, 32, 64, 128, 64], "tanh", seed=seed)   # linear output layer

    runs, results = {}, {}
    # K-FAC: Tikhonov damping 0.1 and a KL (trust-region) clip of the step, lr 1
    for name, hyper in [("kfac", {"lr": 1.0, "damping": 0.1, "kl_clip": 0.01}),
                        ("sgd", {"lr": 0.02, "momentum": 0.9})]:
        model = init.copy()                    # same starting point for both
        optimizer = get_optimizer(name, model, loss, **hyper)
        result = train(model, optimizer, data, steps=steps, batch_size=256, seed=seed,
                       loss=loss, name=name,
                       metrics_path=os.path.join(out, f"metrics-{name}.csv"))
        runs[name], results[name] = result.history, result
        if result.ok:
            print(f"{name:5s} final training loss {result.final_loss:8.3f} "
                  f"after {result.steps} updates in {result.seconds:.1f} s")
        else:  # a diverged run: say what happened instead of a traceback
            print(f"{name:5s} stopped: {result.message}")

    png = plot_loss_curves(runs, os.path.join(out, "loss.png"),
                           title="digits autoencoder 64-128-64-32-64-128-64")
    print("plot:", png)
    return results


if __name__ == "__main__":
    main()
