"""The OpenAPI document of the protocol's routes, served at ``/v2/openapi.json``.

It follows KServe's description of the V2 REST protocol (``rest_predict_v2.yaml``: the same paths,
the same schema names), with what leanserve adds to it: Triton's statistics and repository
extensions, the ``timeout`` request parameter, and the errors each route answers. The fuzzing
test (tests/server/test_openapi.py) runs schemathesis against a live server from this document:
whatever it generates must get a documented answer, never a 5xx.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..protocol import DATATYPES

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _answer(description: str, schema: str | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


_ERROR = "inference_error_response"
_ERRORS = {
    "400": _answer("The request is malformed or does not match the model", _ERROR),
    "404": _answer("No such model or version", _ERROR),
    "408": _answer("The request arrived too slowly", _ERROR),
    "413": _answer("The request is over a limit (body, elements, BYTES element length)", _ERROR),
    "414": _answer("The URL is too long", _ERROR),
    "415": _answer("Unsupported content encoding", _ERROR),
    "431": _answer("The request headers are too large", _ERROR),
    "503": _answer("Not ready, or overloaded (with Retry-After)", _ERROR),
    "504": _answer("The request's deadline passed", _ERROR),
}
_MODEL = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_VERSION = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _model_routes(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    errors = {k: v for k, v in _ERRORS.items() if k in ("400", "404", "503")}
    return {
        prefix: {
            "get": {
                "summary": "Model metadata",
                "parameters": parameters,
                "responses": {"200": _answer("The model's metadata", "metadata_model_response"), **errors},
            }
        },
        f"{prefix}/ready": {
            "get": {
                "summary": "Model readiness",
                "parameters": parameters,
                "responses": {"200": _answer("Ready"), **errors},
            }
        },
        f"{prefix}/infer": {
            "post": {
                "summary": "Inference",
                "parameters": parameters,
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("inference_request")}}},
                "responses": {"200": _answer("The outputs", "inference_response"), **_ERRORS},
            }
        },
        f"{prefix}/config": {
            "get": {
                "summary": "Model configuration (Triton's model_configuration extension)",
                "parameters": parameters,
                "responses": {"200": _answer("Triton's model configuration", "object"), **errors},
            }
        },
        f"{prefix}/stats": {
            "get": {
                "summary": "Model statistics (Triton's statistics extension)",
                "parameters": parameters,
                "responses": {"200": _answer("Triton's model_stats", "object"), **errors},
            }
        },
    }


def _schemas() -> dict[str, Any]:
    parameters = {"type": "object", "additionalProperties": True}
    tensor_data = {"description": "Row-major values, flat or nested as the shape", "type": "array", "items": {}}
    shape = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    datatype = {"type": "string", "enum": list(DATATYPES)}
    # A tensor in a request and in a response: the same fields (the protocol's request input and response output).
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": shape,
            "datatype": datatype,
            "parameters": parameters,
            "data": _ref("tensor_data"),
        },
    }
    return {
        "object": {"type": "object", "additionalProperties": True},
        "parameters": parameters,
        "tensor_data": tensor_data,
        "inference_error_response": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "metadata_server_response": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "metadata_tensor": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array"}},
        },
        "metadata_model_response": {
            "type": "object",
            "required": ["name", "platform"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("metadata_tensor")},
                "outputs": {"type": "array", "items": _ref("metadata_tensor")},
                "parameters": parameters,
            },
        },
        "request_input": tensor,
        "request_output": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": parameters},
        },
        "inference_request": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "timeout": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "The request's deadline in microseconds (Triton's); 0 for none",
                        },
                        "binary_data_output": {"type": "boolean"},
                    },
                },
                "inputs": {"type": "array", "items": _ref("request_input")},
                "outputs": {"type": "array", "items": _ref("request_output")},
            },
        },
        "response_output": tensor,
        "inference_response": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": parameters,
                "outputs": {"type": "array", "items": _ref("response_output")},
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    """The protocol's routes as an OpenAPI 3.0 document."""
    health = {"200": _answer("Yes"), "503": _answer("No")}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"summary": "Server liveness", "responses": health}},
        "/v2/health/ready": {"get": {"summary": "Server readiness", "responses": health}},
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "responses": {"200": _answer("Name, version, extensions", "metadata_server_response")},
            }
        },
        "/v2/repository/index": {
            "get": {
                "summary": "Every model version with its state and reason",
                "responses": {"200": {"description": "The index", "content": {_JSON: {"schema": {"type": "array"}}}}},
            },
            "post": {
                "summary": "Every model version with its state and reason (Triton's repository extension)",
                "requestBody": {
                    "required": False,
                    "content": {_JSON: {"schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}},
                },
                "responses": {
                    "200": {"description": "The index", "content": {_JSON: {"schema": {"type": "array"}}}},
                    "400": _answer("Malformed request", _ERROR),
                },
            },
        },
    }
    paths.update(_model_routes("/v2/models/{model_name}", [_MODEL]))
    paths.update(_model_routes("/v2/models/{model_name}/versions/{model_version}", [_MODEL, _VERSION]))
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "leanserve: Open Inference Protocol (KServe V2) REST",
            "version": __version__,
            "description": "KServe's V2 REST protocol as leanserve serves it; see the README's Protocol section.",
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }


__all__ = ["openapi_document"]
