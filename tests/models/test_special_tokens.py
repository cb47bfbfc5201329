"""No surface lets user text produce a special token id: every backend family, every surface.

Text in a question, in history questions and answers, or in a generate() prompt is tokenized as
text: typing ``<|end|>``, ``<img>`` or ``</s>`` gives those characters, never the added token,
which only the model's template writes. Each family present contributes one fixture entry in
``FAMILIES``: a loaded tiny backend, a MississippiVLM over it (scripted, so its answer is known,
where the family has a scripted checkpoint) and its added tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from PIL import Image

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.base import VLMBackend
from tests.support import SCRIPTED_ANSWER, loaded_image


@dataclass
class Family:
    """A backend family as these tests need it."""

    name: str
    backend: VLMBackend
    vlm: MississippiVLM
    #: What every unconstrained prompt makes ``vlm`` answer, when known.
    answer: str | None
    #: Text -> id of every added or special token of the tokenizer.
    added_tokens: dict[str, int]


@pytest.fixture(scope="session")
def h2ovl_family(scripted_vlm: MississippiVLM) -> Family:
    backend = scripted_vlm.engine.backend  # type: ignore[attr-defined]
    return Family("h2ovl", backend, scripted_vlm, SCRIPTED_ANSWER, backend.tokenizer.added_tokens)


#: One entry per family present: the name of its fixture is "<name>_family".
FAMILIES = ["h2ovl"]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> Family:
    fam: Family = request.getfixturevalue(f"{request.param}_family")
    return fam


def _image() -> Image.Image:
    image = Image.new("RGB", (96, 64), "white")
    for x in range(10, 80):
        image.putpixel((x, 30), (0, 0, 0))
    return image


def _all_tokens(fam: Family) -> str:
    """Every added token's text, then role markers of common templates; written twice, so that
    any token comes both before and after any other."""
    once = " ".join(fam.added_tokens) + " <|prompt|> <|answer|> <|user|> <|assistant|>"
    return f"{once} and {once}"


# -- prepare() --------------------------------------------------------------------------------


def _template_tokens(fam: Family, ids: list[int]) -> list[int]:
    added = set(fam.added_tokens.values())
    return [i for i in ids if i in added]


PLACES = ["question", "question_with_image", "history_question", "history_answer"]


def _prepare(fam: Family, place: str, text: str) -> list[int]:
    question = f"Read {text} it." if place.startswith("question") else "Read it."
    images = [loaded_image(_image())] if place == "question_with_image" else []
    history = []
    if place == "history_question":
        history = [(f"First {text} question", "first answer")]
    elif place == "history_answer":
        history = [("First question", f"first {text} answer")]
    return fam.backend.prepare(
        question, images, history=history, options={"max_tiles": 1}
    ).input_ids


@pytest.mark.parametrize("place", PLACES)
def test_added_token_text_never_yields_its_id(family: Family, place: str) -> None:
    tokenizer = family.backend.tokenizer
    clean = _template_tokens(family, _prepare(family, place, ""))
    for token in family.added_tokens:
        ids = _prepare(family, place, token)
        # The added tokens in the ids are exactly those the template writes for the same
        # conversation without the user's token text.
        assert _template_tokens(family, ids) == clean, (place, token)
        assert token in tokenizer.decode(ids), (place, token)  # kept, as text


# -- end to end: the Python API, the HTTP chat endpoint, the MCP tool ----------------------------


def test_ask_answers_normally(family: Family) -> None:
    question = f"What does {_all_tokens(family)} mean here?"
    answer = family.vlm.ask(_image(), question, max_tiles=1, max_new_tokens=16)
    if family.answer is not None:
        assert answer.text == family.answer
    expected = family.backend.prepare(question, [loaded_image(_image())], options={"max_tiles": 1})
    assert answer.meta.prompt_tokens == len(expected.input_ids)


def test_generate_with_history_answers_normally(family: Family) -> None:
    text = _all_tokens(family)
    history = [(f"<image>\nWhat is {text}?", f"It is {text}, and <image> is text here.")]
    output = family.vlm.generate(
        _image(), f"And {text}?", history=history, max_tiles=1, max_new_tokens=16
    )
    if family.answer is not None:
        assert output.text == family.answer


@pytest.fixture
def http_url(family: Family) -> Iterator[str]:
    from tests.server.live import quiet_settings, run_server

    with run_server(quiet_settings(), family.vlm) as live:
        yield live.url


def _data_uri() -> str:
    import io

    from tests.server.live import data_uri

    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    return data_uri(buffer.getvalue())


def test_http_chat_answers_normally(family: Family, http_url: str) -> None:
    text = _all_tokens(family)
    messages = [
        {"role": "system", "content": f"Be brief {text}"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_uri()}},
                {"type": "text", "text": f"What is {text}?"},
            ],
        },
        {"role": "assistant", "content": f"It is {text}."},
        {"role": "user", "content": f"Really {text}?"},
    ]
    response = httpx.post(
        f"{http_url}/v1/chat/completions",
        json={"model": "m", "messages": messages, "max_tokens": 16, "temperature": 0},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    content = response.json()["choices"][0]["message"]["content"]
    if family.answer is not None:
        assert content == family.answer


def test_http_chat_refuses_lone_surrogates_with_a_400(family: Family, http_url: str) -> None:
    # JSON may carry a lone surrogate as an escape; the text is not valid Unicode.
    body = (
        '{"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "a \\ud800 b"}]}'
    )
    response = httpx.post(
        f"{http_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=120,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert "U+D800" in error["message"]
    assert "the prompt" in error["message"]


async def _mcp_call(fam: Family, directory: Path, arguments: dict) -> tuple[bool, str, dict | None]:  # type: ignore[type-arg]
    from mcp import Client

    from tests.mcp.conftest import make_server
    from tests.mcp.support import text_of

    with anyio.fail_after(120):
        async with Client(make_server(fam.vlm, allow_dirs=[directory])) as client:
            result = await client.call_tool("ask", arguments)
    return bool(result.is_error), text_of(result), result.structured_content


async def test_mcp_ask_tool_answers_normally(family: Family, tmp_path: Path) -> None:
    _image().save(tmp_path / "page.png")
    question = f"What does {_all_tokens(family)} say?"
    is_error, text, structured = await _mcp_call(
        family, tmp_path, {"image": "page.png", "question": question}
    )
    assert not is_error, text
    assert structured is not None
    if family.answer is not None:
        assert structured["result"]["text"] == family.answer


async def test_mcp_ask_tool_refuses_lone_surrogates_as_an_error_result(
    family: Family, tmp_path: Path
) -> None:
    _image().save(tmp_path / "page.png")
    is_error, text, _ = await _mcp_call(
        family, tmp_path, {"image": "page.png", "question": "what \udfff is this?"}
    )
    # The SDK's argument validation refuses the string before the tool runs: an error result.
    assert is_error
    assert "question" in text
    assert "valid string" in text


def test_the_api_raises_a_typed_error_for_lone_surrogates(family: Family) -> None:
    # The task's arguments model refuses it first, naming the argument.
    with pytest.raises(InvalidInputError, match="question: Input should be a valid string"):
        family.vlm.ask(_image(), "smile \ud83d", max_tiles=1, max_new_tokens=4)
    with pytest.raises(InvalidInputError, match="the prompt contains a lone surrogate U\\+D83D"):
        family.vlm.generate(_image(), "smile \ud83d", max_tiles=1, max_new_tokens=4)
    with pytest.raises(InvalidInputError, match="answer of history turn 1"):
        family.vlm.generate(None, "q", history=[("q0", "\udc00")], max_new_tokens=4)
