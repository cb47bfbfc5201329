"""LangChain integration of mississippi-tools: tools, a toolkit and a document loader.

Example:
    .. code-block:: python

        from mississippi_tools import MississippiVLM
        from langchain_mississippi import MississippiToolkit

        toolkit = MississippiToolkit(vlm=MississippiVLM.load(), allowed_roots=["/data"])
        tools = toolkit.get_tools()
"""

from __future__ import annotations

from mississippi_tools.extras import require

require("langchain_core", "langchain", purpose="the LangChain integration")

from langchain_mississippi.document_loaders import MississippiImageLoader  # noqa: E402
from langchain_mississippi.toolkit import MississippiToolkit  # noqa: E402
from langchain_mississippi.tools import (  # noqa: E402
    MississippiAskTool,
    MississippiChartTool,
    MississippiExtractTool,
    MississippiOCRTool,
    MississippiTableTool,
    MississippiTaskTool,
    tool_class,
)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mississippi-tools")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


__version__ = _version()

__all__ = [
    "MississippiAskTool",
    "MississippiChartTool",
    "MississippiExtractTool",
    "MississippiImageLoader",
    "MississippiOCRTool",
    "MississippiTableTool",
    "MississippiTaskTool",
    "MississippiToolkit",
    "__version__",
    "tool_class",
]
