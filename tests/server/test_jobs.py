"""The job API on the real service: submit, poll, partial results, cancel, restart and resume."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.documents import Page, build_pdf
from tests.server.live import LiveServer, quiet_settings, run_server
from tests.support import wait_until

SHORT = build_pdf([Page("scan"), Page("stamp"), Page("scan")])
LONG = build_pdf([Page("scan") if i % 2 else Page("stamp") for i in range(16)])
"""Long enough that a job (reading one page at a time) is still running when a test acts on it
part-way."""


def _settings(directory: Path, **overrides: Any) -> Any:
    return quiet_settings(jobs_dir=directory, job_concurrency=1, **overrides)


def _submit(live: LiveServer, document: bytes, **fields: Any) -> httpx.Response:
    body = {"task": "ocr", "image": base64.b64encode(document).decode(), **fields}
    return httpx.post(f"{live.url}/v1/jobs", json=body, timeout=60)


def _status(live: LiveServer, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{live.url}/v1/jobs/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    assert status["status"] != "failed", status["error"]
    return status


def _result(live: LiveServer, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{live.url}/v1/jobs/{job_id}/result", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _wait_for(live: LiveServer, job_id: str, condition: Any, timeout: float = 200) -> None:
    wait_until(lambda: condition(_status(live, job_id)), timeout=timeout, what=f"job {job_id}")


def test_a_job_reads_every_page_with_progress_and_matches_the_task_route(
    server_vlm: Any, tmp_path: Path
) -> None:
    with run_server(_settings(tmp_path), server_vlm) as live:
        submitted = _submit(live, SHORT, max_new_tokens=5)
        assert submitted.status_code == 202, submitted.text
        job = submitted.json()
        assert submitted.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] in ("queued", "running") and job["task"] == "ocr"
        seen: list[int] = []

        def finished() -> bool:
            status = _status(live, job["id"])
            seen.append(status["pages_done"])
            return bool(status["status"] == "succeeded")

        wait_until(finished, timeout=200, what="the job")
        assert seen == sorted(seen), "progress went back"
        status = _status(live, job["id"])
        assert (status["pages_total"], status["pages_done"], status["pages_failed"]) == (3, 3, 0)
        result = _result(live, job["id"])
        assert result["complete"] is True and result["status"] == "succeeded"
        direct = httpx.post(
            f"{live.url}/v1/ocr",
            json={"image": base64.b64encode(SHORT).decode(), "pages": "1-", "max_new_tokens": 5},
            timeout=120,
        ).json()
        assert [p["page"] for p in result["pages"]] == [1, 2, 3]
        assert [p["result"]["text"] for p in result["pages"]] == [
            p["result"]["text"] for p in direct["pages"]
        ]
        listed = httpx.get(f"{live.url}/v1/jobs", timeout=30).json()
        assert [j["id"] for j in listed] == [job["id"]]


def test_multipart_submission_with_a_page_selection(server_vlm: Any, tmp_path: Path) -> None:
    with run_server(_settings(tmp_path), server_vlm) as live:
        response = httpx.post(
            f"{live.url}/v1/jobs",
            files={"image": ("scan.pdf", SHORT, "application/pdf")},
            data={"task": "ocr", "pages": "2-3", "max_new_tokens": "3"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["source"] == "scan.pdf"
        _wait_for(live, job["id"], lambda s: s["status"] == "succeeded")
        assert [p["page"] for p in _result(live, job["id"])["pages"]] == [2, 3]


def test_partial_results_then_cancel_keeps_the_pages_done(server_vlm: Any, tmp_path: Path) -> None:
    with run_server(_settings(tmp_path), server_vlm) as live:
        job = _submit(live, LONG, max_new_tokens=4).json()
        _wait_for(live, job["id"], lambda s: s["pages_done"] >= 2)
        partial = _result(live, job["id"])
        assert partial["complete"] is False and partial["status"] == "running"
        done = [p["page"] for p in partial["pages"]]
        assert done == list(range(1, len(done) + 1)) and 2 <= len(done) < 16
        cancelled = httpx.delete(f"{live.url}/v1/jobs/{job['id']}", timeout=30)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        after = _result(live, job["id"])
        assert after["complete"] is True and after["status"] == "cancelled"
        assert after["pages"][: len(done)] == partial["pages"]
        assert len(after["pages"]) < 16
        time.sleep(0.5)
        assert _result(live, job["id"])["pages"] == after["pages"], "pages came after cancel"
        again = httpx.delete(f"{live.url}/v1/jobs/{job['id']}", timeout=30)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_finished"
        assert not (tmp_path / job["id"] / "input").exists(), "the input outlived the job"


def test_a_restart_keeps_finished_jobs_and_resumes_the_unfinished_one(
    server_vlm: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    with run_server(settings, server_vlm) as live:
        short = _submit(live, SHORT, max_new_tokens=4).json()
        _wait_for(live, short["id"], lambda s: s["status"] == "succeeded")
        short_result = _result(live, short["id"])
        long = _submit(live, LONG, max_new_tokens=4).json()
        _wait_for(live, long["id"], lambda s: s["pages_done"] >= 1)
        live.stop()
    lines = (tmp_path / long["id"] / "pages.jsonl").read_text().splitlines()
    before = [json.loads(line) for line in lines]
    assert 1 <= len(before) < 16, "the job was not stopped part-way"

    with run_server(settings, server_vlm) as live:
        assert _result(live, short["id"]) == short_result
        status = _status(live, long["id"])
        assert status["restarts"] == 1
        assert status["pages_done"] >= len(before)
        _wait_for(live, long["id"], lambda s: s["status"] == "succeeded")
        result = _result(live, long["id"])
        assert [p["page"] for p in result["pages"]] == list(range(1, 17))
        assert result["pages"][: len(before)] == before, "pages done before the restart changed"
    lines = (tmp_path / long["id"] / "pages.jsonl").read_text().splitlines()
    assert len(lines) == 16, "pages finished before the restart were read again"


def test_bounds_and_typed_errors(server_vlm: Any, tmp_path: Path) -> None:
    with run_server(_settings(tmp_path, max_active_jobs=1), server_vlm) as live:
        first = _submit(live, LONG, max_new_tokens=4).json()
        refused = _submit(live, SHORT)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_jobs"
        assert int(refused.headers["retry-after"]) >= 1
        assert "--max-active-jobs" in refused.json()["error"]["message"]
        assert httpx.delete(f"{live.url}/v1/jobs/{first['id']}", timeout=30).status_code == 200
        assert _submit(live, SHORT, max_new_tokens=2).status_code == 202

        missing = httpx.get(f"{live.url}/v1/jobs/job_0123456789abcdef", timeout=30)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "job_not_found"
        traversal = httpx.get(f"{live.url}/v1/jobs/..%2F..%2Fetc/result", timeout=30)
        assert traversal.status_code == 404
        unknown = _submit(live, SHORT, task="summarize")
        assert unknown.status_code == 400
        assert "ocr" in unknown.json()["error"]["message"]
        wrong_field = _submit(live, SHORT, colour="red")
        assert wrong_field.status_code == 422
        no_image = httpx.post(f"{live.url}/v1/jobs", json={"task": "ocr"}, timeout=30)
        assert no_image.status_code == 400
        assert "one document" in no_image.json()["error"]["message"]


def test_the_openapi_document_describes_the_job_routes(live: LiveServer) -> None:
    schema = httpx.get(f"{live.url}/openapi.json", timeout=30).json()
    paths = schema["paths"]
    assert set(paths["/v1/jobs"]) == {"get", "post"}
    assert set(paths["/v1/jobs/{job_id}"]) == {"get", "delete"}
    assert "get" in paths["/v1/jobs/{job_id}/result"]
    submit = paths["/v1/jobs"]["post"]
    refs = [
        s["$ref"] for s in submit["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    ]
    assert "#/components/schemas/OcrJobRequest" in refs
    assert "409" in paths["/v1/jobs/{job_id}"]["delete"]["responses"]
    components = schema["components"]["schemas"]
    assert components["OcrJobRequest"]["properties"]["task"]["const"] == "ocr"
    assert "pages_done" in components["JobInfo"]["properties"]
    assert "JobResult" in components


def test_a_restart_fails_a_job_the_new_model_cannot_run_and_skips_a_damaged_one(
    server_vlm: Any, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    with run_server(settings, server_vlm) as live:
        job = _submit(live, LONG, max_new_tokens=4).json()
        _wait_for(live, job["id"], lambda s: s["pages_done"] >= 1)
        live.stop()
    stored = tmp_path / job["id"] / "job.json"
    data = json.loads(stored.read_text())
    data["info"]["task"] = "to_html"  # as if a WebSight server had taken it
    stored.write_text(json.dumps(data))
    damaged = tmp_path / "job_00000000000000ff"
    damaged.mkdir()
    (damaged / "job.json").write_text("{not json")
    with run_server(settings, server_vlm) as live:

        def status() -> Any:
            return httpx.get(f"{live.url}/v1/jobs/{job['id']}", timeout=30).json()

        wait_until(lambda: status()["status"] == "failed", timeout=60, what="the failure")
        response = status()
        assert response["error"]["code"] == "unsupported_task"
        assert "ocr" in response["error"]["message"]
        assert [j["id"] for j in httpx.get(f"{live.url}/v1/jobs", timeout=30).json()] == [job["id"]]
