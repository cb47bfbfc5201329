"""Validation of a parsed answer against a :class:`~mississippi_tools.schema.NormalizedSchema`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from mississippi_tools.errors import ExtractionError
from mississippi_tools.schema._common import json_type, pointer
from mississippi_tools.schema.limits import MAX_SCHEMA_DEPTH, too_deep

if TYPE_CHECKING:
    from mississippi_tools.schema.normalize import NormalizedSchema

__all__ = ["validate"]

_MAX_ERRORS: Final = 10


def validate(
    data: Any, normalized: NormalizedSchema, *, raw_text: str | None = None
) -> BaseModel | dict[str, Any]:
    """Validate parsed JSON against a schema.

    Pydantic models use ``model_validate`` (so dates become ``date`` objects, etc.); JSON Schemas
    and templates use ``jsonschema`` (Draft 2020-12, with format checking). The schema is within
    the nesting limits (a :class:`~mississippi_tools.schema.NormalizedSchema` is checked when
    created), and a value nested deeper than
    :data:`~mississippi_tools.schema.limits.MAX_SCHEMA_DEPTH` levels is invalid.

    Args:
        data: The parsed JSON value.
        normalized: The schema.
        raw_text: The model's text the value came from (kept in the error).

    Returns:
        The pydantic instance, or ``data`` itself (a dict) when it is valid.

    Raises:
        ExtractionError: Not valid; ``errors`` lists one line per problem, each starting with
            the JSON pointer of the offending value (``/items/0/price: ...``), at most 10, in a
            form suitable for showing back to the model.
    """
    errors: list[str]
    deep = too_deep(data)
    if deep is not None:
        errors = [f"{deep}: the value nests deeper than {MAX_SCHEMA_DEPTH} levels"]
    elif normalized.model is not None:
        try:
            return normalized.model.model_validate(data)
        except PydanticValidationError as e:
            errors = [
                f"{pointer(err['loc']) or '/'}: {err['msg']} (got {_short(err.get('input'))})"
                for err in e.errors(include_url=False)
            ]
    else:
        from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

        validator = Draft202012Validator(
            normalized.json_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        found = sorted(validator.iter_errors(data), key=lambda err: list(map(str, err.path)))
        errors = [f"{pointer(err.absolute_path) or '/'}: {err.message}" for err in found]
        if not errors and isinstance(data, dict):
            return data
        if not errors:  # a valid non-object answer, for a schema not from normalize_schema
            errors = [f"/: the answer is a {json_type(data)}, not an object"]
    shown = errors[:_MAX_ERRORS]
    if len(errors) > _MAX_ERRORS:
        shown.append(f"... and {len(errors) - _MAX_ERRORS} more")
    raise ExtractionError(
        f"the answer does not match the schema: {'; '.join(shown)}",
        raw_text=raw_text if raw_text is not None else _dump(data),
        errors=shown,
    )


def _dump(data: Any) -> str:
    if too_deep(data) is not None:  # json.dumps would recurse too deep
        return f"<a {json_type(data)} nested deeper than {MAX_SCHEMA_DEPTH} levels>"
    return json.dumps(data, ensure_ascii=False, default=str)


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
