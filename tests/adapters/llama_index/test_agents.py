"""LlamaIndex agents calling the Mississippi tools: scripted LLMs, real tools, a real tiny model.

The LLMs are LlamaIndex's ``MockFunctionCallingLLM`` with a scripted ``response_generator``
(tests/adapters/llama_index/support.py); the tools, the engine and the model are real. The
tests check what the agent received (``ToolCallResult`` events) and what the LLM was shown on
its next turn: results for good calls, our error messages, flagged ``is_error``, for bad ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import (
    AgentOutput,
    BaseWorkflowAgent,
    FunctionAgent,
    ReActAgent,
    ToolCallResult,
)
from llama_index.core.base.llms.types import MessageRole
from llama_index.core.tools import BaseTool

from llama_index.tools.mississippi import MississippiToolSpec
from mississippi_tools import AccessDeniedError, ImageNotFoundError, MississippiVLM, SourcePolicy

from .conftest import CLOSED_SCHEMA, draw_image
from .support import function_calling_llm, react_llm

# llama-index-workflows finds an agent's steps with inspect.getmembers, which reads every
# attribute of the (pydantic) agent, pydantic's deprecated ones included. Only warnings raised
# from inspect are ignored. ReActAgent.take_step (llama-index-core 0.14.25) still reads
# ``ctx.is_running``, which llama-index-workflows 2.x deprecates.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20:inspect"),
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211:inspect"),
    pytest.mark.filterwarnings("ignore:is_running called from within a step:DeprecationWarning"),
]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """The one directory the agent may read, with an invoice; a secret lies outside it."""
    root = tmp_path / "inbox"
    root.mkdir()
    draw_image(root / "invoice.png", "Invoice 7\nTotal: 5")
    draw_image(tmp_path / "secret.png", "not for agents")
    return root


def tools(vlm: MississippiVLM, root: Path) -> list[BaseTool | Callable[..., Any]]:
    # 64 new tokens: enough for the closed extraction schema to complete.
    policy = SourcePolicy(allowed_roots=(root,))
    spec = MississippiToolSpec(vlm, policy=policy, max_new_tokens=64, max_tiles=1)
    return [*spec.to_tool_list()]


async def run(agent: BaseWorkflowAgent, question: str) -> tuple[list[ToolCallResult], str]:
    handler = agent.run(user_msg=question)
    results = [
        event async for event in handler.stream_events() if isinstance(event, ToolCallResult)
    ]
    output: AgentOutput = await handler
    return results, str(output.response.content)


async def test_function_agent_calls_tools_and_reads_their_errors(
    tiny_vlm: MississippiVLM, inbox: Path
) -> None:
    steps: list[tuple[str, dict[str, Any]]] = [
        ("extract", {"image": "invoice.png", "json_schema": CLOSED_SCHEMA}),
        ("ocr", {"image": str(inbox.parent / "secret.png")}),
    ]
    llm, turns = function_calling_llm(steps, answer="The invoice is a receipt.")
    agent = FunctionAgent(tools=tools(tiny_vlm, inbox), llm=llm)

    results, answer = await run(agent, "What kind of document is invoice.png?")

    assert answer == "The invoice is a receipt."
    extracted, refused = results
    assert extracted.tool_name == "extract"
    assert not extracted.tool_output.is_error
    assert set(json.loads(extracted.tool_output.content)) == {"paid", "kind"}

    assert refused.tool_name == "ocr"
    assert refused.tool_output.is_error
    assert isinstance(refused.tool_output.exception, AccessDeniedError)
    assert "outside the allowed roots" in refused.tool_output.content

    # The LLM's last turn saw both results as tool messages, the error's text included.
    shown = [m.content or "" for m in turns[-1] if m.role == MessageRole.TOOL]
    assert shown == [extracted.tool_output.content, refused.tool_output.content]


async def test_react_agent_calls_tools_and_reads_their_errors(
    tiny_vlm: MississippiVLM, inbox: Path
) -> None:
    steps: list[tuple[str, dict[str, Any]]] = [
        ("ask", {"image": "invoce.png", "question": "Is it paid?"}),  # a typo
        ("ask", {"image": "invoice.png", "question": "Is it paid?"}),
    ]
    llm, turns = react_llm(steps, answer="It does not say.")
    agent = ReActAgent(tools=tools(tiny_vlm, inbox), llm=llm)

    results, answer = await run(agent, "Is invoice.png paid?")

    assert answer == "It does not say."
    missing, answered = results
    assert missing.tool_output.is_error
    assert isinstance(missing.tool_output.exception, ImageNotFoundError)
    assert "no file at path 'invoce.png'" in missing.tool_output.content
    assert not answered.tool_output.is_error
    assert answered.tool_output.content.strip()

    observations = [m.content or "" for m in turns[-1] if (m.content or "").startswith("Obs")]
    assert observations == [f"Observation: {r.tool_output.content}" for r in results]
