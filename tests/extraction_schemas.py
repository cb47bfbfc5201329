"""The extraction schemas every grammar must honour: 50 generated from a seed, 8 pydantic models.

Generated from a seed so failures reproduce: nested objects, arrays, enums, bounds, formats,
patterns and optional keys. Their strings are all length-bounded (``maxLength``, enums, formats):
a random model never chooses to close an unbounded string, so it would run to ``max_new_tokens``
(a real model does close them). Used by the engine test (tests/tasks/test_extract.py) and the
grammar test for each vocabulary type (tests/engine/test_grammar.py).
"""

from __future__ import annotations

import datetime
import enum
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

N_RANDOM_SCHEMAS = 50

# --------------------------------------------------------------------------------------------------
# Schemas: generated from a seed (so failures reproduce), plus pydantic models with $defs
# --------------------------------------------------------------------------------------------------

_WORDS = ["paid", "due", "void", "cash", "card", "red", "blue", "n/a", "Ünïcode", 'say "hi"']


def _scalar(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(
        ["string", "string", "enum", "integer", "number", "boolean", "date", "date-time", "code"]
    )
    if kind == "string":
        longest = rng.randint(1, 8)
        schema: dict[str, Any] = {"type": "string", "maxLength": longest}
        if rng.random() < 0.5:
            schema["minLength"] = rng.randint(0, longest)
        return schema
    if kind == "enum":
        return {"type": "string", "enum": rng.sample(_WORDS, rng.randint(1, 4))}
    if kind == "integer":
        low = rng.randint(-1000, 1000)
        schema = {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 5000)}
        if rng.random() < 0.3:
            schema["exclusiveMinimum"] = schema.pop("minimum") - 1
        if rng.random() < 0.2:
            schema.update(minimum=0, maximum=1000, multipleOf=5)
            schema.pop("exclusiveMinimum", None)
        return schema
    if kind == "number":
        low = rng.uniform(-100, 100)
        return {"type": "number", "minimum": round(low, 2), "maximum": round(low + 500, 2)}
    if kind == "code":  # an optional group ending in a repetition (xgrammar mis-compiles "(...)?")
        return {"type": "string", "pattern": "^[A-Z]{2}(?:-[0-9]{1,3})?$"}
    if kind == "boolean":
        return {"type": "boolean"}
    return {"type": "string", "format": kind}


def _schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.2:
        return _object(rng, depth + 1)
    if depth < 2 and roll < 0.35:
        low = rng.randint(0, 2)
        return {
            "type": "array",
            "items": _schema(rng, depth + 1),
            "minItems": low,
            "maxItems": low + rng.randint(0, 2),
        }
    schema = _scalar(rng)
    if roll > 0.85:  # nullable, two spellings
        if rng.random() < 0.5 and "type" in schema and "enum" not in schema:
            schema["type"] = [schema["type"], "null"]
        else:
            schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    names = rng.sample(["name", "total", "date", "items", "status", "note", "code", "qty"], 3)
    properties = {name: _schema(rng, depth) for name in names[: rng.randint(1, 3)]}
    required = [name for name in properties if rng.random() < 0.7]  # the others are optional
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if rng.random() < 0.5:
        schema["additionalProperties"] = False
    return schema


def generated_schemas(n: int = N_RANDOM_SCHEMAS, seed: int = 1234) -> list[dict[str, Any]]:
    """``n`` object schemas of nested objects, arrays, enums, bounds, formats and optional keys."""
    rng = random.Random(seed)
    return [_object(rng) for _ in range(n)]


Short = Annotated[str, Field(max_length=6)]


class Status(enum.Enum):
    PAID = "paid"
    DUE = "due"


class LineItem(BaseModel):
    """One line of an invoice."""

    description: Short = Field(description="What was bought")
    quantity: int = Field(ge=1, le=99)
    unit_price: float = Field(ge=0, le=10_000)


class Invoice(BaseModel):
    number: Short
    issued: datetime.date
    status: Status
    items: list[LineItem] = Field(min_length=1, max_length=2)
    note: Short | None = None


class Person(BaseModel):
    name: Short
    born: datetime.date | None = None
    role: Literal["author", "editor"]


class Book(BaseModel):
    title: Short
    authors: list[Person] = Field(max_length=2)
    published: datetime.datetime
    pages: int = Field(gt=0, lt=5000)


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Owner(BaseModel):
    name: Short
    pet: Cat | Dog = Field(discriminator="kind")
    pets_seen: set[Short] = Field(max_length=2)


class Reading(BaseModel):
    at: datetime.time
    value: float = Field(ge=-50, le=50)
    flags: tuple[bool, Status]


class Meter(BaseModel):
    serial: Annotated[str, Field(pattern=r"^[A-Z0-9]+$", max_length=5)]
    readings: list[Reading] = Field(min_length=1, max_length=2)


class Address(BaseModel):
    street: Short
    city: Short


class Contact(BaseModel):
    name: Short
    home: Address
    work: Address | None = None
    scores: dict[Short, int] = Field(max_length=2)


class Shipment(BaseModel):
    id: Annotated[int, Field(ge=0, multiple_of=10, le=10_000)]
    origin: Address
    weight_kg: float | None = Field(default=None, ge=0, le=1000)


PYDANTIC_MODELS: list[type[BaseModel]] = [
    Invoice,
    Person,
    Book,
    Owner,
    Meter,
    Contact,
    Shipment,
    LineItem,
]


def all_schemas() -> list[Any]:
    """The 58 schemas: the generated ones, then the pydantic models."""
    return [*generated_schemas(), *PYDANTIC_MODELS]
