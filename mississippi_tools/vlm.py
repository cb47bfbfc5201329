"""``MississippiVLM``: the one object agents, readers, servers and the CLI talk to.

It holds an engine (the model in this process, or a remote service) and turns task calls into
engine requests: ``ocr``, ``read_chart``, ``read_table``, ``extract``, ``ask``, and the raw
``generate``. Each task has an async twin (``aocr`` ...) and batch forms over many images and
PDF pages (``ocr_batch`` ...), all sharing one implementation per task.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mississippi_tools.engine.base import (
    DEFAULT_MAX_NEW_TOKENS,
    Engine,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
)
from mississippi_tools.errors import MississippiError
from mississippi_tools.images import (
    ImageInput,
    ImageLimits,
    LoadedImage,
    count_pages,
    iter_pages,
    load_image,
)
from mississippi_tools.sources import SourcePolicy
from mississippi_tools.tasks import ask as ask_task
from mississippi_tools.tasks import chart as chart_task
from mississippi_tools.tasks import ocr as ocr_task
from mississippi_tools.tasks import table as table_task
from mississippi_tools.tasks.base import (
    OneShotPlan,
    TaskPlan,
    arun_plan,
    confidence_of_span,
    run_plan,
)

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel

    from mississippi_tools.engine.local import LocalEngineConfig
    from mississippi_tools.models.base import VLMBackend
    from mississippi_tools.schema import SchemaInput
    from mississippi_tools.tasks.extract import ExtractionResult

__all__ = ["Generation", "MississippiVLM", "PageSelection"]

T = TypeVar("T")
PageSelection = str | Sequence[int] | None
"""Pages of PDFs and multi-page TIFFs: ``"1-3,5"``, ``[1, 2]`` or ``None`` (all)."""

#: New tokens for tasks whose answers are long (OCR, tables, extraction).
TASK_MAX_NEW_TOKENS = DEFAULT_MAX_NEW_TOKENS
#: New tokens for short answers (questions).
ASK_MAX_NEW_TOKENS = 512


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


class MississippiVLM:
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
    ) -> MississippiVLM:
        """Load a model into this process.

        Args:
            model: A hub id or a local checkpoint directory in the original format.
            device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
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

        Raises:
            MissingDependencyError: The ``local`` extra is not installed.
            ModelNotFoundError: No weights locally and no way to fetch them.
            ModelLoadError: The checkpoint is unreadable or does not match its config.
        """
        from mississippi_tools._deps import require

        require("torch", "local", purpose="running the model in this process")
        require("transformers", "local", purpose="running the model in this process")
        from mississippi_tools.engine.local import LocalEngine
        from mississippi_tools.models.registry import load_backend

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
        )
        return cls(LocalEngine(backend, engine_config), policy=policy, limits=limits)

    @classmethod
    def from_backend(
        cls,
        backend: VLMBackend,
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
            policy: Which paths and URLs image arguments may name (checked locally).
            limits: Byte and pixel limits for images.
        """
        from mississippi_tools.engine.remote import RemoteEngine

        engine = RemoteEngine(
            base_url, api_key=api_key, model=model, timeout=timeout, max_retries=max_retries
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

    def load_image(self, image: ImageInput, *, page: int | None = None) -> LoadedImage:
        """Decode one image (or one page) under this instance's policy and limits."""
        return load_image(image, page=page, limits=self.limits, policy=self.policy)

    def _images(self, images: ImageInput | Sequence[ImageInput] | None) -> list[LoadedImage]:
        if images is None:
            return []
        if isinstance(images, list | tuple):
            return [self.load_image(image) for image in images]
        return [self.load_image(images)]  # type: ignore[arg-type]

    # -- raw generation -------------------------------------------------------------------------

    def _generation_request(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
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
    ) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt,
            images=self._images(images),
            history=list(history),
            sampling=SamplingParams(
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                repetition_penalty=repetition_penalty,
                seed=seed,
                stop=tuple(stop),
            ),
            max_tiles=max_tiles,
            use_msac=use_msac,
            json_schema=json_schema,
            timeout=timeout,
        )

    def generate(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
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
    ) -> Generation:
        """Ask the model anything; the escape hatch under the tasks.

        Args:
            images: An image, a list of images, or ``None`` for a text-only prompt. Put
                ``<image>`` in the prompt where each image belongs, or let them go first.
            prompt: The question or instruction.
            history: Earlier (question, answer) turns.
            max_new_tokens: Most tokens to generate.
            max_tiles: Most 448-px tiles per image (the model's default is 6).
            use_msac: Override multi-scale adaptive cropping (single image).
            temperature: 0 for greedy decoding (the default, as the model was published).
            top_p: Nucleus sampling.
            top_k: Top-k sampling (0: off).
            repetition_penalty: Penalty on repeated tokens (1.0: off).
            seed: Seed for sampling.
            stop: Strings that end the answer.
            json_schema: Constrain the answer to JSON valid under this schema.
            timeout: Seconds before the request fails with ``DeadlineExceededError``.
        """
        request = self._generation_request(
            images, prompt, history=history, max_new_tokens=max_new_tokens, max_tiles=max_tiles,
            use_msac=use_msac, temperature=temperature, top_p=top_p, top_k=top_k,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop, json_schema=json_schema,
            timeout=timeout,
        )  # fmt: skip
        return _generation(self.engine.generate(request))

    async def agenerate(
        self, images: ImageInput | Sequence[ImageInput] | None, prompt: str, **kwargs: Any
    ) -> Generation:
        """Async twin of :meth:`generate` (same keyword arguments)."""
        request = await asyncio.to_thread(
            self._generation_request, images, prompt, **_generation_defaults(kwargs)
        )
        return _generation(await self.engine.agenerate(request))

    def stream(
        self, images: ImageInput | Sequence[ImageInput] | None, prompt: str, **kwargs: Any
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated (keyword arguments of :meth:`generate`)."""
        request = self._generation_request(images, prompt, **_generation_defaults(kwargs))
        return self.engine.stream(request)

    async def astream(
        self, images: ImageInput | Sequence[ImageInput] | None, prompt: str, **kwargs: Any
    ) -> AsyncIterator[str]:
        """Async twin of :meth:`stream`."""
        request = await asyncio.to_thread(
            self._generation_request, images, prompt, **_generation_defaults(kwargs)
        )
        async for delta in self.engine.astream(request):
            yield delta

    # -- task plans (shared by sync, async and batch forms) -------------------------------------

    def _ocr_plan(
        self,
        image: ImageInput,
        *,
        format: ocr_task.OCRFormat = "text",
        page: int | None = None,
        max_tiles: int | None = None,
        confidence: bool = False,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> TaskPlan[ocr_task.OCRResult]:
        prompt = ocr_task.build_ocr_prompt(format)
        loaded = [self.load_image(image, page=page)]
        request = GenerationRequest(
            prompt=prompt,
            images=loaded,
            sampling=SamplingParams(max_new_tokens=max_new_tokens),
            max_tiles=max_tiles,
            ocr_mode=True,
            logprobs=confidence,
            timeout=timeout,
        )

        def parse(output: GenerationOutput, meta: Any) -> ocr_task.OCRResult:
            raw = output.raw_text or output.text
            return ocr_task.parse_ocr_output(raw, format, _line_confidences(output, raw), meta)

        return OneShotPlan(request, loaded, parse)

    def _chart_plan(
        self,
        image: ImageInput,
        *,
        page: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> TaskPlan[chart_task.ChartData]:
        loaded = [self.load_image(image, page=page)]
        request = GenerationRequest(
            prompt=chart_task.build_chart_prompt(),
            images=loaded,
            sampling=SamplingParams(max_new_tokens=max_new_tokens),
            max_tiles=max_tiles,
            json_schema=chart_task.CHART_JSON_SCHEMA if self.engine.supports_grammar else None,
            timeout=timeout,
        )
        return OneShotPlan(
            request, loaded, lambda out, meta: chart_task.parse_chart_output(out.text, meta)
        )

    def _table_plan(
        self,
        image: ImageInput,
        *,
        page: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> TaskPlan[table_task.TableData]:
        loaded = [self.load_image(image, page=page)]
        request = GenerationRequest(
            prompt=table_task.build_table_prompt(),
            images=loaded,
            sampling=SamplingParams(max_new_tokens=max_new_tokens),
            max_tiles=max_tiles,
            timeout=timeout,
        )
        return OneShotPlan(
            request, loaded, lambda out, meta: table_task.parse_table_output(out.text, meta)
        )

    def _ask_plan(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        page: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int = ASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> TaskPlan[ask_task.Answer]:
        if isinstance(images, list | tuple):
            loaded = self._images(images)
        elif images is None:
            loaded = []
        else:
            loaded = [self.load_image(cast("ImageInput", images), page=page)]
        request = GenerationRequest(
            prompt=ask_task.build_ask_prompt(question, len(loaded)),
            images=loaded,
            history=list(history),
            sampling=SamplingParams(max_new_tokens=max_new_tokens),
            max_tiles=max_tiles,
            timeout=timeout,
        )
        return OneShotPlan(
            request, loaded, lambda out, meta: ask_task.parse_ask_output(out.text, meta)
        )

    def _extract_plan(
        self,
        image: ImageInput,
        schema: SchemaInput,
        *,
        instructions: str | None = None,
        page: int | None = None,
        max_tiles: int | None = None,
        confidence: bool = False,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        max_retries: int = 2,
        timeout: float | None = None,
    ) -> TaskPlan[ExtractionResult]:
        from mississippi_tools.tasks.extract import ExtractionPlan

        loaded = [self.load_image(image, page=page)]
        return ExtractionPlan(
            schema,
            images=loaded,
            constrained=self.engine.supports_grammar,
            instructions=instructions,
            max_tiles=max_tiles,
            confidence=confidence,
            max_new_tokens=max_new_tokens,
            max_retries=max_retries,
            timeout=timeout,
        )

    # -- tasks, sync ------------------------------------------------------------------------------

    def ocr(
        self,
        image: ImageInput,
        *,
        format: ocr_task.OCRFormat = "text",
        page: int | None = None,
        max_tiles: int | None = None,
        confidence: bool = False,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> ocr_task.OCRResult:
        """Read the text of an image (the model's OCR mode).

        Args:
            image: A path, bytes, base64, data URI, PIL image or URL (when allowed).
            format: ``"text"``, ``"markdown"`` (headings, lists, tables) or ``"lines"``.
            page: The page, for PDFs and multi-page TIFFs.
            max_tiles: Most 448-px tiles (more tiles read smaller print, slower).
            confidence: Add a per-line confidence from the model's token probabilities.
            max_new_tokens: Most tokens to generate.
            timeout: Seconds before the request fails.
        """
        return run_plan(self.engine, self._ocr_plan(
            image, format=format, page=page, max_tiles=max_tiles, confidence=confidence,
            max_new_tokens=max_new_tokens, timeout=timeout,
        ))  # fmt: skip

    def read_chart(
        self,
        image: ImageInput,
        *,
        page: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> chart_task.ChartData:
        """Read a chart: title, type, axes with units, and series of (label, value) points."""
        return run_plan(self.engine, self._chart_plan(
            image, page=page, max_tiles=max_tiles, max_new_tokens=max_new_tokens, timeout=timeout
        ))  # fmt: skip

    def read_table(
        self,
        image: ImageInput,
        *,
        page: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> table_task.TableData:
        """Read a table: columns and rows (``to_markdown``, ``to_csv``, ``records``)."""
        return run_plan(self.engine, self._table_plan(
            image, page=page, max_tiles=max_tiles, max_new_tokens=max_new_tokens, timeout=timeout
        ))  # fmt: skip

    def ask(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        page: int | None = None,
        max_tiles: int | None = None,
        max_new_tokens: int = ASK_MAX_NEW_TOKENS,
        timeout: float | None = None,
    ) -> ask_task.Answer:
        """Answer a question about one image or several (a list)."""
        return run_plan(self.engine, self._ask_plan(
            images, question, history=history, page=page, max_tiles=max_tiles,
            max_new_tokens=max_new_tokens, timeout=timeout,
        ))  # fmt: skip

    def extract(
        self, image: ImageInput, schema: SchemaInput, **kwargs: Any
    ) -> BaseModel | dict[str, Any]:
        """Extract data valid under ``schema`` (see :meth:`extract_result` for the arguments).

        Returns:
            An instance of the pydantic model, or a dict valid under the JSON Schema / template.
        """
        return self.extract_result(image, schema, **kwargs).data

    def extract_result(
        self,
        image: ImageInput,
        schema: SchemaInput,
        *,
        instructions: str | None = None,
        page: int | None = None,
        max_tiles: int | None = None,
        confidence: bool = False,
        max_new_tokens: int = TASK_MAX_NEW_TOKENS,
        max_retries: int = 2,
        timeout: float | None = None,
    ) -> ExtractionResult:
        """Extract JSON valid under ``schema``, with metadata and optional confidences.

        Args:
            image: The image.
            schema: A pydantic model class, a JSON Schema dict, or a template dict like
                ``{"name": "", "date_of_birth": "", "address": ""}`` (types from the values).
            instructions: Extra guidance for the model, added to the prompt.
            page: The page, for PDFs and multi-page TIFFs.
            max_tiles: Most 448-px tiles.
            confidence: Add per-field confidences from the model's token probabilities.
            max_new_tokens: Most tokens to generate.
            max_retries: Retries with the validation error, for engines without grammars.
            timeout: Seconds before each request fails.

        Raises:
            SchemaError: The schema uses a feature that cannot be guaranteed.
            ExtractionError: No valid output (carries the raw text and the errors).
        """
        return run_plan(self.engine, self._extract_plan(
            image, schema, instructions=instructions, page=page, max_tiles=max_tiles,
            confidence=confidence, max_new_tokens=max_new_tokens, max_retries=max_retries,
            timeout=timeout,
        ))  # fmt: skip

    # -- tasks, async -----------------------------------------------------------------------------

    async def aocr(self, image: ImageInput, **kwargs: Any) -> ocr_task.OCRResult:
        """Async twin of :meth:`ocr`."""
        plan = await asyncio.to_thread(self._ocr_plan, image, **kwargs)
        return await arun_plan(self.engine, plan)

    async def aread_chart(self, image: ImageInput, **kwargs: Any) -> chart_task.ChartData:
        """Async twin of :meth:`read_chart`."""
        plan = await asyncio.to_thread(self._chart_plan, image, **kwargs)
        return await arun_plan(self.engine, plan)

    async def aread_table(self, image: ImageInput, **kwargs: Any) -> table_task.TableData:
        """Async twin of :meth:`read_table`."""
        plan = await asyncio.to_thread(self._table_plan, image, **kwargs)
        return await arun_plan(self.engine, plan)

    async def aask(
        self, images: ImageInput | Sequence[ImageInput] | None, question: str, **kwargs: Any
    ) -> ask_task.Answer:
        """Async twin of :meth:`ask`."""
        plan = await asyncio.to_thread(self._ask_plan, images, question, **kwargs)
        return await arun_plan(self.engine, plan)

    async def aextract(
        self, image: ImageInput, schema: SchemaInput, **kwargs: Any
    ) -> BaseModel | dict[str, Any]:
        """Async twin of :meth:`extract`."""
        return (await self.aextract_result(image, schema, **kwargs)).data

    async def aextract_result(
        self, image: ImageInput, schema: SchemaInput, **kwargs: Any
    ) -> ExtractionResult:
        """Async twin of :meth:`extract_result`."""
        plan = await asyncio.to_thread(self._extract_plan, image, schema, **kwargs)
        return await arun_plan(self.engine, plan)

    # -- batch forms ------------------------------------------------------------------------------

    def ocr_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`ocr` over many images and PDF pages (see :meth:`map` for the options)."""
        return self.map(self._ocr_plan, sources, **kwargs)

    def read_chart_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`read_chart` over many images and pages."""
        return self.map(self._chart_plan, sources, **kwargs)

    def read_table_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """:meth:`read_table` over many images and pages."""
        return self.map(self._table_plan, sources, **kwargs)

    def extract_batch(
        self, sources: Iterable[ImageInput], schema: SchemaInput, **kwargs: Any
    ) -> list[Any]:
        """:meth:`extract_result` over many images and pages."""
        return self.map(
            lambda image, **kw: self._extract_plan(image, schema, **kw), sources, **kwargs
        )

    def ask_batch(self, sources: Iterable[ImageInput], question: str, **kwargs: Any) -> list[Any]:
        """:meth:`ask` (one image each) over many images and pages."""
        return self.map(
            lambda image, **kw: self._ask_plan(image, question, **kw), sources, **kwargs
        )

    async def aocr_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`ocr_batch`."""
        return await self.amap(self._ocr_plan, sources, **kwargs)

    async def aread_chart_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`read_chart_batch`."""
        return await self.amap(self._chart_plan, sources, **kwargs)

    async def aread_table_batch(self, sources: Iterable[ImageInput], **kwargs: Any) -> list[Any]:
        """Async twin of :meth:`read_table_batch`."""
        return await self.amap(self._table_plan, sources, **kwargs)

    async def aextract_batch(
        self, sources: Iterable[ImageInput], schema: SchemaInput, **kwargs: Any
    ) -> list[Any]:
        """Async twin of :meth:`extract_batch`."""
        return await self.amap(
            lambda image, **kw: self._extract_plan(image, schema, **kw), sources, **kwargs
        )

    async def aask_batch(
        self, sources: Iterable[ImageInput], question: str, **kwargs: Any
    ) -> list[Any]:
        """Async twin of :meth:`ask_batch`."""
        return await self.amap(
            lambda image, **kw: self._ask_plan(image, question, **kw), sources, **kwargs
        )

    def pages(
        self, sources: Iterable[ImageInput], pages: PageSelection = None
    ) -> Iterator[LoadedImage]:
        """Every image, and the selected pages of every PDF or multi-page TIFF, lazily."""
        for item in self._page_items(sources, pages, capture=False):
            assert isinstance(item, LoadedImage)
            yield item

    def _page_items(
        self, sources: Iterable[ImageInput], pages: PageSelection, *, capture: bool
    ) -> Iterator[LoadedImage | MississippiError]:
        """Pages as in :meth:`pages`, optionally with errors in place.

        With ``capture``, a source that cannot be read (or stops being readable part-way)
        yields its error in its place, and the next source follows.
        """
        for source in sources:
            try:
                yield from iter_pages(
                    source, pages=pages, limits=self.limits, policy=self.policy, documents_only=True
                )
            except MississippiError as e:
                if not capture:
                    raise
                yield e

    def count_pages(self, sources: Iterable[ImageInput], pages: PageSelection = None) -> int:
        """How many images :meth:`pages` yields (for progress bars)."""
        from mississippi_tools.pdf import parse_page_selection

        total = 0
        for source in sources:
            count = count_pages(source, policy=self.policy)
            total += (
                len(parse_page_selection(pages, count))
                if pages is not None and count > 1
                else count
            )
        return total

    def map(
        self,
        plan_for: Callable[..., TaskPlan[T]],
        sources: Iterable[ImageInput],
        *,
        pages: PageSelection = None,
        progress: bool = False,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        **task_kwargs: Any,
    ) -> list[T | BaseException]:
        """Run a task over every image and page, concurrently, results in input order.

        Args:
            plan_for: The task (a ``_…_plan`` method, or any callable returning a plan).
            sources: Images, PDFs, multi-page TIFFs.
            pages: Which pages of documents: ``"1-3,5"``, ``[1, 2]`` or ``None`` (all).
            progress: Show a progress bar (tqdm) on stderr.
            concurrency: Requests in flight (default: the engine's batch size, or 8).
            return_exceptions: Put a failed item's exception in its place instead of raising; a
                source that cannot be read at all takes one place, with its error.
            task_kwargs: The task's keyword arguments (``format=``, ``max_tiles=`` ...).
        """
        sources = list(sources)
        limit = concurrency or _default_concurrency(self.engine)
        bar = _progress_bar(progress, lambda: self.count_pages(sources, pages))

        def run_one(item: LoadedImage | MississippiError) -> T:
            if isinstance(item, MississippiError):
                raise item
            return run_plan(self.engine, plan_for(item, **task_kwargs))

        items = self._page_items(sources, pages, capture=return_exceptions)
        results: list[T | BaseException] = []
        try:
            with ThreadPoolExecutor(
                max_workers=limit, thread_name_prefix="mississippi-batch"
            ) as pool:
                for future in _bounded_submit(pool, run_one, items, limit):
                    try:
                        results.append(future.result())
                    except Exception as e:
                        if not return_exceptions:
                            raise
                        results.append(e)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results

    async def amap(
        self,
        plan_for: Callable[..., TaskPlan[T]],
        sources: Iterable[ImageInput],
        *,
        pages: PageSelection = None,
        progress: bool = False,
        concurrency: int | None = None,
        return_exceptions: bool = False,
        **task_kwargs: Any,
    ) -> list[T | BaseException]:
        """Async twin of :meth:`map`."""
        sources = list(sources)
        limit = concurrency or _default_concurrency(self.engine)
        semaphore = asyncio.Semaphore(limit)
        images = await asyncio.to_thread(
            lambda: list(self._page_items(sources, pages, capture=return_exceptions))
        )
        bar = _progress_bar(progress, lambda: len(images))

        async def run_one(image: LoadedImage | MississippiError) -> T | BaseException:
            async with semaphore:
                try:
                    if isinstance(image, MississippiError):
                        raise image
                    plan = await asyncio.to_thread(plan_for, image, **task_kwargs)
                    return await arun_plan(self.engine, plan)
                except Exception as e:
                    if not return_exceptions:
                        raise
                    return e
                finally:
                    if bar is not None:
                        bar.update(1)

        try:
            return list(await asyncio.gather(*(run_one(image) for image in images)))
        finally:
            if bar is not None:
                bar.close()


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
}


def _generation_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(_GENERATION_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {sorted(unknown)}")
    return {**_GENERATION_DEFAULTS, **kwargs}


def _line_confidences(output: GenerationOutput, raw: str) -> list[float] | None:
    """One confidence per line of ``raw``, from the output's token probabilities."""
    if output.token_logprobs is None or output.token_texts is None:
        return None
    confidences = []
    position = 0
    for line in raw.split("\n"):
        start, end = position, position + len(line)
        position = end + 1
        value = confidence_of_span(output.token_texts, output.token_logprobs, start, end)
        confidences.append(1.0 if value is None else min(1.0, value))
    return confidences


def _default_concurrency(engine: Engine) -> int:
    config = getattr(engine, "config", None)
    return max(1, int(getattr(config, "max_batch_size", 8)))


def _progress_bar(enabled: bool, total: Callable[[], int]) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total(), unit="page", desc="mississippi", leave=True)


def _bounded_submit(
    pool: ThreadPoolExecutor,
    fn: Callable[[LoadedImage | MississippiError], T],
    items: Iterator[LoadedImage | MississippiError],
    limit: int,
) -> Iterator[Future[T]]:
    """Submit lazily with at most ``limit`` futures pending; yield them in input order.

    Pages are rendered only as slots free up, so a 500-page PDF never sits in memory at once.
    """
    pending: list[Future[T]] = []
    lock = threading.Lock()
    for item in items:
        with lock:
            pending.append(pool.submit(fn, item))
        if len(pending) >= limit:
            yield pending.pop(0)
    while pending:
        yield pending.pop(0)
