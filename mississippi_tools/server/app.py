"""The FastAPI application: routes, middleware, error mapping, and the model's life cycle.

:func:`create_app` returns an app that answers at once. Its lifespan starts loading the model in a
background thread (unless one was passed in); until it is loaded, ``GET /health`` answers 503
``{"status": "loading"}`` and the ``/v1`` routes 503 with ``Retry-After``. On shutdown the
engine is closed after in-flight requests have finished (see :mod:`~mississippi_tools.server.run`
for the grace period).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from mississippi_tools.server import jobs, openai, playground, tasks
from mississippi_tools.server.auth import (
    check_api_key,
    install_access_log_redaction,
    service_state,
)
from mississippi_tools.server.errors import ClientDisconnectedError, install_error_handlers
from mississippi_tools.server.metrics import CONTENT_TYPE_LATEST, MetricsMiddleware, ServiceMetrics
from mississippi_tools.server.middleware import ActivityMiddleware, BodyLimitMiddleware
from mississippi_tools.server.settings import ServerSettings
from mississippi_tools.server.state import LOADING_RETRY_AFTER, ServiceState, VLMFactory
from mississippi_tools.serving import IdleUnloader, ModelLoader, describe_compute, describe_origin
from mississippi_tools.vlm import MississippiVLM

__all__ = ["create_app", "load_vlm"]

logger = logging.getLogger(__name__)


def load_vlm(settings: ServerSettings) -> MississippiVLM:
    """Load the model the settings name, with the service's batching, queue and image limits."""
    from mississippi_tools.engine.config import LocalEngineConfig
    from mississippi_tools.images import ImageLimits
    from mississippi_tools.sources import SourcePolicy

    return MississippiVLM.load(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        quantization=settings.quantization,
        attention=settings.attention,
        revision=settings.revision,
        local_files_only=settings.local_files_only,
        progress=False,
        engine_config=LocalEngineConfig(
            max_batch_size=settings.max_batch_size,
            max_queue_size=settings.max_queue_size,
            feature_cache_mb=settings.feature_cache_mb,
            prefix_cache_mb=settings.prefix_cache_mb,
            retry_after=settings.retry_after,
        ),
        policy=SourcePolicy(allowed_roots=(), allow_urls=settings.allow_urls),
        limits=ImageLimits(
            max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
        ),
        memory_limit=settings.max_memory,
    )


def _loader(settings: ServerSettings, factory: VLMFactory) -> ModelLoader:
    logger.info(
        "loading model %s from %s, device %s, dtype %s%s; requests get 503 until it is ready "
        "(GET /health says when)",
        settings.model,
        describe_origin(settings.model),
        settings.device,
        settings.dtype,
        f", quantization {settings.quantization}" if settings.quantization else "",
    )
    return ModelLoader(lambda: factory(settings), name=settings.model)


def create_app(
    settings: ServerSettings | None = None,
    vlm: MississippiVLM | None = None,
    *,
    vlm_factory: VLMFactory | None = None,
    close_vlm: bool | None = None,
) -> FastAPI:
    """The service's ASGI app.

    Args:
        settings: The settings (default: from ``MISSISSIPPI_*`` variables).
        vlm: A model to serve at once (tests, embedding); otherwise one is loaded in the
            background when the app starts.
        vlm_factory: Builds the model from the settings in the background thread (default:
            :func:`load_vlm`).
        close_vlm: Close the model's engine when the app stops (default: only a model the app
            loaded itself).

    Returns:
        The FastAPI app. Serve it with :func:`~mississippi_tools.server.run.serve` (which also
        checks the bind address) or any ASGI server.

    Raises:
        InvalidAPIKeyError: The settings' API key is blank or cannot be sent in a header.
    """
    settings = settings or ServerSettings()
    settings.check_api_key()
    install_access_log_redaction()
    metrics = ServiceMetrics()
    state = ServiceState(settings, metrics)
    metrics.state = state
    owns_vlm = vlm is None if close_vlm is None else close_vlm

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = (
            ModelLoader.loaded(vlm)
            if vlm is not None
            else _loader(settings, vlm_factory or load_vlm)
        )
        state.start_loading(loader)
        await manager.start()
        unloader = None
        if settings.idle_unload is not None:
            unloader = IdleUnloader(loader, state.activity, settings.idle_unload)
            unloader.start()
        try:
            yield
        finally:
            state.begin_stopping()
            if unloader is not None:
                await unloader.stop()
            await manager.stop()
            if owns_vlm:
                await asyncio.to_thread(loader.close)
            state.close()

    app = FastAPI(
        title="mississippi-tools",
        summary="Read images for AI agents: OCR, charts, tables, JSON extraction and questions "
        "with H2OVL-Mississippi.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody is listening any more

    app.add_exception_handler(ClientDisconnectedError, on_disconnect)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ActivityMiddleware, activity=state.activity)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/health", tags=["Service"], summary="Readiness")
    async def health() -> JSONResponse:
        """200 once the model is loaded, or unloaded when idle (the next request reloads it).

        503 while loading, after a failed load, or stopping.
        """
        if state.phase == "idle":
            return JSONResponse({"status": "idle", "model": state.model_name})
        if state.phase == "ready" and state.vlm is not None:
            return JSONResponse(
                {
                    "status": "ok",
                    "model": state.model_name,
                    "engine": state.vlm.engine.name,
                    **describe_compute(state.vlm),
                }
            )
        body: dict[str, Any] = {"status": state.phase}
        if state.phase == "failed" and state.load_error is not None:
            error = state.load_error
            body["error"] = {
                "code": getattr(error, "code", "model_load_failed"),
                "message": str(error),
            }
        return JSONResponse(
            body, status_code=503, headers={"Retry-After": str(int(LOADING_RETRY_AFTER))}
        )

    async def metrics_auth(request: Request) -> None:
        if settings.metrics_require_auth:
            check_api_key(request, service_state(request))

    @app.get(
        "/metrics",
        tags=["Service"],
        summary="Prometheus metrics",
        dependencies=[Depends(metrics_auth)],
        response_class=Response,
    )
    async def prometheus() -> Response:
        """Requests, latencies, queue depth, batch sizes, tokens and cache hits (text format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(playground.router)
    app.include_router(openai.router)
    served = _served_tasks(settings, vlm)
    router, documented = tasks.build_router(served)
    app.include_router(router)
    manager = jobs.JobManager(state, served)
    app.state.jobs = manager
    jobs_router, job_models = jobs.build_jobs_router(served)
    app.include_router(jobs_router)
    documented.extend(job_models)
    _document_request_bodies(app, documented)
    return app


def _served_tasks(settings: ServerSettings, vlm: MississippiVLM | None) -> list[Any]:
    """The catalogue's tasks the served model can do, known before it loads (from its config)."""
    from mississippi_tools.tasks.catalogue import tasks_for_model

    if vlm is not None:
        return vlm.tasks
    return tasks_for_model(settings.model)


def _document_request_bodies(app: FastAPI, documented: list[type[BaseModel]]) -> None:
    """Add the task request models (parsed by hand for multipart support) to the components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in documented:
            model_schema = model.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mississippi-tools")
    except PackageNotFoundError:
        return "0.0.0"
