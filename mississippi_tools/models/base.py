"""What the engine needs from a model family: the seam between "who runs" and "what model".

A backend turns a request (question, images, history, tiling options) into token ids plus the
images' tiles, encodes tiles into features, embeds tokens, and runs the decoder one chunk at a time
over a :class:`~mississippi_tools.engine.kv_cache.BatchKVCache`. The engine (scheduling,
batching, caching, sampling) is written once against this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

if TYPE_CHECKING:
    import torch

    from mississippi_tools.engine.kv_cache import BatchKVCache
    from mississippi_tools.images import LoadedImage

__all__ = [
    "LogitsProcessor",
    "PreparedImage",
    "PreparedPrompt",
    "TokenizerLike",
    "VLMBackend",
    "VocabType",
]

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


@dataclass
class PreparedImage:
    """One image of a request, planned but not necessarily rendered.

    Attributes:
        cache_key: Identifies the image's features: content hash, tiling and model revision.
        num_tiles: Tiles fed to the vision encoder.
        render: Produces the normalised tiles ``[num_tiles, 3, H, W]`` (skipped on cache hits).
    """

    cache_key: str
    num_tiles: int
    render: Callable[[], torch.Tensor]


@dataclass
class PreparedPrompt:
    """A request ready for the engine.

    Attributes:
        input_ids: The whole prompt's token ids, image tokens included.
        images: The images in prompt order.
        prefix_length: Length of the prefix ending after the last image block; that prefix's
            key/value states depend only on the images and the text before them, so they can be
            reused by later questions on the same images. 0 when there are no images.
    """

    input_ids: list[int]
    images: list[PreparedImage] = field(default_factory=list)
    prefix_length: int = 0

    @property
    def num_tiles(self) -> int:
        """Tiles over all images."""
        return sum(image.num_tiles for image in self.images)


class VLMBackend(ABC):
    """A loaded vision-language model, as the engine drives it."""

    #: Identifier reported in results (hub id or directory name).
    model_id: str
    #: Identifies the weights for cache keys (hub commit, or a hash of the files).
    revision: str
    #: The tokenizer.
    tokenizer: TokenizerLike
    #: Largest prompt + generation length, in tokens.
    max_context: int
    #: Rows of the decoder's output (may exceed the tokenizer's vocabulary).
    vocab_size: int

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
    def image_token_id(self) -> int:
        """The placeholder token that image features replace."""

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
        max_tiles: int | None = None,
        use_msac: bool | None = None,
    ) -> PreparedPrompt:
        """Build the prompt ids and plan the images' tiles."""

    @abstractmethod
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Features ``[tiles, tokens_per_tile, hidden]`` for tiles ``[tiles, 3, H, W]``."""

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
        """Run the decoder on new positions, appending to ``cache``; return logits.

        Args:
            inputs_embeds: ``[batch, new, hidden]``.
            attention_mask: ``[batch, cached + new]``, 0 on padding.
            position_ids: ``[batch, new]``.
            cache: The cache the new keys and values are appended to.
            last_only: Project only the last position to the vocabulary (``[batch, vocab]``);
                otherwise every position (``[batch, new, vocab]``).
        """

    def logits_processors_for_ocr(self) -> list[LogitsProcessor]:
        """The model's own OCR-mode processors (none by default)."""
        return []
