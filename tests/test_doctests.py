"""Run the ``>>>`` examples of the package's modules as tests.

Extend ``MODULES`` with further module names as they gain examples.
"""

import doctest
import importlib

import pytest

MODULES = [
    "geomkfac.fields",
    "geomkfac.spaces",
    "geomkfac.maps",
    "geomkfac.metrics",
    "geomkfac.core",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
