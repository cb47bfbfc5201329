"""``python -m mississippi_tools`` runs the CLI."""

from mississippi_tools.cli import main

main()
