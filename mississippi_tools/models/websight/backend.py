"""VLM_WebSight_finetuned as an engine backend: screenshot in, HTML/CSS out.

The model was fine-tuned on one prompt only, the screenshot alone; it answers with a whole HTML
document. Generation follows the model card: greedy, ending at ``</s>``, with
``<fake_token_around_image>`` and ``<image>`` never generated (its ``bad_words_ids``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mississippi_tools.errors import ConfigError, InvalidInputError
from mississippi_tools.models.base import (
    DecoderBackend,
    ModelInfo,
    PreparedImage,
    PreparedPrompt,
    validate_options,
)
from mississippi_tools.models.compat import decoder_cache_kwargs
from mississippi_tools.models.h2ovl.backend import _revision
from mississippi_tools.models.h2ovl.modeling import cast_model
from mississippi_tools.models.precision import (
    compute_large_products_in_float32,
    emulates_bfloat16,
    register_float32_attention,
)
from mississippi_tools.models.websight import processing
from mississippi_tools.models.websight.configuration import WebSightConfig
from mississippi_tools.models.websight.loading import load_config, load_weights
from mississippi_tools.models.websight.modeling import VMistralForConditionalGeneration
from mississippi_tools.models.websight.tokenization import WebSightTokenizer

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.kv_cache import BatchKVCache

__all__ = ["MAX_IMAGES", "SuppressTokens", "WebSightBackend"]

#: Images one prompt may carry: the model was trained on one screenshot per prompt.
MAX_IMAGES = 1


class SuppressTokens:
    """Never generate these ids (the model card's ``bad_words_ids`` of single tokens)."""

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = list(token_ids)

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """Set the suppressed ids' scores to ``-inf``."""
        logits[self.token_ids] = float("-inf")
        return logits


class WebSightBackend(DecoderBackend):
    """A loaded VLM_WebSight_finetuned checkpoint (the 8B model or a tiny test model).

    Build it with :meth:`from_directory`; the engine does the rest. It has no model options.
    """

    family: ClassVar[str] = "websight"

    def __init__(
        self,
        model: VMistralForConditionalGeneration,
        tokenizer: WebSightTokenizer,
        *,
        model_id: str,
        revision: str,
        normalization: processing.ImageNormalization,
        load_seconds: float = 0.0,
        kv_cache_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.config: WebSightConfig = model.config
        self.tokenizer: WebSightTokenizer = tokenizer
        self.model_id = model_id
        self.revision = revision
        self.normalization = normalization
        self.load_seconds = load_seconds
        self.kv_cache_dtype = kv_cache_dtype
        self.max_context = self.config.max_position_embeddings
        self.vocab_size = self.config.total_vocab_size
        self._fake_id = tokenizer.token_to_id(processing.FAKE_IMAGE_TOKEN)
        self._image_id = tokenizer.token_to_id(processing.IMAGE_TOKEN)
        if self._image_id != self.config.image_token_id:
            raise ConfigError(
                f"tokenizer.json has <image> at {self._image_id} but config.json says "
                f"image_token_id {self.config.image_token_id}"
            )
        self._suppressed = (self._fake_id, self._image_id)

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        *,
        model_id: str | None = None,
        device: torch.device,
        dtype: torch.dtype,
        attn_implementation: str = "sdpa",
        allow_pickle: bool = False,
    ) -> WebSightBackend:
        """Load a checkpoint directory in the published format."""
        started = time.perf_counter()
        config = load_config(directory)
        tokenizer = WebSightTokenizer.from_pretrained(directory)
        normalization = processing.read_normalization(directory)
        emulated = emulates_bfloat16(device, dtype)
        if emulated and attn_implementation == "sdpa":
            attn_implementation = register_float32_attention()
        with torch.device("meta"):
            model = VMistralForConditionalGeneration(
                config, attn_implementation=attn_implementation
            )
        load_weights(model, directory, dtype=dtype, allow_pickle=allow_pickle)
        cast_model(model, dtype)
        if emulated:  # see mississippi_tools.models.precision
            compute_large_products_in_float32(model)
        model.to(device)
        model.eval()
        model.requires_grad_(False)
        return cls(
            model,
            tokenizer,
            model_id=model_id or directory.name,
            revision=_revision(directory),
            normalization=normalization,
            load_seconds=time.perf_counter() - started,
            kv_cache_dtype=torch.float32 if emulated else None,
        )

    # -- properties ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self.model.dtype

    @property
    def info(self) -> ModelInfo:
        """Family ``websight``: one screenshot per prompt, no options, not a chat model."""
        return ModelInfo(
            model_id=self.model_id,
            family=self.family,
            kind=self.kind,
            max_context=self.max_context,
            instruction_tuned=False,
            max_images=MAX_IMAGES,
            revision=self.revision,
        )

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """``</s>``."""
        return frozenset({self.tokenizer.eos_token_id})

    # -- preparation --------------------------------------------------------------------------

    def prepare(
        self,
        prompt: str,
        images: Sequence[LoadedImage],
        *,
        history: Sequence[tuple[str, str]] = (),
        options: Mapping[str, Any] | None = None,
    ) -> PreparedPrompt:
        """``<s>``, the image block, then ``prompt`` as text (empty for HTML generation)."""
        validate_options(options or {}, self.info)
        if history:
            raise InvalidInputError(
                f"{self.model_id} is not a chat model and takes no conversation history "
                f"(got {len(history)} earlier turn(s)); send the screenshot alone"
            )
        if len(images) > MAX_IMAGES:
            raise InvalidInputError(
                f"{self.model_id} reads one screenshot per prompt (max_images={MAX_IMAGES}), "
                f"got {len(images)} images; send them one at a time"
            )
        size = self.config.vision_config.image_size
        prepared = [
            PreparedImage(
                cache_key=f"{self.revision}|{image.content_hash}|{size}|{self.normalization}",
                num_tiles=1,
                num_tokens=self.config.image_seq_len,
                render=_renderer(image, size, self.normalization),
            )
            for image in images
        ]
        ids = [self.tokenizer.bos_token_id]
        for _ in prepared:
            ids += processing.image_block(self._fake_id, self._image_id, self.config.image_seq_len)
        prefix = len(ids) if prepared else 0
        ids += self.tokenizer.encode(prompt)
        return PreparedPrompt(
            input_ids=ids,
            images=prepared,
            prefix_length=prefix,
            logits_processors=[SuppressTokens(self._suppressed)],
        )

    # -- compute ------------------------------------------------------------------------------

    def encode_images(
        self, rendered: Sequence[Any], *, max_batch_tiles: int = 8
    ) -> list[torch.Tensor]:
        """Latents ``[1, n_latents, hidden]`` per image; images batched through the tower."""
        pixels = torch.cat(list(rendered)).to(self.device)
        step = max(1, max_batch_tiles)
        with torch.inference_mode():
            features = torch.cat(
                [
                    self.model.extract_features(pixels[i : i + step])
                    for i in range(0, pixels.shape[0], step)
                ]
            )
        return [features[i : i + 1] for i in range(features.shape[0])]

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the image latents in place of ``<image>``."""
        with torch.inference_mode():
            return self.model.embed(
                input_ids.to(self.device), image_features, image_token_id=self._image_id
            )

    def new_cache(self) -> BatchKVCache:
        """An empty cache with one layer per decoder layer."""
        from mississippi_tools.models.kv_cache import BatchKVCache

        return BatchKVCache(self.config.num_hidden_layers, dtype=self.kv_cache_dtype)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: BatchKVCache,
        *,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Decoder over new positions; float32 logits of the last (or every) position."""
        decoder = self.model.language_model
        with torch.inference_mode():
            out = decoder.model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask.to(self.device),
                position_ids=position_ids.to(self.device),
                use_cache=True,
                **decoder_cache_kwargs(decoder.model, cache),
            )
            hidden = out.last_hidden_state
            if last_only:
                hidden = hidden[:, -1]
            logits: torch.Tensor = decoder.lm_head(hidden).float()
        return logits


def _renderer(  # type: ignore[no-untyped-def]
    image: LoadedImage, size: int, normalization: processing.ImageNormalization
):
    def render() -> torch.Tensor:
        resized = processing.resize_image(image.image, size)
        return processing.pixel_values([resized], normalization)

    return render
