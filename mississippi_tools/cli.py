"""``mississippi-tools``: read images from the command line, download models, serve, benchmark.

Exit codes: 0 success; 1 unexpected failure; 2 usage error; 3 bad input (unreadable image, page
out of range, refused path); 4 model not found or not loadable; 5 no valid result (extraction,
table or chart output that could not be parsed, or an answer that looped even on its retry);
6 a remote service failed; 7 missing extra; 8 some inputs failed (each named on stderr) while the
others' results were printed; 9 an HTML preview could not be rendered (Chromium missing or
failing); 130 interrupted. When every input fails, the code is the first failure's.

Heavy modules are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

from mississippi_tools import batch

if TYPE_CHECKING:
    from mississippi_tools.vlm import MississippiVLM

__all__ = ["ExitCode", "build_app", "main"]


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


def _fail(code: ExitCode, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


#: How the CLI spells the options that fix errors (see ``mississippi_tools.errors.Remedy``).
CLI_SPELLING: dict[str, str] = {
    "max_memory": "--max-memory {value}",
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
        _fail(ExitCode.INTERRUPTED, "interrupted")
    except MississippiError as e:
        _fail(exit_code(e), describe_error(e))


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


# The pre-renovation private names, for commands that still use them.
_exit_on_error = exit_on_error
_exit_code = exit_code


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
        common["model"], device=common["device"], dtype=common["dtype"], policy=policy
    )


def _open_vlm(
    *,
    model: str,
    device: str,
    dtype: str,
    remote: str | None,
    api_key: str | None,
    allow_urls: bool = False,
) -> MississippiVLM:
    common = {
        "model": model,
        "device": device,
        "dtype": dtype,
        "remote": remote,
        "api_key": api_key,
        "allow_urls": allow_urls,
    }
    return open_vlm(common, source_policy(common))


def generate(
    args: Annotated[
        list[str],
        typer.Argument(
            help="Zero or more images, then the prompt (<image> marks where images go).",
            metavar="[IMAGE]... PROMPT",
        ),
    ],
    max_new_tokens: MaxTokensOption = 512,
    max_tiles: MaxTilesOption = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy decoding.")] = 0.0,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated.")] = True,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Ask the model anything: mississippi-tools generate IMAGE "question"."""
    *images, prompt = args
    with _exit_on_error():
        vlm = _open_vlm(
            model=model,
            device=device,
            dtype=dtype,
            remote=remote,
            api_key=api_key,
            allow_urls=allow_urls,
        )
        with vlm:
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "max_tiles": max_tiles,
                "temperature": temperature,
            }
            if stream:
                for delta in vlm.stream(images or None, prompt, **kwargs):
                    typer.echo(delta, nl=False)
                typer.echo("")
            else:
                typer.echo(vlm.generate(images or None, prompt, **kwargs).text)


def download(
    model: Annotated[str, typer.Argument(help="Hub id to download.")] = DEFAULT_MODEL,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Hub cache directory.")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Also fetch pickled .bin weights.")] = False,
) -> None:
    """Download a model into the hub cache (with a progress bar) for offline use."""
    with _exit_on_error():
        from mississippi_tools.extras import require

        require("huggingface_hub", "local", purpose="downloading models")
        from mississippi_tools.models.hub import resolve_model_dir

        path = resolve_model_dir(
            model, revision=revision, cache_dir=cache_dir, allow_pickle=allow_pickle
        )
    typer.echo(str(path))


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default 127.0.0.1; others need --api-key)."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8090).", min=0, max=65535)] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Hub id or local checkpoint directory."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Bearer token clients must send (or MISSISSIPPI_API_KEY).", show_default=False
        ),
    ] = None,
    allow_urls: Annotated[
        bool | None, typer.Option("--allow-urls/--no-allow-urls", help="Fetch http(s) image URLs.")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="Model name in /v1/models (default: the model's id).")
    ] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Requests decoding together (default 8).", min=1)
    ] = None,
    max_queue_size: Annotated[
        int | None, typer.Option(help="Requests waiting before 429s (default 64).", min=0)
    ] = None,
    request_timeout: Annotated[
        float | None, typer.Option(help="Seconds per generation before 504 (default 300).")
    ] = None,
    feature_cache_mb: Annotated[
        float | None, typer.Option(help="Vision-feature cache budget in MiB (default 512).")
    ] = None,
    max_body_mb: Annotated[
        float | None, typer.Option(help="Largest request body in MiB (default 32).")
    ] = None,
    shutdown_grace: Annotated[
        float | None,
        typer.Option(help="Seconds in-flight requests get on shutdown (default 30)."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="uvicorn log level.")] = None,
    jobs_dir: Annotated[
        Path | None,
        typer.Option(help="Where /v1/jobs keeps jobs (default: the user cache directory)."),
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option(help="Jobs kept; the oldest finished go (default 100).", min=1)
    ] = None,
    max_active_jobs: Annotated[
        int | None,
        typer.Option(help="Jobs queued or running before 429s (default 8).", min=1),
    ] = None,
    job_max_pages: Annotated[
        int | None, typer.Option(help="Most pages one job reads (default 1000; 0: no limit).")
    ] = None,
    idle_unload: Annotated[
        float | None,
        typer.Option(
            help="Unload the model after SECONDS without a request; the next one reloads it.",
            metavar="SECONDS",
        ),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Refuse to load a model estimated above SIZE (8GB, 512MiB, bytes).",
            metavar="SIZE",
        ),
    ] = None,
) -> None:
    """Serve the model over HTTP: an OpenAI-compatible API and task endpoints.

    Every option can also be set as MISSISSIPPI_<NAME> (MISSISSIPPI_PORT, MISSISSIPPI_API_KEY ...).
    """
    from pydantic import ValidationError

    with _exit_on_error():
        from mississippi_tools.server import InsecureBindError, ServerSettings
        from mississippi_tools.server import serve as run_server
        from mississippi_tools.server.settings import InvalidAPIKeyError

        values: dict[str, Any] = {
            "host": host,
            "port": port,
            "model": model,
            "device": device,
            "dtype": dtype,
            "api_key": api_key,
            "allow_urls": allow_urls,
            "served_model_name": served_model_name,
            "max_batch_size": max_batch_size,
            "max_queue_size": max_queue_size,
            "request_timeout": request_timeout,
            "feature_cache_mb": feature_cache_mb,
            "max_body_bytes": None if max_body_mb is None else int(max_body_mb * 1024 * 1024),
            "shutdown_grace": shutdown_grace,
            "log_level": log_level,
            "jobs_dir": jobs_dir,
            "max_jobs": max_jobs,
            "max_active_jobs": max_active_jobs,
            "job_max_pages": job_max_pages,
            "idle_unload": idle_unload,
            "max_memory": max_memory,
        }
        try:
            settings = ServerSettings(**{k: v for k, v in values.items() if v is not None})
            settings.check_bind()
        except (ValidationError, InsecureBindError, InvalidAPIKeyError) as e:
            _fail(ExitCode.USAGE, str(e))
        run_server(settings)


def build_checkpoint(
    directory: Annotated[
        Path, typer.Argument(help="Where to write the checkpoint.", metavar="DIRECTORY")
    ],
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Set the weights so that every task gets a fixed, well-formed answer "
            "(whatever the image): try every command offline.",
        ),
    ] = False,
    size: Annotated[
        Literal["tiny", "800m"],
        typer.Option(help="tiny (tests, trying the pipeline) or 800m (benchmarks)."),
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    family: Annotated[
        str,
        typer.Option(
            help="Model family of the tiny checkpoint: h2ovl (the default model), idefics2, "
            "idefics3 or websight, each in its published on-disk layout."
        ),
    ] = "h2ovl",
) -> None:
    """Write a checkpoint in the original on-disk format, without downloading anything.

    Its weights are random: it loads and runs like the real model, but writes random words, so
    chart, table and extract rarely find an answer that parses (exit code 5). With --demo, the
    weights are set so that each task gets a fixed, well-formed answer whatever the image: a
    chart that plots, a table, an invoice for the README's schema, some text. With --size 800m,
    the full-size shape (1.6 GB) for benchmarks: compute does not depend on the weights.
    """
    from mississippi_tools.extras import require

    with _exit_on_error():
        require("torch", "local", purpose="building checkpoints")
    from mississippi_tools import testing

    if demo and size != "tiny":
        _fail(ExitCode.USAGE, "--demo builds a tiny checkpoint; leave out --size")
    if family not in testing.FAMILIES:
        _fail(
            ExitCode.USAGE, f"--family must be one of {', '.join(testing.FAMILIES)}, not {family!r}"
        )
    if family != "h2ovl" and (demo or size != "tiny"):
        _fail(ExitCode.USAGE, "--demo and --size build H2OVL checkpoints; leave out --family")
    if demo:
        path = testing.build_demo_checkpoint(directory, seed=seed)
        note = (
            "a demo checkpoint: whatever the image, each task gets a fixed, well-formed answer "
            "(a chart, a table, an invoice, some text), so every command works offline. Try: "
            f"mississippi-tools chart --model {directory} IMAGE --plot chart.png"
        )
    elif size == "tiny":
        path = testing.build_tiny_checkpoint(directory, family=family, seed=seed)
        note = (
            "a tiny checkpoint with random weights: it runs the whole pipeline, but its words "
            "are random, so chart, table and extract rarely parse. For answers that do: "
            "mississippi-tools build-checkpoint DIR --demo"
        )
    else:
        path = testing.build_checkpoint(directory, testing.H2OVL_800M_CONFIG, seed=seed)
        note = (
            "the full-size 800M shape with random weights, for benchmarks (compute does not "
            "depend on the weights); its answers are meaningless"
        )
    typer.echo(f"wrote {note}", err=True)
    typer.echo(str(path))


def info(
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    family: FamilyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Say what a model is: its family, context, options and the tasks it can do."""
    common = {
        "model": model,
        "device": device,
        "dtype": dtype,
        "remote": remote,
        "api_key": api_key,
        "family": family,
    }
    with exit_on_error():
        vlm = open_vlm(common, source_policy(common))
        with vlm:
            described = vlm.model_info
            tasks = [spec.name for spec in vlm.tasks]
    options = [
        {"name": o.name, "type": o.kind.__name__, "description": o.description}
        for o in described.options
    ]
    if as_json:
        payload = {
            "model": described.model_id,
            "family": described.family,
            "max_context": described.max_context,
            "options": options,
            "tasks": tasks,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"model: {described.model_id} ({described.family})")
    typer.echo(f"context: {described.max_context} tokens")
    typer.echo(f"tasks: {', '.join(tasks) or 'none'}")
    typer.echo("options:" if options else "options: none")
    for option in options:
        typer.echo(f"  {option['name']} ({option['type']}): {option['description']}")


def build_app() -> typer.Typer:
    """The CLI: one command per task of the catalogue, then the service and model commands.

    Built from the catalogue each time, so tasks registered before the call appear too.
    """
    from mississippi_tools.cli_tasks import add_task_commands
    from mississippi_tools.tasks.catalogue import all_tasks

    cli = typer.Typer(
        name="mississippi-tools",
        help="Read images for AI agents: OCR, charts, tables, JSON extraction and questions, "
        "with H2OVL-Mississippi and other vision-language models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain click help: rendering it with rich costs more than the whole start-up budget.
        rich_markup_mode=None,
    )
    add_task_commands(cli, all_tasks())
    cli.command()(generate)
    cli.command()(info)
    cli.command()(serve)
    cli.command()(download)
    cli.command("build-checkpoint")(build_checkpoint)
    return cli


def __getattr__(name: str) -> Any:
    """``app`` is built on first use (importing the task catalogue only then)."""
    if name == "app":
        globals()["app"] = value = build_app()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    try:
        build_app()()
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
