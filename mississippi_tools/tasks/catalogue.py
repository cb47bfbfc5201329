"""The task catalogue: one :class:`TaskSpec` per task, from which every surface is built.

The Python API (``MississippiVLM.ocr`` ... over :meth:`~mississippi_tools.MississippiVLM.run`), the
CLI commands, the HTTP task routes, the LangChain tools, the LlamaIndex tool spec, the MCP tools and
the loader/reader modes all read this catalogue: the same task names, the same argument names and
descriptions, the same text rendering of a result for an LLM. A task a loaded model cannot do
(:func:`unsupported_reason`) is left off the surfaces built for that model, and asking for it anyway
is an :class:`~mississippi_tools.errors.UnsupportedTaskError` naming the models that can.

Adding a task is one module (its arguments model, result type, plan and rendering, ending in a
``SPEC``) plus one entry in :data:`BUILTIN_TASKS`; :func:`register_task` adds one at run time
(plugins, tests).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from mississippi_tools.errors import InvalidInputError, MississippiError, UnsupportedTaskError
from mississippi_tools.tasks.dialects import BUILT_ON, dialect_for, known_dialects
from mississippi_tools.tasks.results import TaskResult

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.base import ModelInfo
    from mississippi_tools.tasks.base import RunSettings, TaskContext, TaskPlan

__all__ = [
    "BUILTIN_TASKS",
    "ImageArity",
    "TaskSpec",
    "all_tasks",
    "check_supported",
    "get_task",
    "register_task",
    "supporting_models",
    "tasks_for",
    "unsupported_reason",
]

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=TaskResult)

ImageArity = Literal["one", "many", "document"]
"""``one``: the task reads one image (or page); ``many``: any number, none included (``ask``);
``document``: the selected pages of one document together (``extract_document``; surfaces pass
the whole page selection to one call, and a batch gives one result per document)."""


@dataclass(frozen=True, kw_only=True)
class TaskSpec(Generic[A, R]):
    """Everything about one task that any surface needs.

    Attributes:
        name: The task's name on every surface (API method, CLI command, HTTP route, tool).
        title: A short human title ("Read a chart").
        description: What the task does and returns, written for an LLM choosing a tool.
        arguments: The task's own arguments (a pydantic model with ``extra="forbid"``; field
            descriptions are what a calling LLM reads). Images, pages and the run settings are
            common to every task and not part of it.
        result: The result type (a :class:`~mississippi_tools.tasks.results.TaskResult`).
        plan: Builds the task's conversation with the engine for these images and arguments.
        render: The result as text for an LLM (tool content), one rendering per result type.
        images: How many images the task takes.
        default_max_new_tokens: New tokens when the caller does not say.
        families: Only these model families can do it (``None``: any family whose dialect
            does).
        aliases: Former names, still accepted for one release.
        describe_fixed: Words for a tool description when a tool fixes some arguments (e.g. the
            JSON shape an extraction tool always returns).
    """

    name: str
    title: str
    description: str
    arguments: type[A]
    result: type[R]
    plan: Callable[[TaskContext, list[LoadedImage], A, RunSettings], TaskPlan[R]]
    render: Callable[[R], str]
    images: ImageArity = "one"
    default_max_new_tokens: int = 1024
    families: frozenset[str] | None = None
    aliases: tuple[str, ...] = field(default=())
    describe_fixed: Callable[[Mapping[str, Any]], str] | None = None

    def parse_arguments(self, values: dict[str, Any]) -> A:
        """The task's arguments from keyword values, or :class:`InvalidInputError` naming each fix.

        Values that are already the arguments model pass through.
        """
        try:
            return self.arguments.model_validate(values)
        except ValidationError as e:
            for error in e.errors(include_url=False):
                cause = (error.get("ctx") or {}).get("error")
                if isinstance(cause, MississippiError):
                    raise cause from None  # our own typed error, raised by a validator
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'arguments'}: {error['msg']}"
                for error in e.errors(include_url=False)
            )
            raise InvalidInputError(f"invalid arguments for {self.name}: {problems}") from None


#: The built-in tasks, in the order surfaces list them: ``"module:SPEC"``.
BUILTIN_TASKS: tuple[str, ...] = (
    "mississippi_tools.tasks.ocr:SPEC",
    "mississippi_tools.tasks.chart:SPEC",
    "mississippi_tools.tasks.table:SPEC",
    "mississippi_tools.tasks.extract:SPEC",
    "mississippi_tools.tasks.extract_document:SPEC",
    "mississippi_tools.tasks.ask:SPEC",
    "mississippi_tools.tasks.html:SPEC",
)

_registry: dict[str, TaskSpec[Any, Any]] = {}
_aliases: dict[str, str] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for target in BUILTIN_TASKS:
        module, _, name = target.partition(":")
        _add(getattr(importlib.import_module(module), name))


def _add(spec: TaskSpec[Any, Any]) -> None:
    _registry[spec.name] = spec
    for alias in spec.aliases:
        _aliases[alias] = spec.name


def register_task(spec: TaskSpec[Any, Any]) -> None:
    """Add a task to the catalogue, after the built-in ones (replacing one of the same name)."""
    _load_builtins()
    _add(spec)


def unregister_task(name: str) -> None:
    """Remove a task added with :func:`register_task` (tests)."""
    spec = _registry.pop(name, None)
    for alias in spec.aliases if spec else ():
        _aliases.pop(alias, None)


def all_tasks() -> list[TaskSpec[Any, Any]]:
    """Every task, in catalogue order."""
    _load_builtins()
    return list(_registry.values())


def get_task(name: str) -> TaskSpec[Any, Any]:
    """The task called ``name`` (or a former name of it).

    Raises:
        InvalidInputError: No such task; the message lists the tasks.
    """
    _load_builtins()
    spec = _registry.get(name) or _registry.get(_aliases.get(name, ""))
    if spec is None:
        raise InvalidInputError(f"no task called {name!r}; the tasks are: {', '.join(_registry)}")
    return spec


def unsupported_reason(spec: TaskSpec[Any, Any], info: ModelInfo) -> str | None:
    """``None`` when the model described by ``info`` can do the task, else why it cannot.

    A task that names its families is done by those, whatever their tuning: its own plan asks
    them the way they were trained to be asked (WebSight's ``to_html`` is the image alone).
    Otherwise the family's dialect says.
    """
    if spec.families is not None:
        if info.family not in spec.families:
            return f"{spec.name} needs a model of the {'/'.join(sorted(spec.families))} family"
        return None
    return dialect_for(info.family).supports(spec.name, info)


def tasks_for(info: ModelInfo) -> list[TaskSpec[Any, Any]]:
    """The tasks the model can do, in catalogue order (what its surfaces offer)."""
    return [spec for spec in all_tasks() if unsupported_reason(spec, info) is None]


def tasks_for_model(model: str, family: str | None = None) -> list[TaskSpec[Any, Any]]:
    """The tasks a model will be able to do, known before it is loaded (what a server lists).

    Args:
        model: Hub id or checkpoint directory; its ``config.json`` (a local directory or a hub
            snapshot already cached) or else its name tells the family. Nothing is downloaded.
        family: The family, when known (a remote model whose name does not tell).
    """
    from mississippi_tools.models.base import ModelInfo
    from mississippi_tools.models.registry import family_of

    return tasks_for(ModelInfo(model_id=model, family=family or family_of(model)))


def supporting_models(spec: TaskSpec[Any, Any]) -> list[str]:
    """Published models (or families) whose instruction-tuned checkpoints can do the task."""
    from mississippi_tools.models.registry import KNOWN_MODELS

    names: list[str] = []
    for family, dialect in known_dialects().items():
        if family == "generic":
            continue
        if spec.families is not None and family not in spec.families:
            continue
        if dialect.tasks is not None and not {spec.name, BUILT_ON.get(spec.name)} & dialect.tasks:
            continue
        known = [hub_id for hub_id, f in KNOWN_MODELS.items() if f == family]
        names.extend(known or [f"{family} models"])
    return names


def check_supported(spec: TaskSpec[Any, Any], info: ModelInfo) -> None:
    """Raise :class:`UnsupportedTaskError` when the model cannot do the task."""
    reason = unsupported_reason(spec, info)
    if reason is None:
        return
    others = supporting_models(spec)
    suggestion = f"; models that can: {', '.join(others)}" if others else ""
    raise UnsupportedTaskError(
        f"{info.model_id} cannot do {spec.name}: {reason}{suggestion}",
        task=spec.name,
        model=info.model_id,
        supported_by=others,
    )


def task_names(specs: Sequence[TaskSpec[Any, Any]]) -> list[str]:
    """The names of ``specs``."""
    return [spec.name for spec in specs]
