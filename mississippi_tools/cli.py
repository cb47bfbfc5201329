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
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    pass

__all__ = ["ExitCode", "build_app", "main"]


from mississippi_tools.cli_common import (  # noqa: F401  (ExitCode and the helpers are the CLI's API)
    CLI_SPELLING,
    DEFAULT_MODEL,
    AllowUrlsOption,
    ApiKeyOption,
    DeviceOption,
    DtypeOption,
    ExitCode,
    FamilyOption,
    InputsArgument,
    JsonOption,
    MaxTilesOption,
    MaxTokensOption,
    ModelOption,
    QuantizationOption,
    RemoteOption,
    _open_vlm,
    describe_error,
    exit_code,
    exit_on_error,
    fail,
    open_vlm,
    run_settings,
    source_policy,
    task_options,
)


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
    quantization: QuantizationOption = None,
    remote: RemoteOption = None,
    api_key: ApiKeyOption = None,
    allow_urls: AllowUrlsOption = False,
) -> None:
    """Ask the model anything: mississippi-tools generate IMAGE "question"."""
    *images, prompt = args
    with exit_on_error():
        vlm = _open_vlm(
            model=model,
            device=device,
            dtype=dtype,
            quantization=quantization,
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
    with exit_on_error():
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
    quantization: QuantizationOption = None,
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
    """Serve the model over HTTP: an OpenAI-compatible API, task endpoints and a playground.

    Open http://127.0.0.1:8090/ in a browser to try every task without writing code.

    Every option can also be set as MISSISSIPPI_<NAME> (MISSISSIPPI_PORT, MISSISSIPPI_API_KEY ...).
    """
    from pydantic import ValidationError

    with exit_on_error():
        from mississippi_tools.server import InsecureBindError, ServerSettings
        from mississippi_tools.server import serve as run_server
        from mississippi_tools.server.settings import InvalidAPIKeyError

        values: dict[str, Any] = {
            "host": host,
            "port": port,
            "model": model,
            "device": device,
            "dtype": dtype,
            "quantization": quantization,
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
            fail(ExitCode.USAGE, str(e))
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
        Literal["tiny", "tiny-2b", "800m", "2b"],
        typer.Option(
            help="tiny (tests, trying the pipeline; the 800M shrunk), tiny-2b (the 2B shrunk: "
            "Mistral decoder, MSAC), or the full-size 800m or 2b (benchmarks)."
        ),
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    family: Annotated[
        str,
        typer.Option(
            help="Model family of the tiny checkpoint: h2ovl (the default model), idefics1, "
            "idefics2, idefics3, websight or florence2, each in its published on-disk layout."
        ),
    ] = "h2ovl",
) -> None:
    """Write a checkpoint in the original on-disk format, without downloading anything.

    Its weights are random: it loads and runs like the real model, but writes random words, so
    chart, table and extract rarely find an answer that parses (exit code 5). With --demo, the
    weights are set so that each task gets a fixed, well-formed answer whatever the image: a
    chart that plots, a table, an invoice for the README's schema, some text. With --size 800m
    or 2b, the full-size shape (1.6 or 4.3 GB) for benchmarks: compute does not depend on the
    weights.
    """
    from mississippi_tools.extras import require

    with exit_on_error():
        require("torch", "local", purpose="building checkpoints")
    from mississippi_tools import testing

    if demo and size != "tiny":
        fail(ExitCode.USAGE, "--demo builds a tiny checkpoint; leave out --size")
    if family not in testing.FAMILIES:
        fail(
            ExitCode.USAGE, f"--family must be one of {', '.join(testing.FAMILIES)}, not {family!r}"
        )
    if family != "h2ovl" and (demo or size != "tiny"):
        fail(ExitCode.USAGE, "--demo and --size build H2OVL checkpoints; leave out --family")
    if demo:
        path = testing.build_demo_checkpoint(directory, seed=seed)
        note = (
            "a demo checkpoint: whatever the image, each task gets a fixed, well-formed answer "
            "(a chart, a table, an invoice, some text), so every command works offline. Try: "
            f"mississippi-tools chart --model {directory} IMAGE --plot chart.png"
        )
    elif size in ("tiny", "tiny-2b"):
        options = {"preset": "2b"} if size == "tiny-2b" else {}
        path = testing.build_tiny_checkpoint(directory, family=family, seed=seed, **options)
        note = (
            "a tiny checkpoint with random weights: it runs the whole pipeline, but its words "
            "are random, so chart, table and extract rarely parse. For answers that do: "
            "mississippi-tools build-checkpoint DIR --demo"
        )
    else:
        config = testing.H2OVL_2B_CONFIG if size == "2b" else testing.H2OVL_800M_CONFIG
        path = testing.build_checkpoint(directory, config, seed=seed)
        note = (
            f"the full-size {size.upper()} shape with random weights, for benchmarks (compute "
            "does not depend on the weights); its answers are meaningless"
        )
    typer.echo(f"wrote {note}", err=True)
    typer.echo(str(path))


def info(
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    quantization: QuantizationOption = None,
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
        "quantization": quantization,
        "remote": remote,
        "api_key": api_key,
        "family": family,
    }
    from mississippi_tools.serving import describe_compute

    with exit_on_error():
        vlm = open_vlm(common, source_policy(common))
        with vlm:
            described = vlm.model_info
            tasks = [spec.name for spec in vlm.tasks]
            compute = describe_compute(vlm)
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
            **compute,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"model: {described.model_id} ({described.family})")
    typer.echo(f"context: {described.max_context} tokens")
    if compute:
        quantized = compute["quantization"]
        kernels = f" ({compute['kernel_engine']} kernels)" if quantized else ""
        typer.echo(
            f"compute: {compute['device']}, {compute['dtype']}, "
            f"quantization {quantized or 'none'}{kernels}"
        )
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
