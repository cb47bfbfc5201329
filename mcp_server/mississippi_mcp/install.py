"""``mississippi-mcp install`` and ``uninstall``: add the server to a desktop client, or remove it.

.. code-block:: bash

    mississippi-mcp install --client claude-desktop --allow-dir ~/Documents
    mississippi-mcp install --client vscode --workspace . --print   # show, write nothing
    mississippi-mcp uninstall --client cursor

``install`` writes the client's entry (see :mod:`mississippi_mcp.clients` for each format and
location), merged with what the file holds, after a timestamped backup; ``--print`` prints a
document with only the entry instead, in the client's format. ``uninstall`` removes our entry and
nothing else. Both refuse to touch an entry of our name that starts another program.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mississippi_mcp.clients import (
    CLIENTS,
    DEFAULT_SERVER_NAME,
    ConfigFileError,
    config_path,
    install_entry,
    remove_entry,
    render,
)
from mississippi_mcp.config import PACKAGE_SPEC, server_entry

__all__ = ["main", "server_arguments"]

EXIT_OK = 0
EXIT_FILE = 1


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client", required=True, choices=sorted(CLIENTS), help="The MCP client to configure."
    )
    parser.add_argument("--name", default=DEFAULT_SERVER_NAME, help="The entry's name.")
    parser.add_argument("--config-path", type=Path, help="The configuration file to edit.")
    parser.add_argument(
        "--workspace",
        type=Path,
        metavar="DIR",
        help="Edit the project file under DIR (cursor: .cursor/mcp.json, vscode: "
        ".vscode/mcp.json) instead of the user's.",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="Replace or remove an entry of this name even if it starts another program.",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mississippi-mcp",
        description="Add mississippi-mcp to a desktop MCP client's configuration, or remove it.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    install = sub.add_parser(
        "install",
        help="Add (or print) the client's entry.",
        description="Merge the entry into the client's configuration (other servers kept, "
        "timestamped backup, atomic write), or print it with --print.",
    )
    _add_target(install)
    install.add_argument(
        "--print", dest="print_only", action="store_true", help="Print the entry; write nothing."
    )
    install.add_argument(
        "--launcher",
        choices=["python", "uvx", "pipx"],
        default="python",
        help="python: this interpreter (-m mississippi_mcp); uvx/pipx: a cached environment.",
    )
    install.add_argument("--python", help="Interpreter for --launcher python (default: this one).")
    install.add_argument("--package", help=f"Requirement for uvx/pipx ({PACKAGE_SPEC}).")
    server = install.add_argument_group("server options written into the entry")
    server.add_argument(
        "--allow-dir", action="append", default=[], metavar="DIR", help="Readable folder."
    )
    server.add_argument("--allow-urls", action="store_true", help="Let the tools download URLs.")
    server.add_argument(
        "--desktop",
        action="store_true",
        help="Enable read_screenshot and read_clipboard_image (a screenshot can hold secrets).",
    )
    server.add_argument("--model")
    server.add_argument("--device")
    server.add_argument("--engine", choices=["local", "remote"])
    server.add_argument("--base-url")
    server.add_argument(
        "--api-key", help="Remote service token; written to the entry's env, not its args."
    )
    uninstall = sub.add_parser(
        "uninstall",
        help="Remove our entry from the client's configuration.",
        description="Remove the entry (other servers kept, timestamped backup).",
    )
    _add_target(uninstall)
    return parser


def server_arguments(options: argparse.Namespace) -> list[str]:
    """The server's own arguments from the ``install`` options (directories made absolute)."""
    args: list[str] = []
    for directory in options.allow_dir:
        args += ["--allow-dir", str(Path(directory).expanduser().resolve())]
    if options.allow_urls:
        args.append("--allow-urls")
    if options.desktop:
        args.append("--desktop")
    for flag in ("model", "device", "engine", "base_url"):
        value = getattr(options, flag)
        if value:
            args += [f"--{flag.replace('_', '-')}", value]
    return args


def main(argv: Sequence[str]) -> int:
    """Run ``mississippi-mcp install|uninstall ...``; 0 on success, 1 on a file problem, 2 usage."""
    options = _parser().parse_args(list(argv))
    spec = CLIENTS[options.client]
    try:
        path = options.config_path or config_path(options.client, workspace=options.workspace)
        if options.command == "uninstall":
            outcome = remove_entry(path, options.client, options.name, force=options.force)
        else:
            env = {"MISSISSIPPI_MCP_REMOTE_API_KEY": options.api_key} if options.api_key else None
            package = options.package or (
                "mississippi-tools[mcp,pdf]" if options.engine == "remote" else PACKAGE_SPEC
            )
            launch = server_entry(
                server_arguments(options),
                launcher=options.launcher,
                python=options.python,
                package=package,
                env=env,
            )
            entry = spec.entry(launch["command"], launch["args"], launch.get("env"), options.name)
            if options.print_only:
                sys.stdout.write(render(options.client, options.name, entry))
                print(f"# goes into {path}", file=sys.stderr)
                return EXIT_OK
            outcome = install_entry(path, options.client, options.name, entry, force=options.force)
    except (ConfigFileError, OSError) as e:
        print(f"mississippi-mcp {options.command}: error: {e}", file=sys.stderr)
        return EXIT_FILE
    messages = {
        "added": f"{path}: added the {options.name!r} server",
        "replaced": f"{path}: replaced the {options.name!r} server",
        "unchanged": f"{path}: the {options.name!r} entry is already up to date",
        "removed": f"{path}: removed the {options.name!r} server",
        "absent": f"{path}: no {options.name!r} entry; nothing to remove",
    }
    print(messages[outcome.action])
    if outcome.backup is not None:
        print(f"previous file kept as {outcome.backup}")
    if outcome.comments_dropped:
        print("the previous file's comments are only in the backup")
    if outcome.changed:
        print(f"Restart {spec.title} (or reload its MCP servers) to apply the change.")
    return EXIT_OK
