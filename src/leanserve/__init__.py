"""leanserve: optimize a model, serve it over the Open Inference Protocol, measure it."""

__version__ = "0.1.0"
