"""The public surface of langchain_mississippi, pinned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import langchain_mississippi

EXPECTED_ALL = [
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

ROOT = Path(__file__).parents[3]


def test_all_imports() -> None:
    assert langchain_mississippi.__all__ == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(langchain_mississippi, name) is not None


def test_missing_langchain_core_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['langchain_core'] = None\n"
        "try:\n"
        "    import langchain_mississippi\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")])},
        check=True,
    )
    assert result.stdout.strip() == (
        "MissingDependencyError langchain_core is required (the LangChain integration) but is "
        'not installed; install it with: pip install "mississippi-tools[langchain]"'
    )
