"""Schemas for JSON extraction: normalisation, what the grammar supports, validation, prompts.

A caller describes the data it wants as a pydantic model, a JSON Schema or a card-style template
(:data:`SchemaInput`). :func:`normalize_schema` turns any of them into a
:class:`NormalizedSchema` holding a self-contained JSON Schema, the example JSON shown in the
prompt (:func:`render_template`) and what validates the result (:func:`validate`);
:func:`field_confidences` reads per-field probabilities from the generated tokens.

One job per module, all pure (pydantic and jsonschema only; nothing from the engine, the tasks
or the models):

- :mod:`~mississippi_tools.schema.normalize`: schema or template, template inference, models;
- :mod:`~mississippi_tools.schema.support`: what the grammar enforces, and the checker;
- :mod:`~mississippi_tools.schema.rewrite`: the schema the grammar is compiled from;
- :mod:`~mississippi_tools.schema.limits`: how deep and large a schema may be;
- :mod:`~mississippi_tools.schema.render`: the template prompt;
- :mod:`~mississippi_tools.schema.validate`: validation of a parsed answer;
- :mod:`~mississippi_tools.schema.confidence`: per-field confidences.

The grammar itself (xgrammar) is :mod:`mississippi_tools.engine.grammar`.
"""

from __future__ import annotations

from mississippi_tools.schema.confidence import TokenDecoder, field_confidences
from mississippi_tools.schema.limits import MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES, check_schema_limits
from mississippi_tools.schema.normalize import (
    NormalizedSchema,
    SchemaInput,
    check_schema_valid,
    is_json_schema,
    normalize_schema,
)
from mississippi_tools.schema.render import render_template
from mississippi_tools.schema.rewrite import grammar_schema
from mississippi_tools.schema.support import JSON_SEPARATORS, SUPPORTED_FORMATS, check_supported
from mississippi_tools.schema.validate import validate

__all__ = [
    "JSON_SEPARATORS",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "SUPPORTED_FORMATS",
    "NormalizedSchema",
    "SchemaInput",
    "TokenDecoder",
    "check_schema_limits",
    "check_schema_valid",
    "check_supported",
    "field_confidences",
    "grammar_schema",
    "is_json_schema",
    "normalize_schema",
    "render_template",
    "validate",
]
