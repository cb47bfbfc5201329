"""mississippi-tools: read images for AI agents with H2OVL-Mississippi.

OCR, chart and table reading, schema-valid JSON extraction and questions about images, from one
local model shared by LangChain tools, LlamaIndex readers, an MCP server and an HTTP service.

Example:
    .. code-block:: python

        from mississippi_tools import MississippiVLM

        vlm = MississippiVLM.load()             # h2oai/h2ovl-mississippi-800m
        print(vlm.ocr("scan.png").text)

Names are resolved on first use, so ``import mississippi_tools`` (and the CLI's ``--help``) stays
fast and never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mississippi_tools.engine.base import (
        Engine,
        GenerationOutput,
        GenerationRequest,
        SamplingParams,
    )
    from mississippi_tools.engine.config import (
        LocalEngineConfig,
    )
    from mississippi_tools.engine.local import (
        LocalEngine,
    )
    from mississippi_tools.engine.remote import (
        RemoteEngine,
    )
    from mississippi_tools.engine.repetition import (
        RepetitionCheck,
    )
    from mississippi_tools.errors import (
        AccessDeniedError,
        CheckpointError,
        ConfigError,
        DeadlineExceededError,
        EngineDeadError,
        ExtractionError,
        GenerationError,
        ImageDecodeError,
        ImageError,
        ImageFetchError,
        ImageNotFoundError,
        ImageTooLargeError,
        InvalidInputError,
        MissingDependencyError,
        MississippiError,
        ModelLoadError,
        ModelNotFoundError,
        PDFError,
        PromptTooLongError,
        QueueFullError,
        RemoteConnectionError,
        RemoteError,
        RemoteStatusError,
        RepetitionError,
        RequestCancelledError,
        SchemaError,
    )
    from mississippi_tools.images import (
        ImageInput,
        ImageLimits,
        LoadedImage,
        iter_pages,
        load_image,
    )
    from mississippi_tools.sources import (
        SourcePolicy,
    )
    from mississippi_tools.tasks.ask import (
        Answer,
    )
    from mississippi_tools.tasks.chart import (
        Axis,
        ChartData,
        ChartPoint,
        ChartSeries,
    )
    from mississippi_tools.tasks.extract import (
        ExtractionResult,
    )
    from mississippi_tools.tasks.extract_document import (
        DocumentExtractionResult,
    )
    from mississippi_tools.tasks.ocr import (
        OCRLine,
        OCRResult,
    )
    from mississippi_tools.tasks.results import (
        ResultMetadata,
        TextBox,
    )
    from mississippi_tools.tasks.table import (
        TableData,
    )
    from mississippi_tools.vlm import (
        Generation,
        MississippiVLM,
    )

_EXPORTS: dict[str, str] = {
    "AccessDeniedError": "mississippi_tools.errors",
    "Answer": "mississippi_tools.tasks.ask",
    "Axis": "mississippi_tools.tasks.chart",
    "ChartData": "mississippi_tools.tasks.chart",
    "ChartPoint": "mississippi_tools.tasks.chart",
    "ChartSeries": "mississippi_tools.tasks.chart",
    "CheckpointError": "mississippi_tools.errors",
    "ConfigError": "mississippi_tools.errors",
    "DeadlineExceededError": "mississippi_tools.errors",
    "DocumentExtractionResult": "mississippi_tools.tasks.extract_document",
    "Engine": "mississippi_tools.engine.base",
    "EngineDeadError": "mississippi_tools.errors",
    "ExtractionError": "mississippi_tools.errors",
    "ExtractionResult": "mississippi_tools.tasks.extract",
    "Generation": "mississippi_tools.vlm",
    "GenerationError": "mississippi_tools.errors",
    "GenerationOutput": "mississippi_tools.engine.base",
    "GenerationRequest": "mississippi_tools.engine.base",
    "ImageDecodeError": "mississippi_tools.errors",
    "ImageError": "mississippi_tools.errors",
    "ImageFetchError": "mississippi_tools.errors",
    "ImageInput": "mississippi_tools.images",
    "ImageLimits": "mississippi_tools.images",
    "ImageNotFoundError": "mississippi_tools.errors",
    "ImageTooLargeError": "mississippi_tools.errors",
    "InvalidInputError": "mississippi_tools.errors",
    "LoadedImage": "mississippi_tools.images",
    "LocalEngine": "mississippi_tools.engine.local",
    "LocalEngineConfig": "mississippi_tools.engine.config",
    "MissingDependencyError": "mississippi_tools.errors",
    "MississippiError": "mississippi_tools.errors",
    "MississippiVLM": "mississippi_tools.vlm",
    "ModelLoadError": "mississippi_tools.errors",
    "ModelNotFoundError": "mississippi_tools.errors",
    "OCRLine": "mississippi_tools.tasks.ocr",
    "OCRResult": "mississippi_tools.tasks.ocr",
    "PDFError": "mississippi_tools.errors",
    "PromptTooLongError": "mississippi_tools.errors",
    "QueueFullError": "mississippi_tools.errors",
    "RemoteConnectionError": "mississippi_tools.errors",
    "RemoteEngine": "mississippi_tools.engine.remote",
    "RemoteError": "mississippi_tools.errors",
    "RemoteStatusError": "mississippi_tools.errors",
    "RepetitionCheck": "mississippi_tools.engine.repetition",
    "RepetitionError": "mississippi_tools.errors",
    "RequestCancelledError": "mississippi_tools.errors",
    "ResultMetadata": "mississippi_tools.tasks.results",
    "SamplingParams": "mississippi_tools.engine.base",
    "SchemaError": "mississippi_tools.errors",
    "SourcePolicy": "mississippi_tools.sources",
    "TableData": "mississippi_tools.tasks.table",
    "TextBox": "mississippi_tools.tasks.results",
    "iter_pages": "mississippi_tools.images",
    "load_image": "mississippi_tools.images",
}


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mississippi-tools")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mississippi_tools' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AccessDeniedError",
    "Answer",
    "Axis",
    "ChartData",
    "ChartPoint",
    "ChartSeries",
    "CheckpointError",
    "ConfigError",
    "DeadlineExceededError",
    "DocumentExtractionResult",
    "Engine",
    "EngineDeadError",
    "ExtractionError",
    "ExtractionResult",
    "Generation",
    "GenerationError",
    "GenerationOutput",
    "GenerationRequest",
    "ImageDecodeError",
    "ImageError",
    "ImageFetchError",
    "ImageInput",
    "ImageLimits",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "InvalidInputError",
    "LoadedImage",
    "LocalEngine",
    "LocalEngineConfig",
    "MissingDependencyError",
    "MississippiError",
    "MississippiVLM",
    "ModelLoadError",
    "ModelNotFoundError",
    "OCRLine",
    "OCRResult",
    "PDFError",
    "PromptTooLongError",
    "QueueFullError",
    "RemoteConnectionError",
    "RemoteEngine",
    "RemoteError",
    "RemoteStatusError",
    "RepetitionCheck",
    "RepetitionError",
    "RequestCancelledError",
    "ResultMetadata",
    "SamplingParams",
    "SchemaError",
    "SourcePolicy",
    "TableData",
    "TextBox",
    "__version__",
    "iter_pages",
    "load_image",
]
