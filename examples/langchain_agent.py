"""A LangChain agent that reads images with the Mississippi tools.

Run from a source tree (the package is installed as usual with
``pip install "mississippi-tools[langchain,local]"``)::

    PYTHONPATH=.:adapters python examples/langchain_agent.py
    PYTHONPATH=.:adapters python examples/langchain_agent.py --model ~/models/h2ovl-mississippi-800m
    PYTHONPATH=.:adapters python examples/langchain_agent.py --llm openai:gpt-4o-mini --model ...

Without ``--model`` it builds a tiny checkpoint with *random weights* in a temporary directory,
so that it runs anywhere in seconds with no download: the tools, the engine and the agent loop
are real, but a random model writes random words. Without ``--llm`` the agent's chat model is
scripted (no LLM is called): it reads an invoice, extracts fields as JSON, and tries a file
outside the allowed directory, to show what the agent receives when a tool refuses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from PIL import Image, ImageDraw

from langchain_mississippi import MississippiToolkit
from mississippi_tools import MississippiVLM


class ScriptedChatModel(GenericFakeChatModel):
    """Plays a fixed list of replies; stands in for an LLM so the example needs none."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def scripted_turns(image: str, outside: str) -> Iterator[AIMessage]:
    def call(name: str, call_id: str, **args: Any) -> AIMessage:
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])

    yield call("mississippi_ocr", "call-ocr", image=image)
    yield call(
        "mississippi_extract",
        "call-extract",
        image=image,
        json_schema={"is_invoice": True, "is_paid": False},
    )
    yield call("mississippi_ocr", "call-outside", image=outside)
    yield AIMessage(content="I read the invoice (see the tool results); the other file is refused.")


def make_invoice(path: Path) -> Path:
    image = Image.new("RGB", (640, 360), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
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
    return vlm, {"max_tiles": 1, "max_new_tokens": 32}


def show(message: BaseMessage) -> None:
    if isinstance(message, ToolMessage):
        artifact = type(message.artifact).__name__ if message.artifact is not None else None
        text = str(message.content).replace("\n", " | ")
        print(f"  tool {message.name} [{message.status}] artifact={artifact}\n    {text[:300]}")
    elif isinstance(message, AIMessage) and message.tool_calls:
        for tool_call in message.tool_calls:
            print(f"  model calls {tool_call['name']}({tool_call['args']})")
    else:
        print(f"  {message.type}: {message.content}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory or hub id (default: tiny random)")
    parser.add_argument("--image", type=Path, help="an image to read (default: a drawn invoice)")
    parser.add_argument("--llm", help="a real chat model for init_chat_model, e.g. openai:gpt-4o")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mississippi-agent-") as tmp:
        workdir = Path(tmp)
        inbox = workdir / "inbox"
        inbox.mkdir()
        image = args.image.resolve() if args.image else make_invoice(inbox / "invoice.png")
        outside = make_invoice(workdir / "private.png")
        vlm, budget = load_model(args.model, workdir)
        with vlm:
            # Agents may read files only under the image's directory.
            toolkit = MississippiToolkit(vlm=vlm, allowed_roots=[image.parent], **budget)
            llm: BaseChatModel
            if args.llm:
                from langchain.chat_models import init_chat_model

                llm = init_chat_model(args.llm)
            else:
                llm = ScriptedChatModel(messages=scripted_turns(image.name, str(outside)))
            agent = create_agent(
                llm,
                tools=toolkit.get_tools(),
                system_prompt="You read documents with the tools and answer briefly.",
            )
            question = f"What does {image.name} say, and is it paid?"
            print(f"user: {question}")
            state = agent.invoke({"messages": [HumanMessage(question)]})
            for message in state["messages"][1:]:
                show(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
