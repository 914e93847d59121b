"""The one exception hierarchy of geomkfac.

Every error geomkfac raises on purpose is a :class:`GeomKFACError`; each kind of
mistake has its own subclass, and every message says what was wrong and what to do.
Subclasses also derive from the closest built-in exception (``ValueError``,
``TypeError``, ...) so generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "GeomKFACError",
    "DimensionError",
    "SpaceMismatchError",
    "SingularFrameChangeError",
    "DegenerateMetricError",
    "NotSymmetricError",
    "NotPSDError",
    "FieldMismatchError",
    "ConfigurationError",
    "DataError",
    "NonFiniteError",
    "CheckpointError",
]


class GeomKFACError(Exception):
    """Base class of every error raised by geomkfac."""


class DimensionError(GeomKFACError, ValueError):
    """An array or coordinate tuple has the wrong shape for the space it belongs to."""


class SpaceMismatchError(GeomKFACError, TypeError):
    """Objects of different spaces were combined (e.g. a vector of A given to a metric on Z)."""


class SingularFrameChangeError(GeomKFACError, ValueError):
    """A change of frame ``y = B x + c`` was requested with a singular ``B``."""


class DegenerateMetricError(GeomKFACError, ValueError):
    """A degenerate (singular) metric was asked to invert, e.g. for a natural gradient."""


class NotSymmetricError(GeomKFACError, ValueError):
    """A matrix given to :class:`~geomkfac.metrics.Metric` is not symmetric."""


class NotPSDError(GeomKFACError, ValueError):
    """A matrix given to :class:`~geomkfac.metrics.Metric` is not positive semidefinite."""


class FieldMismatchError(GeomKFACError, TypeError):
    """Symbolic (sympy) and numeric (NumPy) objects were mixed where one field is required."""


class ConfigurationError(GeomKFACError, ValueError):
    """An unknown option or an invalid hyperparameter (activation, optimizer, loss, ...)."""


class DataError(GeomKFACError, ValueError):
    """Training data is missing, malformed, or does not match the architecture."""


class NonFiniteError(GeomKFACError, FloatingPointError):
    """NaN or inf appeared in a loss, gradient or curvature factor during training."""


class CheckpointError(GeomKFACError, OSError):
    """A checkpoint could not be written or read back."""
