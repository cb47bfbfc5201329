"""Questions about images: the single- and multi-image prompts, and the answer."""

from __future__ import annotations

import pytest

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.tasks.ask import Answer, build_ask_prompt, parse_ask_output
from mississippi_tools.tasks.results import ResultMetadata

META = ResultMetadata(model="h2oai/h2ovl-mississippi-800m", engine="remote")


def test_one_image_uses_the_question_as_is() -> None:
    question = "  What is the total on this receipt?\n"
    assert build_ask_prompt(question, 1) == question


def test_text_only_question() -> None:
    assert build_ask_prompt("Hello, how are you?", 0) == "Hello, how are you?"


def test_several_images_are_numbered() -> None:
    assert build_ask_prompt("Which chart shows higher sales?", 3) == (
        "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nWhich chart shows higher sales?"
    )


@pytest.mark.parametrize(
    ("question", "n_images", "message"),
    [
        ("", 1, "empty"),
        ("  \n", 2, "empty"),
        ("<image>\nWhat is this?", 1, "placeholder|marks where images go"),
        ("What is this?", -1, "0 or more"),
    ],
)
def test_invalid_questions(question: str, n_images: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build_ask_prompt(question, n_images)


def test_parse_answer() -> None:
    answer = parse_ask_output("  The total is $1,200.00.\n", META)
    assert answer == Answer(text="The total is $1,200.00.", meta=META)
    assert str(answer) == "The total is $1,200.00."
    assert answer.model_dump(mode="json")["meta"]["engine"] == "remote"
