"""The NumPy training backend: MLPs and layer stacks (dense, convolutional, pooling,
recurrent: :mod:`geomkfac.nn.layers`), losses, curvature (K-FAC factors, GGN, empirical
Fisher), optimizers and the training loop.

Arrays are batch-major (``X`` is ``(N, d_in)``), float64 or float32 (the model's dtype), and
the parameter vector is θ = ``[vec(W̄_1); …; vec(W̄_L)]`` with column-stacking ``vec`` and
``W̄ = [W b]`` (paper-notes §1).

>>> import numpy as np
>>> from geomkfac.nn import MLP, loss_and_grad
>>> net = MLP([4, 3, 2], "tanh", seed=0)
>>> X = np.random.default_rng(0).standard_normal((8, 4))
>>> value, grad = loss_and_grad(net, X, np.array([0, 1] * 4), "softmax_ce")
>>> grad.shape == (net.num_params,)
True
"""

from geomkfac.nn.activations import ConjugatedActivation, get_activation
from geomkfac.nn.curvature import (
    empirical_fisher,
    ggn,
    jacobian,
    kfac_factors,
    kfac_factors_from_cache,
    kfac_matrix,
    kfac_solve,
    layer_grads,
    loss_and_grad,
    per_example_grads,
)
from geomkfac.nn.losses import get_loss
from geomkfac.nn.model import MLP, Dense
from geomkfac.reparam import reparameterize
from geomkfac.nn.layers import (
    RNN,
    AvgPool2d,
    Conv2d,
    Flatten,
    LastStep,
    MaxPool2d,
    Sequential,
)
from geomkfac.nn.curvature import KroneckerBlock
from geomkfac.nn.bridge import to_coordinate_mlp, to_mlp
from geomkfac.nn.optim import get_optimizer
from geomkfac.nn.data import load_digits, train_test_split

__all__ = [
    "MLP",
    "Dense",
    "Conv2d",
    "AvgPool2d",
    "MaxPool2d",
    "Flatten",
    "LastStep",
    "RNN",
    "Sequential",
    "KroneckerBlock",
    "ConjugatedActivation",
    "get_activation",
    "get_loss",
    "loss_and_grad",
    "layer_grads",
    "kfac_factors",
    "kfac_factors_from_cache",
    "kfac_matrix",
    "kfac_solve",
    "ggn",
    "empirical_fisher",
    "per_example_grads",
    "jacobian",
    "reparameterize",
    "to_mlp",
    "to_coordinate_mlp",
    "get_optimizer",
    "load_digits",
    "train_test_split",
]
