"""IDEFICS 1 (idefics-9b, -80b and their -instruct) as a *generate*-kind engine backend.

The model is transformers' own ``IdeficsForVisionText2Text`` (CLIP ViT-H/14, perceiver resampler,
LLaMA decoder with a gated cross-attention block before every ``cross_layer_interval``-th layer),
loaded from the published files.

Why the generate kind, not the batched decoder seam: images do not become prompt positions here;
every text token cross-attends to the image features of the image that came last before it
(:func:`~mississippi_tools.models.idefics1.processing.image_attention_indices`). Decoding a batch
would need each row's image features and image mask beside the engine's shared key/value cache,
which the decoder seam (embeddings in, one cache) does not carry. So requests run one at a time,
each with what honestly can be cached:

* a key/value cache for its own decoding (transformers' cache, one forward per new token; the
  cross-attention keys are recomputed from the image features each step, as transformers does);
* its image features, computed once at :meth:`Idefics1Backend.start` and reused every step;
* a small least-recently-used cache of image features across requests (keyed by image content
  and model revision), so a second question on the same image skips the vision tower.

The engine's deadlines, cancellation, streaming, sampling, grammar and logits processors work as
for any backend: they act between :meth:`~Idefics1Backend.start` and each
:meth:`~Idefics1Backend.step`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mississippi_tools.errors import ConfigError, InvalidInputError
from mississippi_tools.models.base import (
    GenerateBackend,
    ModelInfo,
    PreparedImage,
    PreparedPrompt,
    validate_options,
)
from mississippi_tools.models.compat import cache_keyword, idefics_image_inputs_are_4d
from mississippi_tools.models.h2ovl.tokenization import check_text
from mississippi_tools.models.idefics1 import processing
from mississippi_tools.models.idefics1.configuration import Idefics1Config, read_json
from mississippi_tools.models.idefics1.loading import (
    NO_SPLIT,
    build_empty_model,
    map_checkpoint_key,
    move_buffers,
)
from mississippi_tools.models.idefics2.backend import execution_device, weights_revision
from mississippi_tools.models.idefics2.tokenization import IdeficsTokenizer

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = ["INSTRUCTION_TUNED", "Idefics1Backend", "Idefics1State", "is_instruction_tuned"]

#: Instruction-tuned IDEFICS checkpoints (suggested when a pretrained-only one is loaded).
INSTRUCTION_TUNED = ("HuggingFaceM4/idefics-9b-instruct", "HuggingFaceM4/idefics-80b-instruct")


def is_instruction_tuned(directory: Path) -> bool:
    """Whether the tokenizer lists ``<end_of_utterance>`` among its special tokens.

    That is the published processor's own test (``tokenizer_was_trained_with_end_of_utterance_
    token``): the instruct checkpoints were fine-tuned with it, the pretrained ones never saw it.
    """
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        extra = read_json(directory / name).get("additional_special_tokens") or []
        tokens = [t.get("content") if isinstance(t, dict) else t for t in extra]
        if processing.END_OF_UTTERANCE in tokens:
            return True
    return False


@dataclass
class Idefics1State:
    """One running request: its cache, its image features and the image its new tokens see.

    Attributes:
        cache: transformers' key/value cache of the decoder (``None`` before the prompt ran).
        features: ``[images, tokens, width]`` image features (zeros for a text-only prompt).
        last_mask: ``[1, 1, images]`` image attention of the prompt's last token, which every
            generated token keeps (as transformers' ``generate`` does).
    """

    cache: Any
    features: torch.Tensor
    last_mask: torch.Tensor


class _BannedTokens:
    """Logits processor: the image tokens (never text) and rows no tokenizer id names."""

    def __init__(self, banned: Sequence[int], vocab_rows: int, tokenizer_size: int) -> None:
        self.banned = sorted(set(banned))
        self.first_unused = tokenizer_size if tokenizer_size < vocab_rows else vocab_rows

    def __call__(self, token_ids: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        logits[self.banned] = float("-inf")
        logits[self.first_unused :] = float("-inf")
        return logits


class Idefics1Backend(GenerateBackend):
    """A loaded IDEFICS 1 checkpoint (idefics-9b, -9b-instruct, -80b, -80b-instruct, or tiny).

    Setup:
        .. code-block:: python

            vlm = MississippiVLM.load("HuggingFaceM4/idefics-9b-instruct")
            vlm.ask("photo.jpg", "What is in this image?")

    No model options: every image is read as one 224 x 224 square.
    """

    family: ClassVar[str] = "idefics1"
    supports_placement: ClassVar[bool] = True
    #: Most images one prompt may carry: each adds 64 cross-attention keys per gated block and
    #: 3 prompt tokens; the model card's examples use a few, the training documents up to 30.
    max_images: ClassVar[int] = 16
    #: Image features kept across requests (each is ``64 x 1280`` values for the real models).
    feature_cache_images: ClassVar[int] = 32

    def __init__(
        self,
        model: Any,
        tokenizer: IdeficsTokenizer,
        config: Idefics1Config,
        *,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        model_id: str,
        revision: str,
        instruction_tuned: bool,
        extra_stop_ids: Sequence[int] = (),
        load_seconds: float = 0.0,
    ) -> None:
        #: transformers' native model (typed loosely: its submodules are reached by name).
        self.model: Any = model
        self.tokenizer: IdeficsTokenizer = tokenizer
        self.config = config
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.model_id = model_id
        self.revision = revision
        self.instruction_tuned = instruction_tuned
        self.max_context = config.max_context
        self.vocab_size = config.vocab_size
        self.load_seconds = load_seconds
        self.image_token_id = tokenizer.token_to_id(processing.IMAGE_TOKEN)
        self.fake_token_id = tokenizer.token_to_id(processing.FAKE_TOKEN)
        stops = {tokenizer.eos_token_id, *extra_stop_ids}
        if instruction_tuned:
            stops.add(tokenizer.token_to_id(processing.END_OF_UTTERANCE))
        self._stop_ids = frozenset(stops)
        self._dtype: torch.dtype = next(
            p for p in model.parameters() if p.is_floating_point()
        ).dtype
        self._cache_keyword = cache_keyword(model)
        self._features_4d = idefics_image_inputs_are_4d()
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()

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
    ) -> Idefics1Backend:
        """Load a checkpoint directory in the published (transformers 4.32) format.

        Args:
            directory: The checkpoint.
            model_id: Name reported in results (default: the directory name).
            device: Where the weights go (``cuda`` spills layers to the CPU when the GPU is too
                small; see :mod:`~mississippi_tools.models.idefics2.placement`).
            dtype: Weight dtype (tensors are cast one by one while loading).
            attn_implementation: ``sdpa`` or ``eager`` (IDEFICS has no flash-attention path).
            allow_pickle: Accept pickled ``.bin`` weights.
            max_memory: Per-device budget (``{0: "70GiB", 1: "70GiB", "cpu": "60GiB"}``); what
                does not fit goes to the next device, and past the CPU to ``offload_dir`` on
                disk (needs accelerate: ``pip install "mississippi-tools[gpu]"``).
            offload_dir: Where weights offloaded to disk are kept.

        Raises:
            ConfigError: The config is not one this backend understands, or the tokenizer
                writes tokens the model has no embedding row for.
            CheckpointError: Tensors are missing, unexpected or mis-shaped.
            MissingDependencyError: A placement without accelerate.
        """
        from mississippi_tools.models.idefics2 import placement
        from mississippi_tools.models.idefics2.loading import load_weights, rebuild_meta_buffers

        started = time.perf_counter()
        config = Idefics1Config.from_file(directory / "config.json")
        tokenizer = IdeficsTokenizer.from_pretrained(directory)
        instruct = is_instruction_tuned(directory)
        needed = [processing.FAKE_TOKEN, processing.IMAGE_TOKEN]
        if instruct:
            needed.append(processing.END_OF_UTTERANCE)
        _check_token_rows(tokenizer, needed, config)
        pre = read_json(directory / "preprocessor_config.json")
        image_size = int(pre.get("image_size", config.vision.image_size))
        if image_size != config.vision.image_size:
            raise ConfigError(
                f"preprocessor_config.json image_size {image_size} differs from the vision "
                f"tower's {config.vision.image_size} (config.json vision_config.image_size)"
            )
        if attn_implementation not in ("sdpa", "eager"):
            attn_implementation = "eager"
        model = build_empty_model(config.native(attn_implementation=attn_implementation))
        device_map = placement.plan_device_map(
            model, device=device, dtype=dtype, max_memory=max_memory, no_split=NO_SPLIT
        )
        offloaded = load_weights(
            model,
            directory,
            dtype=dtype,
            device_map=device_map,
            device=device,
            allow_pickle=allow_pickle,
            key_map=map_checkpoint_key,
        )
        rebuild_meta_buffers(model, device, allowed_meta=offloaded.keys())
        if device_map is not None:
            placement.dispatch(model, device_map, offloaded, offload_dir=offload_dir)
        else:
            move_buffers(model, device)
        model.eval()
        model.requires_grad_(False)
        generation = read_json(directory / "generation_config.json")
        eos = generation.get("eos_token_id")
        extra = [eos] if isinstance(eos, int) else [e for e in eos or [] if isinstance(e, int)]
        return cls(
            model,
            tokenizer,
            config,
            image_size=image_size,
            image_mean=pre.get("image_mean", processing.CLIP_MEAN),
            image_std=pre.get("image_std", processing.CLIP_STD),
            model_id=model_id or directory.name,
            revision=weights_revision(directory),
            instruction_tuned=instruct,
            extra_stop_ids=extra,
            load_seconds=time.perf_counter() - started,
        )

    # -- properties ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the input embeddings run (the first device of a split model)."""
        return execution_device(self.model.get_input_embeddings())

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self._dtype

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """``</s>``, the generation config's ends and ``<end_of_utterance>`` (instruct models)."""
        return self._stop_ids

    @property
    def info(self) -> ModelInfo:
        """Family, limits and whether the checkpoint follows instructions."""
        return ModelInfo(
            model_id=self.model_id,
            family=self.family,
            kind=self.kind,
            max_context=self.max_context,
            instruction_tuned=self.instruction_tuned,
            max_images=self.max_images,
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
        """Build the prompt as the published processor does; plan each image's 224 px square."""
        validate_options(options or {}, self.info)
        check_text(prompt, "the prompt")
        for turn, (question, answer) in enumerate(history, start=1):
            check_text(question, f"question of history turn {turn}")
            check_text(answer, f"answer of history turn {turn}")
        if len(images) > self.max_images:
            raise InvalidInputError(
                f"{len(images)} images in one prompt; {self.model_id} takes at most "
                f"{self.max_images} ({self.family}). Send fewer images per request"
            )
        messages = processing.arrange_images(prompt, history, len(images))
        if self.instruction_tuned:
            segments = processing.chat_segments(messages)
        else:
            segments = processing.completion_segments(messages)
        ids = self.tokenizer.encode_segments(segments)
        prepared = [self._plan_image(image) for image in images]
        banned = _BannedTokens(
            [self.image_token_id, self.fake_token_id], self.vocab_size, len(self.tokenizer)
        )
        return PreparedPrompt(input_ids=ids, images=prepared, logits_processors=[banned])

    def _plan_image(self, image: LoadedImage) -> PreparedImage:
        size, mean, std = self.image_size, self.image_mean, self.image_std

        def render() -> torch.Tensor:
            array = processing.pixel_array(image.image, size=size, mean=mean, std=std)
            return torch.from_numpy(array)

        return PreparedImage(
            cache_key=f"{self.revision}|{image.content_hash}|{size}",
            num_tiles=1,
            num_tokens=self.config.image_tokens,
            render=render,
        )

    # -- compute ------------------------------------------------------------------------------

    def image_features(self, images: Sequence[PreparedImage]) -> torch.Tensor:
        """``[images, tokens, width]``: vision tower, then the perceiver resampler if used.

        Features of images seen recently (same content, same model) come from a small cache.
        """
        found: dict[str, torch.Tensor] = {}
        pending = [im for im in images if im.cache_key not in self._features]
        inner = self.model.model
        if pending:
            keys = list(dict.fromkeys(im.cache_key for im in pending))
            renders = {im.cache_key: im.render for im in pending}
            pixels = torch.stack([renders[k]() for k in keys])
            vision = inner.vision_model
            pixels = pixels.to(
                device=execution_device(vision.embeddings.patch_embedding), dtype=self.dtype
            )
            with torch.inference_mode():
                hidden = vision(pixel_values=pixels).last_hidden_state
                if self.config.use_resampler:
                    hidden = inner.perceiver_resampler(hidden)
            for key, feature in zip(keys, hidden, strict=True):
                found[key] = feature
                self._features[key] = feature
                while len(self._features) > self.feature_cache_images:
                    self._features.popitem(last=False)
        for image in images:
            if image.cache_key in self._features:
                self._features.move_to_end(image.cache_key)
                found.setdefault(image.cache_key, self._features[image.cache_key])
        return torch.stack([found[image.cache_key] for image in images])

    def clear_feature_cache(self) -> None:
        """Forget the image features kept across requests."""
        self._features.clear()

    def close(self) -> None:
        """Release the feature cache."""
        self.clear_feature_cache()

    def image_attention(self, input_ids: Sequence[int], num_images: int) -> torch.Tensor:
        """``[1, tokens, max(1, images)]``: 1 where a token cross-attends to an image."""
        indices = processing.image_attention_indices(
            input_ids,
            image_token_id=self.image_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        mask = torch.zeros((1, len(input_ids), max(1, num_images)), dtype=torch.long)
        for position, index in enumerate(indices):
            if 0 <= index < num_images:
                mask[0, position, index] = 1
        return mask

    def start(self, prompt: PreparedPrompt) -> tuple[torch.Tensor, Idefics1State]:
        """Encode the images, run the prompt; the first answer position's logits ``[vocab]``."""
        found = sum(1 for t in prompt.input_ids if t == self.image_token_id)
        if found != len(prompt.images):
            raise InvalidInputError(
                f"{found} <image> tokens in the prompt for {len(prompt.images)} image(s)"
            )
        if prompt.images:
            features = self.image_features(prompt.images)
        else:  # text only: one image of zeros that no token attends to (as the processor does)
            width = self.config.image_feature_width
            features = torch.zeros((1, self.config.image_tokens, width), dtype=self.dtype)
        mask = self.image_attention(prompt.input_ids, len(prompt.images))
        state = Idefics1State(cache=None, features=features, last_mask=mask[:, -1:])
        ids = torch.tensor([prompt.input_ids], dtype=torch.long)
        return self._forward(ids, mask, state), state

    def step(self, state: Idefics1State, token_id: int) -> torch.Tensor:
        """Feed the chosen token; the next position's logits ``[vocab]``."""
        ids = torch.tensor([[token_id]], dtype=torch.long)
        return self._forward(ids, state.last_mask, state)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, state: Idefics1State) -> torch.Tensor:
        device = self.device
        features = state.features.to(device)
        if self._features_4d:
            features = features.unsqueeze(0)  # [1, images, tokens, width] (transformers 5.0)
        name = "perceiver_embeddings" if self.config.use_resampler else "image_encoder_embeddings"
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(device),
                image_attention_mask=mask.to(device),
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_keyword: state.cache, name: features},
            )
            logits: torch.Tensor = out.logits[0, -1].float()
        # The output names its cache as the forward does (``cache`` from transformers 5.24).
        state.cache = getattr(out, self._cache_keyword)
        return logits.clone()  # a normal tensor: logits processors modify it in place


def _check_token_rows(
    tokenizer: IdeficsTokenizer, tokens: Sequence[str], config: Idefics1Config
) -> None:
    """Every token the prompt template writes must have an embedding row.

    Raises:
        ConfigError: Naming the token, its id and the rows the config gives.
    """
    for token in tokens:
        if token not in tokenizer.added_tokens:
            raise ConfigError(f"the tokenizer has no {token} token, which IDEFICS prompts need")
        idx = tokenizer.added_tokens[token]
        if idx >= config.vocab_size:
            raise ConfigError(
                f"the tokenizer gives {token} id {idx} but config.json has only "
                f"{config.vocab_size} embedding rows (vocab_size {config.top['vocab_size']} + "
                f"additional_vocab_size {config.additional_vocab_size}); the checkpoint and its "
                "tokenizer do not belong together"
            )
