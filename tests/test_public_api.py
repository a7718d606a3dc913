"""The public surface: a sorted __all__ whose names all exist; one name for each thing."""

import importlib
import types

import pytest

import leanserve


def test_all_is_sorted_and_importable() -> None:
    assert leanserve.__all__ == sorted(leanserve.__all__)
    for name in leanserve.__all__:
        assert hasattr(leanserve, name), name


def test_optimize_is_the_function_and_optimization_the_package() -> None:
    package = importlib.import_module("leanserve.optimization")
    assert isinstance(package, types.ModuleType)
    assert callable(leanserve.optimize) and leanserve.optimize is package.optimize
    assert leanserve.optimization is package  # the attribute and the import agree
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("leanserve.optimize")  # a name that means two things is not kept
