"""LlamaIndex tools for agents that read images, by H2OVL-Mississippi (``mississippi-tools``).

Example:
    .. code-block:: python

        from llama_index.core.agent.workflow import FunctionAgent
        from llama_index.tools.mississippi import MississippiToolSpec
        from mississippi_tools import MississippiVLM

        tools = MississippiToolSpec(MississippiVLM.load()).to_tool_list()
        agent = FunctionAgent(tools=tools, llm=llm)
"""

from __future__ import annotations

from mississippi_tools.extras import require

require("llama_index.core", "llamaindex", purpose="the LlamaIndex integration")

from llama_index.tools.mississippi.base import MississippiToolSpec  # noqa: E402

__all__ = ["MississippiToolSpec"]
