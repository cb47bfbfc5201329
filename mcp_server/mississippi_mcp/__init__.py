"""mississippi-mcp: the MCP server of mississippi-tools, for desktop assistants and coding agents.

One read-only tool per task the loaded model supports (for H2OVL-Mississippi: ``ocr``,
``read_chart``, ``read_table``, ``extract`` and ``ask``; ``to_html`` for the WebSight model),
generated from the task catalogue, with structured results.

Setup:
    .. code-block:: bash

        pip install "mississippi-tools[mcp,local,pdf]"
        mississippi-mcp --allow-dir ~/Documents            # stdio, for a desktop client
        mississippi-mcp install --client claude-desktop --allow-dir ~/Documents
        mississippi-mcp bundle                              # a .mcpb desktop bundle

Embed:
    .. code-block:: python

        from mississippi_mcp import MCPSettings, build_server

        server = build_server(MCPSettings(allow_dirs=["/srv/scans"]))
        server.run()

Names are resolved on first use, so ``mississippi-mcp config``, ``install``, ``bundle`` and
``--help`` never import the MCP SDK or the model code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mississippi_mcp.server import ModelHolder, build_server
    from mississippi_mcp.settings import MCPSettings

__all__ = ["MCPSettings", "ModelHolder", "__version__", "build_server", "main"]

_EXPORTS = {
    "MCPSettings": "mississippi_mcp.settings",
    "ModelHolder": "mississippi_mcp.server",
    "build_server": "mississippi_mcp.server",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_MISSING_EXTRA = 7
EXIT_INTERRUPTED = 130


def __getattr__(name: str) -> Any:
    if name == "__version__":  # one distribution: the core's version
        import mississippi_tools

        globals()[name] = value = mississippi_tools.__version__
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mississippi_mcp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def _error(message: str) -> None:
    print(f"mississippi-mcp: error: {message}", file=sys.stderr)


def _configure_logging(level: str) -> None:
    """Everything logged, warnings included, goes to stderr (stdout is the protocol on stdio)."""
    import logging

    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.captureWarnings(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mississippi-mcp`` command: the server, ``install``/``uninstall``, ``bundle``.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 after a clean shutdown, 1 on a failure, 2 on a usage or settings error,
        7 when the ``mcp`` extra is missing, 130 when interrupted.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["config"]:
        from mississippi_mcp.config import main as config_main

        return config_main(args[1:])
    if args[:1] in (["install"], ["uninstall"]):
        from mississippi_mcp.install import main as install_main

        return install_main(args)
    if args[:1] == ["bundle"]:
        from mississippi_mcp.bundle import main as bundle_main

        return bundle_main(args[1:])

    from mississippi_tools.errors import MissingDependencyError
    from mississippi_tools.extras import require

    try:
        require("mcp", "mcp", purpose="the MCP server")
        require("pydantic_settings", "mcp", purpose="the MCP server's settings")
    except MissingDependencyError as e:
        _error(e.message)
        return EXIT_MISSING_EXTRA

    from pydantic import ValidationError

    from mississippi_mcp.settings import parse_args

    try:
        settings = parse_args(args)
    except ValidationError as e:
        for problem in e.errors():
            where = ".".join(str(part) for part in problem["loc"])
            text = str(problem["msg"]).removeprefix("Value error, ")
            _error(f"{where}: {text}" if where else text)
        return EXIT_USAGE

    _configure_logging(settings.log_level)
    import anyio

    from mississippi_mcp.server import ModelHolder, build_server, load_vlm
    from mississippi_mcp.transport import serve_http, serve_stdio

    holder = ModelHolder(
        lambda: load_vlm(settings), name=settings.model_name, load_timeout=settings.load_timeout
    )
    server = build_server(settings, holder=holder)
    try:
        if settings.transport == "streamable-http":
            anyio.run(serve_http, server, settings)
        else:
            anyio.run(serve_stdio, server)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        import logging

        logging.getLogger("mississippi_mcp").exception("the server stopped on an error")
        return EXIT_FAILURE
    finally:
        holder.close()
    return EXIT_OK
