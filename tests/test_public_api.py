"""The public surface: a sorted __all__ whose names all exist; `leanserve.optimize` is the function."""

import leanserve


def test_all_is_sorted_and_importable() -> None:
    assert leanserve.__all__ == sorted(leanserve.__all__)
    for name in leanserve.__all__:
        assert hasattr(leanserve, name), name


def test_optimize_is_callable_even_after_its_package_is_imported() -> None:
    import leanserve.optimize.api

    assert callable(leanserve.optimize)
