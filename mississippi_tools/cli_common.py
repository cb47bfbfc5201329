"""What every ``mississippi-tools`` command shares: exit codes, common options, error handling.

The task commands (:mod:`mississippi_tools.cli_tasks`) and the other commands
(:mod:`mississippi_tools.cli`) both build on this module, so neither imports the other's
internals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from mississippi_tools import batch

if TYPE_CHECKING:
    from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "CLI_SPELLING",
    "DEFAULT_MODEL",
    "ExitCode",
    "describe_error",
    "exit_code",
    "exit_on_error",
    "fail",
    "open_vlm",
    "run_settings",
    "source_policy",
    "task_options",
]


class ExitCode(IntEnum):
    """Process exit codes of the CLI."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    BAD_INPUT = 3
    MODEL = 4
    NO_RESULT = 5
    REMOTE = 6
    MISSING_EXTRA = 7
    PARTIAL = 8
    PREVIEW = 9
    INTERRUPTED = 130


DEFAULT_MODEL = "h2oai/h2ovl-mississippi-800m"

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Hub id or local checkpoint directory.", envvar="MISSISSIPPI_MODEL"
    ),
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
DtypeOption = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")]
QuantizationOption = Annotated[
    str | None,
    typer.Option(
        help="int8: int8 linear layers on the CPU (faster, smaller; answers can change "
        "slightly). H2OVL only; off by default.",
        show_default=False,
    ),
]
RemoteOption = Annotated[
    str | None,
    typer.Option(
        "--remote",
        help="Use a running service (mississippi-tools serve, vLLM) instead of loading a model.",
        envvar="MISSISSIPPI_REMOTE_URL",
    ),
]
ApiKeyOption = Annotated[
    str | None, typer.Option(help="Bearer token for --remote.", envvar="MISSISSIPPI_API_KEY")
]
PagesOption = Annotated[
    str | None, typer.Option(help='Pages of PDFs and multi-page TIFFs, e.g. "2", "1-3,5" or "4-".')
]
MaxPagesOption = Annotated[
    int,
    typer.Option(help="Most pages read from one document (0: no limit).", min=0),
]
ModelOptionsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        help="A model option as NAME=VALUE (repeatable), e.g. use_msac=true; "
        "the model's options are listed by `mississippi-tools info`.",
    ),
]
TimeoutOption = Annotated[
    float | None, typer.Option(help="Seconds before each page's request fails.", min=0.001)
]
FamilyOption = Annotated[
    str | None,
    typer.Option(
        help="With --remote: the served model's family (h2ovl, idefics3 ...), when the server "
        "does not say and the name does not tell."
    ),
]
MaxTilesOption = Annotated[
    int | None,
    typer.Option(help="H2OVL models: most 448-px tiles per image (model default: 6).", min=1),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]
RegionOption = Annotated[
    str | None,
    typer.Option(
        help="Read only this part of each image or page: x0,y0,x1,y1 in pixels (a PDF page as "
        "rendered at 200 dpi), or fractions when all four are in 0..1, e.g. 0,0,0.5,0.5.",
    ),
]
RepetitionOption = Annotated[
    bool,
    typer.Option(
        "--repetition-check/--no-repetition-check",
        help="Stop an answer that loops, retry it once against loops, then report it "
        "(exit code 5); --no-repetition-check lets a loop run to --max-new-tokens.",
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Write one JSON line per page to this file as each finishes (the --json format), "
        "instead of printing results.",
        dir_okay=False,
    ),
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        help="With --out: keep the file's lines and read only the pages it has no result for "
        "(after an interruption).",
    ),
]
MaxTokensOption = Annotated[int, typer.Option(help="Most tokens to generate.", min=1)]
AllowUrlsOption = Annotated[bool, typer.Option(help="Allow http(s) image URLs.")]
InputsArgument = Annotated[
    list[str],
    typer.Argument(help="Images, PDFs or multi-page TIFFs (paths, or URLs with --allow-urls)."),
]


def fail(code: ExitCode, message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


#: How the CLI spells the options that fix errors (see ``mississippi_tools.errors.Remedy``).
CLI_SPELLING: dict[str, str] = {
    "memory_limit": "--max-memory {value}",
    "quantization": "pass --quantization {value}",
    "no_quantization": "leave out --quantization",
    "allow_urls": "pass --allow-urls",
    "pages": "pass --pages {value}",
    "max_new_tokens": "pass --max-new-tokens {value}",
    "timeout": "pass --timeout {value}",
    "max_tiles": "pass --max-tiles {value}",
    "max_pages": "pass --max-pages {value}",
    "region": "pass --region {value}",
    "max_bytes": "downscale or split the file",
    "url_max_bytes": "download the file and pass its path",
    "url_timeout": "download the file and pass its path",
    "allow_private_urls": "download the file and pass its path",
    "max_pixels": "downscale the image",
}


def describe_error(error: BaseException) -> str:
    """An error's message, with its remedy in the CLI's words."""
    from mississippi_tools.errors import MississippiError

    if isinstance(error, MississippiError):
        return error.describe(CLI_SPELLING)
    return str(error)


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Our errors become a one-line message and their exit code; anything else is a bug."""
    from mississippi_tools.errors import MississippiError

    try:
        yield
    except KeyboardInterrupt:
        fail(ExitCode.INTERRUPTED, "interrupted")
    except MississippiError as e:
        fail(exit_code(e), describe_error(e))


def exit_code(error: BaseException) -> ExitCode:
    """The exit code of an error (see :class:`ExitCode`)."""
    from mississippi_tools import errors

    if isinstance(error, errors.MissingDependencyError):
        return ExitCode.MISSING_EXTRA
    if isinstance(error, errors.InvalidInputError | errors.AccessDeniedError):
        return ExitCode.BAD_INPUT
    if isinstance(error, errors.ModelLoadError):
        return ExitCode.MODEL
    if isinstance(error, errors.ExtractionError):
        return ExitCode.NO_RESULT
    if isinstance(error, errors.RemoteError):
        return ExitCode.REMOTE
    if isinstance(error, errors.PreviewError):
        return ExitCode.PREVIEW
    return ExitCode.FAILURE


def task_options(default_max_new_tokens: int) -> list[tuple[str, Any, Any]]:
    """The options every task command takes besides its own, as ``(name, annotation, default)``."""
    return [
        ("pages", PagesOption, None),
        ("max_pages", MaxPagesOption, batch.DEFAULT_MAX_PAGES),
        ("max_tiles", MaxTilesOption, None),
        ("option", ModelOptionsOption, None),
        ("max_new_tokens", Annotated[int, typer.Option(help="Most tokens to generate.", min=1)],
         default_max_new_tokens),
        ("timeout", TimeoutOption, None),
        ("region", RegionOption, None),
        ("repetition_check", RepetitionOption, True),
        ("as_json", JsonOption, False),
        ("out", OutOption, None),
        ("resume", ResumeOption, False),
        ("model", ModelOption, DEFAULT_MODEL),
        ("device", DeviceOption, "auto"),
        ("dtype", DtypeOption, "auto"),
        ("quantization", QuantizationOption, None),
        ("remote", RemoteOption, None),
        ("api_key", ApiKeyOption, None),
        ("family", FamilyOption, None),
        ("allow_urls", AllowUrlsOption, False),
    ]  # fmt: skip


def run_settings(common: dict[str, Any]) -> dict[str, Any]:
    """Take the run settings out of a task command's common option values."""
    from mississippi_tools.errors import InvalidInputError

    options: dict[str, Any] = {}
    for item in common.pop("option") or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"--option takes NAME=VALUE, got {item!r}", param_hint="--option"
            )
        try:
            options[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            options[key.strip()] = text
    if options and not all(isinstance(k, str) for k in options):  # pragma: no cover
        raise InvalidInputError("option names must be text")
    return {
        "pages": common.pop("pages"),
        "max_pages": common.pop("max_pages"),
        "max_tiles": common.pop("max_tiles"),
        "options": options or None,
        "max_new_tokens": common.pop("max_new_tokens"),
        "timeout": common.pop("timeout"),
        "region": common.pop("region"),
        "repetition": common.pop("repetition_check"),
    }


def source_policy(common: dict[str, Any]) -> Any:
    """The source policy of a command: any local path, URLs only with ``--allow-urls``."""
    from mississippi_tools.sources import SourcePolicy

    return SourcePolicy(allow_urls=bool(common.get("allow_urls")))


def open_vlm(common: dict[str, Any], policy: Any) -> MississippiVLM:
    """Load the model (or connect to ``--remote``) with a command's model options."""
    from mississippi_tools.vlm import MississippiVLM

    if common.get("remote"):
        return MississippiVLM.connect(
            common["remote"],
            api_key=common.get("api_key"),
            family=common.get("family"),
            policy=policy,
        )
    return MississippiVLM.load(
        common["model"],
        device=common["device"],
        dtype=common["dtype"],
        quantization=common.get("quantization"),
        policy=policy,
    )


def _open_vlm(
    *,
    model: str,
    device: str,
    dtype: str,
    remote: str | None,
    api_key: str | None,
    allow_urls: bool = False,
    quantization: str | None = None,
) -> MississippiVLM:
    common = {
        "model": model,
        "device": device,
        "dtype": dtype,
        "quantization": quantization,
        "remote": remote,
        "api_key": api_key,
        "allow_urls": allow_urls,
    }
    return open_vlm(common, source_policy(common))
