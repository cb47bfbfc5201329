"""The schema package is pure: it imports no engine, task, model or surface code, nor torch.

The grammar glue (engine/grammar.py) may use the schema package and the tokenizer protocol, but
nothing from the tasks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import mississippi_tools

PACKAGE = Path(mississippi_tools.__file__).parent
ALLOWED_IN_SCHEMA = (
    "mississippi_tools.errors",
    "mississippi_tools.schema",
    "pydantic",
    "jsonschema",
)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any place in it (functions and TYPE_CHECKING included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_schema_modules_import_only_the_standard_library_pydantic_and_jsonschema() -> None:
    files = sorted((PACKAGE / "schema").glob("*.py"))
    assert {f.stem for f in files} >= {"normalize", "support", "validate", "render", "confidence"}
    for path in files:
        for module in imported_modules(path):
            top = module.split(".")[0]
            allowed = any(is_within(module, prefix) for prefix in ALLOWED_IN_SCHEMA) or (
                top in sys.stdlib_module_names
            )
            assert allowed, f"{path.name} imports {module}"


def test_the_grammar_glue_imports_no_task_code_and_is_the_only_xgrammar_user() -> None:
    grammar = imported_modules(PACKAGE / "engine" / "grammar.py")
    mine = {m for m in grammar if is_within(m, "mississippi_tools")}
    assert "xgrammar" in grammar
    assert all(
        any(is_within(m, p) for p in ("mississippi_tools.schema", "mississippi_tools.errors"))
        or m == "mississippi_tools.models.base"
        for m in mine
    ), mine
    users = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if any(is_within(m, "xgrammar") for m in imported_modules(path))
    }
    assert users == {"engine/grammar.py"}


def test_schema_layer_imports_without_torch_or_xgrammar() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        sys.modules["xgrammar"] = None
        from mississippi_tools.schema import normalize_schema, render_template, validate
        from mississippi_tools.tasks.extract import ExtractionPlan
        normalized = normalize_schema({"name": "", "age": 0})
        print(render_template(normalized))
        print(validate({"name": "a", "age": 1}, normalized))
        print(ExtractionPlan(normalized, constrained=False).first_request().prompt[:7])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("{'name': 'a', 'age': 1}\nExtract")
