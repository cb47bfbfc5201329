"""``python -m mississippi_mcp``: the same as the ``mississippi-mcp`` command."""

from __future__ import annotations

import sys

from mississippi_mcp import main

if __name__ == "__main__":
    sys.exit(main())
