"""Florence-2 as an engine backend: transformers' native model on the generate seam.

Florence-2 is an encoder-decoder: the DaViT image features, ``<s>``, the prompt and ``</s>`` go
through a BART encoder once, then a BART decoder writes the answer attending to them. That does
not fit the decoder seam's one shared key/value cache, so this is a
:class:`~mississippi_tools.models.base.GenerateBackend`: :meth:`Florence2Backend.start` encodes
the image and the prompt and runs the decoder's first positions (``</s>`` then the forced
``<s>``, as Microsoft's generation settings do), :meth:`~Florence2Backend.step` feeds one token
over the request's own cache. The engine keeps deadlines, cancellation, streaming, sampling and
logits processors.

The published checkpoints are in Microsoft's remote-code layout; they load into transformers'
native ``Florence2ForConditionalGeneration`` (transformers 5.0 and later) through the mappings of
:mod:`~mississippi_tools.models.florence2.configuration` and
:mod:`~mississippi_tools.models.florence2.loading`. No remote code runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mississippi_tools.errors import ConfigError, InvalidInputError, ModelNotFoundError
from mississippi_tools.models.base import (
    GenerateBackend,
    ModelInfo,
    PreparedImage,
    PreparedPrompt,
    validate_options,
)
from mississippi_tools.models.compat import decoder_cache_kwargs
from mississippi_tools.models.florence2 import processing
from mississippi_tools.models.florence2.configuration import (
    Florence2ProcessorSettings,
    decoder_prefix,
    native_config,
    read_json,
    read_processor_settings,
)
from mississippi_tools.models.florence2.loading import load_weights
from mississippi_tools.models.florence2.tokenization import load_tokenizer
from mississippi_tools.models.idefics2.backend import weights_revision

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.idefics2.tokenization import IdeficsTokenizer

__all__ = ["Florence2Backend", "Florence2State"]

#: Florence-2 reads one image per prompt.
MAX_IMAGES = 1


@dataclass
class Florence2State:
    """One running request: the encoder's output and the decoder's cache.

    Attributes:
        encoder_hidden: ``[1, prompt, d_model]`` encoder output the decoder attends to.
        cache: The decoder's self- and cross-attention key/value cache.
        position: Decoder positions written so far.
    """

    encoder_hidden: torch.Tensor
    cache: Any
    position: int


class Florence2Backend(GenerateBackend):
    """A loaded Florence-2 checkpoint (Florence-2-DocVQA, -base, -large, or a tiny test model).

    Build it with :meth:`from_directory`; the engine does the rest. No model options.
    """

    family: ClassVar[str] = "florence2"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: IdeficsTokenizer,
        settings: Florence2ProcessorSettings,
        *,
        model_id: str,
        revision: str,
        prefix: Sequence[int],
        load_seconds: float = 0.0,
    ) -> None:
        #: transformers' native ``Florence2ForConditionalGeneration`` (typed loosely).
        self.model: Any = model
        self.tokenizer: IdeficsTokenizer = tokenizer
        self.settings = settings
        self.model_id = model_id
        self.revision = revision
        self.decoder_prefix = list(prefix)
        self.load_seconds = load_seconds
        config: Any = self.model.config
        self.image_token_id = int(config.image_token_id)
        self.vocab_size = int(config.text_config.vocab_size)
        self.max_context = int(config.text_config.max_position_embeddings)
        self._dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype

    # -- loading ------------------------------------------------------------------------------

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
    ) -> Florence2Backend:
        """Load a checkpoint in Microsoft's Florence-2 layout into the native class.

        Raises:
            ConfigError: The config (or the processor settings) does not map onto the native
                classes; the message lists every value that does not.
            CheckpointError: Tensors are missing, do not map, or are mis-shaped.
        """
        from transformers import Florence2ForConditionalGeneration

        started = time.perf_counter()
        path = directory / "config.json"
        raw = read_json(path)
        if not raw:
            raise ModelNotFoundError(f"{directory} has no config.json")
        tokenizer = load_tokenizer(directory)
        image_token_id = tokenizer.token_to_id(processing.IMAGE_TOKEN)
        config = native_config(raw, image_token_id=image_token_id)
        vocab = int(getattr(config.text_config, "vocab_size", 0))
        if image_token_id > vocab:
            raise ConfigError(
                f"{directory}: the tokenizer has {image_token_id} tokens but the model's "
                f"text_config.vocab_size is {vocab}; tokens {vocab}..{image_token_id - 1} would "
                "have no embedding"
            )
        settings = read_processor_settings(directory)
        generation = read_json(directory / "generation_config.json")
        config._attn_implementation = attn_implementation
        for sub in ("text_config", "vision_config"):
            getattr(config, sub)._attn_implementation = attn_implementation
        with torch.device("meta"):
            model: Any = Florence2ForConditionalGeneration(config)
        load_weights(model, directory, dtype=dtype, device=device, allow_pickle=allow_pickle)
        model.eval()
        model.requires_grad_(False)
        return cls(
            model,
            tokenizer,
            settings,
            model_id=model_id or directory.name,
            revision=weights_revision(directory),
            prefix=decoder_prefix(raw, generation),
            load_seconds=time.perf_counter() - started,
        )

    # -- properties ---------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """Family ``florence2``: one image per prompt, no options, boxes (``<OCR_WITH_REGION>``)."""
        return ModelInfo(
            model_id=self.model_id,
            family=self.family,
            kind=self.kind,
            max_context=self.max_context,
            instruction_tuned=True,
            max_images=MAX_IMAGES,
            regions=True,
            revision=self.revision,
        )

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.model.parameters()).device  # type: ignore[no-any-return]

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self._dtype

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
        """``<image>`` x image positions, ``<s>``, the prompt (task tokens expanded), ``</s>``."""
        validate_options(options or {}, self.info)
        if history:
            raise InvalidInputError(
                f"{self.model_id} is not a chat model and takes no conversation history "
                f"(got {len(history)} earlier turn(s)); ask each question on its own"
            )
        if len(images) != MAX_IMAGES:
            raise InvalidInputError(
                f"{self.model_id} reads exactly one image per prompt (max_images={MAX_IMAGES}), "
                f"got {len(images)}; send the pages one at a time"
            )
        text = processing.construct_prompt(prompt.replace("<image>", "").strip())
        settings = self.settings
        prepared = [
            PreparedImage(
                cache_key=(
                    f"{self.revision}|{image.content_hash}|{settings.height}x{settings.width}"
                ),
                num_tiles=1,
                num_tokens=settings.image_seq_length,
                render=_renderer(image, settings),
            )
            for image in images
        ]
        ids = [self.image_token_id] * settings.image_seq_length
        ids += self.tokenizer.bos_ids + self.tokenizer.encode(text) + [self.tokenizer.eos_token_id]
        return PreparedPrompt(input_ids=ids, images=prepared)

    # -- compute ------------------------------------------------------------------------------

    def encode(self, input_ids: Sequence[int], pixels: torch.Tensor) -> torch.Tensor:
        """The encoder's output ``[1, prompt, d_model]`` for prompt ids and one image's pixels."""
        model = self.model.model
        ids = torch.tensor([list(input_ids)], device=self.device)
        is_image = ids == self.image_token_id
        embeds = model.get_input_embeddings()(ids.masked_fill(is_image, 0))
        features = model.get_image_features(
            pixels.to(self.device, self._dtype), return_dict=True
        ).pooler_output
        if int(is_image.sum()) != features.shape[0] * features.shape[1]:
            raise InvalidInputError(
                f"the prompt has {int(is_image.sum())} image positions but the image gives "
                f"{features.shape[1]} features; preprocessor_config.json's image_seq_length "
                "does not match the vision config"
            )
        embeds = embeds.masked_scatter(is_image.unsqueeze(-1), features.to(embeds.dtype))
        out = model.language_model.encoder(inputs_embeds=embeds, return_dict=True)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden

    def _decode(self, state: Florence2State, ids: Sequence[int]) -> torch.Tensor:
        decoder = self.model.model.language_model.decoder
        tokens = torch.tensor([list(ids)], device=self.device)
        out = decoder(
            input_ids=tokens,
            encoder_hidden_states=state.encoder_hidden,
            use_cache=True,
            **decoder_cache_kwargs(decoder, state.cache),
        )
        state.position += len(ids)
        logits: torch.Tensor = self.model.lm_head(out.last_hidden_state[0, -1]).float()
        return logits

    def start(self, prompt: PreparedPrompt) -> tuple[torch.Tensor, Any]:
        """Encode image and prompt, run the decoder's prefix; the first answer token's logits."""
        from transformers import DynamicCache, EncoderDecoderCache

        pixels = torch.cat([image.render() for image in prompt.images])
        with torch.inference_mode():
            hidden = self.encode(prompt.input_ids, pixels)
            state = Florence2State(hidden, EncoderDecoderCache(DynamicCache(), DynamicCache()), 0)
            logits = self._decode(state, self.decoder_prefix)
        return logits, state

    def step(self, state: Any, token_id: int) -> torch.Tensor:
        """Feed one answer token; the next position's logits."""
        if state.position + 1 > self.max_context:
            raise InvalidInputError(
                f"the answer reached the decoder's {self.max_context} positions; "
                "ask for fewer tokens (max_tokens)"
            )
        with torch.inference_mode():
            return self._decode(state, [token_id])


def _renderer(
    image: LoadedImage, settings: Florence2ProcessorSettings
) -> Callable[[], torch.Tensor]:
    def render() -> torch.Tensor:
        return processing.pixel_values([processing.resize_image(image.image, settings)], settings)

    return render
