"""The demo checkpoint: a real tiny model whose weights give every task a well-formed answer."""

from __future__ import annotations

import datetime
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from mississippi_tools import MississippiVLM
from mississippi_tools.testing import (
    DEMO_ANSWERS,
    DEMO_EXTRACT_SCHEMA,
    DEMO_EXTRACT_TEMPLATE,
    build_demo_checkpoint,
)

INVOICE = {"invoice_number": "12345", "date": "2024-10-17", "total": 1200.0, "paid": False}


class Invoice(BaseModel):  # the README's model: its schema is DEMO_EXTRACT_SCHEMA's
    invoice_number: str
    date: datetime.date
    total: float
    paid: bool


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_checkpoint(tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def demo_vlm(request: pytest.FixtureRequest, demo_checkpoint: Path) -> Any:
    vlm = MississippiVLM.load(demo_checkpoint, device="cpu", dtype=request.param)
    yield vlm
    vlm.close()


def page(size: tuple[int, int] = (640, 480)) -> Image.Image:
    return Image.new("RGB", size, "white")


def test_every_task_gets_its_answer(demo_vlm: MississippiVLM) -> None:
    assert demo_vlm.ocr(page()).text == DEMO_ANSWERS["ocr"]
    assert demo_vlm.ocr(page(), format="markdown").text == DEMO_ANSWERS["ocr"]
    chart = demo_vlm.read_chart(page())  # through the chart grammar, unchanged
    assert (chart.title, chart.chart_type) == ("Monthly sales", "bar")
    assert chart.to_csv().splitlines() == [
        "Month,Sales",
        "January,1000",
        "February,1200",
        "March,900",
    ]
    table = demo_vlm.read_table(page())
    assert table.columns == ["Product", "Price", "Quantity"]
    assert len(table.rows) == 2
    assert demo_vlm.extract(page(), DEMO_EXTRACT_TEMPLATE) == INVOICE
    assert demo_vlm.extract(page(), DEMO_EXTRACT_SCHEMA) == INVOICE
    assert demo_vlm.extract(page(), Invoice) == Invoice.model_validate(INVOICE)
    assert demo_vlm.ask(page(), "What is the total?").text == DEMO_ANSWERS["ask"]
    assert demo_vlm.generate(None, "Hello there, who are you?").text == DEMO_ANSWERS["ask"]


def test_answers_hold_after_a_long_prompt(demo_vlm: MississippiVLM) -> None:
    # 13 tiles: the heads find the token 1..8 back across 3,300 positions
    answer = demo_vlm.ask(page((2400, 1800)), "What is the total?", max_tiles=12)
    assert answer.meta.prompt_tokens > 3000
    assert answer.text == DEMO_ANSWERS["ask"]


def test_batched_requests_keep_their_own_answers(demo_vlm: MississippiVLM) -> None:
    sizes = [(100, 100), (1200, 900), (300, 900)]
    calls = {
        "ocr": lambda image: demo_vlm.ocr(image).text,
        "ask": lambda image: demo_vlm.ask(image, "How much?").text,
        "extract": lambda image: demo_vlm.extract(image, DEMO_EXTRACT_TEMPLATE),
    }
    expected = {"ocr": DEMO_ANSWERS["ocr"], "ask": DEMO_ANSWERS["ask"], "extract": INVOICE}
    with ThreadPoolExecutor(len(sizes) * len(calls)) as pool:
        futures = [
            (task, pool.submit(call, page(size))) for size in sizes for task, call in calls.items()
        ]
        assert all(future.result(timeout=120) == expected[task] for task, future in futures)


def test_another_schema_still_gets_valid_json(demo_vlm: MississippiVLM) -> None:
    # the script's tokens are refused by this schema's grammar; the head's fallbacks close it
    data = demo_vlm.extract(page(), {"name": "", "age": 0, "tags": [""]})
    assert set(data) == {"name", "age", "tags"}


def test_the_heads_single_out_one_distance() -> None:
    from mississippi_tools.demo_checkpoint import _DEMO_HEAD_DIM, _ROPE_WEIGHTS, TINY_CONFIG

    theta = TINY_CONFIG["llm_config"]["rope_theta"]
    max_position = TINY_CONFIG["llm_config"]["max_position_embeddings"]
    freqs = [theta ** (-i / _DEMO_HEAD_DIM) for i in range(0, _DEMO_HEAD_DIM, 2)]
    assert math.isclose(sum(_ROPE_WEIGHTS), 1.0)
    # score(distance) - score(wanted) = -sum_i w_i (1 - cos(f_i (distance - wanted)))
    worst = min(
        sum(w * (1 - math.cos(f * offset)) for w, f in zip(_ROPE_WEIGHTS, freqs, strict=True))
        for offset in range(-8, max_position)
        if offset
    )
    assert worst > 0.12  # of a 270 peak: a margin of 32 against every other position


def test_answers_that_continue_the_same_context_differently_are_refused() -> None:
    from mississippi_tools.demo_checkpoint import _Script, _script_contexts

    prompt = tuple(range(100, 120))
    same = tuple(range(200, 212))
    first = _Script("a", prompt, (*same, 7), priority=2)
    second = _Script("b", (*prompt[:-1], 99), (*same, 8), priority=2)  # the same last 9 tokens
    with pytest.raises(ValueError, match="continue the same 9 tokens differently"):
        _script_contexts([first, second], eos=2)
    assert len(_script_contexts([first], eos=2)) == len(same) + 2
