"""leanserve: optimize a model, serve it over the Open Inference Protocol, measure it.

Everything the command line does is a function here::

    import leanserve
    report = leanserve.check_repository(Path("models"))
    result = leanserve.optimize("model.onnx", data="eval.npz", labels="labels", budget="1%", repo="models")
    leanserve.serve(Path("models"), port=8000)
"""

__version__ = "0.1.0"

from .check import CheckReport, VersionCheck, check_repository
from .config import ModelConfig, load_model_config
from .errors import (
    ClientError,
    ConfigError,
    InferenceFailed,
    InvalidInput,
    LeanserveError,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    ServerError,
    UsageError,
)
from .optimization import OptimizeResult, optimize
from .protocol import InferInput, InferRequest, InferRequestedOutput, InferResult, Limits
from .registry import RegistryOptions
from .repository import scan_repository
from .server import ExperimentOptions, ObservabilityOptions, Server, asgi_app, serve
from .server.auth import Tokens

__all__ = [
    "CheckReport",
    "ClientError",
    "ConfigError",
    "ExperimentOptions",
    "InferInput",
    "InferRequest",
    "InferRequestedOutput",
    "InferResult",
    "InferenceFailed",
    "InvalidInput",
    "LeanserveError",
    "Limits",
    "ModelConfig",
    "ModelNotFound",
    "ModelNotReady",
    "ObservabilityOptions",
    "OptimizeResult",
    "PayloadTooLarge",
    "RegistryOptions",
    "Server",
    "ServerError",
    "Tokens",
    "UsageError",
    "VersionCheck",
    "__version__",
    "asgi_app",
    "check_repository",
    "load_model_config",
    "optimize",
    "scan_repository",
    "serve",
]
