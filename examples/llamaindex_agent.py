"""A LlamaIndex FunctionAgent that reads images with the Mississippi tool spec.

Run from a source tree (the package is installed as usual with
``pip install "mississippi-tools[llamaindex,local]"``)::

    PYTHONPATH=.:adapters python examples/llamaindex_agent.py
    PYTHONPATH=.:adapters python examples/llamaindex_agent.py --model ~/models/h2ovl-800m
    PYTHONPATH=.:adapters python examples/llamaindex_agent.py --llm openai:gpt-4o-mini --model ...

Without ``--model`` it builds a tiny checkpoint with *random weights* in a temporary directory,
so that it runs anywhere in seconds with no download: the tools, the engine and the agent loop
are real, but a random model writes random words. Without ``--llm`` the agent's LLM is
LlamaIndex's ``MockFunctionCallingLLM`` following a script (no LLM is called): it reads an
invoice, extracts fields as JSON, and tries a file outside the allowed directory, to show what
the agent receives when a tool refuses (``is_error=True`` and the reason).
``--llm openai:MODEL`` needs ``pip install llama-index-llms-openai`` and ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms import LLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from PIL import Image, ImageDraw

from llama_index.tools.mississippi import MississippiToolSpec
from mississippi_tools import MississippiVLM, SourcePolicy

QUESTION = "Is invoice.png an invoice, and is it paid? Also read ../secret.png."


def scripted_llm(outside: str) -> MockFunctionCallingLLM:
    """One tool call per turn, then an answer; stands in for an LLM so the example needs none."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("ocr", {"image": "invoice.png"}),
        ("extract_json", {"image": "invoice.png", "json_schema": {"invoice": True, "paid": False}}),
        ("ocr", {"image": outside}),
    ]

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        done = sum(1 for m in messages if m.role == MessageRole.TOOL)
        if done < len(steps):
            name, arguments = steps[done]
            call = ToolCallBlock(tool_call_id=f"call-{done}", tool_name=name, tool_kwargs=arguments)
            return ChatMessage(role="assistant", blocks=[call])
        return ChatMessage(
            role="assistant",
            content="I read the invoice (see the tool results); the other file is not allowed.",
        )

    return MockFunctionCallingLLM(response_generator=respond)


def real_llm(spec: str) -> LLM:
    provider, _, model = spec.partition(":")
    if provider != "openai" or not model:
        raise SystemExit(f"--llm must look like openai:MODEL, got {spec!r}")
    try:
        from llama_index.llms.openai import OpenAI  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise SystemExit("--llm openai:... needs: pip install llama-index-llms-openai") from None
    return OpenAI(model=model)  # type: ignore[no-any-return]


def make_invoice(path: Path) -> Path:
    image = Image.new("RGB", (640, 360), "white")
    ImageDraw.Draw(image).text(
        (40, 40), "INVOICE 2024-117\nACME Tools Ltd.\n\nTotal due: $1,200.00\nPAID", fill="black"
    )
    image.save(path)
    return path


def load_model(model: str | None, workdir: Path) -> tuple[MississippiVLM, dict[str, Any]]:
    if model is not None:
        return MississippiVLM.load(model), {}
    from mississippi_tools.testing import build_tiny_checkpoint

    print(
        "No --model given: building a tiny checkpoint with RANDOM weights. The tools and the "
        "agent loop are real, but a random model writes random words.\n"
        "Pass --model DIR (e.g. a download of h2oai/h2ovl-mississippi-800m) for real answers.\n"
    )
    checkpoint = build_tiny_checkpoint(workdir / "tiny-h2ovl")
    vlm = MississippiVLM.load(checkpoint, device="cpu", dtype="float32", progress=False)
    return vlm, {"max_tiles": 1, "max_new_tokens": 48}


async def run(agent: FunctionAgent, question: str) -> str:
    handler = agent.run(user_msg=question)
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            output = event.tool_output
            status = "ERROR" if output.is_error else "ok"
            text = " ".join(str(output.content).split())[:160]
            print(f"  {event.tool_name}({event.tool_kwargs}) -> {status}: {text}")
    result = await handler
    return str(result.response.content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint directory or hub id (default: tiny random)")
    parser.add_argument("--llm", help="openai:MODEL to use a real LLM (default: scripted)")
    parser.add_argument("--max-new-tokens", type=int, help="most tokens per answer")
    parser.add_argument("--max-tiles", type=int, help="most 448-px tiles per image")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        inbox = workdir / "inbox"
        inbox.mkdir()
        make_invoice(inbox / "invoice.png")
        make_invoice(workdir / "secret.png")  # outside the allowed directory

        vlm, options = load_model(args.model, workdir)
        if args.max_new_tokens is not None:
            options["max_new_tokens"] = args.max_new_tokens
        if args.max_tiles is not None:
            options["max_tiles"] = args.max_tiles
        with vlm:
            # The agent may read files under inbox/ only; relative paths start there.
            spec = MississippiToolSpec(vlm, policy=SourcePolicy(allowed_roots=(inbox,)), **options)
            llm = real_llm(args.llm) if args.llm else scripted_llm(str(workdir / "secret.png"))
            agent = FunctionAgent(
                tools=spec.to_tool_list(),
                llm=llm,
                system_prompt="Answer questions about the user's files with the image tools.",
            )
            print(f"Question: {QUESTION}")
            answer = asyncio.run(run(agent, QUESTION))
        print(f"Answer: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
