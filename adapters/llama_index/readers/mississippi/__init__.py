"""LlamaIndex reader for images and PDFs, read by H2OVL-Mississippi (``mississippi-tools``).

Example:
    .. code-block:: python

        from llama_index.core import SimpleDirectoryReader
        from llama_index.readers.mississippi import MississippiImageReader
        from mississippi_tools import MississippiVLM

        reader = MississippiImageReader(MississippiVLM.load(), mode="markdown", on_error="record")
        docs = SimpleDirectoryReader("scans/", file_extractor=reader.file_extractor()).load_data()
"""

from __future__ import annotations

from mississippi_tools.extras import require

require("llama_index.core", "llamaindex", purpose="the LlamaIndex integration")

from llama_index.readers.mississippi.base import (  # noqa: E402
    DEFAULT_CONCURRENCY,
    SUPPORTED_EXTENSIONS,
    MississippiImageReader,
    OnError,
    ReaderMode,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "SUPPORTED_EXTENSIONS",
    "MississippiImageReader",
    "OnError",
    "ReaderMode",
]
