"""H2OVL-Mississippi as an engine backend: loading, prompt preparation and decoder steps."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.base import (
    DecoderBackend,
    LogitsProcessor,
    ModelInfo,
    ModelOption,
    PreparedImage,
    PreparedPrompt,
    validate_options,
)
from mississippi_tools.models.compat import decoder_cache_kwargs
from mississippi_tools.models.h2ovl import processing
from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
from mississippi_tools.models.h2ovl.generation import OCRWhitespaceProcessor
from mississippi_tools.models.h2ovl.loading import load_config, load_weights
from mississippi_tools.models.h2ovl.modeling import H2OVLForConditionalGeneration, cast_model
from mississippi_tools.models.h2ovl.tokenization import (
    IMG_CONTEXT,
    IMG_END,
    H2OVLTokenizer,
)
from mississippi_tools.models.lean_decode import LeanDecodeStep, lean_step_unsupported
from mississippi_tools.models.precision import (
    compute_large_products_in_float32,
    emulates_bfloat16,
    register_float32_attention,
)
from mississippi_tools.models.quantization import (
    Int8Converter,
    Quantization,
    QuantizationReport,
    int8_skips,
)

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage
    from mississippi_tools.models.kv_cache import BatchKVCache

__all__ = ["H2OVLBackend"]


#: Most tiles one image may be cut into (the original allows any; this bounds a request's cost).
MAX_TILES_LIMIT = 40


class H2OVLBackend(DecoderBackend):
    """A loaded H2OVL-Mississippi checkpoint (800M, 2B or a tiny test model).

    Build it with :meth:`from_directory`; the engine does the rest. Options (per request):
    ``max_tiles``, ``use_msac`` and ``ocr_mode``.
    """

    family: ClassVar[str] = "h2ovl"
    supports_quantization: ClassVar[bool] = True

    def __init__(
        self,
        model: H2OVLForConditionalGeneration,
        tokenizer: H2OVLTokenizer,
        *,
        model_id: str,
        revision: str,
        load_seconds: float = 0.0,
        kv_cache_dtype: torch.dtype | None = None,
        quantization: QuantizationReport | None = None,
    ) -> None:
        self.model = model
        #: What int8 loading did (engine, layers, CPU), ``None`` for a float model.
        self.quantization = quantization
        self.kv_cache_dtype = kv_cache_dtype
        self.config: H2OVLConfig = model.config
        self.tokenizer: H2OVLTokenizer = tokenizer
        self.model_id = model_id
        self.revision = revision
        self.max_context = int(self.config.llm_config.get("max_position_embeddings", 8192))
        self.vocab_size = self.config.vocab_size
        self.load_seconds = load_seconds
        self._image_token_id = tokenizer.token_to_id(IMG_CONTEXT)
        self._image_end_id = tokenizer.token_to_id(IMG_END)
        self._stop_ids = frozenset({tokenizer.eos_token_id})
        decoder = model.language_model
        #: The decoding step without transformers' per-call machinery (``None``: this decoder
        #: keeps transformers' step; :func:`lean_step_unsupported` says why).
        self.lean_step = None if lean_step_unsupported(decoder) else LeanDecodeStep(decoder)

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
        quantization: Quantization | None = None,
    ) -> H2OVLBackend:
        """Load a checkpoint directory in the original format.

        With ``quantization="int8"`` (CPU; ``dtype`` bfloat16 where the CPU computes it
        natively, else float32) the weights are read in the file's dtype, the decoder's and
        projector's linear layers (and the vision encoder's on CPUs without native bfloat16)
        become int8 as they are read, the vision encoder stays bfloat16 on CPUs with it, and
        the rest is cast to ``dtype`` (:mod:`mississippi_tools.models.quantization`).
        """
        started = time.perf_counter()
        config = load_config(directory)
        tokenizer = H2OVLTokenizer.from_pretrained(directory)
        emulated = quantization is None and emulates_bfloat16(device, dtype)
        if emulated and attn_implementation == "sdpa":
            attn_implementation = register_float32_attention()
        with torch.device("meta"):
            model = H2OVLForConditionalGeneration(config, attn_implementation=attn_implementation)
        report: QuantizationReport | None = None
        if quantization is not None:
            # Each linear layer becomes int8 as soon as its tensors are read.
            with Int8Converter(model, skip=int8_skips()) as converter:
                load_weights(
                    model, directory, dtype=None, allow_pickle=allow_pickle, consumer=converter
                )
            report = converter.report()
        else:
            load_weights(model, directory, dtype=dtype, allow_pickle=allow_pickle)
        if report is not None and any(s.startswith("vision_model") for s in report.skipped):
            # Native bfloat16 beats int8 on the vision encoder: it stays bfloat16 (cast apart,
            # never through float32, which would hold a float32 copy of it at load).
            cast_model(model.vision_model, torch.bfloat16)
            cast_model(model.mlp1, dtype)
            cast_model(model.language_model, dtype)
        else:
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
            load_seconds=time.perf_counter() - started,
            kv_cache_dtype=torch.float32 if emulated else None,
            quantization=report,
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
    def image_token_id(self) -> int:
        """Id of ``<IMG_CONTEXT>``, whose embeddings the image features replace."""
        return self._image_token_id

    @property
    def info(self) -> ModelInfo:
        """Family ``h2ovl``; options ``max_tiles``, ``use_msac``, ``ocr_mode``."""
        return ModelInfo(
            model_id=self.model_id,
            family=self.family,
            kind=self.kind,
            max_context=self.max_context,
            options=(
                ModelOption(
                    "max_tiles",
                    int,
                    f"most 448-px tiles per image (this model's default: "
                    f"{self.config.max_dynamic_patch}); more tiles read smaller print, slower",
                    minimum=1,
                    maximum=MAX_TILES_LIMIT,
                ),
                ModelOption(
                    "use_msac",
                    bool,
                    "multi-scale adaptive cropping, a second tiling pass for a single image "
                    f"(this model's default: {str(self.config.use_msac).lower()})",
                ),
                ModelOption(
                    "ocr_mode",
                    bool,
                    "the original's OCR decoding: no runs of repeated whitespace tokens",
                ),
            ),
            revision=self.revision,
        )

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """``<|end|>``: the original's chat stops on it alone."""
        return self._stop_ids

    # -- preparation --------------------------------------------------------------------------

    def prepare(
        self,
        prompt: str,
        images: Sequence[LoadedImage],
        *,
        history: Sequence[tuple[str, str]] = (),
        options: Mapping[str, Any] | None = None,
    ) -> PreparedPrompt:
        """Plan tiles, build the h2ogpt2 prompt and tokenize it exactly as the original does.

        Except for one thing: text in ``prompt`` and ``history`` never yields added tokens
        (the original would read a typed ``<|end|>`` as the real separator).
        """
        config = self.config
        checked = validate_options(options or {}, self.info)
        max_tiles: int | None = checked.get("max_tiles")
        use_msac: bool | None = checked.get("use_msac")
        tiles_cap = config.max_dynamic_patch if max_tiles is None else max_tiles
        if not config.dynamic_image_size:
            tiles_cap = 1
        if tiles_cap < config.min_dynamic_patch:
            raise InvalidInputError(
                f"max_tiles={tiles_cap} is below this model's minimum of "
                f"{config.min_dynamic_patch} tile(s)"
            )
        # MSAC only applies to a single image, as in the original and vLLM.
        msac = (config.use_msac if use_msac is None else use_msac) and len(images) == 1
        prepared: list[PreparedImage] = []
        for image in images:
            width, height = image.image.size
            plan = processing.plan_tiles(
                width,
                height,
                image_size=config.image_size,
                min_tiles=config.min_dynamic_patch,
                max_tiles=tiles_cap,
                use_thumbnail=config.use_thumbnail,
                use_msac=msac,
            )
            tiling = f"{plan.grids}|{plan.thumbnail}|{config.image_size}"
            key = f"{self.revision}|{image.content_hash}|{tiling}"
            prepared.append(
                PreparedImage(
                    cache_key=key,
                    num_tiles=plan.num_tiles,
                    num_tokens=plan.num_tiles * config.num_image_token,
                    render=_renderer(image, plan, config.image_size),
                )
            )
        parts = processing.build_prompt(prompt, history=history, num_images=len(images))
        parts = processing.expand_image_placeholders(
            parts, [p.num_tiles for p in prepared], config.num_image_token
        )
        # Only the template's spans may yield added tokens: a user's "<|end|>" stays text.
        ids = self.tokenizer.encode_segments(processing.prompt_segments(parts))
        prefix = 0
        if prepared:
            prefix = len(ids) - ids[::-1].index(self._image_end_id)
        processors: list[LogitsProcessor] = []
        if checked.get("ocr_mode"):
            processors.append(OCRWhitespaceProcessor(self.tokenizer))
        return PreparedPrompt(
            input_ids=ids, images=prepared, prefix_length=prefix, logits_processors=processors
        )

    # -- compute ------------------------------------------------------------------------------

    def encode_images(
        self, rendered: Sequence[Any], *, max_batch_tiles: int = 8
    ) -> list[torch.Tensor]:
        """Projected features ``[tiles, 256, hidden]`` per image; tiles of all images batched."""
        tiles: list[torch.Tensor] = list(rendered)
        pixels = torch.cat(tiles).to(self.device)
        step = max(1, max_batch_tiles)
        with torch.inference_mode():
            features = torch.cat(
                [
                    self.model.extract_features(pixels[i : i + step])
                    for i in range(0, pixels.shape[0], step)
                ]
            )
        return list(torch.split(features, [t.shape[0] for t in tiles]))

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the image features in place of ``<IMG_CONTEXT>``."""
        with torch.inference_mode():
            return self.model.embed(
                input_ids.to(self.device), image_features, image_token_id=self._image_token_id
            )

    def new_cache(self) -> BatchKVCache:
        """An empty cache with one layer per decoder layer."""
        from mississippi_tools.models.kv_cache import BatchKVCache

        return BatchKVCache(
            int(self.config.llm_config["num_hidden_layers"]), dtype=self.kv_cache_dtype
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: BatchKVCache,
        *,
        last_only: bool = True,
    ) -> torch.Tensor:
        """Decoder over new positions; float32 logits of the last (or every) position.

        One new position per row (a decoding step) runs :attr:`lean_step` when there is one.
        """
        decoder = self.model.language_model
        with torch.inference_mode():
            if self.lean_step is not None and last_only and inputs_embeds.shape[1] == 1:
                return self.lean_step(
                    inputs_embeds,
                    position_ids.to(self.device),
                    cache,
                    attention_mask.to(self.device),
                )
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


def _renderer(image: LoadedImage, plan: processing.TilePlan, image_size: int):  # type: ignore[no-untyped-def]
    def render() -> torch.Tensor:
        tiles = processing.render_tiles(image.image, plan, image_size=image_size)
        return processing.pixel_values(tiles)

    return render


def _revision(directory: Path) -> str:
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
