"""``MississippiToolSpec``: the task catalogue as LlamaIndex agent tools.

One tool per task the model can do (``ocr``, ``read_chart``, ``read_table``, ``extract``, ``ask``
and any task it adds), each with a sync and an async path. A tool's name, description and
arguments (``image``, ``pages``, then the task's own) are the catalogue's, shared with every other
surface; the answer is the catalogue's text rendering (one ``[page N]`` section per page for a
range). Page handling, rendering and argument parsing live in
:mod:`mississippi_tools.agent_tools`; this module only translates.

Images:
    ``image`` is a file path, a ``data:`` URI or base64 image bytes; an http(s) URL only when the
    source policy allows URLs. Paths and URLs are checked by the policy given to the spec, else
    the agent default of :func:`~mississippi_tools.sources.agent_policy` (the model's roots, or the
    current directory only).

Errors:
    A failed call raises the library's :class:`~mississippi_tools.errors.MississippiError`
    unchanged; nothing is turned into a result string. LlamaIndex's agents (``FunctionAgent``,
    ``ReActAgent``) catch any exception from a tool and hand the LLM a ``ToolOutput`` with
    ``is_error=True`` whose content is the message, which says what was wrong and what to do. The
    exception stays on ``ToolOutput.exception`` with its ``code``. Called directly
    (``tool.call(...)``), a tool raises.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

from llama_index.core.tools import FunctionTool, ToolMetadata
from llama_index.core.tools.tool_spec.base import SPEC_FUNCTION_TYPE, BaseToolSpec

from mississippi_tools import MississippiVLM
from mississippi_tools.agent_tools import (
    ToolSettings,
    acall_tool,
    call_tool,
    check_tool_arguments,
    policy_note,
    tool_arguments,
)
from mississippi_tools.batch import DEFAULT_MAX_PAGES
from mississippi_tools.sources import agent_policy
from mississippi_tools.tasks.catalogue import TaskSpec, get_task

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mississippi_tools.sources import SourcePolicy

__all__ = ["MississippiToolSpec"]

_MAX_DESCRIPTION: Final = 1024  # what OpenAI (and LlamaIndex's to_openai_tool) accept


class MississippiToolSpec(BaseToolSpec):
    """OCR, charts, tables, JSON extraction, questions (every task the model can do) as tools.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[llamaindex,local,pdf]"

    Instantiate:
        .. code-block:: python

            from pathlib import Path

            from mississippi_tools import MississippiVLM, SourcePolicy
            from llama_index.tools.mississippi import MississippiToolSpec

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")  # or .connect(url)
            spec = MississippiToolSpec(vlm, policy=SourcePolicy(allowed_roots=(Path("/data"),)))

    Invoke:
        .. code-block:: python

            from llama_index.core.agent.workflow import FunctionAgent

            agent = FunctionAgent(tools=spec.to_tool_list(), llm=llm)
            response = await agent.run("What is the total on /data/invoice.png?")

            spec.ocr("/data/invoice.png")  # each task can be called directly too

    Async:
        .. code-block:: python

            text = await spec.aocr("/data/invoice.png")

    Args:
        vlm: The model, in this process (:meth:`MississippiVLM.load`) or behind a service
            (:meth:`MississippiVLM.connect`).
        policy: Which paths and URLs the agent may name; ``None``: the agent default.
        max_tiles: H2OVL models: most 448-px tiles per image (the model's default when ``None``).
        options: Other model options (``vlm.model_info.options`` lists them).
        max_new_tokens: Most tokens per answer (each task's default when ``None``).
        timeout: Seconds before a call fails with ``DeadlineExceededError``.
        max_pages: Most pages one call reads.
        fixed_arguments: Task arguments fixed for every call, by task (``{"extract":
            {"json_schema": Invoice}}``); the calling model no longer passes them.

    Raises:
        TypeError: ``vlm`` is not a ``MississippiVLM``.
    """

    def __init__(
        self,
        vlm: MississippiVLM,
        *,
        policy: SourcePolicy | None = None,
        max_tiles: int | None = None,
        options: Mapping[str, Any] | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        fixed_arguments: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if not isinstance(vlm, MississippiVLM):
            raise TypeError(
                f"vlm must be a MississippiVLM, got {type(vlm).__name__}; build one with "
                'MississippiVLM.load("h2oai/h2ovl-mississippi-800m") or '
                'MississippiVLM.connect("http://127.0.0.1:8090")'
            )
        self.vlm = vlm
        self.policy = agent_policy(
            policy if policy is not None else vlm.policy, tool="MississippiToolSpec"
        )
        self._reader = vlm.with_policy(self.policy)
        self._fixed = {get_task(name).name: dict(v) for name, v in (fixed_arguments or {}).items()}
        self._settings = ToolSettings(
            max_tiles=max_tiles,
            options=options,
            max_new_tokens=max_new_tokens,
            timeout=timeout,
            max_pages=max_pages,
        )
        # BaseToolSpec's interface: (sync, async) method names, one pair per task.
        self.spec_functions: list[SPEC_FUNCTION_TYPE] = [
            (spec.name, f"a{spec.name}") for spec in vlm.tasks
        ]

    def _settings_for(self, spec: TaskSpec[Any, Any]) -> ToolSettings:
        fixed = self._fixed.get(spec.name)
        if not fixed:
            return self._settings
        return ToolSettings(**{**self._settings.__dict__, "fixed": fixed})

    def call(self, task: str, image: str, pages: Any = None, **arguments: Any) -> str:
        """Run ``task`` on ``image`` as a tool call does; the text the agent would read."""
        spec = get_task(task)
        settings = self._settings_for(spec)
        return call_tool(self._reader, spec, image, pages, arguments, settings).content

    async def acall(self, task: str, image: str, pages: Any = None, **arguments: Any) -> str:
        """Async twin of :meth:`call`."""
        spec = get_task(task)
        settings = self._settings_for(spec)
        output = await acall_tool(self._reader, spec, image, pages, arguments, settings)
        return output.content

    def __getattr__(self, name: str) -> Any:
        """``spec.<task>(...)`` and ``spec.a<task>(...)`` for every task of the model."""
        if name.startswith("_"):
            raise AttributeError(name)
        names = {spec.name for spec in self.vlm.tasks}
        if name in names:
            return functools.partial(self.call, name)
        if name.startswith("a") and name[1:] in names:
            return functools.partial(self.acall, name[1:])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def to_tool_list(
        self,
        spec_functions: list[SPEC_FUNCTION_TYPE] | None = None,
        func_to_metadata_mapping: dict[str, ToolMetadata] | None = None,
    ) -> list[FunctionTool]:
        """One tool per task of the model (or of ``spec_functions``), sync and async.

        Args:
            spec_functions: Task names (or ``(name, async_name)`` pairs) to keep.
            func_to_metadata_mapping: Metadata to use instead of the catalogue's, by task name.

        Returns:
            One ``FunctionTool`` per task, with a sync and an async path.
        """
        wanted = None
        if spec_functions is not None:
            wanted = {get_task(f if isinstance(f, str) else f[0]).name for f in spec_functions}
        tools = []
        for spec in self.vlm.tasks:
            if wanted is not None and spec.name not in wanted:
                continue
            settings = self._settings_for(spec)
            metadata = (func_to_metadata_mapping or {}).get(spec.name) or ToolMetadata(
                name=spec.name,
                description=_description(spec, self.policy, settings),
                fn_schema=tool_arguments(spec, fixed=list(settings.fixed)),
            )
            run, arun = self._callables(spec, settings)
            tools.append(FunctionTool.from_defaults(fn=run, async_fn=arun, tool_metadata=metadata))
        return tools

    def _callables(self, spec: TaskSpec[Any, Any], settings: ToolSettings) -> tuple[Any, Any]:
        """The tool's sync and async functions (LlamaIndex calls them with the raw arguments)."""
        fixed = list(settings.fixed)

        def run(**kwargs: Any) -> str:
            kwargs = check_tool_arguments(spec, kwargs, fixed=fixed)
            image, pages = kwargs.pop("image"), kwargs.pop("pages", None)
            return call_tool(self._reader, spec, image, pages, kwargs, settings).content

        async def arun(**kwargs: Any) -> str:
            kwargs = check_tool_arguments(spec, kwargs, fixed=fixed)
            image, pages = kwargs.pop("image"), kwargs.pop("pages", None)
            output = await acall_tool(self._reader, spec, image, pages, kwargs, settings)
            return output.content

        run.__name__, arun.__name__ = spec.name, f"a{spec.name}"
        return run, arun


def _description(spec: TaskSpec[Any, Any], policy: SourcePolicy, settings: ToolSettings) -> str:
    """The catalogue's description and the policy note, within the 1024 characters allowed."""
    parts = [spec.description]
    if settings.fixed and spec.describe_fixed is not None:
        parts.append(spec.describe_fixed(settings.fixed))
    parts.append(policy_note(policy))
    text = "\n".join(parts)
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."
