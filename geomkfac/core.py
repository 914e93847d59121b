"""The geometry core in one import: fields, spaces, maps and metrics.

>>> import numpy as np
>>> from geomkfac.core import AffineSpace, Metric, Vector
>>> A = AffineSpace(2, "A")
>>> g = Metric(A.reference_frame, np.diag([1., 4.]))
>>> k = A.frame(np.diag([2., 2.]), [1., 1.], name="κ")
>>> g.matrix(k)
array([[0.25, 0.  ],
       [0.  , 1.  ]])
>>> u = Vector(A.reference_frame, [1., 1.])
>>> float(g(u, u)), float(u.coords(k) @ g.matrix(k) @ u.coords(k))
(5.0, 5.0)
"""

from geomkfac.fields import NUMERIC, SYMBOLIC, Field, field_of
from geomkfac.maps import AffineMap, AffineMaps, ComposedMap, Map, SmoothMap
from geomkfac.metrics import (
    AdditiveMetric,
    KroneckerMetric,
    Metric,
    Pullback,
    SecondMoment,
    additive_metric,
    expectation,
    natural_gradient,
    pullback,
    second_moment,
    tensor_product,
)
from geomkfac.spaces import (
    AffineSpace,
    Covector,
    DualSpace,
    Frame,
    FrameChange,
    Point,
    ProductSpace,
    Vector,
    VectorSpace,
    power_frame,
    product_frame,
    stack_homogeneous,
)

__all__ = [
    "NUMERIC", "SYMBOLIC", "Field", "field_of",
    "AffineSpace", "VectorSpace", "DualSpace", "ProductSpace", "Frame", "FrameChange",
    "Point", "Vector", "Covector", "product_frame", "power_frame", "stack_homogeneous",
    "Map", "AffineMap", "AffineMaps", "SmoothMap", "ComposedMap",
    "Metric", "Pullback", "AdditiveMetric", "KroneckerMetric", "SecondMoment", "pullback", "additive_metric",
    "tensor_product", "second_moment", "expectation", "natural_gradient",
]
