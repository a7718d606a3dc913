"""The HTTP server: Open Inference Protocol front ends over the registry."""

from .app import Server, serve
from .asgi import build_app

__all__ = ["Server", "build_app", "serve"]
