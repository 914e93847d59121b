"""The paper's numbering of layers, for every architecture.

Weight layers (and their pre-activation spaces ``Z_i``, weight spaces ``W_i``) are numbered
``i = 1..L`` and activation spaces ``A_i`` are numbered ``i = 0..L`` (``A_0`` the input), as in
the paper.  A per-layer result returned as a Python sequence keeps Python's positions
(position ``i - 1`` holds layer ``i``) and also answers :meth:`PerLayer.layer` with the
paper's number, as :meth:`geomkfac.metrics.AdditiveMetric.block` does for metrics.

Examples
--------
>>> Ws = LayerList(["W_1", "W_2"])
>>> Ws.layer(1), Ws[0]
('W_1', 'W_1')
>>> Ws.layer(0)
Traceback (most recent call last):
...
geomkfac.errors.ConfigurationError: layers are numbered 1..2, got 0
"""

from __future__ import annotations

import numpy as np

from geomkfac.errors import ConfigurationError

__all__ = ["check_layer", "PerLayer", "LayerList", "LayerTuple"]


def check_layer(i, L: int, what: str = "layers") -> int:
    """``i`` as a Python ``int`` if it is a layer number ``1..L``; otherwise a
    :class:`~geomkfac.errors.ConfigurationError` that says the valid numbers.

    >>> check_layer(2, 3)
    2
    >>> check_layer(3, 2, "an RNN's layers (1: recurrent, 2: readout)")
    Traceback (most recent call last):
    ...
    geomkfac.errors.ConfigurationError: an RNN's layers (1: recurrent, 2: readout) are numbered 1..2, got 3
    """
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 1 <= i <= L:
        raise ConfigurationError(f"{what} are numbered 1..{L}, got {i!r}")
    return int(i)


class PerLayer:
    """Mixin of :class:`LayerList` and :class:`LayerTuple`: :meth:`layer` reads by the
    paper's number."""

    __slots__ = ()

    def layer(self, i: int):
        """The entry of layer ``i`` (``i = 1..L``, the paper's numbering): ``self[i - 1]``."""
        return self[check_layer(i, len(self)) - 1]


class LayerList(PerLayer, list):
    """A list of per-layer results: position ``i - 1`` holds layer ``i``; ``.layer(i)`` reads
    layer ``i`` (1-based)."""

    __slots__ = ()


class LayerTuple(PerLayer, tuple):
    """A tuple of per-layer results: position ``i - 1`` holds layer ``i``; ``.layer(i)`` reads
    layer ``i`` (1-based).

    >>> LayerTuple((3, 1)).layer(2), LayerTuple((3, 1)) == (3, 1)
    (1, True)
    """

    __slots__ = ()
