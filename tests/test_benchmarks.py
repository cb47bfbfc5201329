"""The benchmark suite runs (on the tiny model) and its cost model matches hand-computed figures."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import pytest

from benchmarks.model_costs import model_costs
from mississippi_tools.models.h2ovl.configuration import H2OVLConfig
from mississippi_tools.testing import H2OVL_800M_CONFIG

ROOT = Path(__file__).resolve().parents[1]


def test_cost_model_of_the_800m_shape() -> None:
    costs = model_costs(H2OVLConfig.from_dict(copy.deepcopy(H2OVL_800M_CONFIG)))
    # InternViT-300M over 1025 tokens: 24 x (qkv + proj + MLP + attention) + patch embedding
    assert costs.vision_flops_per_tile == pytest.approx(723.8e9, rel=1e-3)
    # Danube3-500M: 16 layers of 25.95M weights, two FLOPs per weight and token
    assert costs.decoder_flops_per_token == pytest.approx(0.8305e9, rel=1e-3)
    assert costs.lm_head_params == 32010 * 1536
    assert costs.decode_bytes_per_token(2) == pytest.approx(0.929e9, rel=1e-3)


def test_quick_suite_runs_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import report
    from benchmarks.__main__ import RESULTS, main

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the tiny checkpoint goes
    committed = sorted(RESULTS.iterdir())
    results = main(["--quick", "--name", "smoke", "--skip", "service,startup"])
    # not asked for with --out: the results of a smoke run are not written anywhere
    assert "writes no results; pass --out DIR" in capsys.readouterr().out
    assert sorted(RESULTS.iterdir()) == committed
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("bench-")]
    assert set(results["runs"]) == {"float32", "bfloat16"}
    stage = results["runs"]["float32"]["stages"]["6-tile"]
    assert stage["tiles"] == 7 and stage["seconds"]["vision"] > 0
    assert {t["concurrency"] for t in results["runs"]["float32"]["throughput"]} == {1, 4, 8}
    assert all(t["same_tokens_as_plain"] for t in results["runs"]["float32"]["throughput"])
    assert results["runs"]["float32"]["cache"]["second_cache_hit"]
    paths = report.write(results, tmp_path / "out")  # what --out writes
    assert "## Targets" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["name"] == "smoke"


def test_idefics1_stage_runs_on_tiny_checkpoints() -> None:
    from benchmarks import idefics1

    result = idefics1.run(quick=True, new_tokens=3)
    assert set(result["measured"]) == {"A", "B", "C"}
    assert all(run["tokens"] == 3 for run in result["measured"].values())
    assert set(result["extrapolated_seconds"]) == {"vision", "prefill", "decode"}
    assert result["parameters"] == sum(result["parameters_by_part"].values())


def test_quantization_benchmark_quick_runs_and_writes_nothing(tmp_path: Path) -> None:
    from benchmarks import quantization

    written = sorted(quantization.RESULTS.glob("quantization*"))
    before = {path: path.stat().st_mtime_ns for path in written}
    result = quantization.main(["--quick", "--new-tokens", "2"])
    assert result is not None
    assert set(result["modes"]) == {"lossless", "int8"}
    assert result["modes"]["int8"]["kernel_engine"] == result["machine"]["int8_engine"]
    assert result["modes"]["int8"]["int8_layers"] > 0
    assert set(result["interleaved"]["request_seconds"]) == {"lossless", "int8", "plain"}
    assert set(result["ratios"]) == set(quantization.GOALS) | {"load_int8_vs_file_read"}
    tiny = result["accuracy"]["tiny"]
    assert tiny["layers"] == result["modes"]["int8"]["int8_layers"]
    assert 0.0 <= tiny["greedy_agreement"] <= 1.0
    text = quantization.markdown(result, "cmd")
    assert "int8 kernel engine" in text and "lossless / plain" in text
    assert {p: p.stat().st_mtime_ns for p in quantization.RESULTS.glob("quantization*")} == before
    quantization.plot(result, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")


def test_quantization_benchmark_caps_the_kernels_at_avx2() -> None:
    from benchmarks import quantization

    capped = quantization._in_process("machine", isa="avx2")
    assert capped["torch_capability"] == "AVX2"
    assert capped["native_bfloat16"] is False
    assert set(capped["flags"]) <= {"avx2", "avx_vnni"}


def test_decode_step_benchmark_quick_runs_and_writes_nothing() -> None:
    from benchmarks import decode_step

    before = {p: p.stat().st_mtime_ns for p in decode_step.RESULTS.glob("decode-step*")}
    result = decode_step.main(["--quick"])
    assert result is not None
    assert set(result["modes"]) == {"lossless", "int8"}
    for measured in result["modes"].values():
        assert set(measured["step_ms"]) == {"lean", "transformers"}
        assert all(ms > 0 for ms in measured["step_ms"].values())
        assert all(0 < share < 1 for share in measured["product_share"].values())
    assert "lean / transformers" in decode_step.markdown(result, "cmd")
    assert {p: p.stat().st_mtime_ns for p in decode_step.RESULTS.glob("decode-step*")} == before


def test_h2ovl2b_stage_runs_on_the_tiny_2b_checkpoint() -> None:
    from benchmarks import h2ovl2b

    result = h2ovl2b.run(quick=True, new_tokens=3, repeats=1, rounds=1)
    runs = result["runs"]
    assert set(runs) == {"2b bfloat16", "800m bfloat16"}
    # The 2B's MSAC tiles the page 13 ways; the 800M 6 tiles and the thumbnail.
    assert [runs["2b bfloat16"][r]["tiles"] for r in ("1-tile", "page")] == [1, 13]
    assert [runs["800m bfloat16"][r]["tiles"] for r in ("1-tile", "page")] == [1, 7]
    for requests in runs.values():
        for measured in requests.values():
            assert measured["decode_tokens_per_s"] > 0 and measured["peak_rss_mb"] > 0
            assert measured["prompt_tokens"] > 256 * measured["tiles"]
    assert set(result["ratio_2b_over_800m"]["bfloat16"]) == {"1-tile", "page"}
    assert "| 2b bfloat16 | page (800x1000) | 13 |" in h2ovl2b.markdown(result)
