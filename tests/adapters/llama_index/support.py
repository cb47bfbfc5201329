"""Helpers for the LlamaIndex adapter tests: a local embedding and scripted agent LLMs."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM

_WORD = re.compile(r"\w+")


class HashingEmbedding(BaseEmbedding):
    """A deterministic bag-of-words embedding: hashed word counts, L2-normalised.

    Texts that share words get close vectors, so retrieval is meaningful without a network or a
    model (unlike ``MockEmbedding``, which gives every text the same vector).
    """

    dim: int = 512

    @classmethod
    def class_name(cls) -> str:
        return "HashingEmbedding"

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dim
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest, "little") % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


Step = tuple[str, dict[str, Any]]
"""One scripted tool call: the tool's name and its arguments."""


def _tool_turns(messages: Sequence[ChatMessage]) -> int:
    return sum(1 for m in messages if m.role == MessageRole.TOOL)


Turns = list[list[ChatMessage]]
"""The messages a scripted LLM was given, one list per turn."""


def function_calling_llm(
    steps: Sequence[Step], answer: str
) -> tuple[MockFunctionCallingLLM, Turns]:
    """A FunctionAgent LLM that makes ``steps`` one tool call per turn, then answers."""
    turns: Turns = []

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        turns.append(list(messages))
        done = _tool_turns(messages)
        if done < len(steps):
            name, arguments = steps[done]
            block = ToolCallBlock(
                tool_call_id=f"call-{done}", tool_name=name, tool_kwargs=arguments
            )
            return ChatMessage(role="assistant", blocks=[block])
        return ChatMessage(role="assistant", content=answer)

    return MockFunctionCallingLLM(response_generator=respond), turns


def react_llm(steps: Sequence[Step], answer: str) -> tuple[MockFunctionCallingLLM, Turns]:
    """A ReActAgent LLM: ReAct text with one action per turn, then the answer.

    ReActAgent returns each tool's output as a user message ``"Observation: ..."``.
    """
    turns: Turns = []

    def respond(messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        turns.append(list(messages))
        done = sum(1 for m in messages if (m.content or "").startswith("Observation:"))
        if done < len(steps):
            name, arguments = steps[done]
            text = (
                f"Thought: I need to use a tool.\nAction: {name}\n"
                f"Action Input: {json.dumps(arguments)}"
            )
        else:
            text = f"Thought: I can answer without using any more tools.\nAnswer: {answer}"
        return ChatMessage(role="assistant", content=text)

    return MockFunctionCallingLLM(response_generator=respond), turns
