"""geomkfac: the differential geometry of natural gradient and K-FAC, executable.

The geometry core is importable from the top level, as in sympy or geomstats:

>>> import numpy as np
>>> from geomkfac import AffineSpace, AffineMap, Metric, Pullback
>>> A, Z = AffineSpace(2, "A"), AffineSpace(1, "Z")
>>> f = AffineMap(A.reference_frame, Z.reference_frame, [[1., 2.]])
>>> Pullback(Metric(Z.reference_frame, [[1.]]), f).matrix()
array([[1., 2.],
       [2., 4.]])
"""

from geomkfac.core import *  # noqa: F401,F403  (the geometry core: spaces, frames, maps, metrics)
from geomkfac.core import __all__ as _core_all
from geomkfac.errors import GeomKFACError
from geomkfac.data_frames import activation_moments, centering_changes, whitening_changes
from geomkfac.reparam import LayerChange, reparameterize

__version__ = "0.1.0"

__all__ = ["GeomKFACError", "__version__", "LayerChange", "reparameterize",
           "activation_moments", "centering_changes", "whitening_changes", *_core_all]
