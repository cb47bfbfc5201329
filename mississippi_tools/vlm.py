"""``MississippiVLM``: the one object agents, readers, servers and the CLI talk to.

It holds an engine (the model in this process, or a remote service) and turns task calls into
engine requests: ``ocr``, ``read_chart``, ``read_table``, ``extract``, ``ask``, ``to_html``, and
the raw ``generate``. Each task has an async twin (``aocr`` ...) and batch forms over many images
and PDF pages (``ocr_batch`` ...), all sharing one implementation per task.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from mississippi_tools.batch import (
    DEFAULT_MAX_PAGES,
    DocumentItem,
    NamedSource,
    PageOutcome,
    PageSelection,
    aiter_outcomes,
    iter_documents,
    iter_outcomes,
    iter_source_pages,
    load_document,
    page_selection,
)
from mississippi_tools.engine.base import (
    DEFAULT_MAX_NEW_TOKENS,
    Engine,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
)
from mississippi_tools.engine.repetition import DEFAULT_REPETITION_CHECK, RepetitionCheck
from mississippi_tools.errors import InvalidInputError, MississippiError
from mississippi_tools.images import (
    ImageInput,
    ImageLimits,
    LoadedImage,
    count_pages,
    load_image,
)
from mississippi_tools.regions import Region, RegionInput, crop_image, parse_region
from mississippi_tools.sources import SourcePolicy
from mississippi_tools.task_methods import RunOptions, TaskImages, TaskMethods
from mississippi_tools.tasks.base import RunSettings, TaskContext, TaskPlan, arun_plan, run_plan
from mississippi_tools.tasks.catalogue import (
    TaskSpec,
    all_tasks,
    check_supported,
    get_task,
    tasks_for,
)

if TYPE_CHECKING:
    import torch

    from mississippi_tools.engine.local import LocalEngineConfig
    from mississippi_tools.models.base import Backend, ModelInfo

__all__ = ["Generation", "MississippiVLM", "PageSelection", "RunOptions"]


@dataclass(frozen=True)
class _Run:
    """The run settings of one task call, as given."""

    max_tiles: int | None = None
    max_new_tokens: int | None = None
    timeout: float | None = None
    options: Mapping[str, Any] | None = None
    region_input: RegionInput | None = None
    repetition: RepetitionCheck | bool | None = True
    max_pages: int = DEFAULT_MAX_PAGES

    @functools.cached_property
    def region(self) -> Region | None:
        """The region, checked."""
        return parse_region(self.region_input)

    def __post_init__(self) -> None:
        parse_region(self.region_input)  # a bad region fails before any image is read


def _repetition_check(value: RepetitionCheck | bool | None) -> RepetitionCheck | None:
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_REPETITION_CHECK
    if isinstance(value, RepetitionCheck):
        return value
    raise InvalidInputError(
        f"repetition must be True, False, None or a RepetitionCheck, got {value!r}"
    )


@dataclass(frozen=True)
class Generation:
    """The raw answer of :meth:`MississippiVLM.generate`.

    Attributes:
        text: The answer (stripped, special tokens skipped).
        token_ids: The new tokens.
        tiles: Tiles over all images.
        timings: Seconds per stage.
        output: Everything the engine reported.
    """

    text: str
    token_ids: list[int]
    tiles: int
    timings: dict[str, float]
    output: GenerationOutput

    def __str__(self) -> str:
        return self.text


class MississippiVLM(TaskMethods):
    """Read images for agents: OCR, charts, tables, schema-valid JSON and questions.

    Setup:
        .. code-block:: bash

            pip install "mississippi-tools[local,pdf]"

    Instantiate:
        .. code-block:: python

            from mississippi_tools import MississippiVLM

            vlm = MississippiVLM.load("h2oai/h2ovl-mississippi-800m")      # in this process
            vlm = MississippiVLM.connect("http://127.0.0.1:8090")           # a running service

    Invoke:
        .. code-block:: python

            vlm.ocr("scan.png").text
            vlm.read_chart("chart.png").to_markdown()
            vlm.extract("form.png", {"name": "", "date_of_birth": "", "address": ""})
            vlm.ask("photo.jpg", "What is written on the sign?").text
            vlm.ocr_batch(["a.pdf", "b.png"], pages="1-3", progress=True)

    Async:
        .. code-block:: python

            result = await vlm.aocr("scan.png")

    Args:
        engine: The engine that runs the model.
        policy: Which paths and URLs image arguments may name (default: any path, no URLs).
        limits: Byte and pixel limits for images.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        policy: SourcePolicy | None = None,
        limits: ImageLimits | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy or SourcePolicy()
        self.limits = limits or ImageLimits()
        self._task_context: TaskContext | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str | Path = "h2oai/h2ovl-mississippi-800m",
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        attention: str = "auto",
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        allow_pickle: bool = False,
        progress: bool = True,
        engine_config: LocalEngineConfig | None = None,
        policy: SourcePolicy | None = None,
        limits: ImageLimits | None = None,
        max_memory: Mapping[str | int, int | str] | None = None,
        offload_dir: str | Path | None = None,
        memory_limit: int | str | None = None,
        quantization: Literal["int8"] | None = None,
    ) -> MississippiVLM:
        """Load a model into this process.

        Args:
            model: A hub id or a local checkpoint directory in the original format.
            device: ``"auto"`` (CUDA, else Apple's MPS, when available), ``"cpu"``, ``"cuda"``,
                ``"cuda:1"``, ``"mps"`` ...
            dtype: ``"auto"`` (bfloat16 on GPUs and on CPUs with native bfloat16, else float32),
                ``"float32"``, ``"bfloat16"`` or ``"float16"``.
            attention: ``"auto"`` (flash-attention 2 on CUDA when installed, else SDPA),
                ``"sdpa"`` or ``"eager"`` (the reference path).
            revision: Hub revision (branch, tag or commit).
            cache_dir: Hub cache directory.
            local_files_only: Never download (also set by ``HF_HUB_OFFLINE=1``).
            allow_pickle: Accept pickled ``.bin`` weights (read with ``weights_only=True``).
            progress: Show download progress bars.
            engine_config: Batching, queue and cache settings.
            policy: Which paths and URLs image arguments may name.
            limits: Byte and pixel limits for images.
            max_memory: Per-device budget for a model larger than one device
                (``{0: "20GiB", "cpu": "30GiB"}``): what does not fit goes to the next device,
                and past the CPU to ``offload_dir`` on disk. Idefics2/Idefics3 only; needs
                ``pip install "mississippi-tools[gpu]"`` (accelerate).
            offload_dir: Where weights placed on disk are kept (a temporary folder if not given).
            memory_limit: A memory ceiling (bytes, or ``"8GB"``, ``"512MiB"``): refuse to load a
                model whose weights at the load dtype plus the engine's cache budgets are
                estimated above it.
            quantization: ``"int8"``: the linear layers of the vision encoder, projector and
                decoder run as int8 on the CPU (per-channel int8 weights, activations
                quantized per call; PyTorch's FBGEMM kernels), the rest in bfloat16 where
                the CPU computes it natively, else float32 (the vision encoder stays
                bfloat16 there too). Decodes about twice as fast on CPUs; answers can change
                slightly. H2OVL only; ``dtype`` stays ``"auto"`` or ``"float32"``.

        Raises:
            MissingDependencyError: The ``local`` extra is not installed.
            ModelTooLargeError: The estimated footprint exceeds ``memory_limit``.
            ModelNotFoundError: No weights locally and no way to fetch them.
            ModelLoadError: The checkpoint is unreadable or does not match its config.
        """
        from mississippi_tools.extras import require

        require("torch", "local", purpose="running the model in this process")
        require("transformers", "local", purpose="running the model in this process")
        from mississippi_tools.engine.config import LocalEngineConfig
        from mississippi_tools.engine.local import LocalEngine
        from mississippi_tools.models.footprint import parse_bytes
        from mississippi_tools.models.registry import load_backend

        caches = engine_config or LocalEngineConfig()
        backend = load_backend(
            model,
            device=device,
            dtype=dtype,
            attention=attention,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_pickle=allow_pickle,
            progress=progress,
            max_memory=max_memory,
            offload_dir=offload_dir,
            memory_limit=None if memory_limit is None else parse_bytes(memory_limit),
            reserved_memory=int((caches.feature_cache_mb + caches.prefix_cache_mb) * 2**20),
            quantization=quantization,
        )
        return cls(LocalEngine(backend, engine_config), policy=policy, limits=limits)

    @classmethod
    def from_backend(
        cls,
        backend: Backend,
        *,
        engine_config: LocalEngineConfig | None = None,
        policy: SourcePolicy | None = None,
        limits: ImageLimits | None = None,
    ) -> MississippiVLM:
        """Wrap an already loaded backend in a new local engine (tests, embedding)."""
        from mississippi_tools.engine.local import LocalEngine

        return cls(LocalEngine(backend, engine_config), policy=policy, limits=limits)

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 3,
        family: str | None = None,
        policy: SourcePolicy | None = None,
        limits: ImageLimits | None = None,
    ) -> MississippiVLM:
        """Use a running service: ``mississippi-tools serve``, vLLM, or any OpenAI-compatible one.

        Args:
            base_url: The service's address, e.g. ``http://127.0.0.1:8090`` (``/v1`` optional).
            api_key: Bearer token, when the service requires one.
            model: The served model name (default: the first one the service lists).
            timeout: Seconds to wait for one answer.
            max_retries: Retries (with backoff) on 429/503 and connection failures.
            family: The served model's family (``h2ovl``, ``idefics3`` ...), which decides how
                tasks are prompted (default: what our server reports, else from the model name).
            policy: Which paths and URLs image arguments may name (checked locally).
            limits: Byte and pixel limits for images.
        """
        from mississippi_tools.engine.remote import RemoteEngine

        engine = RemoteEngine(
            base_url,
            api_key=api_key,
            model=model,
            timeout=timeout,
            max_retries=max_retries,
            family=family,
        )
        return cls(engine, policy=policy, limits=limits)

    @property
    def model_id(self) -> str:
        """The model's id."""
        return self.engine.model_id

    def with_policy(
        self, policy: SourcePolicy | None = None, *, limits: ImageLimits | None = None
    ) -> MississippiVLM:
        """The same engine (and loaded model) under another source policy or image limits.

        Integrations use it to confine one tool or server to its own allowed directories
        while sharing the model.
        """
        return MississippiVLM(
            self.engine, policy=policy or self.policy, limits=limits or self.limits
        )

    def close(self) -> None:
        """Stop the engine (the model is released when no one else holds it)."""
        self.engine.close()

    def __enter__(self) -> MississippiVLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- images -------------------------------------------------------------------------------

    def load_image(
        self, image: ImageInput | NamedSource, *, page: int | None = None
    ) -> LoadedImage:
        """Decode one image (or one page) under this instance's policy and limits."""
        data = image.data if isinstance(image, NamedSource) else image
        return load_image(data, page=page, limits=self.limits, policy=self.policy)

    def _images(self, images: TaskImages) -> list[LoadedImage]:
        if images is None:
            return []
        if isinstance(images, list | tuple):
            return [self.load_image(image) for image in images]
        return [self.load_image(images)]  # type: ignore[arg-type]

    # -- raw generation -------------------------------------------------------------------------

    def _generation_request(
        self,
        images: TaskImages,
        prompt: str,
        *,
        history: Sequence[tuple[str, str]],
        max_new_tokens: int,
        max_tiles: int | None,
        use_msac: bool | None,
        temperature: float,
        top_p: float,
        top_k: int,
        repetition_penalty: float,
        seed: int | None,
        stop: Sequence[str],
        json_schema: Mapping[str, Any] | None,
        timeout: float | None,
        options: Mapping[str, Any] | None,
    ) -> GenerationRequest:
        sampling = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=tuple(stop),
        )
        merged = {"max_tiles": max_tiles, "use_msac": use_msac} | dict(options or {})
        return GenerationRequest(
            prompt=prompt,
            images=self._images(images),
            history=list(history),
            sampling=sampling,
            options={k: v for k, v in merged.items() if v is not None},
            json_schema=json_schema,
            timeout=timeout,
        )

    def generate(
        self,
        images: TaskImages,
        prompt: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_tiles: int | None = None,
        use_msac: bool | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        json_schema: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Generation:
        """Ask the model anything; the escape hatch under the tasks.

        Args:
            images: An image, a list of images, or ``None`` for a text-only prompt. Put
                ``<image>`` in the prompt where each image belongs, or let them go first.
            prompt: The question or instruction.
            history: Earlier (question, answer) turns.
            max_new_tokens: Most tokens to generate.
            max_tiles: H2OVL: most 448-px tiles per image (same as ``options={"max_tiles": n}``).
            use_msac: H2OVL: multi-scale adaptive cropping (same as the ``use_msac`` option).
            temperature: 0 for greedy decoding (the default, as the model was published).
            top_p: Nucleus sampling.
            top_k: Top-k sampling (0: off).
            repetition_penalty: Penalty on repeated tokens (1.0: off).
            seed: Seed for sampling.
            stop: Strings that end the answer.
            json_schema: Constrain the answer to JSON valid under this schema.
            timeout: Seconds before the request fails with ``DeadlineExceededError``.
            options: Model-specific options (``model_info.options`` lists them).
        """
        request = self._generation_request(
            images, prompt, history=history, max_new_tokens=max_new_tokens, max_tiles=max_tiles,
            use_msac=use_msac, temperature=temperature, top_p=top_p, top_k=top_k,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop, json_schema=json_schema,
            timeout=timeout, options=options,
        )  # fmt: skip
        return _generation(self.engine.generate(request))

    async def agenerate(self, images: TaskImages, prompt: str, **kwargs: Any) -> Generation:
        """Async twin of :meth:`generate` (same keyword arguments)."""
        request = await asyncio.to_thread(
            self._generation_request, images, prompt, **_generation_defaults(kwargs)
        )
        return _generation(await self.engine.agenerate(request))

    def stream(self, images: TaskImages, prompt: str, **kwargs: Any) -> Iterator[str]:
        """Yield the answer's text as it is generated (keyword arguments of :meth:`generate`)."""
        request = self._generation_request(images, prompt, **_generation_defaults(kwargs))
        return self.engine.stream(request)

    async def astream(self, images: TaskImages, prompt: str, **kwargs: Any) -> AsyncIterator[str]:
        """Async twin of :meth:`stream`."""
        request = await asyncio.to_thread(
            self._generation_request, images, prompt, **_generation_defaults(kwargs)
        )
        async for delta in self.engine.astream(request):
            yield delta

    # -- tasks: the generic forms ----------------------------------------------------------------

    @property
    def model_info(self) -> ModelInfo:
        """The model's family, options and limits (a remote engine asks its server once)."""
        return self._context().info

    @property
    def tasks(self) -> list[TaskSpec[Any, Any]]:
        """The catalogue's tasks this model can do, in catalogue order."""
        return tasks_for(self.model_info)

    def _context(self) -> TaskContext:
        if self._task_context is None:
            self._task_context = TaskContext.for_engine(self.engine)
        return self._task_context

    def _settings(self, run: _Run) -> RunSettings:
        merged = dict(run.options or {})
        if run.max_tiles is not None:
            merged.setdefault("max_tiles", run.max_tiles)
        return RunSettings(
            max_new_tokens=run.max_new_tokens,
            timeout=run.timeout,
            options=merged,
            repetition=_repetition_check(run.repetition),
        )

    def _crop(self, images: list[LoadedImage], region: Region | None) -> list[LoadedImage]:
        return images if region is None else [crop_image(image, region) for image in images]

    def _document_images(
        self, source: ImageInput | NamedSource, pages: PageSelection, run: _Run
    ) -> list[LoadedImage]:
        loaded = load_document(
            source, pages, limits=self.limits, policy=self.policy, max_pages=run.max_pages
        )
        return self._crop(loaded, run.region)

    def _task_images(
        self,
        spec: TaskSpec[Any, Any],
        images: TaskImages,
        page: int | None,
        pages: PageSelection,
        run: _Run,
    ) -> list[LoadedImage]:
        several = isinstance(images, list | tuple)
        if spec.images == "document":
            if images is None or several:
                given = "no input" if images is None else f"{len(images)} inputs"  # type: ignore[arg-type]
                raise InvalidInputError(
                    f"{spec.name} reads one document (its selected pages together), got {given}; "
                    f"for several documents use {spec.name}_batch (or run_batch)"
                )
            selection = pages if pages is not None else page
            return self._document_images(cast("ImageInput", images), selection, run)
        if pages is not None:
            raise InvalidInputError(
                f"{spec.name} reads one page at a time; pass page=N, or read several pages with "
                f"{spec.name}_batch (or run_batch) and pages={pages!r}"
            )
        if spec.images == "one":
            if images is None or several:
                given = "no image" if images is None else f"{len(images)} images"  # type: ignore[arg-type]
                raise InvalidInputError(
                    f"{spec.name} reads one image, got {given}; for several images or pages "
                    f"use {spec.name}_batch (or run_batch) with pages="
                )
            loaded = [self.load_image(cast("ImageInput", images), page=page)]
        elif images is None:
            loaded = []
        elif several:
            loaded = [self.load_image(image) for image in cast("Sequence[ImageInput]", images)]
        else:
            loaded = [self.load_image(cast("ImageInput", images), page=page)]
        return self._crop(loaded, run.region)

    def _plan(
        self,
        task: str,
        images: TaskImages,
        *,
        page: int | None = None,
        pages: PageSelection = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_tiles: int | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
        region: RegionInput | None = None,
        repetition: RepetitionCheck | bool | None = True,
        **arguments: Any,
    ) -> TaskPlan[Any]:
        """Check the task, its arguments and settings (cheap) before reading images (costly)."""
        run = _Run(max_tiles, max_new_tokens, timeout, options, region, repetition, max_pages)
        spec, ctx, args, settings = self._prepare_task(task, arguments, run)
        images_read = self._task_images(spec, images, page, pages, run)
        return spec.plan(ctx, images_read, args, settings)

    def plan(self, task: str, images: TaskImages, **kwargs: Any) -> TaskPlan[Any]:
        """The task's plan, checked and with its images read, for callers that drive it themselves.

        :meth:`run` drives the plan to its result; the HTTP service drives it step by step to
        stream the answer's text as it is written. Same arguments and errors as :meth:`run`.
        """
        return self._plan(task, images, **kwargs)

    def _prepare_task(
        self, task: str, arguments: dict[str, Any], run: _Run
    ) -> tuple[TaskSpec[Any, Any], TaskContext, Any, RunSettings]:
        spec = get_task(task)
        ctx = self._context()
        check_supported(spec, ctx.info)
        args = spec.parse_arguments(arguments)
        settings = self._settings(run)
        if settings.max_new_tokens is not None:
            SamplingParams(max_new_tokens=settings.max_new_tokens)  # bounds checked here, early
        return spec, ctx, args, settings

    def run(
        self,
        task: str,
        images: TaskImages,
        **kwargs: Any,
    ) -> Any:
        """Run any task of the catalogue by name: ``vlm.run("ocr", "scan.png", format="markdown")``.

        Args:
            task: The task's name (:attr:`tasks` lists what this model can do).
            images: The image (a list of images, or ``None``, for tasks that take several; the
                document, for tasks that read a document's pages together).
            kwargs: The task's own arguments, plus the run settings every task takes: ``page``
                (of a PDF or multi-page TIFF), ``region`` (read only that part of the image),
                ``max_tiles``, ``options`` (model options), ``max_new_tokens``, ``timeout`` and
                ``repetition``; for document tasks also ``pages`` and ``max_pages``.

        Raises:
            UnsupportedTaskError: The loaded model cannot do the task.
            InvalidInputError: An argument or an image is not usable.
            RepetitionError: The model's answer looped, and looped again on the retry.
        """
        return run_plan(self.engine, self._plan(task, images, **kwargs))

    async def arun(self, task: str, images: TaskImages, **kwargs: Any) -> Any:
        """Async twin of :meth:`run`."""
        plan = await asyncio.to_thread(self._plan, task, images, **kwargs)
        return await arun_plan(self.engine, plan)

    def iter_batch(
        self,
        task: str,
        sources: Iterable[ImageInput | NamedSource],
        *,
        pages: PageSelection = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        concurrency: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
        region: RegionInput | None = None,
        repetition: RepetitionCheck | bool | None = True,
        **arguments: Any,
    ) -> Iterator[PageOutcome[Any]]:
        """Run a task on every image and selected document page; yield each page's outcome.

        Outcomes come in input order, each as soon as it (and those before it) are done; a source
        that cannot be read, or a page that fails, yields an outcome with its error and the batch
        goes on. The task, its arguments and settings are checked before any page is read. A
        task that reads a document's pages together (``extract_document``) gives one outcome per
        source (its ``page`` is ``None``).

        Args:
            task: The task's name.
            sources: Images, PDFs, multi-page TIFFs.
            pages: Which pages of documents: ``"1-3,5"``, ``2``, ``[1, 2]`` or ``None`` (all).
            max_pages: Most pages read from one document; a document with more selected pages
                yields an error naming the limit (0: no limit).
            concurrency: Pages in flight (default: the engine's batch size, or 8).
            max_tiles: Model option, as in :meth:`run`.
            max_new_tokens: As in :meth:`run`.
            timeout: As in :meth:`run`.
            options: As in :meth:`run`.
            region: As in :meth:`run`: the same region of every page.
            repetition: As in :meth:`run`.
            arguments: The task's own arguments.
        """
        run = _Run(max_tiles, max_new_tokens, timeout, options, region, repetition, max_pages)
        spec, ctx, args, settings = self._prepare_task(task, arguments, run)
        limit = concurrency or self._concurrency()
        if spec.images == "document":

            def run_document(item: DocumentItem) -> Any:
                images = self._document_images(item.source, pages, run)
                return run_plan(self.engine, spec.plan(ctx, images, args, settings))

            return iter_outcomes(run_document, iter_documents(sources), concurrency=limit)

        def run_one(image: LoadedImage) -> Any:
            images = self._crop([image], run.region)
            return run_plan(self.engine, spec.plan(ctx, images, args, settings))

        items = iter_source_pages(
            sources, pages, limits=self.limits, policy=self.policy, max_pages=max_pages
        )
        return iter_outcomes(run_one, items, concurrency=limit)

    async def aiter_batch(
        self,
        task: str,
        sources: Iterable[ImageInput | NamedSource],
        *,
        pages: PageSelection = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        concurrency: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        options: Mapping[str, Any] | None = None,
        region: RegionInput | None = None,
        repetition: RepetitionCheck | bool | None = True,
        **arguments: Any,
    ) -> AsyncIterator[PageOutcome[Any]]:
        """Async twin of :meth:`iter_batch`."""
        run = _Run(max_tiles, max_new_tokens, timeout, options, region, repetition, max_pages)
        spec, ctx, args, settings = await asyncio.to_thread(
            self._prepare_task, task, arguments, run
        )
        limit = concurrency or self._concurrency()
        if spec.images == "document":

            async def run_document(item: DocumentItem) -> Any:
                images = await asyncio.to_thread(self._document_images, item.source, pages, run)
                plan = await asyncio.to_thread(spec.plan, ctx, images, args, settings)
                return await arun_plan(self.engine, plan)

            async for outcome in aiter_outcomes(
                run_document, iter_documents(sources), concurrency=limit
            ):
                yield outcome
            return

        async def run_one(image: LoadedImage) -> Any:
            images = await asyncio.to_thread(self._crop, [image], run.region)
            plan = await asyncio.to_thread(spec.plan, ctx, images, args, settings)
            return await arun_plan(self.engine, plan)

        items = iter_source_pages(
            sources, pages, limits=self.limits, policy=self.policy, max_pages=max_pages
        )
        async for outcome in aiter_outcomes(run_one, items, concurrency=limit):
            yield outcome

    def run_batch(
        self,
        task: str,
        sources: Iterable[ImageInput | NamedSource],
        *,
        pages: PageSelection = None,
        progress: bool = False,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Results of a task over every image and page, in input order (see :meth:`iter_batch`).

        Args:
            task: The task's name.
            sources: Images, PDFs, multi-page TIFFs.
            pages: Which pages of documents.
            progress: Show a progress bar (tqdm) on stderr.
            return_exceptions: Put a failed page's error in its place instead of raising the
                first one; a source that cannot be read at all takes one place.
            kwargs: As for :meth:`iter_batch`.
        """
        sources = list(sources)
        bar = _progress_bar(progress, lambda: self.count_pages(sources, pages))
        results: list[Any] = []
        try:
            for outcome in self.iter_batch(task, sources, pages=pages, **kwargs):
                if bar is not None:
                    bar.update(1)
                if outcome.error is not None and not return_exceptions:
                    raise outcome.error
                results.append(outcome.result if outcome.error is None else outcome.error)
        finally:
            if bar is not None:
                bar.close()
        return results

    async def arun_batch(
        self,
        task: str,
        sources: Iterable[ImageInput | NamedSource],
        *,
        pages: PageSelection = None,
        progress: bool = False,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async twin of :meth:`run_batch`."""
        sources = list(sources)
        bar = (
            _progress_bar(progress, lambda: self.count_pages(sources, pages)) if progress else None
        )
        results: list[Any] = []
        try:
            async for outcome in self.aiter_batch(task, sources, pages=pages, **kwargs):
                if bar is not None:
                    bar.update(1)
                if outcome.error is not None and not return_exceptions:
                    raise outcome.error
                results.append(outcome.result if outcome.error is None else outcome.error)
        finally:
            if bar is not None:
                bar.close()
        return results

    def __getattr__(self, name: str) -> Any:
        """Tasks registered at run time get the same methods as the built-in ones.

        ``vlm.<task>``, ``vlm.a<task>``, ``vlm.<task>_batch`` and ``vlm.a<task>_batch``.
        """
        if name.startswith("_"):
            raise AttributeError(name)
        forms = (
            ("a", "_batch", self.arun_batch),
            ("", "_batch", self.run_batch),
            ("a", "", self.arun),
            ("", "", self.run),
        )
        for prefix, suffix, method in forms:
            if name.startswith(prefix) and name.endswith(suffix):
                task = name[len(prefix) : len(name) - len(suffix)]
                if task in {spec.name for spec in all_tasks()}:
                    return functools.partial(method, task)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- documents ------------------------------------------------------------------------------

    def pages(
        self, sources: Iterable[ImageInput], pages: PageSelection = None
    ) -> Iterator[LoadedImage]:
        """Every image, and the selected pages of every PDF or multi-page TIFF, lazily."""
        for _, item in iter_source_pages(sources, pages, limits=self.limits, policy=self.policy):
            if isinstance(item, MississippiError):
                raise item
            yield item

    def count_pages(
        self, sources: Iterable[ImageInput | NamedSource], pages: PageSelection = None
    ) -> int:
        """How many images :meth:`pages` yields (for progress bars)."""
        from mississippi_tools.pdf import parse_page_selection

        selection = page_selection(pages)
        total = 0
        for source in sources:
            data = source.data if isinstance(source, NamedSource) else source
            count = count_pages(data, limits=self.limits, policy=self.policy)
            total += (
                len(parse_page_selection(selection, count))
                if selection is not None and count > 1
                else count
            )
        return total

    def _concurrency(self) -> int:
        config = getattr(self.engine, "config", None)
        return max(1, int(getattr(config, "max_batch_size", 8)))


def _generation(output: GenerationOutput) -> Generation:
    return Generation(
        text=output.text,
        token_ids=output.token_ids,
        tiles=output.tiles,
        timings=output.timings,
        output=output,
    )


_GENERATION_DEFAULTS: dict[str, Any] = {
    "history": (),
    "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
    "max_tiles": None,
    "use_msac": None,
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "repetition_penalty": 1.0,
    "seed": None,
    "stop": (),
    "json_schema": None,
    "timeout": None,
    "options": None,
}


def _generation_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(_GENERATION_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {sorted(unknown)}")
    return {**_GENERATION_DEFAULTS, **kwargs}


def _progress_bar(enabled: bool, total: Callable[[], int]) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total(), unit="page", desc="mississippi", leave=True)
