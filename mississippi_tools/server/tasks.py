"""The task routes, generated from the task catalogue: ``POST /v1/<task>`` for every task.

``/v1/ocr``, ``/v1/read_chart``, ``/v1/read_table``, ``/v1/extract``, ``/v1/ask`` (and any task the
served model adds, such as ``/v1/to_html``). Each takes either a JSON body, with the image as
base64, a ``data:`` URI or (when the server allows URLs) an http(s) URL, or a
``multipart/form-data`` upload with the image in the ``image`` file field and the other fields as
form fields (objects such as ``json_schema`` and ``history`` as JSON text). The body's fields are
the task's own arguments (the catalogue's names and descriptions, shared with every surface) plus
``page`` or ``pages``, ``max_tiles``, ``options`` and ``max_new_tokens``.

Each answers with the task's typed result; with ``pages`` (a selection of a document's pages), with
``{"pages": [{"page": ..., "result": ..., "error": ...}, ...]}``, one entry per page in order,
except for tasks that read the selected pages together (``/v1/extract_document``): one result.
``region`` zooms into part of the image first. ``"stream": true`` (one image or page) answers
with server-sent events instead: the text as the model writes it, then the same result
(:mod:`~mississippi_tools.server.task_stream`). The former routes ``/v1/chart`` and
``/v1/table`` stay as deprecated aliases. Tasks the served model cannot do are not routed;
``GET /v1/tasks`` lists those that are, with their arguments as JSON Schema.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo
from starlette.datastructures import UploadFile

from mississippi_tools.batch import NamedSource, PageOutcome
from mississippi_tools.errors import InvalidInputError
from mississippi_tools.images import LoadedImage
from mississippi_tools.server.auth import require_api_key, require_vlm, service_state
from mississippi_tools.server.errors import ERROR_RESPONSES
from mississippi_tools.server.inputs import (
    ImageSource,
    Upload,
    load_request_images,
    request_bytes,
)
from mississippi_tools.server.state import ServiceState, run_cancellable
from mississippi_tools.server.task_stream import stream_task
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "TaskRequest",
    "build_router",
    "catalogue_entry",
    "job_arguments",
    "parse_task_body",
    "request_model",
]

_IMAGE_DOC = (
    "The image: base64 data, a data: URI, or an http(s) URL when the server allows URLs. With "
    "multipart/form-data, upload it as the `image` file instead."
)


class TaskRequest(BaseModel):
    """Fields every task route takes besides the task's own arguments."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, populate_by_name=True)

    image: str | None = Field(default=None, description=_IMAGE_DOC)
    page: int | None = Field(default=None, ge=1)
    """Page of a PDF or multi-page TIFF (1-based); one result."""
    pages: int | str | list[int] | None = None
    """Pages of a PDF or multi-page TIFF (``"1-3,5"``, ``[2, 4]``); one entry per page."""
    max_tiles: int | None = Field(default=None, ge=1)
    """H2OVL models: most 448-px tiles (the model's default is 6); more read smaller print."""
    options: dict[str, Any] | None = None
    """Model options (``GET /v1/models`` lists the served model's)."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Most tokens to generate (default: the task's)."""
    region: list[float] | str | None = None
    """Zoom into part of the image first: ``[x0, y0, x1, y1]`` (or ``"x0,y0,x1,y1"``) in pixels,
    or as fractions of the width and height (all four between 0 and 1)."""
    stream: bool = False
    """Answer with server-sent events: the text as the model writes it, then the result (one
    image or page; see :mod:`mississippi_tools.server.task_stream`)."""

    @model_validator(mode="after")
    def _one_way_of_choosing_pages(self) -> TaskRequest:
        if self.page is not None and self.pages is not None:
            raise ValueError("give either page (one result) or pages (one entry per page)")
        return self


class _ManyImages(TaskRequest):
    images: list[str] | None = None
    """Several images (instead of ``image``), in the same forms."""

    @model_validator(mode="after")
    def _one_way_of_giving_images(self) -> _ManyImages:
        if self.image is not None and self.images:
            raise ValueError("give either image or images, not both")
        return self


class PageError(BaseModel):
    """Why one page failed."""

    code: str
    message: str


#: Former names of task arguments on this surface, still accepted for one release.
_FORMER_NAMES = {"json_schema": "schema"}


def request_model(spec: TaskSpec[Any, Any]) -> type[TaskRequest]:
    """The body of ``POST /v1/<task>``: the common fields and the task's own arguments."""
    base: type[TaskRequest] = _ManyImages if spec.images == "many" else TaskRequest
    fields: dict[str, Any] = {}
    for name, info in spec.arguments.model_fields.items():
        if name in _FORMER_NAMES:
            former = AliasChoices(name, _FORMER_NAMES[name])
            info = FieldInfo.merge_field_infos(info, validation_alias=former)
        fields[name] = (info.annotation, info)
    name = "".join(part.title() for part in spec.name.split("_")) + "Request"
    model: type[TaskRequest] = create_model(name, __base__=base, __doc__=spec.title, **fields)
    return model


def pages_model(spec: TaskSpec[Any, Any]) -> type[BaseModel]:
    """The answer of a task route called with ``pages``."""
    fields: dict[str, Any] = {
        "page": (int | None, None),
        "result": (spec.result | None, None),
        "error": (PageError | None, None),
    }
    entry = create_model(f"{spec.result.__name__}Page", **fields)
    pages: type[BaseModel] = create_model(
        f"{spec.result.__name__}Pages",
        pages=(list[entry], ...),  # type: ignore[valid-type]
    )
    return pages


# -- request parsing ---------------------------------------------------------------------------

_IMAGE_FIELDS = frozenset({"image", "images"})


async def parse_task_body(
    request: Request, model: type[TaskRequest], state: ServiceState
) -> tuple[TaskRequest, list[ImageSource]]:
    """The validated body and its image sources, from JSON or multipart/form-data.

    Raises:
        RequestValidationError: Not JSON, or fields that do not match ``model`` (422).
        InvalidInputError: Another content type, a form field that is not valid JSON text.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        data, sources = await _read_form(request, model, state)
        return model.model_validate(data), sources
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidInputError(
            f"unsupported content type {content_type!r}; send application/json or "
            "multipart/form-data"
        )
    raw = await request.body()
    try:
        payload = json.loads(raw) if raw else {}
    except (ValueError, RecursionError) as e:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": f"not valid JSON: {e}"}]
        ) from None
    body = model.model_validate(payload)
    given: list[ImageSource] = [body.image] if body.image is not None else []
    given.extend(getattr(body, "images", None) or [])
    return body, given


def _object_fields(model: type[BaseModel]) -> set[str]:
    """Fields sent as JSON text in a form: everything that is not a plain scalar."""
    scalars = (str, int, float, bool, type(None))

    def scalar(annotation: Any) -> bool:
        if get_origin(annotation) is Literal or annotation in scalars:
            return True
        members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
        return bool(members) and all(scalar(member) for member in members)

    names = {info.alias or name for name, info in model.model_fields.items()}
    objects = {
        info.alias or name
        for name, info in model.model_fields.items()
        if not scalar(info.annotation)
    }
    return (objects & names) - _IMAGE_FIELDS - {"pages"}


async def _read_form(
    request: Request, model: type[TaskRequest], state: ServiceState
) -> tuple[dict[str, Any], list[ImageSource]]:
    limit = state.settings.max_images_per_request
    form = await request.form(max_files=limit, max_fields=64)
    json_fields = _object_fields(model)
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
            elif key in json_fields:
                try:
                    data[key] = json.loads(value)
                except (ValueError, RecursionError) as e:
                    raise InvalidInputError(f"form field {key!r} must be JSON text: {e}") from None
            else:
                data[key] = value
    finally:
        await form.close()
    return data, sources


# -- running a task ----------------------------------------------------------------------------


def _settings(body: TaskRequest, state: ServiceState) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "max_tiles": body.max_tiles,
        "options": body.options,
        "timeout": state.request_timeout,
    }
    if body.max_new_tokens is not None:
        settings["max_new_tokens"] = body.max_new_tokens
    if body.region is not None:
        settings["region"] = body.region
    return settings


def _arguments(spec: TaskSpec[Any, Any], body: TaskRequest) -> dict[str, Any]:
    return {name: getattr(body, name) for name in spec.arguments.model_fields}


def job_arguments(
    spec: TaskSpec[Any, Any], body: TaskRequest, state: ServiceState
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request's run settings and the task's own arguments, as the task routes pass them.

    The settings are tiles, tokens, options, region and the timeout; :mod:`.jobs` uses both.
    """
    return _settings(body, state), _arguments(spec, body)


async def _target(
    spec: TaskSpec[Any, Any],
    body: TaskRequest,
    sources: Sequence[ImageSource],
    state: ServiceState,
) -> LoadedImage | list[LoadedImage] | None:
    images = await load_request_images(list(sources), state, page=body.page)
    if spec.images == "one":
        if len(images) != 1:
            raise InvalidInputError(
                "no image: send 'image' (base64 or a data: URI) in JSON, or upload it as the "
                "'image' file with multipart/form-data"
                if not images
                else f"{spec.name} reads one image; got {len(images)}"
            )
        target: LoadedImage | list[LoadedImage] | None = images[0]
    else:
        target = None if not images else images[0] if len(images) == 1 else images
    return target


async def _run_one(
    spec: TaskSpec[Any, Any],
    vlm: MississippiVLM,
    body: TaskRequest,
    sources: Sequence[ImageSource],
    state: ServiceState,
) -> Any:
    target = await _target(spec, body, sources, state)
    return await vlm.arun(spec.name, target, **_settings(body, state), **_arguments(spec, body))


async def _stream_one(
    spec: TaskSpec[Any, Any],
    vlm: MississippiVLM,
    body: TaskRequest,
    sources: Sequence[ImageSource],
    state: ServiceState,
) -> Response:
    if spec.images == "document" or body.pages is not None:
        raise InvalidInputError(
            f"stream reads one image or page; {spec.name} with "
            f"{'a document' if spec.images == 'document' else 'pages'} answers once: drop "
            "stream, or choose one page with page=N"
        )
    target = await _target(spec, body, sources, state)
    return await stream_task(
        vlm, spec.name, target, state, **_settings(body, state), **_arguments(spec, body)
    )


async def _run_pages(
    spec: TaskSpec[Any, Any],
    vlm: MississippiVLM,
    body: TaskRequest,
    sources: Sequence[ImageSource],
    state: ServiceState,
) -> dict[str, Any]:
    if len(sources) != 1:
        raise InvalidInputError(f"pages selects pages of one document; got {len(sources)} images")
    data, name = await request_bytes(sources[0], state)
    reader = vlm.with_policy(state.policy, limits=state.limits)
    entries = []
    outcome: PageOutcome[Any]
    async for outcome in reader.aiter_batch(
        spec.name,
        [NamedSource(name, data)],
        pages=body.pages,
        max_pages=state.settings.max_pages,
        **_settings(body, state),
        **_arguments(spec, body),
    ):
        error = outcome.error
        if error is not None and not outcome.opened:
            raise error  # the document itself: the request fails with its error
        entries.append(
            {
                "page": outcome.page,
                "result": None
                if outcome.result is None
                else outcome.result.model_dump(mode="json"),
                "error": None if error is None else {"code": error.code, "message": error.message},
            }
        )
    return {"pages": entries}


async def _run_document(
    spec: TaskSpec[Any, Any],
    vlm: MississippiVLM,
    body: TaskRequest,
    sources: Sequence[ImageSource],
    state: ServiceState,
) -> Any:
    if len(sources) != 1:
        raise InvalidInputError(f"{spec.name} reads one document; got {len(sources)} images")
    data, name = await request_bytes(sources[0], state)
    reader = vlm.with_policy(state.policy, limits=state.limits)
    return await reader.arun(
        spec.name,
        NamedSource(name, data),
        pages=body.pages if body.pages is not None else body.page,
        max_pages=state.settings.max_pages,
        **_settings(body, state),
        **_arguments(spec, body),
    )


def _route(spec: TaskSpec[Any, Any], model: type[TaskRequest]) -> Any:
    async def handle(
        request: Request, vlm: Annotated[MississippiVLM, Depends(require_vlm)]
    ) -> Response:
        state = service_state(request)
        body, sources = await parse_task_body(request, model, state)
        if body.stream:
            return await _stream_one(spec, vlm, body, sources, state)
        if spec.images == "document":  # the selected pages together: one result
            result = await run_cancellable(request, _run_document(spec, vlm, body, sources, state))
            return JSONResponse(result.model_dump(mode="json"))
        if body.pages is not None:
            answer = await run_cancellable(request, _run_pages(spec, vlm, body, sources, state))
            return JSONResponse(answer)
        result = await run_cancellable(request, _run_one(spec, vlm, body, sources, state))
        return JSONResponse(result.model_dump(mode="json"))

    handle.__name__ = spec.name
    handle.__doc__ = spec.description
    return handle


def _body_doc(model: type[TaskRequest], spec: TaskSpec[Any, Any]) -> dict[str, Any]:
    """The OpenAPI requestBody: the JSON model, or the same fields as a multipart upload."""
    schema = model.model_json_schema(by_alias=True)
    properties: dict[str, Any] = {}
    json_fields = _object_fields(model)
    for key, prop in schema.get("properties", {}).items():
        if key == "images":
            continue
        if key == "image":
            properties["image"] = {
                "type": "string",
                "format": "binary",
                "description": "The image file (repeat the field for several images)",
            }
        elif key in json_fields:
            properties[key] = {
                "type": "string",
                "description": f"{prop.get('description', '')} As JSON text.".strip(),
            }
        else:
            properties[key] = prop
    required = [*schema.get("required", [])]
    if spec.images == "one":
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


def catalogue_entry(spec: TaskSpec[Any, Any]) -> dict[str, Any]:
    """What ``GET /v1/tasks`` says of one task: its route, arguments (a JSON Schema) and result."""
    return {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "route": f"/v1/{spec.name}",
        "images": spec.images,
        "arguments": spec.arguments.model_json_schema(),
        "result": spec.result.__name__,
        "default_max_new_tokens": spec.default_max_new_tokens,
    }


def build_router(specs: Sequence[TaskSpec[Any, Any]]) -> tuple[APIRouter, list[type[BaseModel]]]:
    """The routes of ``specs``, and the request models to document in the OpenAPI components."""
    router = APIRouter(dependencies=[Depends(require_api_key)], tags=["Tasks"])
    documented: list[type[BaseModel]] = []
    catalogue = {"object": "list", "data": [catalogue_entry(spec) for spec in specs]}

    @router.get("/v1/tasks", summary="The tasks this server runs")
    async def list_tasks() -> dict[str, Any]:
        """The served model's tasks, in catalogue order.

        Each one's route (``POST /v1/<name>``), title, description, image arity, arguments as a
        JSON Schema and result type. Answers while the model is still loading.
        """
        return catalogue

    for spec in specs:
        model = request_model(spec)
        documented.append(model)
        handler = _route(spec, model)
        one: dict[str, Any] = {"$ref": f"#/components/schemas/{spec.result.__name__}"}
        shown: list[type[BaseModel]]
        if spec.images == "document":  # the selected pages together: one result
            answer, described, shown = one, f"The {spec.result.__name__}.", [spec.result]
        else:
            pages = pages_model(spec)
            answer = {"anyOf": [one, {"$ref": f"#/components/schemas/{pages.__name__}"}]}
            described = f"The {spec.result.__name__}; with pages, one entry per page."
            shown = [spec.result, pages]
        responses = {
            **ERROR_RESPONSES,
            200: {"description": described, "content": {"application/json": {"schema": answer}}},
        }
        documented.extend(shown)
        for path, deprecated in (
            (spec.name, False),
            *((alias, True) for alias in spec.aliases),
        ):
            router.add_api_route(
                f"/v1/{path}",
                handler,
                methods=["POST"],
                summary=spec.title,
                description=spec.description,
                responses=responses,  # type: ignore[arg-type]
                openapi_extra=_body_doc(model, spec),
                deprecated=deprecated,
                name=f"{spec.name}" if not deprecated else f"{path} (alias of {spec.name})",
            )
    return router, documented
