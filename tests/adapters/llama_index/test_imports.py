"""The public surface of the LlamaIndex reader and tool packages."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.readers.base import BaseReader
from llama_index.core.tools.tool_spec.base import BaseToolSpec

from mississippi_tools import MissingDependencyError

ROOT = Path(__file__).parents[3]

READERS_ALL = [
    "DEFAULT_CONCURRENCY",
    "SUPPORTED_EXTENSIONS",
    "MississippiImageReader",
    "OnError",
    "ReaderMode",
]
TOOLS_ALL = ["MississippiToolSpec"]


def test_readers_all() -> None:
    from llama_index.readers import mississippi

    assert mississippi.__all__ == READERS_ALL
    for name in READERS_ALL:
        assert hasattr(mississippi, name)


def test_tools_all() -> None:
    from llama_index.tools import mississippi

    assert mississippi.__all__ == TOOLS_ALL


def test_reader_is_a_base_reader() -> None:
    from llama_index.readers.mississippi import MississippiImageReader

    names = [cls.__name__ for cls in MississippiImageReader.__mro__]
    assert BaseReader.__name__ in names
    assert issubclass(MississippiImageReader, BaseReader)


def test_tool_spec_is_a_base_tool_spec() -> None:
    from llama_index.tools.mississippi import MississippiToolSpec

    names = [cls.__name__ for cls in MississippiToolSpec.__mro__]
    assert BaseToolSpec.__name__ in names
    assert issubclass(MississippiToolSpec, BaseToolSpec)


def test_namespace_packages_merge_with_llama_index_core_and_torch_stays_unloaded() -> None:
    """``llama_index`` spans llama-index-core and our adapters; importing them loads no torch."""
    code = (
        "import sys, llama_index.core, llama_index.readers.mississippi, "
        "llama_index.tools.mississippi; "
        "assert len(list(llama_index.__path__)) >= 2, list(llama_index.__path__); "
        "assert 'torch' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters")])}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "module", ["llama_index.readers.mississippi", "llama_index.tools.mississippi"]
)
def test_without_llama_index_core_the_import_says_what_to_install(
    module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    for name in [m for m in sys.modules if m.startswith(module)]:
        monkeypatch.delitem(sys.modules, name)

    with pytest.raises(
        MissingDependencyError, match=r'pip install "mississippi-tools\[llamaindex\]"'
    ):
        importlib.import_module(module)
