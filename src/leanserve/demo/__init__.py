"""The built-in demo repository: a digits CNN, MiniLM sentence embeddings and a shapes segmenter, built offline.

``build_demo_repository()`` trains and exports the models into ``<repo>/<model>/1/model.onnx``
with a ``model.toml`` and an evaluation set (``eval.npz``) beside each, ready for
``leanserve serve``. Importing this package is cheap; torch is imported only by a build.
"""

from .build import DigitExample, build_demo_repository, default_demo_dir, digits_example, digits_png
from .tokenizer import tokenize

__all__ = ["DigitExample", "build_demo_repository", "default_demo_dir", "digits_example", "digits_png", "tokenize"]
