"""Idefics3 as an engine backend: the Idefics2 backend with Idefics3's tiles, prompt and connector.

A delta of :class:`~mississippi_tools.models.idefics2.backend.Idefics2Backend` (as vLLM's
``idefics3.py`` reuses its Idefics2 vision model): transformers' native
``Idefics3ForConditionalGeneration``, images tiled to ``longest_edge`` in 364-px tiles plus a
global view (169 tokens each), the Llama 3 byte-level tokenizer, and a chat template that writes
its own ``<|begin_of_text|>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.base import ModelOption, PreparedImage
from mississippi_tools.models.idefics2 import processing as idefics2_processing
from mississippi_tools.models.idefics2.backend import Idefics2Backend
from mississippi_tools.models.idefics2.tokenization import Segment
from mississippi_tools.models.idefics3 import processing
from mississippi_tools.models.idefics3.configuration import (
    Idefics3Config,
    Idefics3ProcessorSettings,
)

if TYPE_CHECKING:
    from mississippi_tools.images import LoadedImage

__all__ = ["Idefics3Backend"]


class Idefics3Backend(Idefics2Backend):
    """A loaded Idefics3 checkpoint (Idefics3-8B-Llama3, or a tiny test model).

    Options (per request): ``do_image_splitting`` and ``longest_edge`` (a multiple of 364).
    """

    family: ClassVar[str] = "idefics3"
    config_class: ClassVar[type[Idefics3Config]] = Idefics3Config  # type: ignore[assignment]
    native_class: ClassVar[str] = "Idefics3ForConditionalGeneration"
    instruction_tuned_models: ClassVar[tuple[str, ...]] = ("HuggingFaceM4/Idefics3-8B-Llama3",)
    #: Most images one prompt may carry: 8 full grids (8 x 17 x 171 = 23,256 positions); the
    #: processor sets no limit, the decoder's memory and attention cost do.
    max_images: ClassVar[int] = 8

    @classmethod
    def read_processor_settings(cls, directory: Path) -> Any:
        """Idefics3's processor settings."""
        return Idefics3ProcessorSettings.from_directory(directory)

    def options(self) -> tuple[ModelOption, ...]:
        """``do_image_splitting`` and ``longest_edge``."""
        settings: Idefics3ProcessorSettings = self.processor_settings
        tile = settings.tile_size
        return (
            ModelOption(
                "do_image_splitting",
                bool,
                f"tile images into {tile}-px tiles plus a global view (169 tokens each; off: the "
                f"global view alone; this checkpoint's default: "
                f"{str(settings.do_image_splitting).lower()})",
            ),
            ModelOption(
                "longest_edge",
                int,
                f"longest image side before tiling, a multiple of {tile} (default "
                f"{settings.longest_edge} = {settings.longest_edge // tile} tiles across); "
                "lower is faster, higher reads smaller print",
                minimum=tile,
                maximum=(processing.MAX_IMAGE_SIDE // tile) * tile,
            ),
        )

    def template(self, messages: Sequence[idefics2_processing.Message]) -> list[Segment]:
        """The chat template, which writes ``<|begin_of_text|>`` itself."""
        segments = super().template(messages)
        if self.instruction_tuned:
            segments.insert(0, Segment(processing.BOS, control=True))
        return segments

    def expand(self, segments: Sequence[Segment], layouts: Sequence[Any]) -> list[Segment]:
        """Each ``<image>`` replaced by its tiles' tags and image tokens (layouts: rows, cols)."""
        return processing.expand_images(segments, layouts, self.config.tokens_per_image)

    def plan_image(
        self, image: LoadedImage, options: Mapping[str, Any]
    ) -> tuple[PreparedImage, Any]:
        """The image's tiles and cache key; its layout is ``(rows, cols)``."""
        settings: Idefics3ProcessorSettings = self.processor_settings
        split = options.get("do_image_splitting", settings.do_image_splitting)
        longest = options.get("longest_edge", settings.longest_edge)
        if longest % settings.tile_size:
            raise InvalidInputError(
                f"longest_edge={longest} is not a multiple of the {settings.tile_size}-px tile; "
                f"use e.g. {max(1, round(longest / settings.tile_size)) * settings.tile_size}"
            )
        plan = processing.plan_tiles(
            *image.size, longest_edge=longest, tile=settings.tile_size, split=split
        )
        tiling = f"split={split}|{plan}|{settings.resample}"
        prepared = PreparedImage(
            cache_key=f"{self.revision}|{image.content_hash}|{tiling}",
            num_tiles=plan.num_tiles,
            num_tokens=plan.num_tiles * self.config.tokens_per_image,
            render=self._tile_renderer(image, plan),
        )
        return prepared, (plan.rows, plan.cols)

    def _tile_renderer(self, image: LoadedImage, plan: processing.TilePlan) -> Callable[[], Any]:
        settings: Idefics3ProcessorSettings = self.processor_settings

        def render() -> list[torch.Tensor]:
            tiles = processing.render_tiles(image.image, plan, resample=settings.resample)
            return [
                torch.from_numpy(
                    idefics2_processing.pixel_array(
                        tile,
                        rescale_factor=settings.rescale_factor,
                        mean=settings.image_mean,
                        std=settings.image_std,
                    )
                )
                for tile in tiles
            ]

        return render

    def connect(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The connector: pixel shuffle and one linear projection (169 tokens per tile)."""
        features: torch.Tensor = self.model.model.connector(hidden)  # type: ignore[union-attr]
        return features
