"""The one-way import rule and the size of modules, read from the source with ``ast``.

Surfaces -> public API -> tasks -> engine -> models: models know nothing of engines, tasks or
surfaces; the engine runs requests, not tasks; the adapters and the MCP server use only the public
API. Imports inside functions (the lazy ones) count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "mississippi_tools"

#: What the adapters and the MCP server may import: the package and its documented submodules.
PUBLIC_MODULES = frozenset(
    {
        "mississippi_tools",
        "mississippi_tools.agent_tools",
        "mississippi_tools.batch",
        "mississippi_tools.errors",
        "mississippi_tools.extras",
        "mississippi_tools.images",
        "mississippi_tools.pdf",
        "mississippi_tools.regions",
        "mississippi_tools.schema",
        "mississippi_tools.serving",
        "mississippi_tools.sources",
        "mississippi_tools.tasks.catalogue",
        "mississippi_tools.testing",
    }
)

#: The surfaces inside the core package.
SURFACES = (
    "vlm", "task_methods", "batch", "agent_tools", "serving",
    "cli", "cli_common", "cli_tasks", "server",
)  # fmt: skip

#: Layer -> the top-level parts of mississippi_tools it must never import.
FORBIDDEN = {
    "models": ("engine", "tasks", *SURFACES),
    "engine": ("tasks", *SURFACES),
    "tasks": SURFACES,
    "schema": ("engine", "tasks", "models", *SURFACES),
}

MAX_MODULE_LINES = 900


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of ``mississippi_tools`` in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "mississippi_tools":
                yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mississippi_tools":
                    yield node.lineno, alias.name, []


def _part(module: str) -> str:
    """The top-level part of the core a module belongs to (``engine``, ``vlm`` ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_only_downwards(layer: str) -> None:
    wrong = []
    for path in _python_files(CORE / layer):
        for line, module, names in _imports(path):
            imported = [module] + [f"{module}.{name}" for name in names]
            if any(_part(m) in FORBIDDEN[layer] for m in imported if _part(m) != layer):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("surface", ["adapters", "mcp_server"])
def test_adapters_and_the_mcp_server_use_only_the_public_api(surface: str) -> None:
    wrong = []
    for path in _python_files(REPO / surface):
        for line, module, names in _imports(path):
            private = [name for name in names if name.startswith("_")]
            if module not in PUBLIC_MODULES or private:
                what = f"{module} ({', '.join(private)})" if private else module
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {what}")
    assert wrong == [], "\n".join(wrong)


def test_the_public_modules_exist_and_declare_their_api() -> None:
    for module in PUBLIC_MODULES:
        path = REPO / Path(*module.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        assert "__all__" in source.read_text(encoding="utf-8"), module


def test_no_module_in_the_core_is_over_the_size_limit() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _python_files(CORE)
    }
    over = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert over == {}, f"split these modules (limit {MAX_MODULE_LINES} lines): {over}"


def test_the_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from mississippi_tools.tasks.ocr import SPEC\n")
    assert [module for _, module, _ in _imports(bad)] == ["mississippi_tools.tasks.ocr"]
    assert _part("mississippi_tools.tasks.ocr") in FORBIDDEN["engine"]
