"""Every error of the geometry core is raised, with a helpful message, on the input that triggers it."""

import numpy as np
import pytest
import sympy

from geomkfac.errors import (
    DegenerateMetricError,
    DimensionError,
    FieldMismatchError,
    GeomKFACError,
    NotPSDError,
    NotSymmetricError,
    SingularFrameChangeError,
    SpaceMismatchError,
)
from geomkfac.fields import NUMERIC
from geomkfac.maps import AffineMap, AffineMaps
from geomkfac.metrics import KroneckerMetric, Metric, SecondMoment, additive_metric, expectation
from geomkfac.spaces import AffineSpace, Covector, Point, Vector


@pytest.fixture
def AZ():
    return AffineSpace(2, "A"), AffineSpace(2, "Z")


def test_singular_change_of_frame(AZ):
    A, _ = AZ
    with pytest.raises(SingularFrameChangeError, match=r"singular \(rank 1 < 2.*invertible B"):
        A.reference_frame.derive([[1.0, 2.0], [2.0, 4.0]], [0.0, 0.0])


def test_mismatched_spaces(AZ):
    A, Z = AZ
    g = Metric(Z.reference_frame, np.eye(2))
    u = Vector(A.reference_frame, [1.0, 0.0])
    with pytest.raises(SpaceMismatchError, match="metric on Z cannot evaluate u, a vector of A"):
        g(u, u)
    with pytest.raises(SpaceMismatchError, match="cannot raise a covector of A"):
        g.sharp(Covector(A.reference_frame, [1.0, 0.0]))
    with pytest.raises(SpaceMismatchError, match="metrics on A and on Z"):
        expectation([Metric(A.reference_frame, np.eye(2)), g])
    with pytest.raises(SpaceMismatchError, match="product space"):
        additive_metric([g], product_space=A * Z)
    with pytest.raises(SpaceMismatchError):
        AffineMaps(A, Z).point(AffineMap(Z.reference_frame, A.reference_frame, np.eye(2)))


def test_wrong_dimensions(AZ):
    A, Z = AZ
    with pytest.raises(DimensionError, match=r"needs 2 coordinates in frame ι_A, got 3"):
        Vector(A.reference_frame, [1.0, 2.0, 3.0])
    with pytest.raises(DimensionError, match=r"needs a \(2, 2\) matrix, got \(3, 3\)"):
        Metric(A.reference_frame, np.eye(3))
    with pytest.raises(DimensionError, match=r"\(3, 3\) matrix"):
        SecondMoment(A.reference_frame, np.eye(2))
    with pytest.raises(DimensionError, match="nonnegative integer dimension"):
        AffineSpace(-1)


def test_degenerate_metric_asked_to_invert(AZ):
    A, Z = AZ
    g = Metric(A.reference_frame, [[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(DegenerateMetricError, match=r"degenerate \(rank 1 < 2, smallest eigenvalue 0.*damping"):
        g.sharp(Covector(A.reference_frame, [1.0, 1.0]))
    gs = Metric(A.reference_frame, sympy.Matrix([[1, 1], [1, 1]]))
    with pytest.raises(DegenerateMetricError, match="rank 1 < 2"):
        gs.sharp(Covector(A.reference_frame, [1, 1]))
    S = SecondMoment(A.reference_frame, np.diag([1.0, 1.0, 1.0]))
    K = KroneckerMetric(S, Metric(Z.reference_frame, [[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(DegenerateMetricError, match="the G factor"):
        K.sharp(Covector(K.frame, np.ones(6)))


def test_not_symmetric_and_not_psd(AZ):
    A, _ = AZ
    with pytest.raises(NotSymmetricError, match="must be symmetric"):
        Metric(A.reference_frame, [[1.0, 1.0], [0.0, 1.0]])
    with pytest.raises(NotSymmetricError):
        Metric(A.reference_frame, sympy.Matrix([[1, 2], [3, 1]]))
    with pytest.raises(NotPSDError, match=r"not positive semidefinite \(smallest eigenvalue -1"):
        Metric(A.reference_frame, [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(NotPSDError):
        Metric(A.reference_frame, sympy.Matrix([[1, 2], [2, 1]]))


def test_field_mismatch():
    with pytest.raises(FieldMismatchError, match="substitute values first"):
        NUMERIC.asarray(sympy.Matrix([[sympy.Symbol("s")]]))


def test_all_are_geomkfac_errors(AZ):
    A, _ = AZ
    with pytest.raises(GeomKFACError):
        Point(A.reference_frame, [1.0])
    with pytest.raises(ValueError):  # also a built-in exception for generic handlers
        A.reference_frame.derive(np.zeros((2, 2)))


def test_field_inversion_of_a_singular_matrix_is_a_geomkfac_error():
    import numpy as np

    from geomkfac.errors import GeomKFACError
    from geomkfac.fields import NUMERIC, SingularMatrixError

    with pytest.raises(SingularMatrixError) as info:
        NUMERIC.inv(np.zeros((2, 2)))
    assert isinstance(info.value, GeomKFACError)
    assert isinstance(info.value, np.linalg.LinAlgError)
    NUMERIC.inv(np.eye(2))  # control: an invertible matrix raises nothing
