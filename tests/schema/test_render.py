"""The template prompt shown to the model (mississippi_tools.schema.render)."""

from __future__ import annotations

import datetime
import textwrap
from typing import Annotated

from pydantic import BaseModel, Field

from mississippi_tools.schema import normalize_schema, render_template


class Node(BaseModel):
    """A tree (a recursive model)."""

    label: Annotated[str, Field(max_length=4)]
    children: list[Node] = Field(default_factory=list, max_length=1)


def test_render_template_of_a_card_template_is_the_template() -> None:
    template = {"products": [{"product_name": "", "price": "", "quantity": 0}]}
    assert render_template(normalize_schema(template)) == textwrap.dedent(
        """\
        {
          "products": [
            {
              "product_name": "",
              "price": "",
              "quantity": 0
            }
          ]
        }"""
    )


def test_render_template_of_a_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "status": {"enum": ["paid", "due"]},
            "kind": {"const": "invoice"},
            "total": {"type": ["number", "null"], "description": "Grand total, tax included"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "qty": {"type": "integer"},
                        "day": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
                        "vat": {"enum": [0, 7, 19]},
                    },
                },
            },
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]},
            "any": {},
        },
    }
    assert render_template(normalize_schema(schema)) == textwrap.dedent(
        """\
        {
          "status": "paid|due",
          "kind": "invoice",
          "total": 0.0,
          "lines": [
            {
              "qty": 0,
              "day": "",
              "vat": 0
            }
          ],
          "pair": [
            "",
            false
          ],
          "any": ""
        }
        Field notes:
        - total: Grand total, tax included
        - lines[].day: a date, YYYY-MM-DD
        - lines[].vat: one of 0, 7, 19"""
    )


def test_render_template_of_a_pydantic_model() -> None:
    class Address(BaseModel):
        """Where someone lives (not shown: a model's docstring)."""

        city: str = Field(description="City name as printed")

    class Person(BaseModel):
        name: str
        born: datetime.date | None = Field(default=None, description="Date of birth")
        home: Address = Field(description="Home address")
        work: Address | None = None
        tree: Node | None = None

    assert render_template(normalize_schema(Person)) == textwrap.dedent(
        """\
        {
          "name": "",
          "born": "",
          "home": {
            "city": ""
          },
          "work": {
            "city": ""
          },
          "tree": {
            "label": "",
            "children": [
              {}
            ]
          }
        }
        Field notes:
        - born: Date of birth; a date, YYYY-MM-DD
        - home: Home address
        - home.city: City name as printed
        - work.city: City name as printed"""
    )


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
