"""The playground over plain HTTP: the page and its files, the served catalogue, page thumbnails,
streamed task answers, and the API key.

The browser itself drives the page in ``test_playground_browser.py``.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from mississippi_tools.server.playground import ASSET_TYPES, CONTENT_SECURITY_POLICY, THUMBNAIL_SIDE
from mississippi_tools.tasks.catalogue import register_task, unregister_task
from tests.documents import Page, build_pdf
from tests.server.live import LiveServer, png_bytes, quiet_settings, run_server
from tests.tasks.test_extra_task import CAPTION

FAST = {"max_tiles": "1", "max_new_tokens": "6"}


def _referenced(client: httpx.Client, text: str, base: str) -> set[str]:
    """The playground files a page or a script refers to (src/href and ES module imports)."""
    names = set(re.findall(r'(?:src|href)="/playground/([\w.-]+)"', text))
    names |= {base + name for name in re.findall(r'from "\./([\w.-]+)"', text)}
    return {name.removeprefix(base) for name in names}


def test_the_page_and_every_file_it_loads_are_served_with_their_types(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        pages = [client.get(path) for path in ("/", "/playground")]
        for page in pages:
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert page.headers["x-content-type-options"] == "nosniff"
            assert 'data-auth="none"' in page.text
        assert pages[0].text == pages[1].text
        # Every file the page loads, and every module its scripts import, transitively.
        seen: set[str] = set()
        todo = _referenced(client, pages[0].text, "")
        assert {"app.js", "playground.css", "favicon.svg"} <= todo
        while todo:
            name = todo.pop()
            seen.add(name)
            answer = client.get(f"/playground/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["content-type"] == ASSET_TYPES["." + name.rsplit(".", 1)[1]]
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            if name.endswith(".js"):
                todo |= _referenced(client, answer.text, "") - seen
        assert {"api.js", "render.js", "snippets.js"} <= seen
        # Nothing is fetched from elsewhere: no absolute URLs in what the page loads.
        for name in seen | {"index.html"}:
            body = client.get("/" if name == "index.html" else f"/playground/{name}").text
            assert not re.search(r"(?:src|href|url\()\s*=?\s*[\"']?(?:https?:)?//", body), name
        for wrong in ("nope.js", "index.html", "..%2Fapp.py", "%2E%2E%2Fplayground.py"):
            assert client.get(f"/playground/{wrong}").status_code == 404, wrong
        assert client.get("/playground/../app.py").status_code == 404


def test_the_page_is_in_the_openapi_document(live: LiveServer) -> None:
    paths = httpx.get(f"{live.url}/openapi.json", timeout=30).json()["paths"]
    assert {"/playground", "/v1/tasks", "/v1/pages"} <= set(paths)


def test_v1_tasks_lists_the_served_tasks_with_their_argument_schemas(
    live: LiveServer, server_vlm: Any
) -> None:
    catalogue = httpx.get(f"{live.url}/v1/tasks", timeout=30).json()
    names = [task["name"] for task in catalogue["data"]]
    assert names == [spec.name for spec in server_vlm.tasks]
    by_name = {task["name"]: task for task in catalogue["data"]}
    assert by_name["ocr"]["route"] == "/v1/ocr"
    assert by_name["ocr"]["result"] == "OCRResult"
    assert by_name["ocr"]["arguments"]["properties"]["format"]["enum"] == [
        "text",
        "markdown",
        "lines",
    ]
    assert by_name["extract"]["arguments"]["required"] == ["json_schema"]
    assert by_name["ask"]["images"] == "many"
    assert "to_html" not in by_name  # a WebSight task: not routed for an H2OVL model


def test_a_task_the_model_adds_is_listed_and_routed(server_vlm: Any) -> None:
    register_task(CAPTION)
    try:
        with run_server(quiet_settings(), server_vlm) as server:
            catalogue = httpx.get(f"{server.url}/v1/tasks", timeout=30).json()
            caption = next(task for task in catalogue["data"] if task["name"] == "caption")
            assert caption["arguments"]["properties"]["length"]["enum"] == ["short", "detailed"]
            assert caption["result"] == "Caption"
            answer = httpx.post(
                f"{server.url}{caption['route']}",
                files={"image": ("red.png", png_bytes())},
                data={"length": "detailed", "max_tiles": "1"},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            assert "text" in answer.json()
    finally:
        unregister_task("caption")


def _events(response: httpx.Response) -> list[Any]:
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_a_streamed_task_sends_the_text_as_written_then_the_typed_result(
    live: LiveServer,
) -> None:
    files = {"image": ("red.png", png_bytes())}
    plain = httpx.post(f"{live.url}/v1/ocr", files=files, data=FAST, timeout=120)
    streamed = httpx.post(
        f"{live.url}/v1/ocr", files=files, data={**FAST, "stream": "true"}, timeout=120
    )
    assert streamed.status_code == 200
    events = _events(streamed)
    deltas = [event["delta"] for event in events if "delta" in event]
    results = [event["result"] for event in events if "result" in event]
    assert len(results) == 1 and "result" in events[-1]
    result = results[0]
    assert 0 < len(deltas) <= result["meta"]["new_tokens"] * result["meta"]["attempts"]
    # Greedy decoding: the same answer as without stream, and the deltas add up to its text.
    assert result["text"] == plain.json()["text"]
    assert "".join(deltas).strip() == result["text"].strip() or result["meta"]["attempts"] > 1
    assert result["meta"]["new_tokens"] == plain.json()["meta"]["new_tokens"]


def test_a_streamed_extraction_ends_with_the_schema_valid_result(scripted_vlm: Any) -> None:
    body = {
        "image": base64.b64encode(png_bytes()).decode(),
        "json_schema": {"total": 0},
        "confidence": True,
        "max_tiles": 1,
    }
    with run_server(quiet_settings(), scripted_vlm) as server:
        plain = httpx.post(f"{server.url}/v1/extract", json=body, timeout=120).json()
        answer = httpx.post(f"{server.url}/v1/extract", json={**body, "stream": True}, timeout=120)
    events = _events(answer)
    result = events[-1]["result"]
    assert isinstance(result["data"]["total"], int)
    assert (result["data"], result["raw_text"]) == (plain["data"], plain["raw_text"])
    assert set(result["confidence"]) == {"/total"}
    assert "".join(e["delta"] for e in events if "delta" in e) == result["raw_text"]


def test_a_loop_streams_the_retry_then_the_typed_error_of_the_route(looping_backend: Any) -> None:
    from mississippi_tools import MississippiVLM
    from tests.support import LOOPING_ANSWER

    body = {"image": base64.b64encode(png_bytes()).decode(), "max_tiles": 1, "max_new_tokens": 300}
    with (
        MississippiVLM.from_backend(looping_backend) as vlm,
        run_server(quiet_settings(), vlm) as server,
    ):
        plain = httpx.post(f"{server.url}/v1/ocr", json=body, timeout=120)
        streamed = httpx.post(f"{server.url}/v1/ocr", json={**body, "stream": True}, timeout=120)
    assert streamed.status_code == 200  # the failure came after the stream began
    events = _events(streamed)
    retry = events.index({"retry": {"attempt": 2}})
    first = "".join(e["delta"] for e in events[:retry])
    second = "".join(e.get("delta", "") for e in events[retry + 1 :])
    assert first.split()[:6] == (LOOPING_ANSWER * 3).split() and second.strip()
    failure = events[-1]
    assert failure["status"] == plain.status_code == 422
    assert failure["error"]["code"] == plain.json()["error"]["code"] == "repetition"
    assert failure["error"]["message"] == plain.json()["error"]["message"]
    assert failure["error"]["attempts"] == 2 and failure["error"]["raw_text"]


def test_stream_errors_are_the_typed_errors_of_the_route(live: LiveServer) -> None:
    pdf = build_pdf([Page("scan"), Page("scan")])
    with httpx.Client(base_url=live.url, timeout=60) as client:
        pages = client.post(
            "/v1/ocr",
            files={"image": ("two.pdf", pdf, "application/pdf")},
            data={"pages": "1-2", "stream": "true"},
        )
        assert pages.status_code == 400
        assert pages.headers["content-type"] == "application/json"
        assert pages.json()["error"]["code"] == "invalid_input"
        assert "page=N" in pages.json()["error"]["message"]
        no_image = client.post("/v1/ocr", json={"stream": True})
        assert no_image.status_code == 400
        assert no_image.json()["error"]["code"] == "invalid_input"
        bad_schema = client.post(
            "/v1/extract",
            json={"image": base64.b64encode(png_bytes()).decode(), "stream": True,
                  "json_schema": {"type": "object", "properties": {"a": {"type": "nope"}}}},
        )  # fmt: skip
        assert bad_schema.status_code in (400, 422)
        assert bad_schema.json()["error"]["message"]


def test_v1_pages_gives_a_thumbnail_per_page(live: LiveServer) -> None:
    pdf = build_pdf([Page("text"), Page("scan"), Page("stamp")])
    with httpx.Client(base_url=live.url, timeout=60) as client:
        answer = client.post("/v1/pages", files={"image": ("doc.pdf", pdf, "application/pdf")})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["source"], body["count"]) == ("doc.pdf", 3)
        assert [page["page"] for page in body["pages"]] == [1, 2, 3]
        for page in body["pages"]:
            head, _, data = page["thumbnail"].partition(",")
            assert head == "data:image/png;base64"
            image = Image.open(io.BytesIO(base64.b64decode(data)))
            assert image.format == "PNG" and max(image.size) <= THUMBNAIL_SIDE
            assert page["width"] > 0 and page["height"] > 0
        image = client.post(
            "/v1/pages", json={"image": base64.b64encode(png_bytes(size=(400, 200))).decode()}
        ).json()
        assert image["count"] == 1 and image["pages"][0]["width"] == 400
        broken = client.post("/v1/pages", files={"image": ("x.pdf", b"%PDF-1.4 junk")})
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] in {"pdf_error", "invalid_input", "invalid_image"}
        nothing = client.post("/v1/pages", json={"file": "x"})
        assert nothing.status_code == 400
        assert "'image'" in nothing.json()["error"]["message"]


@pytest.fixture(scope="module")
def keyed(server_vlm: Any) -> Iterator[LiveServer]:
    with run_server(quiet_settings(api_key="pg-s3cret"), server_vlm) as server:
        yield server


def test_with_an_api_key_the_page_asks_for_it_and_the_calls_need_it(keyed: LiveServer) -> None:
    with httpx.Client(base_url=keyed.url, timeout=60) as client:
        page = client.get("/playground")
        assert page.status_code == 200  # the page holds no data: it is open
        assert 'data-auth="bearer"' in page.text
        assert 'id="key-dialog"' in page.text
        assert client.get("/playground/app.js").status_code == 200
        for call in (
            lambda headers: client.get("/v1/tasks", headers=headers),
            lambda headers: client.post(
                "/v1/pages", files={"image": ("a.png", png_bytes())}, headers=headers
            ),
        ):
            refused = call({})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["error"]["code"] == "unauthorized"
            assert call({"Authorization": "Bearer wrong"}).status_code == 401
            assert call({"Authorization": "Bearer pg-s3cret"}).status_code == 200


def test_the_page_and_its_catalogue_answer_while_the_model_loads(
    tiny_checkpoint: Path, server_vlm: Any
) -> None:
    release = threading.Event()

    def slow_load(settings: Any) -> Any:
        assert release.wait(60), "the test never released the load"
        return server_vlm

    settings = quiet_settings(model=str(tiny_checkpoint))
    with run_server(settings, vlm_factory=slow_load, close_vlm=False) as server:
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                assert client.get("/health").json()["status"] == "loading"
                assert client.get("/").status_code == 200
                names = [task["name"] for task in client.get("/v1/tasks").json()["data"]]
                assert names == [spec.name for spec in server_vlm.tasks]
                thumbnails = client.post("/v1/pages", files={"image": ("a.png", png_bytes())})
                assert thumbnails.status_code == 200
                waiting = client.post("/v1/ocr", files={"image": ("a.png", png_bytes())})
                assert waiting.status_code == 503
                assert waiting.json()["error"]["code"] == "model_loading"
        finally:
            release.set()
