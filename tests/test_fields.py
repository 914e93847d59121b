"""Tests of geomkfac.fields: the operations that differ between NumPy and sympy."""

import numpy as np
import pytest
import sympy

from geomkfac.errors import DimensionError, FieldMismatchError, GeomKFACError
from geomkfac.fields import NUMERIC, SYMBOLIC, SingularMatrixError, field_of, float_policy, get_float_policy


def test_field_of_picks_symbolic_if_any_input_is_sympy():
    assert field_of(np.ones(2), 3.0) is NUMERIC
    assert field_of(np.ones(2), sympy.Rational(1, 2)) is SYMBOLIC
    assert field_of([1, sympy.Symbol("x")]) is SYMBOLIC
    assert field_of(np.array([1, sympy.Integer(2)], dtype=object)) is SYMBOLIC


def test_vec_is_column_stacking_in_both_fields():
    M = np.arange(6.0).reshape(2, 3)
    # column-stacking by hand: first column, then second, then third
    expected = np.array([M[0, 0], M[1, 0], M[0, 1], M[1, 1], M[0, 2], M[1, 2]])
    np.testing.assert_array_equal(NUMERIC.vec(M), expected)
    sym = SYMBOLIC.vec(sympy.Matrix(M.astype(int).tolist()))
    assert [int(e) for e in sym] == expected.astype(int).tolist()
    np.testing.assert_array_equal(NUMERIC.unvec(NUMERIC.vec(M), (2, 3)), M)
    assert SYMBOLIC.unvec(sym, (2, 3)) == sympy.Matrix(M.astype(int).tolist())


@pytest.mark.parametrize("field", [NUMERIC, SYMBOLIC])
def test_vec_identity_kron_order(field):
    """vec(G V A) = (Aᵀ ⊗ G) vec(V): the identity behind the K-FAC block A ⊗ G."""
    rng = np.random.default_rng(0)
    G, V, A = (rng.integers(-3, 4, size=s).astype(float) for s in [(2, 2), (2, 3), (3, 3)])
    G, V, A = (field.asmatrix(x) for x in (G, V, A))
    lhs = field.vec(field.matmul(field.matmul(G, V), A))
    rhs = field.matmul(field.kron(field.transpose(A), G), field.vec(V))
    assert field.equal(lhs, rhs)
    # negative control: the other Kronecker order is a different matrix here
    wrong = field.matmul(field.kron(G, field.transpose(A)), field.vec(V))
    assert not field.equal(lhs, wrong)


def test_inverse_and_solve_agree_between_fields():
    M = [[2, 1, 0], [1, 3, 1], [0, 1, 4]]
    Mi_sym = SYMBOLIC.inv(sympy.Matrix(M))
    assert sympy.Matrix(M) * Mi_sym == sympy.eye(3)
    # tolerance: 3x3 well-conditioned float inverse, error ~1e-15
    np.testing.assert_allclose(NUMERIC.inv(np.array(M, float)), np.array(Mi_sym, dtype=float), atol=1e-12)
    b = [1, 2, 3]
    x = SYMBOLIC.solve(sympy.Matrix(M), sympy.Matrix(b))
    assert sympy.Matrix(M) * x == sympy.Matrix(b)


@pytest.mark.parametrize("field", [NUMERIC, SYMBOLIC])
def test_singular_inverse_is_refused(field):
    with pytest.raises(SingularMatrixError):
        field.inv(field.asmatrix([[1, 2, 3], [2, 4, 6], [0, 0, 1]]))


def test_symbolic_singular_with_hidden_zero_pivot():
    x = sympy.Symbol("x")
    M = sympy.Matrix([[x + 1, (x + 1) ** 2 - x**2 - 2 * x], [1, 1]])  # second entry is 1 in disguise
    M2 = sympy.Matrix([[x, x], [(x**2 - 1) / (x - 1) - 1, x]])  # (x²−1)/(x−1)−1 = x: singular
    assert SYMBOLIC.is_nondegenerate(M)
    with pytest.raises(SingularMatrixError):
        SYMBOLIC.inv(M2)


def test_symbolic_equality_is_exact():
    t = sympy.Symbol("t")
    assert SYMBOLIC.is_zero(sympy.Matrix([sympy.sin(t) ** 2 + sympy.cos(t) ** 2 - 1]))
    assert not SYMBOLIC.is_zero(sympy.Matrix([sympy.Rational(1, 10**30)]))
    assert SYMBOLIC.equal(sympy.Matrix([(t**2 - 1) / (t - 1)]), sympy.Matrix([t + 1]))


def test_numeric_equality_has_stated_tolerance():
    a = np.array([1.0, 2.0])
    assert NUMERIC.equal(a, a + 1e-12)  # below rtol=atol=1e-9
    assert not NUMERIC.equal(a, a + 1e-6)  # far above it


def test_exact_conversion_of_floats():
    with float_policy("rational"):  # opt in: floats become the binary rationals they denote
        v = SYMBOLIC.asvector(np.array([0.5, 2.0, 0.1]))
    assert v[0] == sympy.Rational(1, 2) and v[1] == 2
    assert v[2] == sympy.Rational(3602879701896397, 36028797018963968)
    assert float(v[2]) == 0.1  # exact binary value of 0.1


def test_floats_stay_floats_by_default():
    v = SYMBOLIC.asvector(np.array([0.5, 2.0, 0.1]))
    assert isinstance(v[0], sympy.Float) and isinstance(v[2], sympy.Float) and v[1] == 2 and v[1].is_Integer
    assert get_float_policy() == "float"
    with pytest.raises(GeomKFACError):
        float_policy("decimal")


def test_psd_tests():
    assert SYMBOLIC.is_psd(sympy.Matrix([[2, 1], [1, 2]])) is True
    assert SYMBOLIC.is_psd(sympy.Matrix([[1, 1], [1, 1]])) is True  # singular PSD
    assert SYMBOLIC.is_psd(sympy.Matrix([[1, 2], [2, 1]])) is False  # eigenvalues 3, -1
    a = sympy.Symbol("a", real=True)
    assert SYMBOLIC.is_psd(sympy.Matrix([[a, 0], [0, 1]])) is None  # undecidable
    assert NUMERIC.is_psd(np.array([[1.0, 1.0], [1.0, 1.0]]))
    assert not NUMERIC.is_psd(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_rank_min_eig_block_diag_kron_agree():
    M = [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert NUMERIC.rank(np.array(M, float)) == SYMBOLIC.rank(sympy.Matrix(M)) == 2
    assert abs(NUMERIC.min_eig(np.array(M, float))) < 1e-12  # eigvalsh rounding
    assert abs(SYMBOLIC.min_eig(sympy.Matrix(M))) < 1e-12
    Bn = NUMERIC.block_diag([np.eye(1), 2 * np.eye(2)])
    Bs = SYMBOLIC.block_diag([sympy.eye(1), 2 * sympy.eye(2)])
    np.testing.assert_array_equal(Bn, np.array(Bs, dtype=float))
    K = NUMERIC.kron(np.array([[1.0, 2.0]]), np.eye(2))
    np.testing.assert_array_equal(K, np.array(SYMBOLIC.kron(sympy.Matrix([[1, 2]]), sympy.eye(2)), dtype=float))


def test_conversion_errors():
    with pytest.raises(DimensionError):
        NUMERIC.asmatrix(np.ones(3))
    with pytest.raises(DimensionError):
        NUMERIC.asvector(np.ones(3), dim=2)
    with pytest.raises(FieldMismatchError, match="free symbols"):
        NUMERIC.asarray(sympy.Matrix([sympy.Symbol("q")]))
