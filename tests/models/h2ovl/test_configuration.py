from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mississippi_tools.errors import ConfigError
from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
from mississippi_tools.testing import H2OVL_2B_CONFIG, H2OVL_800M_CONFIG


def test_reads_the_published_800m_config(reference_dir: Path) -> None:
    config = H2OVLConfig.from_file(reference_dir)
    assert config.image_size == 448
    assert config.num_image_token == 256
    assert config.projector_input_size == 4096
    assert config.llm_hidden_size == 1536
    assert config.vocab_size == 32010
    assert config.decoder_type == "llama"
    assert config.encoder_layers_used == 24
    assert (config.use_msac, config.use_thumbnail, config.max_dynamic_patch) == (False, True, 6)
    assert config.vision_config.layer_norm_eps == 1e-6
    assert config.vision_config.qkv_bias


def test_builder_config_equals_the_published_one_where_it_matters(reference_dir: Path) -> None:
    real = json.loads((reference_dir / "config.json").read_text())
    ours = H2OVL_800M_CONFIG
    for key in (
        "downsample_ratio",
        "ps_version",
        "select_layer",
        "template",
        "use_thumbnail",
        "min_dynamic_patch",
        "max_dynamic_patch",
        "use_msac",
        "force_image_size",
        "model_type",
    ):
        assert ours[key] == real[key], key
    for key, value in ours["llm_config"].items():
        assert real["llm_config"][key] == value, key
    for key, value in ours["vision_config"].items():
        assert real["vision_config"][key] == value, key


def test_decoder_config_keeps_rope_theta_despite_null_rope_scaling(reference_dir: Path) -> None:
    pytest.importorskip("transformers")
    from mississippi_tools.models.h2ovl.modeling import build_decoder_config

    config = H2OVLConfig.from_file(reference_dir)
    decoder = build_decoder_config(config, attn_implementation="sdpa")
    assert decoder.rope_parameters == {"rope_type": "default", "rope_theta": 100000.0}
    assert (decoder.num_key_value_heads, decoder.tie_word_embeddings) == (8, False)


def test_mistral_decoder_without_sliding_window() -> None:
    from mississippi_tools.models.h2ovl.modeling import build_decoder_config

    config = H2OVLConfig.from_dict(copy.deepcopy(H2OVL_2B_CONFIG))
    decoder = build_decoder_config(config, attn_implementation="sdpa")
    assert type(decoder).__name__ == "MistralConfig"
    assert decoder.sliding_window is None
    assert config.use_msac


def test_round_trip(reference_dir: Path) -> None:
    config = H2OVLConfig.from_file(reference_dir)
    again = H2OVLConfig.from_dict(config.to_dict())
    assert again == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": "vicuna"}, "template"),
        ({"model_type": "llava"}, "h2ovl_chat"),
        ({"use_llm_lora": 8}, "LoRA"),
        ({"pad2square": True}, "pad2square"),
        ({"select_layer": -30}, "select_layer"),
        ({"ps_version": "v3"}, "ps_version"),
        ({"max_dynamic_patch": 0}, "dynamic_patch"),
    ],
)
def test_unsupported_configs_are_refused_with_a_reason(change: dict, message: str) -> None:  # type: ignore[type-arg]
    data = copy.deepcopy(H2OVL_800M_CONFIG)
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        H2OVLConfig.from_dict(data)


def test_unknown_decoder_is_refused() -> None:
    data = copy.deepcopy(H2OVL_800M_CONFIG)
    data["llm_config"]["model_type"] = "qwen2"
    with pytest.raises(ConfigError, match="qwen2"):
        H2OVLConfig.from_dict(data)
