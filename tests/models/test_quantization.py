"""int8 loading (``quantization="int8"``) on the tiny H2OVL checkpoint, through every surface."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from torch import nn

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.base import Backend
from mississippi_tools.models.h2ovl.backend import H2OVLBackend
from mississippi_tools.models.int8_linear import Int8Linear, quantize_weight
from mississippi_tools.models.quantization import (
    CpuFeatures,
    Int8Converter,
    choose_engine,
    cpu_features,
    int8_compute_dtype,
    int8_skips,
    layer_sqnr,
    quantize_linears,
)
from mississippi_tools.models.registry import load_backend
from mississippi_tools.vlm import MississippiVLM
from tests.server.live import png_bytes, quiet_settings, run_server
from tests.support import wait_until

#: Smallest per-layer SQNR (dB) of an int8 layer on the inputs it sees. 8-bit weights and
#: activations give about 25-40 dB (measured on the tiny checkpoint: 25.0-37.8 dB, the lowest
#: where a layer's input has outliers: after GELU, before ``down_proj``); a wrong scale, zero
#: point or weight layout falls below 10 dB.
MIN_LAYER_SQNR = 20.0
#: Mean cosine of int8 and float32 logits over a prompt's positions on the tiny checkpoint.
#: Measured: 0.971 (min 0.83). The tiny random decoder amplifies any rounding: bfloat16 weights
#: alone give a mean of 0.998 and change 19% of its greedy tokens, so a 0.99 bound per position
#: would test the random weights, not the int8 path; a real checkpoint is far less sensitive
#: (benchmarks/results/quantization.md). 0.95 still fails a broken layer (< 0.5).
MIN_MEAN_COSINE = 0.95
#: Cosine a single well-conditioned layer must keep (a plain module: one product, no chaos).
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def int8_backend(tiny_checkpoint: Path) -> Backend:
    return load_backend(tiny_checkpoint, device="cpu", quantization="int8")


def _logits(backend: Backend, pixels: torch.Tensor) -> torch.Tensor:
    assert isinstance(backend, H2OVLBackend)
    config = backend.config
    image_id = backend.image_token_id
    ids = [1, 5, 6] + [image_id] * (pixels.shape[0] * config.num_image_token) + [7, 8, 9, 10]
    with torch.inference_mode():
        return backend.model(
            torch.tensor([ids]), pixels.to(backend.dtype), image_token_id=image_id
        )[0].float()


def test_every_linear_but_lm_head_is_int8(int8_backend: Backend) -> None:
    assert isinstance(int8_backend, H2OVLBackend)
    report = int8_backend.quantization
    assert report is not None and report.mode == "int8"
    model = int8_backend.model
    floating = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    assert set(report.skipped) == floating
    assert "language_model.lm_head" in floating
    assert not any(name.startswith(("language_model.model.", "mlp1")) for name in floating)
    # The vision encoder stays bfloat16 where the CPU computes it natively, else it is int8.
    vision_dtype = model.vision_model.embeddings.patch_embeddings.projection.weight.dtype
    if "vision_model" in int8_skips():
        assert vision_dtype == torch.bfloat16
        assert all(n.startswith("vision_model.") for n in floating - {"language_model.lm_head"})
    else:
        assert floating == {"language_model.lm_head"}
    quantized = [m for m in int8_backend.model.modules() if isinstance(m, Int8Linear)]
    assert len(quantized) == report.layers > 0
    assert report.engine in torch.backends.quantized.supported_engines
    # Everything around the int8 layers: bfloat16 where the CPU computes it natively.
    assert int8_backend.dtype == getattr(torch, int8_compute_dtype())
    assert report.engine in report.describe()


def test_logits_stay_close_to_float32(int8_backend: Backend, tiny_backend: Backend) -> None:
    torch.manual_seed(0)
    size = tiny_backend.config.image_size  # type: ignore[attr-defined]
    pixels = torch.randn(2, 3, size, size)
    reference, quantized = _logits(tiny_backend, pixels), _logits(int8_backend, pixels)
    cosine = torch.nn.functional.cosine_similarity(reference, quantized, dim=-1)
    assert float(cosine.mean()) > MIN_MEAN_COSINE


def test_every_int8_layer_keeps_its_signal(int8_backend: Backend, tiny_backend: Backend) -> None:
    torch.manual_seed(0)
    size = tiny_backend.config.image_size  # type: ignore[attr-defined]
    pixels = torch.randn(1, 3, size, size)
    ratios = layer_sqnr(
        tiny_backend.model,  # type: ignore[attr-defined]
        int8_backend.model,  # type: ignore[attr-defined]
        lambda _model: _logits(tiny_backend, pixels),
    )
    report = int8_backend.quantization  # type: ignore[attr-defined]
    assert len(ratios) == report.layers  # every int8 layer ran and was compared
    assert min(ratios.values()) > MIN_LAYER_SQNR, ratios


def test_the_parts_and_engine_follow_the_cpu_flags() -> None:
    amx = CpuFeatures(model="x", flags=("avx2", "avx512_bf16", "amx_bf16"), capability="AVX512")
    avx2 = CpuFeatures(model="x", flags=("avx2",), capability="AVX2")
    assert int8_skips(amx) == ("lm_head", "vision_model")
    assert int8_skips(avx2) == ("lm_head",)
    if "x86" in torch.backends.quantized.supported_engines:
        assert choose_engine(avx2) == choose_engine(amx) == "x86"
    here = cpu_features()
    assert set(here.flags) <= {
        "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"
    }  # fmt: skip


def test_weights_round_as_pytorchs_per_channel_observer_does() -> None:
    from torch.ao.quantization import default_per_channel_weight_observer

    torch.manual_seed(0)
    weight = torch.randn(64, 48, dtype=torch.bfloat16) * torch.linspace(0.01, 3, 64)[:, None]
    weight[3] = 0  # an all-zero row keeps a positive scale
    observer = default_per_channel_weight_observer()
    observer(weight.float())
    scales, zero_points = observer.calculate_qparams()
    ours = quantize_weight(weight)
    assert torch.allclose(ours.q_per_channel_scales().float(), scales, rtol=1e-6)
    assert torch.equal(ours.q_per_channel_zero_points(), zero_points.long())
    expected = torch.quantize_per_channel(weight.float(), scales, zero_points, 0, torch.qint8)
    differ = ours.int_repr().int() != expected.int_repr().int()
    # Only a row's extreme, at exactly 127.5 scales, may round either way (x / s against x * 1/s).
    assert (ours.int_repr().int() - expected.int_repr().int()).abs().max() <= 1
    at_the_edge = (weight.float() / scales[:, None]).abs() > 127.4
    assert bool((at_the_edge | ~differ).all())


def test_layers_become_int8_while_the_checkpoint_is_read(tiny_checkpoint: Path) -> None:
    from mississippi_tools.models.h2ovl.loading import load_config, load_weights
    from mississippi_tools.models.h2ovl.modeling import H2OVLForConditionalGeneration

    waiting: list[int] = []

    class Recording(Int8Converter):
        def take_from(self, state: dict[str, torch.Tensor]) -> None:
            super().take_from(state)
            waiting.append(sum(1 for k in state if k.removesuffix(".weight") in self._todo))

    with torch.device("meta"):
        model = H2OVLForConditionalGeneration(load_config(tiny_checkpoint))
    with Recording(model, skip=("lm_head",)) as converter:
        load_weights(model, tiny_checkpoint, dtype=None, consumer=converter)
    assert converter.report().layers == sum(isinstance(m, Int8Linear) for m in model.modules())
    assert converter.report().layers > 0
    # No float weight of an int8 layer stays in what was read for longer than its bias takes.
    assert max(waiting) <= 1
    # The same int8 layers as converting the model once loaded.
    with torch.device("meta"):
        loaded = H2OVLForConditionalGeneration(load_config(tiny_checkpoint))
    load_weights(loaded, tiny_checkpoint, dtype=None)
    quantize_linears(loaded, skip=("lm_head",))
    x = torch.randn(3, loaded.language_model.config.hidden_size)
    for name, layer in loaded.named_modules():
        if isinstance(layer, Int8Linear) and layer.in_features == x.shape[1]:
            with torch.inference_mode():
                assert torch.equal(model.get_submodule(name)(x), layer(x)), name


def test_a_plain_module_is_quantized_layer_by_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(torch.bfloat16)
    x = torch.randn(4, 16)
    with torch.inference_mode():
        expected = model.float()(x)
    model = model.to(torch.bfloat16)
    report = quantize_linears(model, skip=())
    assert report.layers == 2 and report.skipped == ()
    with torch.inference_mode():
        got = model(x)
    assert got.dtype == torch.float32
    assert float(nn.functional.cosine_similarity(got, expected, dim=-1).min()) > MIN_COSINE


def test_converting_leaves_the_warning_filters_as_they_were() -> None:
    # torch warns once per process at the first quantized tensor; silencing it with
    # ``catch_warnings`` on the packing threads raced: one thread's exit restored the filters
    # under another, which then raised the warning under "error" or left "ignore" behind.
    # A fresh interpreter, so the once-per-process warning has not fired yet.
    code = (
        "import warnings\n"
        "from torch import nn\n"
        "from mississippi_tools.models.quantization import quantize_linears\n"
        "warnings.simplefilter('error')\n"
        "before = list(warnings.filters)\n"
        "for _ in range(4):\n"
        "    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(48)])\n"
        "    assert quantize_linears(model, skip=()).layers == 48\n"
        "    assert warnings.filters == before, warnings.filters[:3]\n"
        "print('same filters')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "same filters"


# -- typed errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"quantization": "int4"}, "quantization 'int4' is not supported"),
        ({"quantization": "int8", "dtype": "float16"}, "dtype 'float16' does not apply"),
        ({"quantization": "int8", "device": "meta"}, "runs on the CPU"),
    ],
)
def test_wrong_quantization_is_a_typed_error(
    tiny_checkpoint: Path, kwargs: dict[str, Any], words: str
) -> None:
    options = {"device": "cpu", **kwargs}
    with pytest.raises(InvalidInputError, match=words) as info:
        load_backend(tiny_checkpoint, **options)
    assert "quantization" in str(info.value)
    assert info.value.remedy is not None and "quantization" in info.value.remedy.option


def test_a_backend_without_int8_names_the_option(tmp_path: Path) -> None:
    from mississippi_tools.testing import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "idefics2", family="idefics2")
    with pytest.raises(InvalidInputError, match="not available for idefics2 models") as info:
        load_backend(checkpoint, device="cpu", quantization="int8")
    assert "(it is for: h2ovl)" in str(info.value)
    assert "leave quantization=None" in str(info.value)


# -- surfaces -----------------------------------------------------------------------------------


def test_python_api_answers(tiny_checkpoint: Path) -> None:
    with MississippiVLM.load(tiny_checkpoint, device="cpu", quantization="int8") as vlm:
        result = vlm.ocr(png_bytes(), max_new_tokens=3)
        backend = vlm.engine.backend  # type: ignore[attr-defined]
    assert result.meta.new_tokens == 3
    assert backend.quantization is not None


def test_cli_loads_int8_and_info_reports_the_kernels(tiny_checkpoint: Path) -> None:
    from tests.test_cli import invoke

    code, out, err = invoke(
        "info", "--model", str(tiny_checkpoint), "--device", "cpu", "--quantization", "int8",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads(out)
    assert info["quantization"] == "int8" and info["dtype"] == int8_compute_dtype()
    assert info["kernel_engine"] in torch.backends.quantized.supported_engines
    code, out, err = invoke(
        "info", "--model", str(tiny_checkpoint), "--device", "cpu", "--quantization", "int4"
    )
    assert code != 0
    assert "quantization 'int4' is not supported" in err and "--quantization int8" in err


def test_cli_ocr_with_int8(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from tests.test_cli import invoke

    image = tmp_path / "page.png"
    image.write_bytes(png_bytes())
    code, out, err = invoke(
        "ocr", str(image), "--model", str(tiny_checkpoint), "--device", "cpu",
        "--quantization", "int8", "--max-new-tokens", "3", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["result"]["meta"]["new_tokens"] == 3


def test_http_service_loads_int8_and_reports_it(tiny_checkpoint: Path) -> None:
    settings = quiet_settings(model=str(tiny_checkpoint), device="cpu", quantization="int8")
    with run_server(settings) as live:
        wait_until(
            lambda: httpx.get(f"{live.url}/health", timeout=30).json()["status"] == "ok",
            timeout=120,
            what="the load",
        )
        health = httpx.get(f"{live.url}/health", timeout=30).json()
        assert health["quantization"] == "int8" and health["dtype"] == int8_compute_dtype()
        assert health["kernel_engine"] in torch.backends.quantized.supported_engines
        assert "cpu_flags" in health
        card = httpx.get(f"{live.url}/v1/models", timeout=30).json()["data"][0]
        assert card["mississippi"]["quantization"] == "int8"
        image = png_bytes()
        import base64

        answer = httpx.post(
            f"{live.url}/v1/ocr",
            json={"image": base64.b64encode(image).decode(), "max_new_tokens": 3},
            timeout=240,
        )
        assert answer.status_code == 200, answer.text


def test_http_service_refuses_a_bad_quantization_with_the_operators_flag(
    tiny_checkpoint: Path,
) -> None:
    settings = quiet_settings(model=str(tiny_checkpoint), device="cpu", dtype="float16")
    settings = settings.model_copy(update={"quantization": "int8"})
    with run_server(settings) as live:
        wait_until(
            lambda: httpx.get(f"{live.url}/health", timeout=30).json()["status"] == "failed",
            timeout=60,
            what="a refusal",
        )
        error = httpx.get(f"{live.url}/health", timeout=30).json()["error"]
        assert error["code"] == "invalid_input" and "dtype 'float16'" in error["message"]


def test_server_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mississippi_tools.server import ServerSettings

    monkeypatch.setenv("MISSISSIPPI_QUANTIZATION", "int8")
    assert ServerSettings().quantization == "int8"
    monkeypatch.setenv("MISSISSIPPI_QUANTIZATION", "int4")
    with pytest.raises(ValueError, match="int8"):
        ServerSettings()


def test_mcp_settings_load_int8(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mississippi_mcp import MCPSettings
    from mississippi_mcp.server import MCP_SPELLING, load_vlm
    from mississippi_mcp.settings import parse_args

    settings = parse_args(["--model", str(tiny_checkpoint), "--device", "cpu",
                           "--quantization", "int8"])  # fmt: skip
    assert settings.quantization == "int8"
    monkeypatch.setenv("MISSISSIPPI_MCP_QUANTIZATION", "int8")
    assert MCPSettings().quantization == "int8"
    with load_vlm(settings) as vlm:
        assert vlm.engine.backend.quantization is not None  # type: ignore[attr-defined]
        assert vlm.ocr(png_bytes(), max_new_tokens=2).meta.new_tokens == 2
    assert "--quantization" in MCP_SPELLING["no_quantization"]
