"""Long results for MCP clients: a size budget with continuation cursors, and pages as resources.

**Budget.** Clients cap what one tool result may hold (Claude Code: about 25,000 tokens by
default), and a 20-page OCR easily exceeds it. A result larger than ``result_budget`` characters
(text and structured content counted together) is cut between pages: the first part comes back
with ``next_cursor``, and the ``read_more`` tool returns the next part for that cursor, until
``next_cursor`` is ``None``. A page is never cut in two: one page larger than the budget comes
alone. The server keeps the parts of the last :data:`KEPT_RESULTS` long results in memory.

**Resources.** Every page a call read is linked from its result as a ``resource_link`` to
``mississippi://documents/{document}/pages/{page}``, which renders that page (or the zoomed crop,
when the call had a ``region``) as PNG when the client reads it. The same URI can be passed back
as the ``image`` of any tool, to read that page again (with another task, or zoomed). The server
remembers the last :data:`KEPT_DOCUMENTS` documents, each under the source policy of the call that
read it.

**Images in.** Besides paths, URLs, data URIs and base64, a tool's ``image`` may be MCP image
content (``{"type": "image", "data": ..., "mimeType": ...}``) or an embedded resource with a blob
(``{"type": "resource", "resource": {"uri": ..., "blob": ..., "mimeType": ...}}``).
"""

from __future__ import annotations

import io
import json
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    BlobResourceContents,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
)
from pydantic import BaseModel, ConfigDict, Field

from mississippi_mcp.settings import DEFAULT_RESULT_BUDGET
from mississippi_tools.images import ImageLimits, load_image
from mississippi_tools.regions import RegionInput, crop_image, parse_region
from mississippi_tools.sources import SourcePolicy

__all__ = [
    "DOCUMENT_URI",
    "KEPT_DOCUMENTS",
    "KEPT_RESULTS",
    "ContinuedOutput",
    "Document",
    "ImageArgument",
    "Part",
    "ResultStore",
    "image_source",
    "split_pages",
]

KEPT_RESULTS = 64
"""Long results whose remaining parts are kept for ``read_more``."""
KEPT_DOCUMENTS = 32
"""Documents whose pages stay readable as resources."""
DOCUMENT_URI = "mississippi://documents/{document}/pages/{page}"
"""The URI template of a rendered page."""
_URI = re.compile(r"^mississippi://documents/([A-Za-z0-9_-]{1,64})/pages/([0-9]{1,6})$")
#: Characters counted for one resource link (its JSON on the wire).
_LINK_SIZE = 200
#: Characters kept for what surrounds the pages: the structured content's keys, the cursor and
#: the sentence saying how to go on.
_OVERHEAD = 300

ImageArgument = str | ImageContent | EmbeddedResource
"""What a tool's ``image`` may be on this server."""


class ContinuedOutput(BaseModel):
    """The structured content of ``read_more``: the next pages of a long result."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(description="The tool whose result this continues.")
    pages: list[dict[str, Any]] = Field(description="The next pages, in order.")
    next_cursor: str | None = Field(
        default=None, description="Pass to read_more for the pages after these (None: the end)."
    )


@dataclass(frozen=True)
class Part:
    """Some pages of a long result: their text sections, structured entries and links."""

    sections: list[str]
    entries: list[dict[str, Any]]
    links: list[ResourceLink]

    def content(self, cursor: str | None) -> list[ContentBlock]:
        """The content blocks: the text (with how to go on), then the page links."""
        text = "\n\n".join(self.sections)
        if cursor is not None:
            text += (
                f"\n\n[more pages follow: call read_more with cursor={cursor!r} for the next part]"
            )
        return [TextContent(type="text", text=text), *self.links]


def split_pages(
    sections: list[str],
    entries: list[dict[str, Any]],
    links: list[ResourceLink],
    budget: int,
) -> list[Part]:
    """Cut a result's pages into parts of at most ``budget`` characters (a page is never cut).

    Args:
        sections: Each page's text for the model.
        entries: Each page's structured entry (``{"page", "result", "error"}``).
        links: Each page's resource link (or none at all).
        budget: Most characters of a part (text, JSON entries and links counted together).
    """
    parts: list[Part] = []
    current = Part([], [], [])
    size = 0
    budget -= _OVERHEAD
    for index, (section, entry) in enumerate(zip(sections, entries, strict=True)):
        page_size = len(section) + len(json.dumps(entry)) + (_LINK_SIZE if links else 0)
        if current.sections and size + page_size > budget:
            parts.append(current)
            current, size = Part([], [], []), 0
        current.sections.append(section)
        current.entries.append(entry)
        if links:
            current.links.append(links[index])
        size += page_size
    parts.append(current)
    return parts


@dataclass(frozen=True)
class Document:
    """A document a call read, kept so that its pages can be rendered as resources."""

    source: str
    policy: SourcePolicy
    limits: ImageLimits
    region: RegionInput | None


class ResultStore:
    """The server's memory of long results (for ``read_more``) and read documents (resources).

    Args:
        budget: Characters of one tool result.
    """

    def __init__(self, budget: int = DEFAULT_RESULT_BUDGET) -> None:
        self.budget = budget
        self._parts: OrderedDict[str, tuple[str, list[Part]]] = OrderedDict()
        self._documents: OrderedDict[str, Document] = OrderedDict()

    # -- continuation -------------------------------------------------------------------------

    def keep(self, tool: str, parts: list[Part]) -> str | None:
        """Keep the parts after the first; the cursor of the second (``None``: only one)."""
        if len(parts) <= 1:
            return None
        return self._put(tool, parts[1:])

    def _put(self, tool: str, parts: list[Part]) -> str:
        cursor = secrets.token_urlsafe(12)
        self._parts[cursor] = (tool, parts)
        while len(self._parts) > KEPT_RESULTS:
            self._parts.popitem(last=False)
        return cursor

    def next_part(self, cursor: str) -> tuple[str, Part, str | None]:
        """The tool, the part for ``cursor`` and the cursor of the part after it.

        Raises:
            ToolError: The cursor is unknown or was dropped to make room.
        """
        kept = self._parts.pop(cursor, None)
        if kept is None:
            raise ToolError(
                f"unknown or expired cursor {cursor!r}: this server keeps the rest of its last "
                f"{KEPT_RESULTS} long results, once each; call the tool again with a smaller "
                "pages selection"
            )
        tool, parts = kept
        following = self._put(tool, parts[1:]) if len(parts) > 1 else None
        return tool, parts[0], following

    # -- documents ----------------------------------------------------------------------------

    def remember(self, document: Document) -> str:
        """Keep ``document`` readable as resources; its id in the URIs."""
        for key, known in self._documents.items():
            if known == document:
                self._documents.move_to_end(key)
                return key
        key = secrets.token_urlsafe(9)
        self._documents[key] = document
        while len(self._documents) > KEPT_DOCUMENTS:
            self._documents.popitem(last=False)
        return key

    def link(self, key: str, page: int | None, title: str) -> ResourceLink:
        """The resource link of one page (1 for a single image)."""
        uri = DOCUMENT_URI.format(document=key, page=page or 1)
        return ResourceLink(
            type="resource_link",
            uri=uri,
            name=f"page-{page or 1}.png",
            title=title,
            mime_type="image/png",
        )

    def resolve(self, uri: str) -> tuple[Document, int]:
        """The document and page a resource URI names.

        Raises:
            ToolError: Not one of this server's page URIs, or the document was forgotten.
        """
        match = _URI.match(uri.strip())
        document = None if match is None else self._documents.get(match.group(1))
        if match is None or document is None:
            raise ToolError(
                f"{uri!r} is not a page this server still has: it keeps the pages of the last "
                f"{KEPT_DOCUMENTS} documents read; pass the document itself again"
            )
        return document, int(match.group(2))

    def render(self, key: str, page: str) -> bytes:
        """The PNG of a page (or of its crop, for a zoomed call); the resource's content."""
        document, number = self.resolve(DOCUMENT_URI.format(document=key, page=page))
        loaded = load_image(
            document.source, page=number, limits=document.limits, policy=document.policy
        )
        region = parse_region(document.region)
        if region is not None:
            loaded = crop_image(loaded, region)
        buffer = io.BytesIO()
        loaded.image.save(buffer, format="PNG")
        return buffer.getvalue()


def image_source(image: ImageArgument) -> str:
    """A tool's ``image`` argument as the core reads it (MCP content becomes a data URI).

    Raises:
        ToolError: An embedded resource holding text instead of a blob.
    """
    if isinstance(image, str):
        return image
    if isinstance(image, ImageContent):
        return f"data:{image.mime_type};base64,{image.data}"
    contents = image.resource
    if not isinstance(contents, BlobResourceContents):
        raise ToolError(
            f"the embedded resource {contents.uri!r} holds text; pass an image or PDF as a blob "
            "(base64), image content, a data URI or a file path"
        )
    mime = contents.mime_type or "application/octet-stream"
    return f"data:{mime};base64,{contents.blob}"
