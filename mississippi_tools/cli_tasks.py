"""The CLI's task commands, generated from the task catalogue.

Each task of :mod:`mississippi_tools.tasks.catalogue` becomes ``mississippi-tools <task> INPUTS``
(underscores written as dashes: ``read-chart``; former names stay as hidden aliases). Its options
are the task's own arguments (from its arguments model: names, types, defaults and help), the run
settings every task takes (``--pages``, ``--max-tiles``, ``--option``, ``--max-new-tokens``,
``--timeout``) and the model options (``--model`` or ``--remote`` ...). A task may add CLI-only
presentation options (``--csv``, ``--plot``) through a :class:`Presenter`.

What a user sees:

- inputs are checked before the model loads: a missing file or a refused path is reported at once,
  and when no input is readable the command stops without loading anything;
- each page's result (or error, naming the file and page) comes out as soon as it is done, in input
  order; ``--json`` writes one JSON object per line;
- a folder stands for the images and PDFs under it (:data:`FOLDER_SUFFIXES`, sorted, walked
  recursively); ``--out FILE.jsonl`` writes each page's JSON line to the file as soon as it is
  done (a progress bar shows on a terminal), and ``--resume`` keeps the file and reads only the
  pages it holds no result for, so an interrupted run over a folder picks up where it stopped;
- ``--region`` reads one part of every image or page; ``--no-repetition-check`` lets a looping
  answer run (by default it is stopped, retried once, then reported with exit code 5);
- the exit code says whether everything worked (0), some inputs failed (:attr:`ExitCode.PARTIAL`),
  or all failed (the code of the first error).
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import typer

from mississippi_tools import cli_common as cli

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from mississippi_tools.batch import PageOutcome
    from mississippi_tools.errors import MississippiError
    from mississippi_tools.tasks.catalogue import TaskSpec
    from mississippi_tools.vlm import MississippiVLM

__all__ = ["PRESENTERS", "Presenter", "add_task_commands", "cli_name"]


@dataclass(frozen=True)
class Presenter:
    """How the CLI shows one task's results, beyond the catalogue's text rendering.

    Attributes:
        options: CLI-only options, as ``(name, annotation, default)``.
        text: The printed text of a result, given the CLI-only option values (default: the
            catalogue's rendering).
        after: Called with each result, its outcome and the option values (writes files); may
            return a line for stderr.
    """

    options: tuple[tuple[str, Any, Any], ...] = ()
    text: Callable[[Any, dict[str, Any]], str] | None = None
    after: Callable[[Any, PageOutcome[Any], dict[str, Any]], str | None] | None = None


def _ocr_text(result: Any, extras: dict[str, Any]) -> str:
    boxed = any(line.box is not None for line in result.lines)
    if result.format != "lines" and not boxed:
        return str(result.text)

    def shown(line: Any) -> str:
        text = line.text if line.confidence is None else f"{line.confidence:.2f}\t{line.text}"
        if line.box is None:
            return text if not boxed else f"-\t{text}"
        return ",".join(f"{v:g}" for v in line.box.pixels) + f"\t{text}"

    return "\n".join(shown(line) for line in result.lines)


def _overlay(result: Any, outcome: PageOutcome[Any], extras: dict[str, Any]) -> str | None:
    from mississippi_tools.box_overlay import write_overlay

    target = extras.get("overlay")
    if target is None:
        return None
    path = _numbered(Path(target), outcome)
    write_overlay(outcome.source, result, path, page=outcome.page, policy=extras.get("policy"))
    boxed = sum(1 for line in result.lines if line.box is not None)
    return f"{boxed} box(es) of {outcome.where} drawn in {path}"


_OVERLAY_OPTION = (
    "overlay",
    Annotated[
        Path | None,
        typer.Option(
            help="Draw the line boxes on the page into this PNG (with --boxes), to check them "
            "at a glance; the N-th page goes to NAME-N.png."
        ),
    ],
    None,
)


def _table_text(result: Any, extras: dict[str, Any]) -> str:
    return str(result.to_csv() if extras.get("csv") else result.to_markdown())


def _numbered(path: Path, outcome: PageOutcome[Any]) -> Path:
    """``path`` for the first result, ``stem-N.suffix`` for the N-th."""
    if outcome.index == 0:
        return path
    return path.with_name(f"{path.stem}-{outcome.index + 1}{path.suffix}")


def _plot(result: Any, outcome: PageOutcome[Any], extras: dict[str, Any]) -> str | None:
    target = extras.get("plot")
    if target is None:
        return None
    path = _numbered(Path(target), outcome)
    result.plot(path)
    return f"plot of {outcome.where} written to {path}"


_CSV_OPTION = (
    "csv",
    Annotated[bool, typer.Option("--csv", help="Print the data as CSV.")],
    False,
)


def _html_files(result: Any, outcome: PageOutcome[Any], extras: dict[str, Any]) -> str | None:
    from mississippi_tools.tasks.html import write_html_outputs

    output, preview = extras.get("output"), extras.get("preview")
    notes = write_html_outputs(
        result,
        output=_numbered(Path(output), outcome) if output else None,
        preview=_numbered(Path(preview), outcome) if preview else None,
    )
    return "\n".join(notes) or None


#: Presentation extras of the built-in tasks (other tasks print the catalogue's rendering).
PRESENTERS: dict[str, Presenter] = {
    "ocr": Presenter(options=(_OVERLAY_OPTION,), text=_ocr_text, after=_overlay),
    "read_chart": Presenter(
        options=(
            _CSV_OPTION,
            (
                "plot",
                Annotated[
                    Path | None,
                    typer.Option(help="Re-draw the data into this PNG (needs the plot extra)."),
                ],
                None,
            ),
        ),
        text=_table_text,
        after=_plot,
    ),
    "read_table": Presenter(options=(_CSV_OPTION,), text=_table_text),
    "to_html": Presenter(
        options=(
            (
                "output",
                Annotated[
                    Path | None,
                    typer.Option("--output", "-o", help="Write the HTML to this file, as written."),
                ],
                None,
            ),
            (
                "preview",
                Annotated[
                    Path | None,
                    typer.Option(
                        help="Render the HTML to this PNG in headless Chromium (scripts and "
                        "network off), to hold beside the screenshot."
                    ),
                ],
                None,
            ),
        ),
        after=_html_files,
    ),
    "extract": Presenter(
        text=lambda result, extras: json.dumps(_jsonable(result.data), indent=2, ensure_ascii=False)
    ),
}


def cli_name(name: str) -> str:
    """A task or argument name as the CLI spells it (dashes for underscores)."""
    return name.replace("_", "-")


# ------------------------------------------------------------------------------------------------
# Options from the task's arguments model
# ------------------------------------------------------------------------------------------------

#: Other spellings of task arguments on the command line (short flags, former names).
_OPTION_ALIASES: dict[str, tuple[str, ...]] = {"question": ("-q",), "json_schema": ("--schema",)}


def _is_scalar(annotation: Any) -> bool:
    return annotation in (str, int, float, bool)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1 and len(members) < len(get_args(annotation)):
            return members[0], True
    return annotation, False


@dataclass(frozen=True)
class _ArgumentOption:
    """One task argument as a CLI option, and how its text becomes the argument's value."""

    parameter: inspect.Parameter
    field_name: str
    convert: Callable[[Any], Any] = field(default=lambda value: value)


def _argument_option(name: str, info: FieldInfo) -> _ArgumentOption:
    spelled = info.alias or name
    flag = f"--{cli_name(spelled)}"
    names = [flag, *_OPTION_ALIASES.get(spelled, ())]
    annotation, optional = _unwrap_optional(info.annotation)
    required = info.is_required()
    help_text = info.description or ""
    convert: Callable[[Any], Any] = lambda value: value  # noqa: E731
    option: Any
    if annotation is bool:
        option = typer.Option(f"{flag}/--no-{cli_name(spelled)}", help=help_text)
        python_type: Any = bool
    elif get_origin(annotation) is Literal or _is_scalar(annotation):
        option = typer.Option(*names, help=help_text)
        python_type = annotation
    else:  # objects and lists: JSON text, or a JSON file
        option = typer.Option(*names, help=f"{help_text} (JSON text, or a .json file)")
        python_type = str
        convert = _json_option(flag)
    if optional or not required:
        python_type = python_type | None
    default = inspect.Parameter.empty if required else _cli_default(info)
    parameter = inspect.Parameter(
        f"arg_{name}",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[python_type, option],
        default=default,
    )
    return _ArgumentOption(parameter, name, convert)


def _cli_default(info: FieldInfo) -> Any:
    default = info.get_default(call_default_factory=True)
    return default if default is None or _is_scalar(type(default)) else None


def _json_option(flag: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        from mississippi_tools.errors import InvalidInputError

        path = Path(value)
        if path.suffix.lower() == ".json" or (len(value) < 4096 and path.is_file()):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as e:
                raise InvalidInputError(f"{flag}: cannot read {value}: {e.strerror}") from None
            where = str(path)
        else:
            text, where = value, "the value"
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInputError(
                f"{flag}: {where} is not valid JSON ({e.msg} at line {e.lineno}, column "
                f"{e.colno}); pass a JSON object or a .json file"
            ) from None

    return convert


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------


def add_task_commands(app: typer.Typer, specs: Iterable[TaskSpec[Any, Any]]) -> None:
    """Add one command per task to ``app`` (aliases hidden)."""
    for spec in specs:
        command = _task_command(spec)
        app.command(cli_name(spec.name), help=spec.description)(command)
        for alias in spec.aliases:
            app.command(cli_name(alias), hidden=True, help=spec.description)(command)


def _task_command(spec: TaskSpec[Any, Any]) -> Callable[..., None]:
    presenter = PRESENTERS.get(spec.name, Presenter())
    arguments = [_argument_option(name, info) for name, info in spec.arguments.model_fields.items()]
    extras = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
        for name, a, d in presenter.options
    ]
    common = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
        for name, a, d in cli.task_options(spec.default_max_new_tokens)
    ]
    inputs = inspect.Parameter(
        "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=cli.InputsArgument
    )
    parameters = [inputs, *(a.parameter for a in arguments), *extras, *common]

    def command(**values: Any) -> None:
        task_args: dict[str, Any] = {}
        with cli.exit_on_error():
            for argument in arguments:
                value = argument.convert(values.pop(argument.parameter.name))
                if value is not None:
                    task_args[argument.field_name] = value
        extra_values = {p.name: values.pop(p.name) for p in extras}
        run_task(spec, values.pop("inputs"), task_args, extra_values, presenter, values)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = spec.description
    command.__name__ = spec.name
    return command


def run_task(
    spec: TaskSpec[Any, Any],
    inputs: list[str],
    task_args: dict[str, Any],
    extras: dict[str, Any],
    presenter: Presenter,
    common: dict[str, Any],
) -> None:
    """Check the inputs, load the model, and print (or write) each page's outcome as it comes."""
    as_json = bool(common.pop("as_json"))
    out: Path | None = common.pop("out")
    resume = bool(common.pop("resume"))
    settings = cli.run_settings(common)
    pages = settings.pop("pages")
    with cli.exit_on_error():
        from mississippi_tools.errors import InvalidInputError
        from mississippi_tools.regions import parse_region

        spec.parse_arguments(task_args)  # argument errors before anything is loaded
        parse_region(settings["region"])
        if resume and out is None:
            raise InvalidInputError(
                "--resume continues the file given with --out; pass --out FILE.jsonl"
            )
        policy = cli.source_policy(common)
        if extras.get("overlay") is not None and not task_args.get("boxes"):
            raise InvalidInputError("--overlay draws the line boxes; add --boxes to read them")
        extras = {**extras, "policy": policy}
        inputs = expand_folders(inputs)
        early = _unreadable_inputs(inputs, policy)
        readable = [source for source in inputs if source not in early]
        done = read_done(out) if resume and out is not None else set()
        groups, skipped = remaining_work(readable, done, pages, policy)
    sink = _Sink(out, append=resume, as_json=as_json)
    try:
        for source, error in early.items():
            sink.error(source, None, error)
        if resume and skipped:
            typer.echo(f"{skipped} page(s) already in {out}; reading the rest", err=True)
        if not groups:
            if early:
                raise typer.Exit(int(cli.exit_code(next(iter(early.values())))))
            if resume:
                typer.echo(f"nothing left to read: every page is in {out}", err=True)
            return
        failures: list[MississippiError] = list(early.values())
        with cli.exit_on_error():
            vlm = cli.open_vlm(common, policy)
        headed = len(inputs) > 1
        with vlm, cli.exit_on_error():
            bar = _progress(vlm, groups)
            try:
                for sources, selection in groups:
                    outcomes = vlm.iter_batch(
                        spec.name, sources, pages=selection, **settings, **task_args
                    )
                    for outcome in outcomes:
                        if bar is not None:
                            bar.update(1)
                        if outcome.error is not None:
                            failures.append(outcome.error)
                            sink.error(outcome.source, outcome.page, outcome.error)
                            continue
                        sink.result(
                            spec,
                            outcome,
                            presenter,
                            extras,
                            headed=headed or outcome.page is not None,
                        )
                        if presenter.after is not None:
                            note = presenter.after(outcome.result, outcome, extras)
                            if note:
                                typer.echo(note, err=True)
            finally:
                if bar is not None:
                    bar.close()
    finally:
        sink.close()
    if out is not None:
        typer.echo(
            f"{sink.results} result(s) and {len(failures)} error(s) written to {out}", err=True
        )
    if failures:
        code = cli.ExitCode.PARTIAL if sink.results or skipped else cli.exit_code(failures[0])
        raise typer.Exit(int(code))


#: File suffixes read from folders (case-insensitive); the formats images.py reads.
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".pdf")


def expand_folders(inputs: list[str]) -> list[str]:
    """Inputs with every folder replaced by the images and PDFs under it, sorted.

    Folders are walked recursively; hidden files and folders (a leading dot) are skipped.

    Raises:
        InvalidInputError: A folder holds no image or PDF.
    """
    from mississippi_tools.errors import InvalidInputError

    expanded: list[str] = []
    for given in inputs:
        folder = Path(given)
        if "://" in given or not folder.is_dir():
            expanded.append(given)
            continue
        found = sorted(
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in FOLDER_SUFFIXES
            and path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        )
        if not found:
            raise InvalidInputError(
                f"folder {given} holds no images or PDFs ({', '.join(FOLDER_SUFFIXES)})"
            )
        expanded.extend(str(path) for path in found)
    return expanded


def _key(source: str) -> str:
    """A source as resume compares it: a file's resolved path, anything else as given."""
    if "://" in source:
        return source
    try:
        return str(Path(source).resolve())
    except (OSError, RuntimeError):
        return source


def read_done(out: Path) -> set[tuple[str, int | None]]:
    """The (source, page) pairs the file already has a result for.

    A last line cut short by an interruption is removed from the file (it would glue onto the
    next line written); lines that are not JSON results (errors, damage) do not count.
    """
    if not out.exists():
        return set()
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with out.open("r+b") as handle:
            handle.truncate(end)
    done: set[tuple[str, int | None]] = set()
    for line in data[:end].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "result" in entry and isinstance(entry.get("source"), str):
            page = entry.get("page")
            done.add((_key(entry["source"]), page if isinstance(page, int) else None))
    return done


def remaining_work(
    sources: list[str],
    done: set[tuple[str, int | None]],
    pages: str | None,
    policy: Any,
) -> tuple[list[tuple[list[str], Any]], int]:
    """What is left to read: groups of ``(sources, page selection)``, and how many pages are done.

    Sources with nothing done keep the command's ``--pages`` and are read together; a document
    with some pages done is read for its other selected pages; a source whose result is done
    (an image, a whole-document result) is skipped. Groups keep the sources' order.
    """
    from mississippi_tools.errors import MississippiError
    from mississippi_tools.images import count_pages
    from mississippi_tools.pdf import parse_page_selection

    groups: list[tuple[list[str], Any]] = []
    fresh: list[str] = []
    skipped = 0
    for source in sources:
        key = _key(source)
        pages_done = {page for k, page in done if k == key}
        if not pages_done:
            fresh.append(source)
            continue
        if None in pages_done:
            skipped += 1
            continue
        try:
            count = count_pages(source, policy=policy)
            selected = parse_page_selection(pages or f"1-{count}", count, what=source)
        except MississippiError:
            fresh.append(source)  # the run itself reports what is wrong with it
            continue
        left = [page for page in selected if page not in pages_done]
        skipped += len(selected) - len(left)
        if left:
            if fresh:
                groups.append((fresh, pages))
                fresh = []
            groups.append(([source], left))
    if fresh:
        groups.append((fresh, pages))
    return groups, skipped


class _Sink:
    """Where outcomes go: stdout (text or ``--json`` lines), or one JSON line each in ``--out``."""

    def __init__(self, out: Path | None, *, append: bool, as_json: bool) -> None:
        self.as_json = as_json
        self.results = 0
        self.file = None
        if out is not None:
            try:
                self.file = out.open("a" if append else "w", encoding="utf-8")
            except OSError as e:
                cli.fail(cli.ExitCode.BAD_INPUT, f"--out: cannot write {out}: {e.strerror}")

    def _line(self, entry: dict[str, Any]) -> None:
        text = json.dumps(entry, ensure_ascii=False)
        if self.file is not None:
            self.file.write(text + "\n")
            self.file.flush()  # each page is on disk as soon as it is done
        else:
            typer.echo(text)

    def result(
        self,
        spec: TaskSpec[Any, Any],
        outcome: PageOutcome[Any],
        presenter: Presenter,
        extras: dict[str, Any],
        *,
        headed: bool,
    ) -> None:
        first = not self.results
        self.results += 1
        if self.file is not None or self.as_json:
            line = {
                "source": outcome.source,
                "page": outcome.page,
                "result": _jsonable(outcome.result),
            }
            self._line(line)
            return
        text = (
            presenter.text(outcome.result, extras)
            if presenter.text
            else spec.render(outcome.result)
        )
        if not first:
            typer.echo("")
        if headed:
            typer.echo(f"== {outcome.where}")
        typer.echo(text)

    def error(self, source: str, page: int | None, error: MississippiError) -> None:
        where = source if page is None else f"{source}, page {page}"
        message = cli.describe_error(error)
        if self.file is not None or self.as_json:
            self._line(
                {"source": source, "page": page, "error": {"code": error.code, "message": message}}
            )
        typer.echo(f"error: {where}: {message}", err=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _unreadable_inputs(inputs: list[str], policy: Any) -> dict[str, MississippiError]:
    """Inputs that name a file that is missing, unreadable or refused (no model needed)."""
    from mississippi_tools.batch import check_source
    from mississippi_tools.errors import MississippiError

    found: dict[str, MississippiError] = {}
    for source in inputs:
        try:
            check_source(source, policy)
        except MississippiError as e:
            found[source] = e
    return found


def _progress(vlm: MississippiVLM, groups: list[tuple[list[str], Any]]) -> Any:
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    try:
        total: int | None = sum(vlm.count_pages(sources, pages) for sources, pages in groups)
    except Exception:  # a count that fails is reported by the run itself
        total = None
    return tqdm(total=total, unit="page", desc="mississippi", leave=False)


def _jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
