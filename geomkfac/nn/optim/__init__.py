"""Optimizers of the NumPy backend: SGD, Adam, diagonal Fisher, exact natural gradient,
K-FAC and EKFAC, sharing one interface.

- ``Opt(model, loss, lr=..., **hyper)``; unknown or invalid hyperparameters raise
  :class:`~geomkfac.errors.ConfigurationError`;
- ``step(X, Y) -> StepInfo`` (loss before the step, gradient norm, ``extras``), updating the
  model in place; non-finite loss / gradient / curvature / update raises
  :class:`~geomkfac.errors.NonFiniteError` before anything is modified;
- ``loss(X, Y)``: the loss at the current weights, without side effects;
- ``exact=True`` (``kfac``, ``ngd``): the exact natural-gradient preset (exact Fisher, no
  damping, no averaging, every-step factors; a contradicting keyword is refused);
- ``state_dict()`` / ``load_state_dict(d)`` for bit-exact resumption.

>>> import numpy as np
>>> from geomkfac.nn import MLP
>>> net = MLP([4, 8, 3], "tanh", seed=0)
>>> opt = get_optimizer("kfac", net, "softmax_ce", lr=0.3, damping=1e-2)
>>> X = np.random.default_rng(0).standard_normal((16, 4)); Y = np.arange(16) % 3
>>> info = opt.step(X, Y)
>>> sorted(OPTIMIZERS)
['adam', 'diag_fisher', 'ekfac', 'kfac', 'ngd', 'sgd']
"""

from __future__ import annotations

from geomkfac.errors import ConfigurationError
from geomkfac.nn.optim.adam import Adam
from geomkfac.nn.optim.base import Optimizer, StepInfo
from geomkfac.nn.optim.diag_fisher import DiagFisher
from geomkfac.nn.optim.gvp import ggn_vector_product, ggn_vector_products
from geomkfac.nn.optim.kfac import EKFAC, KFAC
from geomkfac.nn.optim.ngd import NGD
from geomkfac.nn.optim.sgd import SGD

__all__ = [
    "Optimizer",
    "StepInfo",
    "SGD",
    "Adam",
    "DiagFisher",
    "NGD",
    "KFAC",
    "EKFAC",
    "OPTIMIZERS",
    "get_optimizer",
    "ggn_vector_product",
    "ggn_vector_products",
]

#: optimizer name -> class
OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "diag_fisher": DiagFisher,
    "ngd": NGD,
    "kfac": KFAC,
    "ekfac": EKFAC,
}


def get_optimizer(name, model, loss, **hyper) -> Optimizer:
    """Build the optimizer called ``name`` for ``model`` and ``loss``.

    ``hyper`` are the optimizer's hyperparameters, and ``exact=True`` its exact
    natural-gradient preset where it has one (:attr:`Optimizer.exact_preset`).

    Raises
    ------
    ConfigurationError
        For an unknown name (the message lists the known ones) or invalid hyperparameters.

    >>> from geomkfac.nn import MLP
    >>> get_optimizer("lbfgs", MLP([2, 1], "identity"), "mse")
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: unknown optimizer 'lbfgs'; choose one of: sgd, adam, diag_fisher, ngd, kfac, ekfac
    """
    if not isinstance(name, str) or name.strip().lower() not in OPTIMIZERS:
        raise ConfigurationError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[name.strip().lower()](model, loss, **hyper)
