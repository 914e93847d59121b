"""Layers of the NumPy backend and the :class:`Sequential` container (see
:mod:`geomkfac.nn.layers.base` for the layer protocol).

>>> import numpy as np
>>> from geomkfac.nn.layers import RNN, Dense, Sequential
>>> rng = np.random.default_rng(0)
>>> net = Sequential([RNN(0.5 * rng.standard_normal((3, 5)), np.zeros(3)),
...                   Dense(rng.standard_normal((2, 3)), np.zeros(2))])
>>> f, cache = net.forward_cache(rng.standard_normal((4, 6, 2)))
>>> f.shape, cache.T, net.sequence_output
((4, 6, 2), [6, 6], True)
"""

from geomkfac.nn.layers.base import Layer, ParamLayer
from geomkfac.nn.layers.conv import Conv2d
from geomkfac.nn.layers.dense import Dense
from geomkfac.nn.layers.flatten import Flatten, LastStep
from geomkfac.nn.layers.pool import AvgPool2d, MaxPool2d
from geomkfac.nn.layers.recurrent import RNN
from geomkfac.nn.layers.sequential import Sequential, SequentialCache

__all__ = ["Layer", "ParamLayer", "Dense", "Conv2d", "AvgPool2d", "MaxPool2d", "Flatten",
           "LastStep", "RNN", "Sequential", "SequentialCache"]
