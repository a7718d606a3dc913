"""The package's public surface: a sorted __all__ whose names all exist."""

import leanserve.experiments as experiments


def test_all_is_sorted_and_importable() -> None:
    assert experiments.__all__ == sorted(experiments.__all__)
    for name in experiments.__all__:
        assert hasattr(experiments, name), name
