"""The HTTP server: Open Inference Protocol front ends over the registry."""

from .app import Server, serve
from .asgi import asgi_app, build_app
from .experiments import ExperimentOptions
from .observability import ObservabilityOptions

__all__ = ["ExperimentOptions", "ObservabilityOptions", "Server", "asgi_app", "build_app", "serve"]
