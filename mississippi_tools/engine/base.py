"""The engine interface: what a task asks for and what it gets back, whoever runs the model.

Two engines implement it: :class:`~mississippi_tools.engine.local.LocalEngine` (the model in this
process, with dynamic batching and a vision-feature cache) and
:class:`~mississippi_tools.engine.remote.RemoteEngine` (an OpenAI-compatible HTTP service: our
own server or vLLM). Tasks build a :class:`GenerationRequest` and read a
:class:`GenerationOutput`; they never see which engine ran.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.base import LogitsProcessor

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "Engine",
    "FinishReason",
    "GenerationOutput",
    "GenerationRequest",
    "SamplingParams",
]

#: New tokens generated when the caller does not say.
DEFAULT_MAX_NEW_TOKENS = 1024

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen and when generation ends.

    The defaults are the original model's: greedy decoding (its published generation config,
    top_k 1, amounts to greedy), ending at ``<|end|>``.
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Most tokens to generate."""
    temperature: float = 0.0
    """0 is greedy decoding; above 0, sampling from the softened distribution."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = 0
    """Keep only the k most likely tokens (0: no limit)."""
    repetition_penalty: float = 1.0
    """Divide positive (multiply negative) logits of already generated tokens by this."""
    seed: int | None = None
    """Seed for sampling, for reproducible samples."""
    stop: tuple[str, ...] = ()
    """Strings that end the answer (not included in it)."""
    ignore_eos: bool = False
    """Keep generating past the end token (benchmarks use a fixed number of tokens)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InvalidInputError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise InvalidInputError(
                f"repetition_penalty must be > 0, got {self.repetition_penalty}"
            )
        if any(not s for s in self.stop):
            raise InvalidInputError("stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        """Whether the next token is always the most likely one."""
        return self.temperature == 0 or self.top_k == 1


@dataclass
class GenerationRequest:
    """One question to the model.

    Attributes:
        prompt: The user's question; ``<image>`` marks where each image goes (optional).
        images: Decoded images, in order.
        history: Earlier (question, answer) turns.
        sampling: Decoding parameters.
        max_tiles: Most tiles per image (default: the model's, 6 for the 800M).
        use_msac: Override the model's multi-scale adaptive cropping (single image only).
        json_schema: Constrain the answer to JSON valid under this schema (engines that support
            grammars; others ignore it and the task validates).
        ocr_mode: The original model's OCR decoding (no runs of repeated whitespace tokens).
        logprobs: Record each generated token's log-probability.
        logits_processors: Extra per-request processors (applied after the built-in ones).
        timeout: Seconds from submission after which the request fails with
            :class:`~mississippi_tools.errors.DeadlineExceededError`.
        request_id: Identifies the request in errors, logs and metrics.
    """

    prompt: str
    images: Sequence[LoadedImage] = ()
    history: Sequence[tuple[str, str]] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tiles: int | None = None
    use_msac: bool | None = None
    json_schema: Mapping[str, Any] | None = None
    ocr_mode: bool = False
    logprobs: bool = False
    logits_processors: Sequence[LogitsProcessor] = ()
    timeout: float | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def __post_init__(self) -> None:
        if self.max_tiles is not None and not 1 <= self.max_tiles <= 40:
            raise InvalidInputError(f"max_tiles must be between 1 and 40, got {self.max_tiles}")
        if self.timeout is not None and self.timeout <= 0:
            raise InvalidInputError(f"timeout must be > 0 seconds, got {self.timeout}")


@dataclass
class GenerationOutput:
    """What the model answered, with the numbers behind it.

    Attributes:
        text: The answer text (special tokens skipped, cut at a stop string, stripped).
        token_ids: The new tokens, without the end token.
        finish_reason: ``stop`` (end token or stop string), ``length`` (max_new_tokens or the
            context) or ``cancelled``.
        prompt_tokens: Tokens in the prompt, image tokens included.
        tiles_per_image: Tiles fed to the vision encoder for each image.
        token_logprobs: Log-probability of each new token, when requested.
        token_texts: The text each new token added, when log-probabilities were requested;
            they concatenate to :attr:`raw_text`.
        raw_text: The decoded answer before the stop-string cut and stripping.
        timings: Seconds per stage (``queue``, ``preprocess``, ``vision``, ``prefill``,
            ``decode``, ``total``).
        cache_hit: Whether every image's features came from the vision-feature cache.
        model: The model's id.
        engine: ``local`` or ``remote``.
        request_id: The request's id.
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    tiles_per_image: list[int] = field(default_factory=list)
    token_logprobs: list[float] | None = None
    token_texts: list[str] | None = None
    raw_text: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    model: str = ""
    engine: Literal["local", "remote"] = "local"
    request_id: str = ""

    @property
    def tiles(self) -> int:
        """Tiles over all images."""
        return sum(self.tiles_per_image)


class Engine(ABC):
    """Runs generation requests; shared by every task, adapter and server."""

    #: ``local`` or ``remote``.
    name: Literal["local", "remote"]
    #: Whether ``json_schema`` requests are grammar-constrained (output always valid).
    supports_grammar: bool

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The model's id."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> GenerationOutput:
        """Run a request to completion."""

    @abstractmethod
    async def agenerate(self, request: GenerationRequest) -> GenerationOutput:
        """Run a request to completion without blocking the event loop."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield the answer's text as it is generated."""

    @abstractmethod
    def astream(self, request: GenerationRequest) -> AsyncIterator[str]:
        """Yield the answer's text as it is generated, asynchronously."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine and release its resources."""
