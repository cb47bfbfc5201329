"""config.json guards: a file that is not an object, or sizes no real model has, is refused.

The refusals come from reading config.json, before the tokenizer, the model skeleton or any
weight: the directories here hold nothing but a config.json.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mississippi_tools.errors import ConfigError
from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
from mississippi_tools.models.registry import load_backend
from mississippi_tools.testing import H2OVL_2B_CONFIG, H2OVL_800M_CONFIG


def checkpoint_with(tmp_path: Path, config: Any) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize(("content", "kind"), [([], "array"), ("h2ovl", "string"), (None, "null")])
def test_a_config_that_is_not_an_object_is_a_config_error(
    tmp_path: Path, content: Any, kind: str
) -> None:
    with pytest.raises(ConfigError, match=f"holds a JSON {kind}, not an object"):
        load_backend(checkpoint_with(tmp_path, content), device="cpu")


@pytest.mark.parametrize(
    ("block", "key", "value", "message"),
    [
        ("llm_config", "num_hidden_layers", 1_000_000, "is 1,000,000; it must be from 1 to 320"),
        ("llm_config", "num_hidden_layers", 1e6, "is 1000000.0; it must be a whole number"),
        ("llm_config", "hidden_size", 10**9, "to 32,768"),
        ("llm_config", "vocab_size", 0, "vocab_size is 0"),
        ("llm_config", "intermediate_size", True, "is True; it must be a whole number"),
        ("vision_config", "num_hidden_layers", 10_000, "to 192"),
        ("vision_config", "hidden_size", -1, "vision_config.hidden_size is -1"),
        ("vision_config", "image_size", 100_000, "to 1,792"),
        (
            "",
            "max_dynamic_patch",
            1_000_000,
            "max_dynamic_patch is 1,000,000; it must be from 1 to 48",
        ),
        ("", "force_image_size", 100_000, "force_image_size is 100,000"),
    ],
)
def test_absurd_sizes_are_refused_with_the_value_and_the_bound(
    tmp_path: Path, block: str, key: str, value: Any, message: str
) -> None:
    config = copy.deepcopy(H2OVL_800M_CONFIG)
    (config[block] if block else config)[key] = value
    with pytest.raises(ConfigError, match=message):
        load_backend(checkpoint_with(tmp_path, config), device="cpu")


@pytest.mark.parametrize("block", ["llm_config", "vision_config"])
def test_a_block_that_is_not_an_object_is_refused(block: str) -> None:
    config = copy.deepcopy(H2OVL_800M_CONFIG)
    config[block] = [1, 2]
    with pytest.raises(ConfigError, match=f"{block} is a JSON list; it must be an object"):
        H2OVLConfig.from_dict(config)


def test_published_shapes_are_within_the_bounds() -> None:
    for published in (H2OVL_800M_CONFIG, H2OVL_2B_CONFIG):
        H2OVLConfig.from_dict(copy.deepcopy(published))
    # the lineage's largest: InternVL2-Llama3-76B's Llama-3-70B decoder and InternViT-6B encoder
    largest = copy.deepcopy(H2OVL_800M_CONFIG)
    largest["max_dynamic_patch"] = 12
    largest["llm_config"].update(
        num_hidden_layers=80,
        hidden_size=8192,
        intermediate_size=28672,
        num_attention_heads=64,
        vocab_size=128_264,
        max_position_embeddings=131_072,
    )
    largest["vision_config"].update(
        num_hidden_layers=48, hidden_size=3200, intermediate_size=12800, num_attention_heads=25
    )
    assert H2OVLConfig.from_dict(largest).llm_hidden_size == 8192
