"""``mississippi-tools``: read images from the command line, download models, serve, benchmark.

Exit codes: 0 success; 1 unexpected failure; 2 usage error; 3 bad input (unreadable image, page
out of range, refused path); 4 model not found or not loadable; 5 no valid result (extraction,
table or chart output that could not be parsed); 6 a remote service failed; 7 missing extra;
130 interrupted.

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

if TYPE_CHECKING:
    from mississippi_tools.vlm import MississippiVLM

__all__ = ["ExitCode", "app", "main"]


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
    INTERRUPTED = 130


app = typer.Typer(
    name="mississippi-tools",
    help="Read images for AI agents: OCR, charts, tables, JSON extraction and questions "
    "with H2OVL-Mississippi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rendering it with rich costs more than the whole 0.3 s start-up budget.
    rich_markup_mode=None,
)

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
    str | None, typer.Option(help='Pages of PDFs and multi-page TIFFs, e.g. "1-3,5".')
]
MaxTilesOption = Annotated[
    int | None, typer.Option(help="Most 448-px tiles per image (model default: 6).", min=1, max=40)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]
MaxTokensOption = Annotated[int, typer.Option(help="Most tokens to generate.", min=1)]
AllowUrlsOption = Annotated[bool, typer.Option(help="Allow http(s) image URLs.")]
InputsArgument = Annotated[
    list[str],
    typer.Argument(help="Images, PDFs or multi-page TIFFs (paths, or URLs with --allow-urls)."),
]


def _fail(code: ExitCode, message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(int(code))


@contextmanager
def _exit_on_error() -> Iterator[None]:
    """Our errors become a one-line message and their exit code; anything else is a bug."""
    from mississippi_tools.errors import MississippiError

    try:
        yield
    except KeyboardInterrupt:
        _fail(ExitCode.INTERRUPTED, "interrupted")
    except MississippiError as e:
        _fail(_exit_code(e), str(e))


def _exit_code(error: BaseException) -> ExitCode:
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
    return ExitCode.FAILURE


def _open_vlm(
    *,
    model: str,
    device: str,
    dtype: str,
    remote: str | None,
    api_key: str | None,
    allow_urls: bool = False,
) -> MississippiVLM:
    from mississippi_tools.sources import SourcePolicy
    from mississippi_tools.vlm import MississippiVLM

    policy = SourcePolicy(allow_urls=allow_urls)
    if remote:
        return MississippiVLM.connect(remote, api_key=api_key, policy=policy)
    return MississippiVLM.load(model, device=device, dtype=dtype, policy=policy)


def _print_results(results: list[Any], *, as_json: bool, render: Any) -> None:
    from pydantic import BaseModel

    if as_json:
        payload = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in results]
        typer.echo(
            json.dumps(payload[0] if len(payload) == 1 else payload, indent=2, ensure_ascii=False)
        )
        return
    for i, result in enumerate(results):
        meta = getattr(result, "meta", None)
        if len(results) > 1 and meta is not None:
            where = meta.source or "input"
            typer.echo(f"== {where}" + (f" (page {meta.page})" if meta.page else ""))
        typer.echo(render(result))
        if i < len(results) - 1:
            typer.echo("")


def _run_task(
    task: str,
    inputs: list[str],
    *,
    model: str,
    device: str,
    dtype: str,
    remote: str | None,
    api_key: str | None,
    allow_urls: bool,
    pages: str | None,
    as_json: bool,
    render: Any,
    **task_kwargs: Any,
) -> list[Any]:
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
            batch = getattr(vlm, f"{task}_batch")
            results = batch(inputs, pages=pages, progress=sys.stderr.isatty(), **task_kwargs)
    _print_results(results, as_json=as_json, render=render)
    return list(results)


@app.command()
def ocr(
    inputs: InputsArgument,
    format: Annotated[str, typer.Option(help="text, markdown or lines.")] = "text",
    confidence: Annotated[
        bool, typer.Option(help="Per-line confidence (with --json or lines).")
    ] = False,
    pages: PagesOption = None,
    max_tiles: MaxTilesOption = None,
    max_new_tokens: MaxTokensOption = 1024,
    as_json: JsonOption = False,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Read the text of images and PDF pages."""
    if format not in ("text", "markdown", "lines"):
        _fail(ExitCode.USAGE, f"--format must be text, markdown or lines, not {format!r}")

    def render(result: Any) -> str:
        if format == "lines":
            return "\n".join(
                line.text if line.confidence is None else f"{line.confidence:.2f}\t{line.text}"
                for line in result.lines
            )
        return str(result.text)

    _run_task(
        "ocr", inputs, model=model, device=device, dtype=dtype, remote=remote, api_key=api_key,
        allow_urls=allow_urls, pages=pages, as_json=as_json, render=render, format=format,
        confidence=confidence, max_tiles=max_tiles, max_new_tokens=max_new_tokens,
    )  # fmt: skip


@app.command()
def chart(
    inputs: InputsArgument,
    plot: Annotated[
        Path | None, typer.Option(help="Re-draw the extracted data into this PNG (plot extra).")
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print the data as CSV.")] = False,
    pages: PagesOption = None,
    max_tiles: MaxTilesOption = None,
    max_new_tokens: MaxTokensOption = 1024,
    as_json: JsonOption = False,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Read charts: title, type, axes and data points."""
    results = _run_task(
        "read_chart", inputs, model=model, device=device, dtype=dtype, remote=remote,
        api_key=api_key, allow_urls=allow_urls, pages=pages, as_json=as_json,
        render=lambda r: r.to_csv() if csv else r.to_markdown(), max_tiles=max_tiles,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    if plot is not None:
        for i, result in enumerate(results):
            target = (
                plot if len(results) == 1 else plot.with_name(f"{plot.stem}-{i + 1}{plot.suffix}")
            )
            with _exit_on_error():
                result.plot(target)
            typer.echo(f"plot written to {target}", err=True)


@app.command()
def table(
    inputs: InputsArgument,
    csv: Annotated[bool, typer.Option("--csv", help="Print the table as CSV.")] = False,
    pages: PagesOption = None,
    max_tiles: MaxTilesOption = None,
    max_new_tokens: MaxTokensOption = 1024,
    as_json: JsonOption = False,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Read tables: columns and rows."""
    _run_task(
        "read_table", inputs, model=model, device=device, dtype=dtype, remote=remote,
        api_key=api_key, allow_urls=allow_urls, pages=pages, as_json=as_json,
        render=lambda r: r.to_csv() if csv else r.to_markdown(), max_tiles=max_tiles,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip


@app.command()
def extract(
    inputs: InputsArgument,
    schema: Annotated[
        Path,
        typer.Option(
            help='JSON file: a JSON Schema, or a template like {"name": "", "total": 0}.',
            exists=True,
            dir_okay=False,
        ),
    ],
    instructions: Annotated[str | None, typer.Option(help="Extra guidance for the model.")] = None,
    confidence: Annotated[bool, typer.Option(help="Per-field confidence (with --json).")] = False,
    pages: PagesOption = None,
    max_tiles: MaxTilesOption = None,
    max_new_tokens: MaxTokensOption = 1024,
    as_json: JsonOption = True,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Extract JSON valid under a schema (always valid with the local engine)."""
    try:
        loaded_schema = json.loads(schema.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        _fail(ExitCode.BAD_INPUT, f"cannot read the schema {schema}: {e}")
    if not isinstance(loaded_schema, dict):
        _fail(ExitCode.BAD_INPUT, f"the schema in {schema} must be a JSON object")

    def payload(result: Any) -> Any:
        data = result.data
        data = data.model_dump(mode="json") if hasattr(data, "model_dump") else data
        if not as_json:
            return json.dumps(data, indent=2, ensure_ascii=False)
        body = {"data": data, "meta": result.meta.model_dump(mode="json")}
        if result.confidence is not None:
            body["confidence"] = result.confidence
        return body

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
            results = vlm.extract_batch(
                inputs, loaded_schema, pages=pages, progress=sys.stderr.isatty(),
                instructions=instructions, confidence=confidence, max_tiles=max_tiles,
                max_new_tokens=max_new_tokens,
            )  # fmt: skip
    payloads = [payload(r) for r in results]
    if as_json:
        typer.echo(
            json.dumps(
                payloads[0] if len(payloads) == 1 else payloads, indent=2, ensure_ascii=False
            )
        )
    else:
        typer.echo("\n\n".join(payloads))


@app.command()
def ask(
    inputs: InputsArgument,
    question: Annotated[str, typer.Option("--question", "-q", help="The question.")],
    pages: PagesOption = None,
    max_tiles: MaxTilesOption = None,
    max_new_tokens: MaxTokensOption = 512,
    as_json: JsonOption = False,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Ask a question about each image or page."""
    _run_task(
        "ask", inputs, model=model, device=device, dtype=dtype, remote=remote, api_key=api_key,
        allow_urls=allow_urls, pages=pages, as_json=as_json, render=lambda r: r.text,
        question=question, max_tiles=max_tiles, max_new_tokens=max_new_tokens,
    )  # fmt: skip


@app.command()
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


@app.command()
def download(
    model: Annotated[str, typer.Argument(help="Hub id to download.")] = DEFAULT_MODEL,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Hub cache directory.")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="Also fetch pickled .bin weights.")] = False,
) -> None:
    """Download a model into the hub cache (with a progress bar) for offline use."""
    with _exit_on_error():
        from mississippi_tools._deps import require

        require("huggingface_hub", "local", purpose="downloading models")
        from mississippi_tools.models.hub import resolve_model_dir

        path = resolve_model_dir(
            model, revision=revision, cache_dir=cache_dir, allow_pickle=allow_pickle
        )
    typer.echo(str(path))


@app.command()
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
        }
        try:
            settings = ServerSettings(**{k: v for k, v in values.items() if v is not None})
            settings.check_bind()
        except (ValidationError, InsecureBindError, InvalidAPIKeyError) as e:
            _fail(ExitCode.USAGE, str(e))
        run_server(settings)


@app.command("build-checkpoint")
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
) -> None:
    """Write a checkpoint in the original on-disk format, without downloading anything.

    Its weights are random: it loads and runs like the real model, but writes random words, so
    chart, table and extract rarely find an answer that parses (exit code 5). With --demo, the
    weights are set so that each task gets a fixed, well-formed answer whatever the image: a
    chart that plots, a table, an invoice for the README's schema, some text. With --size 800m,
    the full-size shape (1.6 GB) for benchmarks: compute does not depend on the weights.
    """
    from mississippi_tools._deps import require

    with _exit_on_error():
        require("torch", "local", purpose="building checkpoints")
    from mississippi_tools import testing

    if demo and size != "tiny":
        _fail(ExitCode.USAGE, "--demo builds a tiny checkpoint; leave out --size")
    if demo:
        path = testing.build_demo_checkpoint(directory, seed=seed)
        note = (
            "a demo checkpoint: whatever the image, each task gets a fixed, well-formed answer "
            "(a chart, a table, an invoice, some text), so every command works offline. Try: "
            f"mississippi-tools chart --model {directory} IMAGE --plot chart.png"
        )
    elif size == "tiny":
        path = testing.build_tiny_checkpoint(directory, seed=seed)
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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
