"""Optional dependencies: check for an extra and say which ``pip install`` brings it."""

from __future__ import annotations

import importlib.util

from mississippi_tools.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, *, purpose: str | None = None) -> None:
    """Fail with the install command when ``module`` cannot be imported.

    Raises:
        MissingDependencyError: naming ``pip install "mississippi-tools[extra]"``.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependencyError(module, extra, purpose=purpose) from None
