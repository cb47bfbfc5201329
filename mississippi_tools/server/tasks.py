"""The task endpoints: ``POST /v1/ocr``, ``/v1/chart``, ``/v1/table``, ``/v1/extract``, ``/v1/ask``.

Each takes either a JSON body, with the image as base64, a ``data:`` URI or (when the server allows
URLs) an http(s) URL, or a ``multipart/form-data`` upload with the image in the ``image`` file
field and the other fields as form fields (``schema`` and ``history`` as JSON text). Each answers
with the task's typed result (``OCRResult``, ``ChartData``, ``TableData``, ``ExtractResponse``,
``Answer``), described in the OpenAPI document at ``/openapi.json``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import UploadFile

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.images import LoadedImage
from mississippi_tools.server.auth import require_api_key, require_vlm, service_state
from mississippi_tools.server.errors import ERROR_RESPONSES
from mississippi_tools.server.inputs import (
    ImageSource,
    Upload,
    load_request_image,
    load_request_images,
)
from mississippi_tools.server.state import ServiceState, run_cancellable
from mississippi_tools.tasks.ask import Answer
from mississippi_tools.tasks.chart import ChartData
from mississippi_tools.tasks.ocr import OCRFormat, OCRResult
from mississippi_tools.tasks.results import ResultMetadata
from mississippi_tools.tasks.table import TableData
from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "REQUEST_MODELS",
    "AskRequest",
    "ChartRequest",
    "ExtractRequest",
    "ExtractResponse",
    "OCRRequest",
    "TableRequest",
    "router",
]

M = TypeVar("M", bound=BaseModel)

_IMAGE_DOC = (
    "The image: base64 data, a data: URI, or an http(s) URL when the server allows URLs. With "
    "multipart/form-data, upload it as the `image` file instead."
)


class TaskRequest(BaseModel):
    """Fields every task takes."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)

    image: str | None = Field(default=None, description=_IMAGE_DOC)
    page: int | None = Field(default=None, ge=1)
    """Page of a PDF or multi-page TIFF (1-based); required when it has several."""
    max_tiles: int | None = Field(default=None, ge=1, le=40)
    """Most 448-px tiles (the model's default is 6); more tiles read smaller print, slower."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Most tokens to generate (default: 1024, 512 for questions)."""


class OCRRequest(TaskRequest):
    """Read the text of an image."""

    format: OCRFormat = "text"
    """``text``, ``markdown`` (headings, lists, tables) or ``lines``."""
    confidence: bool = False
    """Add a per-line confidence from the model's token probabilities."""


class ChartRequest(TaskRequest):
    """Read a chart: title, type, axes and data points."""


class TableRequest(TaskRequest):
    """Read a table: columns and rows."""


class ExtractRequest(TaskRequest):
    """Extract JSON valid under a schema."""

    schema_: dict[str, Any] = Field(alias="schema")
    """A JSON Schema, or a template like ``{"name": "", "total": 0}`` (types from the values)."""
    instructions: str | None = None
    """Extra guidance for the model."""
    confidence: bool = False
    """Add per-field confidences (keyed by JSON pointer)."""
    max_retries: int = Field(default=2, ge=0, le=5)
    """Retries with the validation error, for engines without grammars."""


class AskRequest(TaskRequest):
    """Ask a question about one image, several, or none."""

    question: str = Field(min_length=1)
    """The question."""
    images: list[str] | None = None
    """Several images (instead of ``image``), in the same forms."""
    history: list[tuple[str, str]] = Field(default_factory=list)
    """Earlier ``[question, answer]`` turns."""

    @model_validator(mode="after")
    def _one_way_of_giving_images(self) -> AskRequest:
        if self.image is not None and self.images:
            raise ValueError("give either image or images, not both")
        return self


class ExtractResponse(BaseModel):
    """Data extracted from an image, valid under the requested schema."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    data: Any
    """The value, valid under the schema."""
    raw_text: str
    """The model's answer the data was parsed from."""
    confidence: dict[str, float] | None = None
    """When requested: the model's probability for each leaf value, keyed by JSON pointer."""
    errors: list[str] = Field(default_factory=list)
    """Why earlier attempts failed (empty when the first one succeeded)."""
    meta: ResultMetadata
    """How the result was produced."""


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    OCRRequest,
    ChartRequest,
    TableRequest,
    ExtractRequest,
    AskRequest,
)
"""Request bodies documented in the OpenAPI components."""

_JSON_FORM_FIELDS = frozenset({"schema", "history"})
_IMAGE_FIELDS = frozenset({"image", "images"})


# -- request parsing ---------------------------------------------------------------------------


async def parse_task_body(
    request: Request, model: type[M], state: ServiceState
) -> tuple[M, list[ImageSource]]:
    """The validated body and its image sources, from JSON or multipart/form-data.

    Raises:
        RequestValidationError: Not JSON, or fields that do not match ``model`` (422).
        InvalidInputError: Another content type, a form field that is not valid JSON text.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        data, sources = await _read_form(request, state)
        body = model.model_validate(data)
        return body, sources
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidInputError(
            f"unsupported content type {content_type!r}; send application/json or "
            "multipart/form-data"
        )
    raw = await request.body()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError as e:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"not valid JSON: {e}"}]
        ) from None
    body = model.model_validate(payload)
    text_sources: list[ImageSource] = []
    image = getattr(body, "image", None)
    if image is not None:
        text_sources.append(image)
    text_sources.extend(getattr(body, "images", None) or [])
    return body, text_sources


async def _read_form(
    request: Request, state: ServiceState
) -> tuple[dict[str, Any], list[ImageSource]]:
    limit = state.settings.max_images_per_request
    form = await request.form(max_files=limit, max_fields=64)
    data: dict[str, Any] = {}
    sources: list[ImageSource] = []
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key not in _IMAGE_FIELDS:
                    raise InvalidInputError(
                        f"unexpected file field {key!r}; upload images as 'image'"
                    )
                sources.append(Upload(await value.read(), value.filename))
            elif key in _IMAGE_FIELDS:
                sources.append(value)
            elif key in _JSON_FORM_FIELDS:
                try:
                    data[key] = json.loads(value)
                except ValueError as e:
                    raise InvalidInputError(f"form field {key!r} must be JSON text: {e}") from None
            else:
                data[key] = value
    finally:
        await form.close()
    return data, sources


async def _one_image(
    sources: list[ImageSource], state: ServiceState, page: int | None
) -> LoadedImage:
    if not sources:
        raise InvalidInputError(
            "no image: send 'image' (base64 or a data: URI) in JSON, or upload it as the "
            "'image' file with multipart/form-data"
        )
    if len(sources) > 1:
        raise InvalidInputError(f"this task reads one image; got {len(sources)}")
    return await load_request_image(sources[0], state, page=page)


def _generation_kwargs(body: TaskRequest, state: ServiceState) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_tiles": body.max_tiles, "timeout": state.request_timeout}
    if body.max_new_tokens is not None:
        kwargs["max_new_tokens"] = body.max_new_tokens
    return kwargs


def _result(result: BaseModel) -> JSONResponse:
    return JSONResponse(result.model_dump(mode="json"))


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody: the JSON model, or the same fields as a multipart upload."""
    schema = model.model_json_schema(by_alias=True)
    properties: dict[str, Any] = {}
    for key, prop in schema.get("properties", {}).items():
        if key == "images":
            continue
        if key == "image":
            properties["image"] = {
                "type": "string",
                "format": "binary",
                "description": "The image file (repeat the field for several images with ask)",
            }
        elif key in _JSON_FORM_FIELDS:
            properties[key] = {
                "type": "string",
                "description": f"{prop.get('description', '')} As JSON text.".strip(),
            }
        else:
            properties[key] = prop
    required = [*schema.get("required", [])]
    if model is not AskRequest:
        required.append("image")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": required}
                },
            },
        }
    }


# -- routes --------------------------------------------------------------------------------

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["Tasks"])

VLM = Annotated[MississippiVLM, Depends(require_vlm)]


@router.post(
    "/v1/ocr",
    response_model=OCRResult,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(OCRRequest),
    summary="Read the text of an image",
)
async def ocr(request: Request, vlm: VLM) -> Response:
    """Read the text of an image (the model's OCR mode); ``format`` text, markdown or lines."""
    state = service_state(request)
    body, sources = await parse_task_body(request, OCRRequest, state)
    image = await _one_image(sources, state, body.page)
    result = await run_cancellable(
        request,
        vlm.aocr(
            image, format=body.format, confidence=body.confidence, **_generation_kwargs(body, state)
        ),
    )
    return _result(result)


@router.post(
    "/v1/chart",
    response_model=ChartData,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(ChartRequest),
    summary="Read a chart",
)
async def chart(request: Request, vlm: VLM) -> Response:
    """Read a chart: title, type, axes with units, and series of data points."""
    state = service_state(request)
    body, sources = await parse_task_body(request, ChartRequest, state)
    image = await _one_image(sources, state, body.page)
    result = await run_cancellable(
        request, vlm.aread_chart(image, **_generation_kwargs(body, state))
    )
    return _result(result)


@router.post(
    "/v1/table",
    response_model=TableData,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(TableRequest),
    summary="Read a table",
)
async def table(request: Request, vlm: VLM) -> Response:
    """Read a table: columns and rows."""
    state = service_state(request)
    body, sources = await parse_task_body(request, TableRequest, state)
    image = await _one_image(sources, state, body.page)
    result = await run_cancellable(
        request, vlm.aread_table(image, **_generation_kwargs(body, state))
    )
    return _result(result)


@router.post(
    "/v1/extract",
    response_model=ExtractResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(ExtractRequest),
    summary="Extract JSON valid under a schema",
)
async def extract(request: Request, vlm: VLM) -> Response:
    """Extract JSON valid under a JSON Schema or a template (422 with the raw text if none)."""
    state = service_state(request)
    body, sources = await parse_task_body(request, ExtractRequest, state)
    image = await _one_image(sources, state, body.page)
    result = await run_cancellable(
        request,
        vlm.aextract_result(
            image,
            body.schema_,
            instructions=body.instructions,
            confidence=body.confidence,
            max_retries=body.max_retries,
            **_generation_kwargs(body, state),
        ),
    )
    payload = result.model_dump(mode="json")
    response = ExtractResponse(
        data=payload["data"],
        raw_text=result.raw_text,
        confidence=result.confidence,
        errors=result.errors,
        meta=result.meta,
    )
    return _result(response)


@router.post(
    "/v1/ask",
    response_model=Answer,
    responses=ERROR_RESPONSES,
    openapi_extra=_body_doc(AskRequest),
    summary="Ask a question about images",
)
async def ask(request: Request, vlm: VLM) -> Response:
    """Answer a question about one image, several (``images``), or none."""
    state = service_state(request)
    body, sources = await parse_task_body(request, AskRequest, state)
    images = await load_request_images(sources, state, page=body.page)
    target: LoadedImage | list[LoadedImage] | None
    target = None if not images else images[0] if len(images) == 1 else images
    result = await run_cancellable(
        request,
        vlm.aask(target, body.question, history=body.history, **_generation_kwargs(body, state)),
    )
    return _result(result)
