"""What the engine needs from a model family: the seam between "who runs" and "what model".

Every family is a :class:`Backend`: it loads its published checkpoint
(:meth:`Backend.from_directory`), says what it is (:class:`ModelInfo`: family, options, limits),
validates its own options and turns a request (question, images, history, options) into a
:class:`PreparedPrompt`. Two kinds of backend then compute differently, behind one engine queue:

* :class:`DecoderBackend` — models whose images become features spliced into the prompt's
  embeddings, decoded over the engine's batched key/value cache (H2OVL, Idefics2, Idefics3,
  WebSight's VMistral). The engine batches them: it encodes images
  (:meth:`DecoderBackend.encode_images`, cached by :attr:`PreparedImage.cache_key`), embeds, and
  runs the decoder one chunk at a time.
* :class:`GenerateBackend` — models whose images enter another way (an encoder-decoder such as
  Florence-2, gated cross-attention such as IDEFICS 1). They own their per-request state
  (:meth:`GenerateBackend.start`, :meth:`GenerateBackend.step`); the engine runs them one request
  at a time with the same deadlines, cancellation, streaming, sampling and logits processors.

Model-specific options (H2OVL's ``max_tiles``, Idefics2's ``do_image_splitting``, ...) travel as a
mapping on the request and are checked by the backend against its :attr:`ModelInfo.options`
(:func:`validate_options`), so the engine stays model-neutral. Models know nothing of tasks,
scheduling or surfaces.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeAlias

from mississippi_tools.errors import InvalidInputError

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Self

    import torch

    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.kv_cache import BatchKVCache

__all__ = [
    "Backend",
    "BackendKind",
    "DecoderBackend",
    "GenerateBackend",
    "LogitsProcessor",
    "ModelInfo",
    "ModelOption",
    "PreparedImage",
    "PreparedPrompt",
    "TokenizerLike",
    "VLMBackend",
    "VocabType",
    "validate_options",
]

BackendKind = Literal["decoder", "generate"]
"""How a backend computes: see the module docstring."""

VocabType: TypeAlias = Literal["byte_fallback", "byte_level", "raw"]
"""How a tokenizer's pieces (:meth:`TokenizerLike.vocab_pieces`) spell text.

- ``byte_fallback``: SentencePiece with byte fallback: ``▁`` for a space, ``<0xNN>`` pieces for
  bytes without a piece of their own (Llama-2, Mistral, H2OVL, Idefics2).
- ``byte_level``: GPT-2-style byte-level BPE: each byte is one printable character, ``Ġ`` for a
  space and ``Ċ`` for a newline (Llama-3, so Idefics3; GPT-2, Qwen).
- ``raw``: the pieces are the text itself (tiktoken-style vocabularies).
"""


class TokenizerLike(Protocol):
    """The tokenizer surface the engine and the grammar glue use.

    A tokenizer may also have ``special_ids`` (ids of special and added tokens that are never
    text) and ``add_prefix_space`` (whether encoding prepends a space; by default true for
    ``byte_fallback`` vocabularies, false otherwise); the grammar reads both when present.
    """

    eos_token_id: int

    @property
    def vocab_type(self) -> VocabType:
        """How :meth:`vocab_pieces` spell text (see :data:`VocabType`)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        ...

    def vocab_pieces(self, size: int | None = None) -> list[str]:
        """Every id's piece in id order, spelt as :attr:`vocab_type` says (padded with "")."""
        ...

    def is_whitespace_token(self, idx: int) -> bool:
        """Whether the token decodes to whitespace only."""
        ...


class LogitsProcessor(Protocol):
    """Changes one request's next-token scores.

    Called once per generated token with the request's generated ids so far and its logits,
    a 1-D float32 tensor ``[vocab]``; returns the logits to sample from (may modify in place).
    A processor holds per-request state, so each request gets its own instance.
    """

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """Return the processed logits."""
        ...


# ------------------------------------------------------------------------------------------------
# What a model is
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOption:
    """One model-specific option a backend accepts on requests.

    Attributes:
        name: The option's name, e.g. ``max_tiles``.
        kind: Its type: ``int``, ``float``, ``bool`` or ``str``.
        description: What it does, for users and for an LLM calling a tool.
        minimum: Smallest allowed value (numbers).
        maximum: Largest allowed value (numbers).
        choices: Allowed values (strings).
    """

    name: str
    kind: type
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: Any, family: str) -> Any:
        """``value`` if it fits this option, else :class:`InvalidInputError` saying what fits."""
        expected = self.kind.__name__
        if self.kind is bool:
            valid = isinstance(value, bool)
        elif self.kind is float:
            valid = isinstance(value, int | float) and not isinstance(value, bool)
            valid = valid and math.isfinite(value)
        else:
            valid = isinstance(value, self.kind) and not (
                self.kind is int and isinstance(value, bool)
            )
        if not valid:
            raise InvalidInputError(
                f"option {self.name} of {family} models must be {expected}, got {value!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise InvalidInputError(
                f"option {self.name} must be >= {self.minimum:g}, got {value!r}: {self.description}"
            )
        if self.maximum is not None and value > self.maximum:
            raise InvalidInputError(
                f"option {self.name} must be <= {self.maximum:g}, got {value!r}: {self.description}"
            )
        if self.choices and value not in self.choices:
            raise InvalidInputError(
                f"option {self.name} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        return value


@dataclass(frozen=True)
class ModelInfo:
    """What the task layer and the surfaces need to know about a loaded model.

    Attributes:
        model_id: Hub id or directory name.
        family: The model family (``h2ovl``, ``idefics2``, ...); decides prompts and tasks.
        kind: How the backend computes (``remote`` behind an HTTP service).
        max_context: Largest prompt + answer, in tokens.
        instruction_tuned: Whether the model follows chat instructions; pretrained-only
            checkpoints (``idefics2-8b-base``) only continue text.
        max_images: Most images one prompt may carry (``None``: no fixed limit).
        options: The model-specific request options it accepts.
        regions: Whether it can say where text is on the page (boxes).
        revision: Identifies the weights (hub commit or a digest of the files).
    """

    model_id: str
    family: str
    kind: BackendKind | Literal["remote"] = "decoder"
    max_context: int = 8192
    instruction_tuned: bool = True
    max_images: int | None = None
    options: tuple[ModelOption, ...] = ()
    regions: bool = False
    revision: str = ""

    def option(self, name: str) -> ModelOption | None:
        """The option called ``name``, if the model has one."""
        return next((option for option in self.options if option.name == name), None)


def validate_options(options: Mapping[str, Any], info: ModelInfo) -> dict[str, Any]:
    """Check request options against a model's: each known, each value of the right type and range.

    ``None`` values mean "the model's default" and are dropped.

    Raises:
        InvalidInputError: An option the model does not have (the message lists the ones it
            has), or a value out of range.
    """
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        option = info.option(name)
        if option is None:
            known = ", ".join(f"{o.name} ({o.description})" for o in info.options) or "none"
            raise InvalidInputError(
                f"{name} is not an option of {info.family} models ({info.model_id}); "
                f"their options are: {known}"
            )
        checked[name] = option.check(value, info.family)
    return checked


# ------------------------------------------------------------------------------------------------
# A request, prepared
# ------------------------------------------------------------------------------------------------


@dataclass
class PreparedImage:
    """One image of a request, planned but not necessarily rendered.

    Attributes:
        cache_key: Identifies the image's features: content hash, every processing option that
            changes them (tiling, splitting, sizes) and the model revision.
        num_tiles: Pieces fed to the vision encoder (tiles, crops; 1 for a plain image).
        num_tokens: Prompt positions the image's features fill.
        render: Produces the backend's encoder input for this image (skipped on cache hits);
            only the backend reads it (:meth:`DecoderBackend.encode_images`).
    """

    cache_key: str
    num_tiles: int
    num_tokens: int
    render: Callable[[], Any]


@dataclass
class PreparedPrompt:
    """A request ready for the engine.

    Attributes:
        input_ids: The whole prompt's token ids, image tokens included.
        images: The images in prompt order.
        prefix_length: Length of the prefix ending after the last image block; that prefix's
            key/value states depend only on the images and the text before them, so they can be
            reused by later questions on the same images. 0 when there are no images (or the
            backend does not support prefix reuse).
        logits_processors: Processors the model's options ask for (H2OVL's OCR mode ...),
            applied before the request's own.
    """

    input_ids: list[int]
    images: list[PreparedImage] = field(default_factory=list)
    prefix_length: int = 0
    logits_processors: list[LogitsProcessor] = field(default_factory=list)

    @property
    def num_tiles(self) -> int:
        """Vision-encoder pieces over all images."""
        return sum(image.num_tiles for image in self.images)

    @property
    def num_image_tokens(self) -> int:
        """Prompt positions filled by image features."""
        return sum(image.num_tokens for image in self.images)


# ------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------


class Backend(ABC):
    """A loaded model, as the engine drives it (see the two kinds below)."""

    #: How the engine drives it.
    kind: ClassVar[BackendKind]
    #: The family name, shared by every checkpoint of the family (``h2ovl``, ``idefics2`` ...).
    family: ClassVar[str]
    #: Whether ``from_directory`` takes ``max_memory`` and ``offload_dir``: layers placed across
    #: devices and disk (accelerate) for a model larger than one device.
    supports_placement: ClassVar[bool] = False
    #: Whether ``from_directory`` takes ``quantization`` (``"int8"``: int8 linear layers on the
    #: CPU, :mod:`mississippi_tools.models.quantization`).
    supports_quantization: ClassVar[bool] = False

    #: Identifier reported in results (hub id or directory name).
    model_id: str
    #: Identifies the weights for cache keys (hub commit, or a digest of the files).
    revision: str
    #: The tokenizer.
    tokenizer: TokenizerLike
    #: Largest prompt + generation length, in tokens.
    max_context: int
    #: Rows of the model's output (may exceed the tokenizer's vocabulary).
    vocab_size: int

    @classmethod
    @abstractmethod
    def from_directory(
        cls,
        directory: Path,
        *,
        model_id: str | None = None,
        device: torch.device,
        dtype: torch.dtype,
        attn_implementation: str = "sdpa",
        allow_pickle: bool = False,
    ) -> Self:
        """Load a checkpoint directory in the family's published on-disk format.

        Raises:
            ConfigError: The config is not one this backend understands.
            CheckpointError: Tensors are missing, unexpected or mis-shaped.
        """

    @property
    @abstractmethod
    def info(self) -> ModelInfo:
        """What the model is: family, options, limits."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the weights are."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""

    @property
    @abstractmethod
    def stop_token_ids(self) -> frozenset[int]:
        """Tokens that end an answer."""

    @abstractmethod
    def prepare(
        self,
        prompt: str,
        images: Sequence[LoadedImage],
        *,
        history: Sequence[tuple[str, str]] = (),
        options: Mapping[str, Any] | None = None,
    ) -> PreparedPrompt:
        """Build the prompt ids, plan the images and make the options' logits processors.

        ``prompt`` and ``history`` are the caller's text: they never yield an added or special
        token id (a typed ``<|end|>`` or ``<img>`` stays text); only the backend's template
        writes those, so encode template and caller spans apart. ``<image>`` in ``prompt`` and
        in history questions marks where images go. Text that cannot be tokenized (a lone
        surrogate) raises :class:`~mississippi_tools.errors.InvalidInputError` naming it.
        ``tests/models/test_special_tokens.py`` checks every family. ``options`` are checked
        with :func:`validate_options`.

        Raises:
            InvalidInputError: An unknown option or value, too many images for the model, or
                text the tokenizer cannot take.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds beyond its tensors (nothing by default)."""


class DecoderBackend(Backend):
    """A model whose image features are spliced into the prompt, decoded over a batched cache."""

    kind: ClassVar[BackendKind] = "decoder"

    @abstractmethod
    def encode_images(
        self, rendered: Sequence[Any], *, max_batch_tiles: int = 8
    ) -> list[torch.Tensor]:
        """Features for several images at once, one tensor per image, in order.

        Args:
            rendered: What each image's :attr:`PreparedImage.render` returned.
            max_batch_tiles: Most tiles per encoder forward (bounds activation memory).

        Returns:
            Per image, ``[num_tiles, tokens_per_tile, hidden]`` whose rows, flattened, fill the
            image's :attr:`PreparedImage.num_tokens` prompt positions in order.
        """

    @abstractmethod
    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Input embeddings ``[batch, seq, hidden]``, image features placed in order."""

    @abstractmethod
    def new_cache(self) -> BatchKVCache:
        """An empty key/value cache for the decoder."""

    @abstractmethod
    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: BatchKVCache,
        *,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Run the decoder on new positions, appending to ``cache``; return float32 logits.

        Args:
            inputs_embeds: ``[batch, new, hidden]``.
            attention_mask: ``[batch, cached + new]``, 0 on padding.
            position_ids: ``[batch, new]``.
            cache: The cache the new keys and values are appended to.
            last_only: Project only the last position to the vocabulary (``[batch, vocab]``);
                otherwise every position (``[batch, new, vocab]``).
        """


VLMBackend = DecoderBackend
"""The name of :class:`DecoderBackend` before generate backends existed (kept for one release)."""


class GenerateBackend(Backend):
    """A model that keeps its own per-request state; the engine runs it one request at a time."""

    kind: ClassVar[BackendKind] = "generate"

    @abstractmethod
    def start(self, prompt: PreparedPrompt) -> tuple[torch.Tensor, Any]:
        """Encode the images and the prompt; return the first answer position's logits.

        Returns:
            Float32 logits ``[vocab]`` and the request's state, handed back to :meth:`step`.
        """

    @abstractmethod
    def step(self, state: Any, token_id: int) -> torch.Tensor:
        """Feed the chosen token; return the next position's float32 logits ``[vocab]``."""
