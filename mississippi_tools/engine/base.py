"""The engine interface: what a task asks for and what it gets back, whoever runs the model.

Two engines implement it: :class:`~mississippi_tools.engine.local.LocalEngine` (the model in this
process, with dynamic batching and a vision-feature cache) and
:class:`~mississippi_tools.engine.remote.RemoteEngine` (an OpenAI-compatible HTTP service: our
own server or vLLM). Tasks build a :class:`GenerationRequest` and read a
:class:`GenerationOutput`; they never see which engine ran.
"""

from __future__ import annotations

import math
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    from mississippi_tools.engine.repetition import RepetitionCheck
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.base import LogitsProcessor, ModelInfo

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "MAX_NEW_TOKENS_LIMIT",
    "Engine",
    "FinishReason",
    "GenerationOutput",
    "GenerationRequest",
    "SamplingParams",
]

#: New tokens generated when the caller does not say.
DEFAULT_MAX_NEW_TOKENS = 1024
#: Most new tokens any request may ask for; engines refuse more than their model's context too.
MAX_NEW_TOKENS_LIMIT = 1_000_000


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidInputError(f"{name} must be {bounds}, got {value}")


def _check_float(
    name: str,
    value: object,
    *,
    low: float,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        bracket = "(" if low_open else "["
        upper = f"{high:g}]" if high is not None else "inf)"
        raise InvalidInputError(f"{name} must be in {bracket}{low:g}, {upper}, got {value!r}")


FinishReason = Literal["stop", "length", "cancelled", "repetition"]
"""Why generation ended: an end token or stop string (``stop``), ``max_new_tokens`` or the
context (``length``), a cancel, or a loop caught by the request's
:class:`~mississippi_tools.engine.repetition.RepetitionCheck` (``repetition``)."""


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
    skip_special_tokens: bool = True
    """Leave special tokens out of the answer text (as the original's chat does); ``False``
    keeps them, e.g. the region markup ``<ref>``/``<box>`` of grounded answers (vLLM's name)."""

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        _check_float("temperature", self.temperature, low=0.0)
        _check_float("top_p", self.top_p, low=0.0, high=1.0, low_open=True)
        _check_int("top_k", self.top_k, 0, None)
        _check_float("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        if self.seed is not None:
            _check_int("seed", self.seed, 0, 2**63 - 1)
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
        options: Model-specific options (H2OVL: ``max_tiles``, ``use_msac``, ``ocr_mode``; each
            family lists its own in ``engine.model_info.options``), checked by the model.
        json_schema: Constrain the answer to JSON valid under this schema (engines that support
            grammars; others ignore it and the task validates).
        logprobs: Record each generated token's log-probability.
        logits_processors: Extra per-request processors (applied after the model's own).
        timeout: Seconds from submission after which the request fails with
            :class:`~mississippi_tools.errors.DeadlineExceededError`.
        repetition: Watch the answer for loops and end it with ``finish_reason="repetition"``
            (and ban repeated n-grams when the check says so); ``None`` (the default for raw
            generation) leaves a loop to run to ``max_new_tokens``. Tasks turn it on.
        request_id: Identifies the request in errors, logs and metrics.
        max_tiles: Deprecated: ``options={"max_tiles": n}``.
        use_msac: Deprecated: ``options={"use_msac": b}``.
        ocr_mode: Deprecated: ``options={"ocr_mode": True}``.
    """

    prompt: str
    images: Sequence[LoadedImage] = ()
    history: Sequence[tuple[str, str]] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    options: Mapping[str, Any] = field(default_factory=dict)
    json_schema: Mapping[str, Any] | None = None
    logprobs: bool = False
    logits_processors: Sequence[LogitsProcessor] = ()
    timeout: float | None = None
    repetition: RepetitionCheck | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    max_tiles: int | None = None
    use_msac: bool | None = None
    ocr_mode: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise InvalidInputError(f"timeout must be a number of seconds > 0, got {self.timeout}")
        moved = {
            name: value
            for name, value in (
                ("max_tiles", self.max_tiles),
                ("use_msac", self.use_msac),
                ("ocr_mode", self.ocr_mode or None),
            )
            if value is not None
        }
        if moved:
            warnings.warn(
                f"GenerationRequest({', '.join(moved)}=...) is deprecated; pass "
                f"options={moved!r} (removed in the next release)",
                DeprecationWarning,
                stacklevel=3,
            )
            self.options = {**moved, **self.options}
            self.max_tiles = self.use_msac = None
            self.ocr_mode = False


@dataclass
class GenerationOutput:
    """What the model answered, with the numbers behind it.

    Attributes:
        text: The answer text (special tokens skipped, cut at a stop string, stripped).
        token_ids: The new tokens, without the end token.
        finish_reason: ``stop`` (end token or stop string), ``length`` (max_new_tokens or the
            context), ``cancelled``, or ``repetition`` (a loop; see :attr:`repetition`).
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
        repetition: How the answer looped, in words, when ``finish_reason`` is ``repetition``.
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
    repetition: str | None = None

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

    @property
    @abstractmethod
    def model_info(self) -> ModelInfo:
        """What the model is: family, options and limits (decides prompts and tasks)."""

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
