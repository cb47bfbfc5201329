"""LangChain's standard tool tests (langchain-tests) for every Mississippi tool.

The unit suites construct each tool; the integration suites invoke it, sync and async, with and
without a ToolCall, on a real image through a real tiny model. OCR, questions and extraction
run on the random tiny model (``tiny_vlm``): any words are text, and extraction is constrained
by a grammar, so it always yields valid JSON. Random words never parse as a chart or a table, so
those two run on ``scripted_vlm`` (the same tiny checkpoint, scripted to answer JSON; see
conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from langchain_mississippi import (
    MississippiAskTool,
    MississippiChartTool,
    MississippiExtractTool,
    MississippiOCRTool,
    MississippiTableTool,
)
from mississippi_tools import MississippiVLM

# Small budgets keep each call well under a second on the tiny model.
FAST = {"max_tiles": 1, "max_new_tokens": 6}


class _RandomModel:
    """Construct the tool over the random tiny model, reading ``sample_png``."""

    vlm: MississippiVLM
    image: str

    @pytest.fixture(autouse=True)
    def _model(self, tiny_vlm: MississippiVLM, sample_png: Path) -> None:
        self.vlm = tiny_vlm
        self.image = str(sample_png)


class _ScriptedModel:
    """Construct the tool over the scripted tiny model, reading ``sample_png``."""

    vlm: MississippiVLM
    image: str

    @pytest.fixture(autouse=True)
    def _model(self, scripted_vlm: MississippiVLM, sample_png: Path) -> None:
        self.vlm = scripted_vlm
        self.image = str(sample_png)


# -- OCR ------------------------------------------------------------------------------------------


class _OCR:
    vlm: MississippiVLM
    image: str

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MississippiOCRTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"vlm": self.vlm, **FAST}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": self.image, "format": "text"}


class TestOCRToolUnit(_RandomModel, _OCR, ToolsUnitTests):
    pass


class TestOCRToolIntegration(_RandomModel, _OCR, ToolsIntegrationTests):
    pass


# -- charts ---------------------------------------------------------------------------------------


class _Chart:
    vlm: MississippiVLM
    image: str

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MississippiChartTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        # Under the chart grammar the scripted model writes about 140 tokens.
        return {"vlm": self.vlm, "max_tiles": 1, "max_new_tokens": 256}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": self.image}


class TestChartToolUnit(_ScriptedModel, _Chart, ToolsUnitTests):
    pass


class TestChartToolIntegration(_ScriptedModel, _Chart, ToolsIntegrationTests):
    pass


# -- tables ---------------------------------------------------------------------------------------


class _Table:
    vlm: MississippiVLM
    image: str

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MississippiTableTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"vlm": self.vlm, "max_tiles": 1, "max_new_tokens": 16}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": self.image}


class TestTableToolUnit(_ScriptedModel, _Table, ToolsUnitTests):
    pass


class TestTableToolIntegration(_ScriptedModel, _Table, ToolsIntegrationTests):
    pass


# -- extraction, schema per call ------------------------------------------------------------------


class _Extract:
    vlm: MississippiVLM
    image: str

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MississippiExtractTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"vlm": self.vlm, "max_tiles": 1, "max_new_tokens": 32}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        # Booleans: the grammar leaves the random model only true, false or null to choose.
        return {"image": self.image, "json_schema": {"paid": False, "signed": False}}


class TestExtractToolUnit(_RandomModel, _Extract, ToolsUnitTests):
    pass


class TestExtractToolIntegration(_RandomModel, _Extract, ToolsIntegrationTests):
    pass


# -- extraction, schema fixed at construction -----------------------------------------------------


class _FixedExtract:
    vlm: MississippiVLM
    image: str

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MississippiExtractTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {
            "vlm": self.vlm,
            "extraction_schema": {
                "type": "object",
                "properties": {"approved": {"type": "boolean"}},
                "required": ["approved"],
                "additionalProperties": False,
            },
            "max_tiles": 1,
            "max_new_tokens": 32,
        }

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": self.image, "instructions": "true when the form is stamped"}


class TestFixedSchemaExtractToolUnit(_RandomModel, _FixedExtract, ToolsUnitTests):
    pass


class TestFixedSchemaExtractToolIntegration(_RandomModel, _FixedExtract, ToolsIntegrationTests):
    pass


# -- questions ------------------------------------------------------------------------------------


class _Ask:
    vlm: MississippiVLM
    image: str

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return MississippiAskTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"vlm": self.vlm, **FAST}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return {"image": self.image, "question": "What is the invoice total?"}


class TestAskToolUnit(_RandomModel, _Ask, ToolsUnitTests):
    pass


class TestAskToolIntegration(_RandomModel, _Ask, ToolsIntegrationTests):
    pass
