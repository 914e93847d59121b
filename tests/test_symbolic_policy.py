"""The SYMBOLIC field's policy: zero tests (numeric prefilter, random exact evaluation or
proof, then simplification), floats kept as Floats unless asked, display-only simplification."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geomkfac.fields import (
    SYMBOLIC,
    float_policy,
    is_zero_as_rational_function,
    is_zero_by_random_evaluation,
    numerically_nonzero,
    simplify_for_display,
    zero_test,
)
from geomkfac.metrics import Metric
from geomkfac.spaces import AffineSpace, Point

x, y = sp.symbols("x y")
o = sp.Symbol("o", positive=True)


def test_prefilter_rejects_nonzero_and_keeps_zero():
    assert numerically_nonzero(x ** 2 - x)
    assert numerically_nonzero(sp.tanh(sp.Rational(1, 3)) - sp.Rational(1, 3))  # no symbols
    assert not numerically_nonzero((x + 1) ** 2 - x ** 2 - 2 * x - 1)
    assert not numerically_nonzero(sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1)


@pytest.mark.parametrize("decide", [is_zero_by_random_evaluation, is_zero_as_rational_function])
def test_rational_function_zero_tests(decide):
    t = sp.tanh(sp.Rational(5, 6))
    zero = 1 / (x + t) - (x - t) / (x ** 2 - t ** 2)
    assert decide(zero) is True
    assert decide(zero + sp.Rational(1, 10 ** 30)) is False  # negative control: a tiny constant
    assert decide(sp.exp(x) * y - y * sp.exp(x)) is True


@settings(max_examples=25)
@given(st.lists(st.integers(-5, 5), min_size=3, max_size=3), st.integers(1, 4))
def test_random_evaluation_agrees_with_cancel(coeffs, k):
    """On random rational functions the randomized decision equals cancel's."""
    a, b, c = coeffs
    f = (a * x ** 2 + b * x * y + c) / (x + y + k)
    g = sp.cancel(f * (x - k)) / (x - k)  # the same function, written differently
    assert is_zero_by_random_evaluation(f - g) is True
    h = f + (x - y) / (x + y + k + 1)
    assert is_zero_by_random_evaluation(f - h) is (sp.cancel(f - h) == 0)


def test_equal_decides_trig_identities_through_the_fallback():
    # random evaluation treats sin(x), cos(x) as independent, so the fallback decides
    assert SYMBOLIC.is_zero(sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1)
    assert not SYMBOLIC.is_zero(sp.sin(x) ** 2 - sp.cos(x) ** 2)
    with zero_test("proof"):
        assert SYMBOLIC.equal(sp.Matrix([1 / (o + 1)]), sp.Matrix([o / (o ** 2 + o)]))
        assert not SYMBOLIC.equal(sp.Matrix([1 / (o + 1)]), sp.Matrix([1 / o]))


def test_point_equality_in_symbolic_frames_two_routes():
    """A point moved into κ and back equals itself; a shifted one does not."""
    A = AffineSpace(2, "A")
    kappa = A.reference_frame.derive(sp.Matrix([[o, 1], [0, sp.tanh(o)]]), [1, o])
    p = Point(A.reference_frame, [sp.Rational(1, 3), 2])
    back = Point(kappa, p.coords(kappa))
    assert back.equals(p, A.reference_frame) and p.equals(back, kappa)
    assert not Point(kappa, p.coords(kappa) + sp.Matrix([0, sp.Rational(1, 10 ** 12)])).equals(p)


def test_floats_stay_floats_and_rationals_on_request():
    A = AffineSpace(1, "A")
    s = sp.Symbol("s", positive=True)
    ks = A.reference_frame.derive(sp.Matrix([[s]]))
    g = Metric(A.reference_frame, [[0.1]])
    assert g.matrix(ks)[0, 0] == sp.Float(0.1) / s ** 2
    with float_policy("rational"):
        g2 = Metric(A.reference_frame, [[0.1]])
        M = g2.matrix(A.reference_frame.derive(sp.Matrix([[s]])))
    assert M[0, 0] == sp.Rational(3602879701896397, 36028797018963968) / s ** 2
    # floats compare up to their precision: 0.1 * 3 and 0.3 are equal as Floats
    assert SYMBOLIC.equal(sp.Matrix([sp.Float(0.1) * 3 * s]), sp.Matrix([sp.Float(0.3) * s]))
    assert not SYMBOLIC.equal(sp.Matrix([sp.Float(0.1) * s]), sp.Matrix([sp.Float(0.1000001) * s]))


def test_simplify_for_display_by_kind():
    t = sp.Symbol("t")
    assert simplify_for_display((sp.sin(t) ** 2 + sp.cos(t) ** 2) ** 2) == 1
    assert simplify_for_display(1 / (1 / t + 1)) == t / (t + 1)
    e = sp.exp(t) / (sp.exp(t) + sp.exp(t) ** 2)
    assert simplify_for_display(e) == 1 / (sp.exp(t) + 1)
    M = sp.Matrix([[1 / (1 / t + 1), 2]])
    assert simplify_for_display(M) == sp.Matrix([[t / (t + 1), 2]])
    assert simplify_for_display(np.float64(1.5)) == 1.5
