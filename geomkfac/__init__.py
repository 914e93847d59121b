"""geomkfac: the differential geometry of natural gradient and K-FAC, executable."""

from geomkfac.errors import GeomKFACError

__version__ = "0.1.0"

__all__ = ["GeomKFACError", "__version__"]
