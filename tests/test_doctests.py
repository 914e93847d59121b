"""Every ``>>>`` example in geomkfac's docstrings runs as shown.

The modules are discovered, so a new module's examples are checked without editing this file.
"""

import doctest
import importlib
import pkgutil

import pytest

import geomkfac


def _modules():
    names = []
    for info in pkgutil.walk_packages(geomkfac.__path__, prefix="geomkfac."):
        module = importlib.import_module(info.name)
        finder = doctest.DocTestFinder()
        if any(t.examples for t in finder.find(module)):
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_the_core_modules_have_examples():
    for name in ("geomkfac.fields", "geomkfac.spaces", "geomkfac.maps", "geomkfac.metrics",
                 "geomkfac.kfac", "geomkfac.nn.optim.kronecker"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
