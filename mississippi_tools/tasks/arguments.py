"""Building blocks of the tasks' arguments models, shared by every task and surface.

:data:`JSONObject` is an object argument that a caller may also send as a JSON string (what LLM
tool calls and form fields often do): it is parsed here, once, for every surface.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator

from mississippi_tools.errors import InvalidInputError

__all__ = ["JSONObject", "parse_json_argument"]


def parse_json_argument(value: Any, name: str = "the argument") -> Any:
    """``value``, or the value of the JSON text it is.

    Raises:
        InvalidInputError: The string is not JSON (the message says where, never quoting it).
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            f"{name} is a string but not valid JSON ({e.msg} at line {e.lineno}, column "
            f"{e.colno}); pass it as a JSON object"
        ) from None


JSONObject = Annotated[Any, BeforeValidator(parse_json_argument)]
"""An object argument; a JSON string is parsed into its value."""
