"""Screenshot to HTML: the ``to_html`` task, the :class:`HTMLResult` result, and its outputs.

A model of the ``websight`` family (VLM_WebSight_finetuned) writes the HTML and CSS of a web
page from its screenshot. The result keeps the HTML exactly as the model wrote it
(:meth:`HTMLResult.save`), and can be rendered to a picture in headless Chromium with scripts and
network off (:meth:`HTMLResult.preview`), to be held beside the screenshot. The service never
renders or runs the HTML by itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict

from mississippi_tools.tasks.base import OneShotPlan, RunSettings, TaskContext, TaskPlan
from mississippi_tools.tasks.catalogue import TaskSpec
from mississippi_tools.tasks.results import ResultMetadata, TaskResult, cut_note

if TYPE_CHECKING:
    from mississippi_tools.engine.base import GenerationOutput
    from mississippi_tools.images import LoadedImage

__all__ = [
    "DEFAULT_PREVIEW_SIZE",
    "HTML_INSTRUCTION",
    "SPEC",
    "HTMLArguments",
    "HTMLResult",
    "parse_html_output",
    "render_html",
    "write_html_outputs",
]

HTML_INSTRUCTION: Final = "Write the HTML and CSS code of the web page in this screenshot."
"""The plain instruction, for families that take one (WebSight sends the image alone)."""

#: Preview viewport when the screenshot's size is not known.
DEFAULT_PREVIEW_SIZE: Final = (1280, 960)

_PREVIEW_LIMITS: Final = (16, 8192)


class HTMLResult(TaskResult):
    """The HTML and CSS of a web page, written from its screenshot; ``str(result)`` is the HTML.

    Example:
        >>> page = vlm.to_html("shot.png")  # doctest: +SKIP
        >>> page.save("page.html")
        >>> page.preview("preview.png")  # headless Chromium, scripts and network off
    """

    html: str
    """The HTML document as the model wrote it."""
    screenshot_size: tuple[int, int] | None = None
    """``(width, height)`` of the screenshot, the default size of :meth:`preview`."""

    def __str__(self) -> str:
        return self.html

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the HTML, as generated, to ``path`` (UTF-8); return the path."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.html, encoding="utf-8")
        return target

    def preview(
        self,
        path: str | os.PathLike[str],
        *,
        width: int | None = None,
        height: int | None = None,
        timeout: float = 60.0,
    ) -> Path:
        """Render the HTML to a PNG at ``path`` in headless Chromium; return the path.

        Scripts do not run and nothing is fetched (see
        :mod:`mississippi_tools.render.html_preview`). The viewport is the screenshot's size
        unless ``width``/``height`` say otherwise.

        Raises:
            PreviewError: No Chromium is installed, or it failed or timed out.
        """
        from mississippi_tools.render.html_preview import render_html_preview

        default_width, default_height = self.screenshot_size or DEFAULT_PREVIEW_SIZE
        low, high = _PREVIEW_LIMITS
        return render_html_preview(
            self.html,
            path,
            width=width or min(max(default_width, low), high),
            height=height or min(max(default_height, low), high),
            timeout=timeout,
        )


def parse_html_output(
    raw: str, meta: ResultMetadata, screenshot_size: tuple[int, int] | None = None
) -> HTMLResult:
    """Wrap the model's answer in an :class:`HTMLResult` (the text is kept as it is)."""
    return HTMLResult(html=raw, screenshot_size=screenshot_size, meta=meta)


def write_html_outputs(
    result: HTMLResult,
    *,
    output: str | os.PathLike[str] | None = None,
    preview: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Save the HTML and/or render its preview; one line per file written (for a CLI's stderr)."""
    notes = []
    if output is not None:
        notes.append(f"HTML written to {result.save(output)}")
    if preview is not None:
        notes.append(f"preview written to {result.preview(preview)}")
    return notes


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


class HTMLArguments(BaseModel):
    """Arguments of the ``to_html`` task (none: the screenshot is the whole prompt)."""

    model_config = ConfigDict(extra="forbid")


def plan_to_html(
    ctx: TaskContext, images: list[LoadedImage], args: HTMLArguments, settings: RunSettings
) -> TaskPlan[HTMLResult]:
    """One request: the screenshot (with the family's wording, empty for WebSight)."""
    request = ctx.request(
        "to_html",
        HTML_INSTRUCTION,
        args,
        images,
        settings,
        default_max_new_tokens=SPEC.default_max_new_tokens,
    )
    size = images[0].size if images else None

    def parse(output: GenerationOutput, meta: ResultMetadata) -> HTMLResult:
        return parse_html_output(output.raw_text or output.text, meta, size)

    return OneShotPlan(request, images, parse)


def render_html(result: HTMLResult) -> str:
    """The HTML, for an LLM (a note when the answer was cut at the token limit)."""
    return (result.html or "(no HTML written)") + cut_note(result.meta)


SPEC: TaskSpec[HTMLArguments, HTMLResult] = TaskSpec(
    name="to_html",
    title="Screenshot to HTML",
    description=(
        "Write the HTML and CSS of a web page or UI component from its screenshot, to build or "
        "repair a front-end. Returns the HTML document (not executed; render it to compare with "
        "the screenshot)."
    ),
    arguments=HTMLArguments,
    result=HTMLResult,
    plan=plan_to_html,
    render=render_html,
    # The model card generates up to max_length=4096 tokens, prompt (67) included.
    default_max_new_tokens=4029,
    families=frozenset({"websight"}),
    aliases=("html",),
)
