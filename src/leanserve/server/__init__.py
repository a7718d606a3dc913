"""The HTTP server: Open Inference Protocol front ends over the registry."""

from .app import Server, serve
from .asgi import asgi_app, build_app

__all__ = ["Server", "asgi_app", "build_app", "serve"]
