"""An agent loop end to end: ``create_agent``, a scripted chat model, real tools, a real model.

The chat model is scripted (no real LLM); the tools, the engine and the tiny model are real. The
model is the scripted tiny checkpoint (conftest.py), so the artifacts hold known values. The
chat model records what it is given at each turn, so the tests can check what the agent saw:
the typed artifacts of successful calls, and our error messages as ``status="error"`` tool
messages for a missing file and for a file outside the allowed directory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

from langchain_mississippi import MississippiToolkit
from mississippi_tools import ExtractionResult, MississippiVLM, OCRResult, TableData
from tests.support import SCRIPTED_ANSWER

from .conftest import draw_image


class ScriptedChatModel(GenericFakeChatModel):
    """Replies from a script, and records the messages it was given at each turn."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def call(name: str, call_id: str, **args: Any) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """The one directory the agent may read, with an invoice; a secret lies outside it."""
    root = tmp_path / "inbox"
    root.mkdir()
    draw_image(root / "invoice.png", "Invoice 7\nTotal: 5")
    draw_image(tmp_path / "secret.png", "not for agents")
    return root


def script(outside: Path) -> Iterator[AIMessage]:
    yield call("mississippi_ocr", "ocr-1", image="invoice.png")
    yield call("mississippi_read_table", "table-1", image="invoice.png")
    yield call("mississippi_ocr", "missing-1", image="invoce.png")  # a typo
    yield call("mississippi_ocr", "refused-1", image=str(outside))
    yield call("mississippi_extract", "extract-1", image="invoice.png", json_schema={"total": 0})
    yield AIMessage(content="The invoice total is 5.")


def tool_messages(messages: list[BaseMessage]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}


def toolkit(vlm: MississippiVLM, root: Path) -> MississippiToolkit:
    return MississippiToolkit(vlm=vlm, allowed_roots=[root], max_tiles=1, max_new_tokens=32)


def test_agent_loop_reads_artifacts_and_recovers_from_errors(
    scripted_vlm: MississippiVLM, inbox: Path
) -> None:
    model = ScriptedChatModel(messages=script(inbox.parent / "secret.png"))
    agent = create_agent(model, tools=toolkit(scripted_vlm, inbox).get_tools())

    state = agent.invoke({"messages": [HumanMessage("What is the total of invoice.png?")]})

    messages = state["messages"]
    assert messages[-1].content == "The invoice total is 5."
    results = tool_messages(messages)
    assert set(results) == {"ocr-1", "table-1", "missing-1", "refused-1", "extract-1"}

    ocr = results["ocr-1"]
    assert ocr.status == "success"
    assert ocr.content == SCRIPTED_ANSWER
    assert isinstance(ocr.artifact, OCRResult)
    assert ocr.artifact.meta.source is not None
    assert ocr.artifact.meta.source.endswith("invoice.png")

    table = results["table-1"]
    assert isinstance(table.artifact, TableData)
    assert table.artifact.records() == [{"total": 5}]
    assert table.content == "| total |\n| --- |\n| 5 |"

    missing = results["missing-1"]
    assert missing.status == "error"
    assert missing.artifact is None
    assert isinstance(missing.content, str)
    assert missing.content.startswith("image_not_found: no file at path 'invoce.png'")
    assert f"relative paths start at '{inbox.resolve()}'" in missing.content

    refused = results["refused-1"]
    assert refused.status == "error"
    assert isinstance(refused.content, str)
    assert refused.content.startswith("access_denied: path ")
    assert "outside the allowed roots" in refused.content
    assert "not for agents" not in refused.content

    extract = results["extract-1"]
    assert extract.status == "success"
    assert isinstance(extract.artifact, ExtractionResult)
    assert set(extract.artifact.data) == {"total"}

    # The chat model was shown each error as a tool message before its next turn.
    assert len(model.seen) == 6
    shown = tool_messages(model.seen[3])
    assert shown["missing-1"].status == "error"
    assert shown["missing-1"].content == missing.content
    assert tool_messages(model.seen[4])["refused-1"].content == refused.content


async def test_agent_loop_async(scripted_vlm: MississippiVLM, inbox: Path) -> None:
    turns = iter(
        [
            call("mississippi_ask", "ask-1", image="invoice.png", question="What is the total?"),
            call("mississippi_read_chart", "chart-1", image="../secret.png"),
            AIMessage(content="done"),
        ]
    )
    model = ScriptedChatModel(messages=turns)
    agent = create_agent(model, tools=toolkit(scripted_vlm, inbox).get_tools())

    state = await agent.ainvoke({"messages": [HumanMessage("Read invoice.png")]})

    results = tool_messages(state["messages"])
    assert results["ask-1"].status == "success"
    assert results["ask-1"].content == SCRIPTED_ANSWER
    assert results["chart-1"].status == "error"
    assert isinstance(results["chart-1"].content, str)
    assert results["chart-1"].content.startswith("access_denied: path '../secret.png'")
