"""The OpenAI-compatible API, driven by the official openai client and by raw httpx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import OpenAI
from PIL import Image
from pydantic import BaseModel

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.server.openai import ChatMessage, build_conversation
from tests.server.live import LiveServer, data_uri, png_bytes

IMAGE = png_bytes((10, 120, 200))


def _client(live: LiveServer) -> OpenAI:
    return OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _user(text: str, *images: bytes) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": data_uri(image)}} for image in images
    ]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def _chat(live: LiveServer, **body: Any) -> httpx.Response:
    body.setdefault("model", "h2ovl")
    return httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=120)


def test_openai_client_chat_with_an_image_matches_the_local_engine(
    live: LiveServer, server_vlm
) -> None:  # type: ignore[no-untyped-def]
    completion = _client(live).chat.completions.create(
        model="anything",
        messages=[_user("What is in the image?", IMAGE)],  # type: ignore[list-item]
        max_tokens=8,
        temperature=0,
    )
    local = server_vlm.generate(IMAGE, "What is in the image?", max_new_tokens=8)
    choice = completion.choices[0]
    assert choice.message.content == local.text
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(local.token_ids)
    assert completion.usage.prompt_tokens == local.output.prompt_tokens
    extension = completion.model_extra["mississippi"]  # type: ignore[index]
    assert extension["tiles_per_image"] == [local.tiles]
    assert extension["token_ids"] == local.token_ids


class Flag(BaseModel):
    ok: bool


def test_openai_parse_returns_a_parsed_instance(live: LiveServer) -> None:
    completion = _client(live).chat.completions.parse(
        model="anything",
        messages=[_user("Is there a red square?", IMAGE)],  # type: ignore[list-item]
        response_format=Flag,
        max_tokens=64,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Flag)
    assert json.loads(completion.choices[0].message.content or "") == parsed.model_dump()


def test_openai_streaming_concatenates_to_the_completion(live: LiveServer) -> None:
    client = _client(live)
    messages = [_user("Describe the picture.", IMAGE)]
    whole = client.chat.completions.create(model="m", messages=messages, max_tokens=12)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="m",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) > 1
    assert finish == whole.choices[0].finish_reason
    assert usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_raw_sse_ends_with_done_and_carries_the_extension(live: LiveServer) -> None:
    with httpx.stream(
        "POST",
        f"{live.url}/v1/chat/completions",
        json={"model": "m", "messages": [_user("Hi", IMAGE)], "max_tokens": 4, "stream": True},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][len("data: ") :])
    assert final["object"] == "chat.completion.chunk"
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert final["mississippi"]["tiles_per_image"] == [1]


def test_json_object_response_format_gives_a_json_object(live: LiveServer) -> None:
    response = _chat(
        live,
        messages=[_user("Give the fields as JSON.", IMAGE)],
        response_format={"type": "json_object"},
        max_tokens=48,
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:  # cut by max_tokens: still the start of an object
        assert choice["message"]["content"].startswith("{")


def test_multi_turn_history_and_system_message_match_the_local_engine(
    live: LiveServer, server_vlm
) -> None:  # type: ignore[no-untyped-def]
    messages = [
        {"role": "system", "content": "Be brief."},
        _user("What is this?", IMAGE),
        {"role": "assistant", "content": "A square."},
        {"role": "user", "content": "Which colour?"},
    ]
    response = _chat(live, messages=messages, max_tokens=6)
    assert response.status_code == 200, response.text
    local = server_vlm.generate(
        IMAGE,
        "Which colour?",
        history=[("Be brief.\n\n<image>\nWhat is this?", "A square.")],
        max_new_tokens=6,
    )
    assert response.json()["choices"][0]["message"]["content"] == local.text


def test_logprobs_cover_every_generated_token(live: LiveServer) -> None:
    response = _chat(live, messages=[_user("Read it.", IMAGE)], max_tokens=6, logprobs=True)
    assert response.status_code == 200, response.text
    body = response.json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    assert all(entry["logprob"] <= 0 for entry in content)
    assert all(entry["bytes"] == list(entry["token"].encode()) for entry in content)


def test_mm_processor_kwargs_set_the_tiling(live: LiveServer) -> None:
    wide = png_bytes((0, 0, 0), size=(896, 448))
    default = _chat(live, messages=[_user("x", wide)], max_tokens=1)
    one = _chat(
        live,
        messages=[_user("x", wide)],
        max_tokens=1,
        mm_processor_kwargs={"max_dynamic_patch": 1},
    )
    assert default.json()["mississippi"]["tiles_per_image"][0] > 1
    assert one.json()["mississippi"]["tiles_per_image"] == [1]


def test_models_lists_the_served_model(live: LiveServer) -> None:
    body = httpx.get(f"{live.url}/v1/models").json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["owned_by"] == "mississippi-tools"
    assert card["mississippi"]["supports_grammar"] is True


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "invalid_input"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
            400,
            "invalid_input",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            },
            400,
            "invalid_input",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}],
                    }
                ]
            },
            400,
            "image_decode_error",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}
                        ],
                    }
                ]
            },
            403,
            "access_denied",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            422,
            "invalid_request",
        ),
        ({"messages": []}, 422, "invalid_request"),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "mm_processor_kwargs": {"max_dynamic_patch": 0},
            },
            422,
            "invalid_request",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}},
                },
            },
            400,
            "unsupported_schema",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,aGVsbG8="},
                            }
                        ],
                    }
                ]
            },
            400,
            "image_decode_error",
        ),
    ],
)
def test_bad_requests_get_json_errors_with_stable_codes(
    live: LiveServer, body: dict[str, Any], status: int, code: str
) -> None:
    response = _chat(live, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["type"]


def test_invalid_json_body_is_a_json_error(live: LiveServer) -> None:
    response = httpx.post(
        f"{live.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_unknown_route_is_a_json_404(live: LiveServer) -> None:
    response = httpx.get(f"{live.url}/v2/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# -- messages -> prompt (no model needed) ----------------------------------------------------


def _messages(*raw: dict[str, Any]) -> list[ChatMessage]:
    return [ChatMessage.model_validate(m) for m in raw]


def _img(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_leading_images_get_the_models_introduction() -> None:
    one = build_conversation(
        _messages({"role": "user", "content": [_img("a"), {"type": "text", "text": "Q"}]})
    )
    assert (one.prompt, one.images) == ("<image>\nQ", ["a"])
    two = build_conversation(
        _messages(
            {"role": "user", "content": [_img("a"), _img("b"), {"type": "text", "text": "Q"}]}
        )
    )
    assert two.prompt == "Image-1: <image>\nImage-2: <image>\nQ"


def test_images_between_text_stand_where_they_are() -> None:
    conversation = build_conversation(
        _messages(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ""},
                    _img("a"),
                    {"type": "text", "text": "Q and "},
                    _img("b"),
                ],
            }
        )
    )
    assert conversation.prompt == "<image>Q and <image>"
    assert conversation.images == ["a", "b"]


def test_history_system_and_merged_messages() -> None:
    conversation = build_conversation(
        _messages(
            {"role": "developer", "content": "Rules."},
            {"role": "user", "content": [_img("a"), {"type": "text", "text": "first"}]},
            {"role": "user", "content": "more"},
            {"role": "assistant", "content": [{"type": "text", "text": "answer"}]},
            {"role": "user", "content": "second"},
        )
    )
    assert conversation.history == [("Rules.\n\n<image>\nfirst\nmore", "answer")]
    assert conversation.prompt == "second"
    assert conversation.images == ["a"]


def test_conversations_that_cannot_be_answered_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="end with a user"):
        build_conversation(_messages({"role": "system", "content": "only rules"}))
    with pytest.raises(InvalidInputError, match="tool"):
        build_conversation(
            _messages({"role": "user", "content": "q"}, {"role": "tool", "content": "r"})
        )
    with pytest.raises(InvalidInputError, match="cannot hold images"):
        build_conversation(
            _messages(
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [_img("a")]},
                {"role": "user", "content": "q2"},
            )
        )


def test_local_generation_accepts_the_same_prompt(server_vlm) -> None:  # type: ignore[no-untyped-def]
    image = Image.new("RGB", (32, 32), "white")
    explicit = server_vlm.generate(image, "<image>\nQ", max_new_tokens=3)
    implicit = server_vlm.generate(image, "Q", max_new_tokens=3)
    assert explicit.token_ids == implicit.token_ids


def test_a_server_over_a_remote_engine_proxies_answers_and_streams(
    live: LiveServer, server_vlm
) -> None:  # type: ignore[no-untyped-def]
    from mississippi_tools import MississippiVLM
    from tests.server.live import quiet_settings, run_server

    with (
        MississippiVLM.connect(live.url) as upstream,
        run_server(quiet_settings(), upstream) as proxy,
    ):
        body = {"model": "m", "messages": [_user("Proxy?", IMAGE)], "max_tokens": 5}
        direct = _chat(live, **body).json()["choices"][0]["message"]["content"]
        via = _chat(proxy, **body)
        assert via.status_code == 200, via.text
        assert via.json()["choices"][0]["message"]["content"] == direct
        with httpx.stream(
            "POST", f"{proxy.url}/v1/chat/completions", json={**body, "stream": True}, timeout=120
        ) as response:
            events = [line for line in response.iter_lines() if line.startswith("data:")]
        pieces = [
            json.loads(line[6:])["choices"][0]["delta"].get("content") or "" for line in events[:-1]
        ]
        assert "".join(pieces) == direct
        assert "mississippi_model_ready 1.0" in httpx.get(f"{proxy.url}/metrics").text
        assert (
            httpx.get(f"{proxy.url}/v1/models").json()["data"][0]["mississippi"]["engine"]
            == "remote"
        )
