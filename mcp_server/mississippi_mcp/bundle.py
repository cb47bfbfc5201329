"""``mississippi-mcp bundle``: a ``.mcpb`` desktop bundle (MCP Bundle, formerly DXT).

An MCP Bundle is a zip archive with a ``manifest.json`` at its root, described by the MCPB
manifest specification (``MANIFEST.md`` and ``src/schemas`` in the ``modelcontextprotocol/mcpb``
repository). Desktop clients that support it (Claude Desktop, among others) install a bundle in
one click and ask the user for its ``user_config`` values. The specification's required fields
(version ``0.3``) are ``manifest_version``, ``name``, ``version``, ``description``, ``author``
(an object whose ``name`` is required) and ``server`` (``type`` — ``node``, ``python`` or
``binary`` — an ``entry_point`` inside the bundle, and ``mcp_config`` with a ``command`` and
optional ``args`` and ``env``); every object is closed to unknown keys.

This bundle is small: it does not carry the model or torch. Its ``mcp_config`` starts the server
with ``uvx`` (``uv`` installs ``mississippi-tools`` in a cached environment on first start, which
needs the network once) or, with ``--launcher python``, with a given interpreter where the
package is installed. ``server/main.py`` runs the same server for any Python that has the
package. The user picks the folders the tools may read (``--allow-dir``, each selected folder one
more argument), the model, and whether the screenshot and clipboard tools are on (off by default:
a screenshot can hold secrets).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["MANIFEST_VERSION", "build_bundle", "main", "manifest"]

MANIFEST_VERSION = "0.3"
"""The MCPB manifest version written (the specification's current one)."""
BUNDLE_NAME = "mississippi-tools"
"""The bundle's machine-readable name."""

_ENTRY_POINT = "server/main.py"
_MAIN_PY = '''\
"""Start the mississippi-tools MCP server (mississippi-mcp) with this interpreter."""

import sys

from mississippi_mcp import main

if __name__ == "__main__":
    sys.exit(main())
'''

_LONG_DESCRIPTION = """\
Reads images and PDF pages with a local vision-language model (H2OVL-Mississippi by default):
OCR to text or markdown, tables, charts, JSON extraction against a schema, and questions.
Everything runs on this computer; files are read only under the folders you choose.

The optional screenshot and clipboard tools (off by default) let the assistant read what is on
your screen or clipboard. A screenshot can hold secrets (passwords, messages, keys): enable them
only if you accept that.
"""

Launcher = Literal["uvx", "python"]


def _package_spec(version: str) -> str:
    return f"mississippi-tools[mcp,local,pdf]=={version}"


def manifest(
    *, version: str | None = None, launcher: Launcher = "uvx", python: str | None = None
) -> dict[str, Any]:
    """The bundle's ``manifest.json`` (MCPB manifest version :data:`MANIFEST_VERSION`).

    Args:
        version: The package version to run (default: this one).
        launcher: ``uvx`` installs that version in a cached environment; ``python`` runs
            ``python`` (which must have the package) on the bundled ``server/main.py``.
        python: The interpreter for ``launcher="python"`` (default: this one).
    """
    from mississippi_mcp import __version__
    from mississippi_tools.tasks.catalogue import all_tasks

    version = version or __version__
    server_args = ["--allow-dir", "${user_config.allowed_directories}"]
    if launcher == "uvx":
        command = "uvx"
        args = ["--from", _package_spec(version), "mississippi-mcp", *server_args]
    else:
        command = python or sys.executable
        args = ["${__dirname}/" + _ENTRY_POINT, *server_args]
    tools = [
        {"name": spec.name, "description": spec.description.split("\n")[0].strip()}
        for spec in all_tasks()
    ]
    tools += [
        {
            "name": "read_screenshot",
            "description": "Run a task on a screenshot (when enabled in the settings).",
        },
        {
            "name": "read_clipboard_image",
            "description": "Run a task on the clipboard's image (when enabled in the settings).",
        },
    ]
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": BUNDLE_NAME,
        "display_name": "Mississippi vision tools",
        "version": version,
        "description": "OCR, tables, charts and JSON extraction from images and PDFs, on a "
        "local vision-language model.",
        "long_description": _LONG_DESCRIPTION,
        "author": {"name": "mississippi-tools developers"},
        "homepage": "https://github.com/mississippi-tools/mississippi-tools",
        "server": {
            "type": "python",
            "entry_point": _ENTRY_POINT,
            "mcp_config": {
                "command": command,
                "args": args,
                "env": {
                    "MISSISSIPPI_MCP_MODEL": "${user_config.model}",
                    "MISSISSIPPI_MCP_DESKTOP": "${user_config.desktop_tools}",
                    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                },
            },
        },
        "tools": tools,
        "tools_generated": True,
        "keywords": ["ocr", "vision", "pdf", "tables", "charts", "extraction", "local"],
        "license": "Apache-2.0",
        "compatibility": {
            "platforms": ["darwin", "win32", "linux"],
            "runtimes": {"python": ">=3.11"},
        },
        "user_config": {
            "allowed_directories": {
                "type": "directory",
                "title": "Folders the tools may read",
                "description": "Images and PDFs are read only under these folders (inline "
                "images need none).",
                "multiple": True,
                "required": True,
                "default": ["${DOCUMENTS}"],
            },
            "model": {
                "type": "string",
                "title": "Model",
                "description": "Hugging Face id or local folder of the model (empty: "
                "h2oai/h2ovl-mississippi-800m).",
                "required": False,
                "default": "",
            },
            "desktop_tools": {
                "type": "boolean",
                "title": "Screenshot and clipboard tools",
                "description": "Let the assistant read your screen and clipboard. A screenshot "
                "can hold secrets (passwords, messages, keys); off by default.",
                "required": False,
                "default": False,
            },
        },
    }


def build_bundle(
    output: Path,
    *,
    version: str | None = None,
    launcher: Launcher = "uvx",
    python: str | None = None,
) -> Path:
    """Write the ``.mcpb`` bundle to ``output`` (a zip: ``manifest.json``, ``server/main.py``).

    Returns:
        ``output``.
    """
    data = manifest(version=version, launcher=launcher, python=python)
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        archive.writestr(_ENTRY_POINT, _MAIN_PY)
    return output


def main(argv: Sequence[str]) -> int:
    """Run ``mississippi-mcp bundle``; returns 0, or 1 when the file cannot be written."""
    parser = argparse.ArgumentParser(
        prog="mississippi-mcp bundle",
        description="Build a .mcpb desktop bundle (MCP Bundle) that starts mississippi-mcp.",
    )
    parser.add_argument(
        "--output", "-o", type=Path, help="The bundle file (default: ./mississippi-tools-VER.mcpb)."
    )
    parser.add_argument(
        "--launcher",
        choices=["uvx", "python"],
        default="uvx",
        help="uvx: install the package on first start (default); python: use --python.",
    )
    parser.add_argument("--python", help="Interpreter for --launcher python (default: this one).")
    parser.add_argument("--version", help="Package version the bundle runs (default: this one).")
    options = parser.parse_args(list(argv))
    from mississippi_mcp import __version__

    version = options.version or __version__
    output = options.output or Path(f"{BUNDLE_NAME}-{version}.mcpb")
    try:
        build_bundle(output, version=version, launcher=options.launcher, python=options.python)
    except OSError as e:
        print(f"mississippi-mcp bundle: error: cannot write {output}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {output}; open it with Claude Desktop (or another MCPB client) to install")
    return 0
