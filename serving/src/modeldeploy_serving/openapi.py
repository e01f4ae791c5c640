"""OpenAPI description of the inference routes, which the hot path serves without FastAPI.

InferenceApp (app.py) answers POST .../infer and ...:predict before FastAPI sees them, so FastAPI
would not list them. They are added here as documentation-only routes, with pydantic models of the
request bodies as the codecs accept them, so that /openapi.json describes the whole API (clients
generate from it; schemathesis fuzzes every route from it). The handlers are reachable only when
the FastAPI app is mounted without InferenceApp in front: they then say so (404).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel, Field

from modeldeploy_serving.errors import NotFoundError

Datatype = Literal["FP32", "FP64", "INT32", "INT64"]


class TensorParameters(BaseModel):
    binary_data_size: int | None = Field(
        default=None, ge=0, description="Bytes of this input in the binary part (binary extension)."
    )
    model_config = {"extra": "allow"}


class InputTensor(BaseModel):
    name: str = Field(
        description="`input` (any name) for an [N, F] tensor, or a feature name for [N] / [N, 1]."
    )
    datatype: Datatype
    shape: list[int] = Field(description="[N, F], or [N] / [N, 1] per feature.")
    data: list[Any] | None = Field(
        default=None, description="Numbers, flat row-major or nested; null (or NaN) means missing."
    )
    parameters: TensorParameters | None = None


class OutputParameters(BaseModel):
    binary_data: bool | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: OutputParameters | None = None


class InferParameters(BaseModel):
    binary_data_output: bool | None = None
    model_config = {"extra": "allow"}


class InferRequest(BaseModel):
    """Open Inference Protocol V2 request (JSON part)."""

    id: str | None = None
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: InferParameters | None = None


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


class PredictRequest(BaseModel):
    """KServe V1 request: rows as lists in feature order or objects keyed by feature name."""

    instances: list[list[float | None] | dict[str, float | None]] = Field(min_length=1)


class PredictResponse(BaseModel):
    predictions: list[Any]


class ErrorBody(BaseModel):
    error: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed or inconsistent input (named)."},
    404: {"model": ErrorBody, "description": "Unknown model or version."},
    408: {"model": ErrorBody, "description": "The body did not arrive in time."},
    413: {"model": ErrorBody, "description": "Body over max_body_bytes."},
    503: {
        "model": ErrorBody,
        "description": "Model not ready, or overloaded (then with Retry-After).",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
BINARY = (
    "Binary tensor extension: send Inference-Header-Content-Length with the JSON part's length and"
    " append the inputs' raw little-endian bytes (parameters.binary_data_size each)."
)


def _served_by_the_hot_path() -> Response:
    raise NotFoundError("inference routes are served by InferenceApp, not by this FastAPI app alone")


def describe_inference_routes(api: FastAPI) -> None:
    """Add the inference routes to the app's OpenAPI document (see the module doc)."""

    @api.post(
        "/v2/models/{name}/infer",
        response_model=InferResponse,
        responses=ERRORS,
        summary="V2 inference",
        description=BINARY,
        tags=["inference"],
    )
    async def v2_infer(name: str, request: InferRequest) -> Response:
        return _served_by_the_hot_path()

    @api.post(
        "/v2/models/{name}/versions/{version}/infer",
        response_model=InferResponse,
        responses=ERRORS,
        summary="V2 inference of a version",
        description=BINARY,
        tags=["inference"],
    )
    async def v2_infer_version(name: str, version: str, request: InferRequest) -> Response:
        return _served_by_the_hot_path()

    @api.post(
        "/v1/models/{name}:predict",
        response_model=PredictResponse,
        responses=ERRORS,
        summary="KServe V1 prediction",
        tags=["inference"],
    )
    async def v1_predict(name: str, request: PredictRequest) -> Response:
        return _served_by_the_hot_path()


def name_the_served_model(api: FastAPI, served: Callable[[], tuple[str, str] | None]) -> None:
    """/openapi.json names the model this server serves (path parameters `name` and `version` become
    one-value enums once it is loaded): generated clients and schemathesis then call real routes
    instead of spending every example on a 404."""
    base = api.openapi

    def openapi() -> dict[str, Any]:
        schema = base()
        model = served()
        if model is None:
            return schema
        schema = copy.deepcopy(schema)
        values = {"name": model[0], "version": model[1], "version_": model[1]}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter.get("name") in values:
                        parameter["schema"] = {"type": "string", "enum": [values[parameter["name"]]]}
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
