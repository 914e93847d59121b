"""Abstract networks (paper §3, §4, Appendices D, F, G): one module per architecture.

* :mod:`geomkfac.networks.mlp` — the abstract MLP, its frame choices and coordinate networks.

Everything the MLP module exports is importable from here, as before the split.
"""

from geomkfac.networks.mlp import *  # noqa: F401,F403
from geomkfac.networks.mlp import __all__  # noqa: F401
