"""The task endpoints: JSON and multipart bodies, typed results, the OpenAPI document."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from mississippi_tools.tasks.ask import Answer
from mississippi_tools.tasks.ocr import OCRResult
from tests.server.live import LiveServer, data_uri, png_bytes

IMAGE = png_bytes((250, 250, 250))


def _post(live: LiveServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{live.url}{path}", timeout=120, **kwargs)


def test_ocr_json_with_base64_and_data_uri_match_the_local_result(
    live: LiveServer, server_vlm
) -> None:  # type: ignore[no-untyped-def]
    local = server_vlm.ocr(IMAGE, max_new_tokens=6)
    for image in (base64.b64encode(IMAGE).decode(), data_uri(IMAGE)):
        response = _post(live, "/v1/ocr", json={"image": image, "max_new_tokens": 6})
        assert response.status_code == 200, response.text
        result = OCRResult.model_validate(response.json())
        assert result.text == local.text
        assert result.meta.engine == "local"
        assert result.meta.new_tokens == local.meta.new_tokens


def test_ocr_multipart_upload(live: LiveServer) -> None:
    response = _post(
        live,
        "/v1/ocr",
        files={"image": ("scan.png", IMAGE, "image/png")},
        data={"format": "lines", "confidence": "true", "max_new_tokens": "5"},
    )
    assert response.status_code == 200, response.text
    result = OCRResult.model_validate(response.json())
    assert result.format == "lines"
    assert result.meta.source == "scan.png"
    assert result.meta.cache_hit in (True, False)
    assert all(line.confidence is not None for line in result.lines)


def test_ask_with_several_uploads_and_history(live: LiveServer, server_vlm) -> None:  # type: ignore[no-untyped-def]
    other = png_bytes((0, 90, 0))
    response = _post(
        live,
        "/v1/ask",
        files=[("image", ("a.png", IMAGE, "image/png")), ("image", ("b.png", other, "image/png"))],
        data={"question": "Which is darker?", "max_new_tokens": "4"},
    )
    assert response.status_code == 200, response.text
    local = server_vlm.ask([IMAGE, other], "Which is darker?", max_new_tokens=4)
    assert Answer.model_validate(response.json()).text == local.text
    text_only = _post(
        live,
        "/v1/ask",
        json={"question": "And now?", "history": [["Hi", "Hello"]], "max_new_tokens": 3},
    )
    assert text_only.status_code == 200, text_only.text
    assert text_only.json()["meta"]["tiles"] == 0


def test_chart_and_table_answer_with_their_result_or_a_json_error(
    live: LiveServer, server_vlm
) -> None:  # type: ignore[no-untyped-def]
    from mississippi_tools.errors import ExtractionError

    for path, local_call in (
        ("/v1/chart", server_vlm.read_chart),
        ("/v1/table", server_vlm.read_table),
    ):
        response = _post(live, path, json={"image": data_uri(IMAGE), "max_new_tokens": 8})
        expected: Any
        try:
            expected = local_call(IMAGE, max_new_tokens=8).model_dump(mode="json")
        except ExtractionError as e:  # a random tiny model rarely writes a chart or a table
            expected = e
        if isinstance(expected, ExtractionError):
            assert response.status_code == 422
            error = response.json()["error"]
            assert error["code"] == "extraction_failed"
            assert error["raw_text"] == expected.raw_text
        else:
            assert response.status_code == 200
            got = response.json()
            got.pop("meta")
            expected.pop("meta")
            assert got == expected


def test_extract_returns_schema_valid_data(live: LiveServer) -> None:
    schema = {
        "type": "object",
        "properties": {"paid": {"type": "boolean"}, "kind": {"enum": ["invoice", "receipt"]}},
        "required": ["paid", "kind"],
        "additionalProperties": False,
    }
    response = _post(
        live,
        "/v1/extract",
        json={"image": data_uri(IMAGE), "schema": schema, "confidence": True, "max_new_tokens": 64},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["data"]["paid"], bool)
    assert body["data"]["kind"] in ("invoice", "receipt")
    assert json.loads(body["raw_text"]) == body["data"]
    assert set(body["confidence"]) == {"/paid", "/kind"}
    multipart = _post(
        live,
        "/v1/extract",
        files={"image": ("x.png", IMAGE, "image/png")},
        data={"schema": json.dumps(schema), "max_new_tokens": "64"},
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["data"] == body["data"]


def test_extract_that_cannot_finish_is_422_with_the_raw_text(live: LiveServer) -> None:
    response = _post(
        live,
        "/v1/extract",
        json={"image": data_uri(IMAGE), "schema": {"name": "", "address": ""}, "max_new_tokens": 2},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "extraction_failed"
    assert error["raw_text"].startswith("{")
    assert error["attempts"] == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"max_new_tokens": 3}}, 400, "invalid_input"),
        ({"json": {"image": "not an image!"}}, 400, "invalid_input"),
        ({"json": {"image": "aGVsbG8gd29ybGQ="}}, 400, "image_decode_error"),
        ({"json": {"image": data_uri(IMAGE), "format": "poem"}}, 422, "invalid_request"),
        ({"json": {"image": data_uri(IMAGE), "surprise": 1}}, 422, "invalid_request"),
        (
            {"content": b"{", "headers": {"content-type": "application/json"}},
            422,
            "invalid_request",
        ),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 400, "invalid_input"),
        ({"files": {"document": ("a.png", IMAGE, "image/png")}}, 400, "invalid_input"),
    ],
)
def test_bad_task_requests(
    live: LiveServer, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = _post(live, "/v1/ocr", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_pdf_pages_are_selected_with_page(live: LiveServer, bad_inputs) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("pypdfium2")
    pdf = (bad_inputs / "three_pages.pdf").read_bytes()
    missing = _post(
        live,
        "/v1/ocr",
        files={"image": ("d.pdf", pdf, "application/pdf")},
        data={"max_new_tokens": "2"},
    )
    assert missing.status_code == 400
    assert "page" in missing.json()["error"]["message"]
    ok = _post(
        live,
        "/v1/ocr",
        files={"image": ("d.pdf", pdf, "application/pdf")},
        data={"page": "2", "max_new_tokens": "2", "max_tiles": "1"},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["meta"]["page"] == 2


def test_openapi_documents_the_task_endpoints(live: LiveServer) -> None:
    document = httpx.get(f"{live.url}/openapi.json").json()
    schemas = document["components"]["schemas"]
    expected = {
        "/v1/ocr": "OCRResult",
        "/v1/read_chart": "ChartData",
        "/v1/read_table": "TableData",
        "/v1/extract": "ExtractionResult",
        "/v1/ask": "Answer",
    }
    for path, result in expected.items():
        operation = document["paths"][path]["post"]
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        one, pages = (branch["$ref"].rsplit("/", 1)[-1] for branch in ok["anyOf"])
        assert (one, pages) == (result, f"{result}Pages")
        assert result in schemas and pages in schemas
        content = operation["requestBody"]["content"]
        request_ref = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert request_ref in schemas
        form = content["multipart/form-data"]["schema"]
        assert form["properties"]["image"]["format"] == "binary"
        assert operation["responses"]["429"]["content"]["application/json"]["schema"][
            "$ref"
        ].endswith("ErrorResponse")
    assert "ResultMetadata" in schemas
    assert "/v1/chat/completions" in document["paths"]
    for former in ("/v1/chart", "/v1/table"):
        assert document["paths"][former]["post"]["deprecated"] is True
    assert "/v1/to_html" not in document["paths"]  # a task this model cannot do is not routed


def test_pages_give_one_entry_per_page_and_the_former_schema_name_still_works(
    live: LiveServer,
) -> None:
    from tests.server.live import PDF_BYTES

    pdf = base64.b64encode(PDF_BYTES).decode()
    response = _post(
        live, "/v1/ocr", json={"image": pdf, "pages": "2-3", "max_new_tokens": 2, "max_tiles": 1}
    )
    assert response.status_code == 200, response.text
    entries = response.json()["pages"]
    assert [(e["page"], e["error"]) for e in entries] == [(2, None), (3, None)]
    assert all(OCRResult.model_validate(e["result"]).meta.page == e["page"] for e in entries)
    too_far = _post(live, "/v1/ocr", json={"image": pdf, "pages": "2-9", "max_new_tokens": 2})
    assert too_far.status_code == 400 and "out of range" in too_far.json()["error"]["message"]
    both = _post(live, "/v1/ocr", json={"image": pdf, "pages": "2", "page": 2})
    assert both.status_code == 422
    former = _post(
        live,
        "/v1/extract",
        json={"image": data_uri(IMAGE), "schema": {"a": ""}, "max_new_tokens": 24, "max_tiles": 1},
    )
    assert former.status_code in (200, 422), former.text
    assert former.json().get("error", {}).get("code") != "invalid_request"


def test_a_document_task_reads_the_selected_pages_into_one_result(live: LiveServer) -> None:
    from tests.server.live import PDF_BYTES

    pdf = base64.b64encode(PDF_BYTES).decode()
    body = {"image": pdf, "pages": "2-3", "json_schema": {"ok": False}, "max_new_tokens": 24}
    response = _post(live, "/v1/extract_document", json={**body, "max_tiles": 1})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:  # the tiny model may fail to fill the schema: a typed 422
        result = response.json()
        assert result["pages"] == [2, 3] and set(result["data"]) == {"ok"}
        assert set(result["provenance"]) <= {"/ok"}
    else:
        assert response.json()["error"]["code"] in ("extraction_failed", "repetition")
    document = httpx.get(f"{live.url}/openapi.json").json()
    operation = document["paths"]["/v1/extract_document"]["post"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/DocumentExtractionResult"}


def test_region_zooms_into_part_of_the_image(live: LiveServer) -> None:
    body = {"image": data_uri(IMAGE), "max_new_tokens": 2, "max_tiles": 1}
    zoomed = _post(live, "/v1/ocr", json={**body, "region": [0, 0, 0.5, 0.5]})
    assert zoomed.status_code == 200, zoomed.text
    assert zoomed.json()["meta"]["region"] == [0, 0, 32, 32]
    outside = _post(live, "/v1/ocr", json={**body, "region": "0,0,900,900"})
    assert outside.status_code == 400, outside.text
    assert "region" in outside.json()["error"]["message"]
