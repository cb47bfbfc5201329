"""``MississippiToolkit``: every Mississippi tool over one shared model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.tools import BaseTool, BaseToolkit
from pydantic import BaseModel, ConfigDict, Field

from langchain_mississippi.tools import DEFAULT_MAX_PAGES, tool_class
from mississippi_tools import MississippiVLM
from mississippi_tools.tasks.catalogue import get_task

__all__ = ["DEFAULT_MODEL", "MississippiToolkit"]

DEFAULT_MODEL = "h2oai/h2ovl-mississippi-800m"
"""The model :meth:`MississippiToolkit.load` loads by default."""


class MississippiToolkit(BaseToolkit):
    """One tool per task the model can do (OCR, charts, tables, JSON, questions ...), one model.

    The tools share ``vlm``: one model in this process (:meth:`load`) or one connection to a
    running service or vLLM (:meth:`connect`). They are the task catalogue's tasks that this
    model can do (``vlm.tasks``), in catalogue order. Options set here apply to every tool.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[langchain,local]"     # model in this process
            pip install "mississippi-tools[langchain]"           # a running service

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM
            from langchain_mississippi import MississippiToolkit

            toolkit = MississippiToolkit(
                vlm=MississippiVLM.load("h2oai/h2ovl-mississippi-800m"),
                allowed_roots=["/data/inbox"],      # agents may only read files under here
            )
            toolkit = MississippiToolkit.load()                           # the same, shorter
            toolkit = MississippiToolkit.connect("http://127.0.0.1:8090")  # a running service

    Invoke:
        .. code-block:: python

            from langchain.agents import create_agent

            agent = create_agent(llm, tools=toolkit.get_tools())
            agent.invoke({"messages": [("user", "What is the total on inbox/invoice.png?")]})

    Async:
        .. code-block:: python

            tools = toolkit.get_tools()
            await tools[0].ainvoke({"image": "inbox/invoice.png"})
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    vlm: MississippiVLM
    """The model every tool uses."""
    include: list[str] | None = None
    """Which tasks :meth:`get_tools` returns, by task name (default: every task the model can
    do; former names such as ``chart`` are accepted)."""
    allowed_roots: list[Path] | None = None
    """Directories image paths must stay inside; ``None`` keeps ``vlm.policy``'s roots, or,
    when those allow any path, the current directory only."""
    allow_urls: bool | None = None
    """Fetch http(s) image URLs; ``None`` keeps ``vlm.policy``'s setting (off by default)."""
    max_tiles: int | None = None
    """H2OVL models: most 448-px tiles per image (the model's default when ``None``)."""
    options: dict[str, Any] | None = None
    """Other model options (``vlm.model_info.options`` lists them)."""
    max_new_tokens: int | None = None
    """Most tokens generated per page (each task's default when ``None``)."""
    timeout: float | None = None
    """Seconds before one page's request fails."""
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    """Most pages one tool call reads."""
    extraction_schema: type[BaseModel] | dict[str, Any] | None = None
    """Fix the extract tool's schema; ``None`` lets the calling model pass one per call."""
    concurrency: int | None = Field(default=None, ge=1)
    """Pages in flight for a page range (default: the engine's batch size)."""

    @classmethod
    def load(
        cls,
        model: str | Path = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        **options: Any,
    ) -> MississippiToolkit:
        """Load the model into this process and build the toolkit over it.

        Args:
            model: A hub id or a local checkpoint directory.
            device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
            dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` ...
            options: The toolkit's fields (``allowed_roots=``, ``max_tiles=`` ...).

        Raises:
            MissingDependencyError: The ``local`` extra is not installed.
            ModelNotFoundError: No weights locally and no way to fetch them.
        """
        return cls(vlm=MississippiVLM.load(model, device=device, dtype=dtype), **options)

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        **options: Any,
    ) -> MississippiToolkit:
        """Use a running ``mississippi-tools serve`` or vLLM (any OpenAI-compatible service).

        Args:
            base_url: The service's address, e.g. ``http://127.0.0.1:8090``.
            api_key: Bearer token, when the service requires one.
            model: The served model name (default: the first one the service lists).
            options: The toolkit's fields (``allowed_roots=``, ``max_tiles=`` ...).
        """
        return cls(vlm=MississippiVLM.connect(base_url, api_key=api_key, model=model), **options)

    def get_tools(self) -> list[BaseTool]:
        """One tool per task the model can do (``include`` narrows them), in catalogue order."""
        common: dict[str, Any] = {
            "vlm": self.vlm,
            "allowed_roots": self.allowed_roots,
            "allow_urls": self.allow_urls,
            "max_tiles": self.max_tiles,
            "options": self.options,
            "max_new_tokens": self.max_new_tokens,
            "timeout": self.timeout,
            "max_pages": self.max_pages,
            "concurrency": self.concurrency,
        }
        wanted = None if self.include is None else {get_task(n).name for n in self.include}
        tools: list[BaseTool] = []
        for spec in self.vlm.tasks:
            if wanted is not None and spec.name not in wanted:
                continue
            extra: dict[str, Any] = (
                {"extraction_schema": self.extraction_schema} if spec.name == "extract" else {}
            )
            tools.append(tool_class(spec.name)(**common, **extra))
        return tools
