"""Abstract networks (paper §3, §4, Appendices D, F, G): one module per architecture.

* :mod:`geomkfac.networks.mlp` — the abstract MLP, its frame choices and coordinate networks.
* :mod:`geomkfac.networks.conv` — the abstract convolutional network (Appendix F): patch maps
  with the padding point, weights shared over locations, frames, coordinate networks;
  :mod:`geomkfac.networks.conv_kfac` — its K-FAC metric through the abstract pipeline.
* :mod:`geomkfac.networks.rnn` — the abstract recurrent network (Appendix G.1), its frames shared
  across time and its coordinate networks; :mod:`geomkfac.networks.rnn_kfac` — its K-FAC metric
  (Def. G.2) through the abstract pipeline.  Import them from those modules.

Everything the MLP module exports is importable from here, as before the split.
"""

from geomkfac.networks.mlp import *  # noqa: F401,F403
from geomkfac.networks.mlp import __all__  # noqa: F401
