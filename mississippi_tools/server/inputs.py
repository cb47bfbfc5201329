"""Images sent to the service: data URIs, base64, uploads, and http(s) URLs when enabled.

A request never names a path on the server. A string is a ``data:`` URI, an ``http(s)://`` URL
(fetched only when the server runs with ``allow_urls``; otherwise 403) or base64 data; anything
else is refused with a message saying what to send.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import re
from typing import NamedTuple

from mississippi_tools.errors import (
    AccessDeniedError,
    ImageTooLargeError,
    InvalidInputError,
    Remedy,
)
from mississippi_tools.images import LoadedImage, load_image
from mississippi_tools.server.state import ServiceState

__all__ = ["ImageSource", "Upload", "load_request_image", "load_request_images", "request_bytes"]


class Upload(NamedTuple):
    """An uploaded file: its bytes and the name the client gave it."""

    data: bytes
    filename: str | None = None


ImageSource = str | bytes | Upload
"""A request's image: text (data URI, base64, URL), bytes, or an uploaded file."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BASE64 = re.compile(r"[A-Za-z0-9+/_\-]+=*")


def _decode_base64(text: str, state: ServiceState) -> bytes:
    compact = "".join(text.split())
    limit = state.limits.max_bytes
    if len(compact) * 3 // 4 > limit:
        raise ImageTooLargeError(
            f"the base64 image decodes to about {len(compact) * 3 // 4:,} bytes; the server's "
            f"limit is {limit:,} bytes; send a smaller image",
            source="base64",
        )
    if not compact or _BASE64.fullmatch(compact) is None:
        raise InvalidInputError(
            "an image must be a data: URI ('data:image/png;base64,...'), base64 data, or an "
            "http(s) URL when the server allows URLs; got text that is none of these"
        )
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact = compact.rstrip("=")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInputError(f"the image is not valid base64: {e}") from None


def _load(source: ImageSource, state: ServiceState, page: int | None) -> LoadedImage:
    if isinstance(source, Upload):
        loaded = load_image(source.data, page=page, limits=state.limits, policy=state.policy)
        name = (source.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:200]
        return dataclasses.replace(loaded, source=name) if name else loaded
    if isinstance(source, bytes):
        return load_image(source, page=page, limits=state.limits, policy=state.policy)
    text = source.strip()
    if text[:5].lower() == "data:":
        return load_image(text, page=page, limits=state.limits, policy=state.policy)
    scheme = _URL.match(text)
    if scheme is not None:
        if not text.lower().startswith(("http://", "https://")):
            raise InvalidInputError(
                f"unsupported image URL scheme in {text[:40]!r}; send a data: URI, base64 data "
                "or an http(s) URL"
            )
        if not state.policy.allow_urls:
            raise AccessDeniedError(
                "this server does not fetch image URLs; send the image as a data: URI or base64",
                remedy=Remedy("allow_urls"),
            )
        return load_image(text, page=page, limits=state.limits, policy=state.policy)
    data = _decode_base64(text, state)
    return load_image(data, page=page, limits=state.limits, policy=state.policy)


def _check_count(count: int, state: ServiceState) -> None:
    limit = state.settings.max_images_per_request
    if count > limit:
        raise InvalidInputError(
            f"the request has {count} images; this server accepts at most {limit} per request"
        )


async def load_request_image(
    source: ImageSource, state: ServiceState, *, page: int | None = None
) -> LoadedImage:
    """Decode one request image in a worker thread (URLs are fetched there too).

    Raises:
        AccessDeniedError: A URL while URLs are disabled, or refused by the URL policy.
        ImageTooLargeError: Over the byte or pixel limits.
        InvalidInputError: Not an image, not base64, a PDF without ``page`` ...
    """
    return await asyncio.to_thread(_load, source, state, page)


async def load_request_images(
    sources: list[ImageSource], state: ServiceState, *, page: int | None = None
) -> list[LoadedImage]:
    """Decode a request's images (at most ``max_images_per_request``)."""
    _check_count(len(sources), state)
    if not sources:
        return []
    return await asyncio.to_thread(lambda: [_load(s, state, page) for s in sources])


def _bytes_of(source: ImageSource, state: ServiceState) -> tuple[bytes, str]:
    if isinstance(source, Upload):
        name = (source.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:200]
        return source.data, name or "upload"
    if isinstance(source, bytes):
        return source, "bytes"
    text = source.strip()
    if text[:5].lower() == "data:":
        header, _, payload = text.partition(",")
        if ";base64" not in header.lower():
            raise InvalidInputError("a data: URI must be base64-encoded ('data:...;base64,...')")
        return _decode_base64(payload, state), "data URI"
    if _URL.match(text) is not None:
        if not state.policy.allow_urls:
            raise AccessDeniedError(
                "this server does not fetch image URLs; send the document as a data: URI or base64",
                remedy=Remedy("allow_urls"),
            )
        from mississippi_tools.sources import fetch_url

        return fetch_url(text, state.policy, max_bytes=state.limits.max_bytes), text
    return _decode_base64(text, state), "base64"


async def request_bytes(source: ImageSource, state: ServiceState) -> tuple[bytes, str]:
    """A request's document as bytes and the name to report it by (for page selections).

    Raises:
        AccessDeniedError: A URL while URLs are disabled, or refused by the URL policy.
        ImageTooLargeError: Over the byte limit.
        InvalidInputError: Not base64, a data URI that is not base64.
    """
    return await asyncio.to_thread(_bytes_of, source, state)
