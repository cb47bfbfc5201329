"""The web playground: a page at ``/`` and ``/playground`` to try every task without code.

The page and its scripts and styles are plain files shipped in the package
(``mississippi_tools/server/playground/``): no build step, no CDN, and a Content-Security-Policy
that lets the page reach this server only. It reads the served tasks from ``GET /v1/tasks``,
PDF page thumbnails from ``POST /v1/pages``, and runs a task with ``POST /v1/<task>`` and
``"stream": true`` (:mod:`~mississippi_tools.server.task_stream`).

The page itself holds no data and needs no key; every ``/v1`` call it makes does. When the
server has an API key the page is served with ``data-auth="bearer"`` so that it asks for the
key before its first call (and keeps it in the tab's ``sessionStorage``).
"""

from __future__ import annotations

import asyncio
import base64
import io
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.server.auth import require_api_key, service_state
from mississippi_tools.server.inputs import ImageSource, Upload, request_bytes
from mississippi_tools.server.state import ServiceState

__all__ = [
    "ASSET_TYPES",
    "CONTENT_SECURITY_POLICY",
    "THUMBNAIL_PAGES",
    "THUMBNAIL_SIDE",
    "router",
]

ASSET_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
"""The content type of each kind of file the playground ships."""

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
"""The page may load and call this server only (and show the images the user picks)."""

THUMBNAIL_SIDE = 160
"""Longest side, in pixels, of a page thumbnail from ``POST /v1/pages``."""

THUMBNAIL_PAGES = 60
"""Most thumbnails ``POST /v1/pages`` renders; later pages are still counted and can be chosen."""

_THUMBNAIL_DPI = 24  # a Letter page is 204x264 px: a little over the thumbnail, quick to render
_PACKAGE = "mississippi_tools.server"
_FOLDER = "playground"
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["Playground"])


@cache
def _assets() -> dict[str, bytes]:
    """The shipped files by name (read once)."""
    folder = resources.files(_PACKAGE).joinpath(_FOLDER)
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in ASSET_TYPES:
            files[entry.name] = entry.read_bytes()
    return files


def _page(request: Request) -> Response:
    page = _assets()["index.html"]
    if service_state(request).settings.api_key is not None:
        page = page.replace(b'data-auth="none"', b'data-auth="bearer"', 1)
    return Response(page, media_type=ASSET_TYPES[".html"], headers=_HEADERS)


@router.get("/", include_in_schema=False)
async def root(request: Request) -> Response:
    """The playground page."""
    return _page(request)


@router.get("/playground", summary="The playground page", response_class=Response)
async def playground(request: Request) -> Response:
    """Try every served task in the browser: upload an image or PDF, run a task, see the result."""
    return _page(request)


@router.get("/playground/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    """One of the page's scripts, styles or icons (404 for any other name)."""
    data = _assets().get(name)
    if data is None or name == "index.html":
        return JSONResponse(
            {"error": {"code": "not_found", "message": f"no playground file {name!r}"}},
            status_code=404,
            headers=_HEADERS,
        )
    suffix = "." + name.rpartition(".")[2]
    return Response(data, media_type=ASSET_TYPES[suffix], headers=_HEADERS)


# -- page thumbnails ---------------------------------------------------------------------------


async def _document(request: Request) -> ImageSource:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("image")
            if isinstance(upload, UploadFile):
                return Upload(await upload.read(), upload.filename)
            if isinstance(upload, str):
                return upload
        finally:
            await form.close()
    elif content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as e:
            raise InvalidInputError(f"the body is not valid JSON: {e}") from None
        if isinstance(body, dict) and isinstance(body.get("image"), str):
            return str(body["image"])
    raise InvalidInputError(
        "send the document as the 'image' file of a multipart/form-data upload, or as "
        '{"image": "<data: URI or base64>"} in JSON'
    )


def _thumbnails(data: bytes, name: str, state: ServiceState) -> dict[str, Any]:
    from mississippi_tools.images import count_pages, iter_pages

    count = count_pages(data, limits=state.limits, policy=state.policy)
    shown = min(count, THUMBNAIL_PAGES)
    pages = []
    for loaded in iter_pages(
        data,
        pages=f"1-{shown}" if count > 1 else None,
        limits=state.limits,
        policy=state.policy,
        dpi=_THUMBNAIL_DPI,
    ):
        image = loaded.image.copy()
        width, height = image.size
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        pages.append(
            {
                "page": loaded.page or 1,
                "width": width,
                "height": height,
                "thumbnail": f"data:image/png;base64,{encoded}",
            }
        )
    return {"source": name, "count": count, "pages": pages}


@router.post(
    "/v1/pages",
    summary="Page thumbnails of a document",
    dependencies=[Depends(require_api_key)],
)
async def page_thumbnails(request: Request) -> JSONResponse:
    """The pages of a PDF or multi-page TIFF (an image is one page) as small PNG thumbnails.

    Send the document as the ``image`` file of a multipart upload, or ``{"image": ...}`` in JSON.
    The answer is ``{"source", "count", "pages": [{"page", "width", "height", "thumbnail"}]}``,
    ``thumbnail`` a ``data:`` URI at most 160 px a side, for the first 60 pages (``count`` is
    the document's page count). Works while the model loads.
    """
    state = service_state(request)
    data, name = await request_bytes(await _document(request), state)
    return JSONResponse(await asyncio.to_thread(_thumbnails, data, name, state))
