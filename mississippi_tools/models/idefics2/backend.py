"""Idefics2 as an engine backend: transformers' native model, driven by the batched engine.

The model is transformers' own ``Idefics2ForConditionalGeneration`` (SigLIP-derived vision
encoder, MLP projection and perceiver resampler, Mistral decoder), loaded from the published
files; this module drives its parts the way the engine needs: images through the vision encoder
and connector (:meth:`Idefics2Backend.encode_images`, features cached per image), their features
written over the ``<image>`` token embeddings (:meth:`~Idefics2Backend.embed`), and the decoder
over the engine's batched key/value cache (:meth:`~Idefics2Backend.forward`).

:class:`~mississippi_tools.models.idefics3.backend.Idefics3Backend` subclasses it and changes the
image tiling, the prompt and the connector, as vLLM's ``idefics3.py`` reuses the Idefics2 vision
model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.base import (
    DecoderBackend,
    ModelInfo,
    ModelOption,
    PreparedImage,
    PreparedPrompt,
    validate_options,
)
from mississippi_tools.models.compat import decoder_cache_kwargs
from mississippi_tools.models.idefics2 import processing
from mississippi_tools.models.idefics2.configuration import (
    Idefics2Config,
    Idefics2ProcessorSettings,
    read_json,
)
from mississippi_tools.models.idefics2.loading import load_weights, rebuild_meta_buffers
from mississippi_tools.models.idefics2.tokenization import IdeficsTokenizer, Segment
from mississippi_tools.models.precision import (
    compute_large_products_in_float32,
    emulates_bfloat16,
    register_float32_attention,
)

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.kv_cache import BatchKVCache

__all__ = ["Idefics2Backend", "execution_device", "has_chat_template", "weights_revision"]

logger = logging.getLogger(__name__)

#: Instruction-tuned Idefics2 checkpoints (suggested when a pretrained-only one is loaded).
INSTRUCTION_TUNED = ("HuggingFaceM4/idefics2-8b", "HuggingFaceM4/idefics2-8b-chatty")


def has_chat_template(directory: Path) -> bool:
    """Whether the checkpoint ships a chat template (instruction-tuned checkpoints do)."""
    if (directory / "chat_template.json").is_file() or (
        directory / "chat_template.jinja"
    ).is_file():
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        if read_json(directory / name).get("chat_template"):
            return True
    return False


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's device when placed, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return next(module.parameters()).device


def weights_revision(directory: Path) -> str:
    """The hub commit for snapshots, else a digest of the config and the weight files' stats."""
    parts = directory.resolve().parts
    if len(parts) >= 2 and parts[-2] == "snapshots":
        return parts[-1][:12]
    digest = hashlib.blake2b(digest_size=8)
    digest.update((directory / "config.json").read_bytes())
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class Idefics2Backend(DecoderBackend):
    """A loaded Idefics2 checkpoint (idefics2-8b, -chatty, -base, or a tiny test model).

    Build it with :meth:`from_directory`; the engine does the rest. Options (per request):
    ``do_image_splitting`` and ``longest_edge``.
    """

    family: ClassVar[str] = "idefics2"
    supports_placement: ClassVar[bool] = True
    #: The parsed ``config.json`` type of the family.
    config_class: ClassVar[type[Idefics2Config]] = Idefics2Config
    #: transformers' class of the whole model.
    native_class: ClassVar[str] = "Idefics2ForConditionalGeneration"
    #: Published instruction-tuned checkpoints of the family.
    instruction_tuned_models: ClassVar[tuple[str, ...]] = INSTRUCTION_TUNED
    #: Most images one prompt may carry: 12 split images (12 x 5 x 66 = 3960 positions) still
    #: fit the decoder's 4096-token attention window; the processor itself sets no limit.
    max_images: ClassVar[int] = 12

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: IdeficsTokenizer,
        config: Idefics2Config,
        processor_settings: Idefics2ProcessorSettings,
        *,
        model_id: str,
        revision: str,
        instruction_tuned: bool = True,
        extra_stop_ids: Sequence[int] = (),
        kv_cache_dtype: torch.dtype | None = None,
        load_seconds: float = 0.0,
    ) -> None:
        #: transformers' native model (typed loosely: its submodules are reached by name).
        self.model: Any = model
        self.tokenizer: IdeficsTokenizer = tokenizer
        self.config = config
        self.processor_settings: Any = processor_settings
        self.model_id = model_id
        self.revision = revision
        self.instruction_tuned = instruction_tuned
        self.max_context = config.max_context
        self.vocab_size = config.vocab_size
        self.kv_cache_dtype = kv_cache_dtype
        self.load_seconds = load_seconds
        self.image_token_id = config.image_token_id
        self.fake_token_id = tokenizer.token_to_id(processing.FAKE_TOKEN)
        stops = {tokenizer.eos_token_id, *extra_stop_ids}
        if instruction_tuned:
            stops.add(tokenizer.token_to_id(processing.END_OF_UTTERANCE))
        self._stop_ids = frozenset(stops)
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
        max_memory: Mapping[str | int, int | str] | None = None,
        offload_dir: str | Path | None = None,
    ) -> Idefics2Backend:
        """Load a checkpoint directory in the published format.

        Args:
            directory: The checkpoint.
            model_id: Name reported in results (default: the directory name).
            device: Where the weights go (``cuda`` spills layers to the CPU when the GPU is too
                small; see :mod:`~mississippi_tools.models.idefics2.placement`).
            dtype: Weight dtype (float32 files are cast tensor by tensor while loading).
            attn_implementation: ``sdpa``, ``eager`` or ``flash_attention_2``.
            allow_pickle: Accept pickled ``.bin`` weights.
            max_memory: Per-device budget (``{0: "20GiB", "cpu": "30GiB"}``); what does not fit
                goes to the next device, and past the CPU to ``offload_dir`` on disk
                (needs accelerate: ``pip install "mississippi-tools[gpu]"``).
            offload_dir: Where weights offloaded to disk are kept.

        Raises:
            ConfigError: The config is not one this backend understands.
            CheckpointError: Tensors are missing, unexpected or mis-shaped.
            MissingDependencyError: A quantized checkpoint without its kernels, or a placement
                without accelerate.
        """
        import transformers

        from mississippi_tools.models.idefics2 import placement

        started = time.perf_counter()
        config = cls.config_class.from_file(directory / "config.json")
        if config.quantization_config:
            placement.require_quantization_backend(config.quantization_config, directory)
        tokenizer = IdeficsTokenizer.from_pretrained(directory)
        settings = cls.read_processor_settings(directory)
        emulated = emulates_bfloat16(device, dtype)
        if emulated and attn_implementation == "sdpa":
            attn_implementation = register_float32_attention()
        native_cls = getattr(transformers, cls.native_class)
        with torch.device("meta"):
            model = native_cls(config.native(attn_implementation=attn_implementation))
        device_map = placement.plan_device_map(
            model, device=device, dtype=dtype, max_memory=max_memory
        )
        offloaded = load_weights(
            model,
            directory,
            dtype=dtype,
            device_map=device_map,
            device=device,
            allow_pickle=allow_pickle,
        )
        rebuild_meta_buffers(model, device, allowed_meta=offloaded.keys())
        if emulated:  # see mississippi_tools.models.precision
            compute_large_products_in_float32(model)
        if device_map is not None:
            placement.dispatch(model, device_map, offloaded, offload_dir=offload_dir)
        model.eval()
        model.requires_grad_(False)
        name = model_id or directory.name
        generation = read_json(directory / "generation_config.json")
        eos = generation.get("eos_token_id")
        extra = [eos] if isinstance(eos, int) else [e for e in eos or [] if isinstance(e, int)]
        return cls(
            model,
            tokenizer,
            config,
            settings,
            model_id=name,
            revision=weights_revision(directory),
            instruction_tuned=has_chat_template(directory) and not name.endswith("-base"),
            extra_stop_ids=extra,
            kv_cache_dtype=torch.float32 if emulated else None,
            load_seconds=time.perf_counter() - started,
        )

    @classmethod
    def read_processor_settings(cls, directory: Path) -> Any:
        """The family's processor settings from the checkpoint's processor files."""
        return Idefics2ProcessorSettings.from_directory(directory)

    # -- properties ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the input embeddings run (the first device of a split model)."""
        return execution_device(self.model.get_input_embeddings())  # type: ignore[operator]

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self._dtype

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """``</s>``, the generation config's ends and, for chat models, ``<end_of_utterance>``."""
        return self._stop_ids

    def options(self) -> tuple[ModelOption, ...]:
        """The request options of this family."""
        settings = self.processor_settings
        return (
            ModelOption(
                "do_image_splitting",
                bool,
                "also read each image's four quarters (5 x 64 image tokens instead of 64; the "
                "model card advises it for small print; this checkpoint's default: "
                f"{str(settings.do_image_splitting).lower()})",
            ),
            ModelOption(
                "longest_edge",
                int,
                f"longest image side in pixels before encoding ({settings.shortest_edge}.."
                f"{self.config.vision_config.image_size}; default {settings.longest_edge}); "
                "lower is faster, higher reads smaller print",
                minimum=settings.shortest_edge,
                maximum=self.config.vision_config.image_size,
            ),
        )

    @property
    def info(self) -> ModelInfo:
        """Family, options, limits and whether the checkpoint follows instructions."""
        return ModelInfo(
            model_id=self.model_id,
            family=self.family,
            kind=self.kind,
            max_context=self.max_context,
            instruction_tuned=self.instruction_tuned,
            max_images=self.max_images,
            options=self.options(),
            revision=self.revision,
        )

    # -- preparation --------------------------------------------------------------------------

    def prepare(
        self,
        prompt: str,
        images: Sequence[LoadedImage],
        *,
        history: Sequence[tuple[str, str]] = (),
        options: Mapping[str, Any] | None = None,
    ) -> PreparedPrompt:
        """Plan the image pieces and build the chat prompt as the published processor does."""
        checked = validate_options(options or {}, self.info)
        if len(images) > self.max_images:
            raise InvalidInputError(
                f"{len(images)} images in one prompt; {self.model_id} takes at most "
                f"{self.max_images} ({self.family}). Send fewer images per request"
            )
        messages = processing.arrange_images(prompt, history, len(images))
        segments = self.template(messages)
        planned = [self.plan_image(image, checked) for image in images]
        prepared = [image for image, _ in planned]
        expanded = self.expand(segments, [layout for _, layout in planned])
        ids = self.tokenizer.encode_segments(expanded)
        prefix = 0
        if prepared:
            prefix = len(ids) - ids[::-1].index(self.fake_token_id)
        return PreparedPrompt(input_ids=ids, images=prepared, prefix_length=prefix)

    def template(self, messages: Sequence[processing.Message]) -> list[Segment]:
        """The prompt's segments: the chat template, or plain text for a pretrained model."""
        if self.instruction_tuned:
            return processing.chat_segments(messages)
        return processing.completion_segments(messages)

    def expand(self, segments: Sequence[Segment], layouts: Sequence[Any]) -> list[Segment]:
        """Each ``<image>`` replaced by its pieces' image tokens (``layouts``: piece counts)."""
        return processing.expand_images(segments, layouts, self.config.tokens_per_image)

    def plan_image(
        self, image: LoadedImage, options: Mapping[str, Any]
    ) -> tuple[PreparedImage, Any]:
        """The image's pieces and cache key (everything that changes its features).

        Returns:
            The prepared image and its layout in the prompt (:meth:`expand` reads it).
        """
        settings = self.processor_settings
        split = options.get("do_image_splitting", settings.do_image_splitting)
        longest = options.get("longest_edge", settings.longest_edge)
        width, height = image.size
        plan = processing.plan_image(
            width,
            height,
            split=split,
            shortest_edge=settings.shortest_edge,
            longest_edge=longest,
        )
        tiling = f"split={split}|{plan.sizes}|{settings.resample}"
        prepared = PreparedImage(
            cache_key=f"{self.revision}|{image.content_hash}|{tiling}",
            num_tiles=plan.num_pieces,
            num_tokens=plan.num_pieces * self.config.tokens_per_image,
            render=self._renderer(image, plan),
        )
        return prepared, plan.num_pieces

    def _renderer(self, image: LoadedImage, plan: processing.ImagePlan) -> Callable[[], Any]:
        settings = self.processor_settings

        def render() -> list[torch.Tensor]:
            pieces = processing.render_pieces(image.image, plan, resample=settings.resample)
            return [
                torch.from_numpy(
                    processing.pixel_array(
                        piece,
                        rescale_factor=settings.rescale_factor,
                        mean=settings.image_mean,
                        std=settings.image_std,
                    )
                )
                for piece in pieces
            ]

        return render

    # -- compute ------------------------------------------------------------------------------

    def encode_images(
        self, rendered: Sequence[Any], *, max_batch_tiles: int = 8
    ) -> list[torch.Tensor]:
        """Features ``[pieces, tokens, hidden]`` per image; same-size pieces run together.

        Pieces are grouped by size and never padded, so an image's features do not depend on
        which other images share the batch.
        """
        flat: list[torch.Tensor] = [piece for pieces in rendered for piece in pieces]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, piece in enumerate(flat):
            by_shape.setdefault(tuple(piece.shape), []).append(index)
        out: list[torch.Tensor | None] = [None] * len(flat)
        step = max(1, max_batch_tiles)
        with torch.inference_mode():
            for indices in by_shape.values():
                for start in range(0, len(indices), step):
                    chunk = indices[start : start + step]
                    pixels = torch.stack([flat[i] for i in chunk])
                    for i, feature in zip(chunk, self.encode_pieces(pixels), strict=True):
                        out[i] = feature
        features: list[torch.Tensor] = []
        position = 0
        for pieces in rendered:
            group = out[position : position + len(pieces)]
            position += len(pieces)
            features.append(torch.stack([f for f in group if f is not None]))
        return features

    def encode_pieces(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image tokens of same-size pieces ``[n, 3, H, W]`` -> ``[n, tokens, hidden]``."""
        inner = self.model.model  # type: ignore[union-attr]
        vision = inner.vision_model
        pixels = pixels.to(
            device=execution_device(vision.embeddings.patch_embedding), dtype=self.dtype
        )
        patch = self.config.vision_config.patch_size
        mask = torch.ones(
            (pixels.shape[0], pixels.shape[2] // patch, pixels.shape[3] // patch),
            dtype=torch.bool,
            device=pixels.device,
        )
        hidden = vision(pixel_values=pixels, patch_attention_mask=mask).last_hidden_state
        return self.connect(hidden, mask.view(pixels.shape[0], -1))

    def connect(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The connector: projection and perceiver resampler (64 latents per piece)."""
        features: torch.Tensor = self.model.model.connector(hidden, attention_mask=mask)  # type: ignore[union-attr]
        return features

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the image features in place of ``<image>``."""
        with torch.inference_mode():
            layer = self.model.get_input_embeddings()  # type: ignore[operator]
            input_ids = input_ids.to(execution_device(layer))
            embeds: torch.Tensor = layer(input_ids)
            if image_features is None:
                return embeds
            selected = input_ids == self.image_token_id
            features = image_features.reshape(-1, embeds.shape[-1]).to(embeds)
            if int(selected.sum()) != features.shape[0]:
                raise InvalidInputError(
                    f"{int(selected.sum())} <image> tokens for {features.shape[0]} image features"
                )
            embeds = embeds.clone()
            embeds[selected] = features
            return embeds

    def new_cache(self) -> BatchKVCache:
        """An empty cache with one layer per decoder layer."""
        from mississippi_tools.models.kv_cache import BatchKVCache

        return BatchKVCache(self.config.num_layers, dtype=self.kv_cache_dtype)

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
        decoder = self.model.model.text_model  # type: ignore[union-attr]
        with torch.inference_mode():
            out = decoder(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask.to(inputs_embeds.device),
                position_ids=position_ids.to(inputs_embeds.device),
                use_cache=True,
                **decoder_cache_kwargs(decoder, cache),
            )
            hidden = out.last_hidden_state
            if last_only:
                hidden = hidden[:, -1]
            logits: torch.Tensor = self.model.lm_head(hidden).float()  # type: ignore[operator]
        return logits
