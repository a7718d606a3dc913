"""The demo models' handler files, copied into each model's folder as ``handler.py`` by the build.

They are kept here so that they are linted, type-checked and tested with the package; the server
imports the copy in the repository (operator-trusted code), never these modules.
"""

from pathlib import Path

HANDLERS = Path(__file__).parent


def handler_source(model: str) -> Path:
    """The handler file the build copies into ``<repo>/<model>/handler.py``."""
    return HANDLERS / f"{model.replace('-', '_')}.py"


__all__ = ["handler_source"]
