"""Jobs for long documents: submit, poll, fetch partial results, cancel; kept on disk.

``POST /v1/jobs`` takes the body of any task route (``/v1/ocr`` ...) plus ``"task"``, stores the
document and answers 202 at once with the job's status. The job reads the selected pages in
the background, ``job_concurrency`` at a time (jobs run one after another, and leave the rest of
the model's batch to interactive requests). ``GET /v1/jobs/{id}`` reports per-page progress,
``GET /v1/jobs/{id}/result`` the pages finished so far (``complete`` once the job has ended),
``DELETE /v1/jobs/{id}`` cancels it (the pages done stay readable).

Each job is a directory under ``jobs_dir``: ``job.json`` (the request and the status, replaced
atomically), ``input`` (the document, removed when the job ends) and ``pages.jsonl`` (one line
per finished page, appended as it finishes). When the server starts it reads them back: finished
jobs are served as they were, and jobs that were queued or running when the server stopped are
**resumed**: they read only the pages not in ``pages.jsonl`` (``restarts`` counts how often).

Bounds: at most ``max_active_jobs`` queued or running (more get 429 ``too_many_jobs`` with
``Retry-After``); at most ``max_jobs`` kept (the oldest finished ones are dropped to make room);
at most ``job_max_pages`` pages per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from mississippi_tools.batch import NamedSource, PageOutcome
from mississippi_tools.errors import InvalidInputError, MississippiError, Remedy
from mississippi_tools.server.auth import require_api_key, service_state
from mississippi_tools.server.errors import (
    ERROR_RESPONSES,
    ErrorResponse,
    JobFinishedError,
    JobNotFoundError,
    TooManyJobsError,
)
from mississippi_tools.server.inputs import request_bytes
from mississippi_tools.server.state import ServiceState
from mississippi_tools.server.tasks import (
    TaskRequest,
    job_arguments,
    parse_task_body,
    request_model,
)
from mississippi_tools.tasks.catalogue import TaskSpec

__all__ = [
    "JobInfo",
    "JobManager",
    "JobPage",
    "JobResult",
    "JobState",
    "build_jobs_router",
]

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
"""Where a job is: waiting, reading pages, done, stopped by an error, or cancelled."""

_FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
_ID = re.compile(r"^job_[0-9a-f]{16}$")
#: Seconds suggested in ``Retry-After`` when too many jobs are active.
_JOBS_RETRY_AFTER = 30.0
#: Seconds between checks while a job waits for the model to load.
_LOAD_POLL = 0.2


class JobError(BaseModel):
    """Why a job or a page failed."""

    code: str
    """The error's stable code."""
    message: str
    """What was wrong and what to do."""


class JobPage(BaseModel):
    """One finished page of a job: its result, or why it failed."""

    page: int | None
    """The 1-based page (``None`` for a single image, or for a task that reads the pages
    together)."""
    result: dict[str, Any] | None = None
    """The task's result for the page (the same shape as the task route's)."""
    error: JobError | None = None
    """Why the page failed."""


class JobInfo(BaseModel):
    """A job's status: what it reads, where it is, how many pages are done."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The job's id (``job_`` and 16 hex digits)."""
    task: str
    """The catalogue task (``ocr``, ``extract`` ...)."""
    source: str
    """The document's name (an upload's file name, ``base64``, a URL)."""
    status: JobState
    """``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
    created_at: float
    """When it was submitted (Unix time)."""
    started_at: float | None = None
    """When it last started running."""
    finished_at: float | None = None
    """When it ended."""
    pages_total: int | None = None
    """Pages it reads (known once the document has been opened)."""
    pages_done: int = 0
    """Pages finished, failed ones included."""
    pages_failed: int = 0
    """Pages that failed (their errors are in the result)."""
    restarts: int = 0
    """How often it was resumed after the server restarted."""
    error: JobError | None = None
    """Why the whole job failed (an unreadable document, the model could not be loaded)."""

    @property
    def finished(self) -> bool:
        """Whether the job has ended."""
        return self.status in _FINISHED


class JobResult(BaseModel):
    """The pages a job has finished, in page order; all of them once ``complete``."""

    id: str
    """The job's id."""
    task: str
    """The catalogue task."""
    status: JobState
    """The job's status when this was read."""
    complete: bool
    """Whether the job has ended (no more pages will come)."""
    pages_total: int | None
    """Pages it reads, when known."""
    pages: list[JobPage]
    """The finished pages, in page order."""
    error: JobError | None = None
    """Why the whole job failed."""


@dataclass
class _Job:
    info: JobInfo
    request: dict[str, Any]
    directory: Path
    pages: dict[int | None, JobPage] = field(default_factory=dict)
    runner: asyncio.Task[None] | None = None

    def save(self) -> None:
        _write_json(self.directory / "job.json", {"info": self.info.model_dump(), **self.request})

    def record(self, page: JobPage) -> None:
        with (self.directory / "pages.jsonl").open("a", encoding="utf-8") as out:
            out.write(page.model_dump_json() + "\n")
            out.flush()
        self.pages[page.page] = page
        self.info.pages_done = len(self.pages)
        self.info.pages_failed = sum(p.error is not None for p in self.pages.values())
        self.save()

    def result(self) -> JobResult:
        ordered = sorted(self.pages.values(), key=lambda p: -1 if p.page is None else p.page)
        return JobResult(
            id=self.info.id,
            task=self.info.task,
            status=self.info.status,
            complete=self.info.finished,
            pages_total=self.info.pages_total,
            pages=ordered,
            error=self.info.error,
        )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (a crash leaves the old file or the new one, never half)."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, path)


def _error(error: BaseException) -> JobError:
    if isinstance(error, MississippiError):
        return JobError(code=error.code, message=error.message)
    return JobError(code="internal_error", message="internal error; see the server log")


class JobManager:
    """The service's jobs: the ones on disk, the queue, and the one worker that runs them.

    Args:
        state: The service's state (model, settings, limits, policy).
        specs: The tasks jobs may run (the served model's).
    """

    def __init__(self, state: ServiceState, specs: Sequence[TaskSpec[Any, Any]]) -> None:
        self.state = state
        self.settings = state.settings
        self.directory = state.settings.jobs_directory
        self.specs = {spec.name: spec for spec in specs}
        self.jobs: dict[str, _Job] = {}
        self._queue: asyncio.Queue[str] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the jobs on disk, queue the unfinished ones again, and start the worker."""
        self._queue = asyncio.Queue()
        resumed = await asyncio.to_thread(self._load_all)
        for job in resumed:
            self._queue.put_nowait(job.info.id)
        if resumed:
            logger.info("resuming %d unfinished job(s) from %s", len(resumed), self.directory)
        self._worker = asyncio.ensure_future(self._work())

    async def stop(self) -> None:
        """Stop the worker; a running job stays ``running`` on disk and resumes on restart."""
        self._stopping = True
        tasks = [t for t in (self._worker, *(j.runner for j in self.jobs.values())) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _load_all(self) -> list[_Job]:
        if not self.directory.is_dir():
            return []
        resumed: list[_Job] = []
        for path in sorted(self.directory.iterdir()):
            if not _ID.match(path.name) or not (path / "job.json").is_file():
                continue
            try:
                job = self._load(path)
            except (OSError, ValueError) as e:  # a damaged job: skipped, the others load
                logger.warning("skipping the job in %s: %s", path, e)
                continue
            self.jobs[job.info.id] = job
            if not job.info.finished:
                job.info.status = "queued"
                job.info.restarts += 1
                job.save()
                resumed.append(job)
        resumed.sort(key=lambda job: job.info.created_at)
        return resumed

    @staticmethod
    def _load(path: Path) -> _Job:
        data = json.loads((path / "job.json").read_text(encoding="utf-8"))
        info = JobInfo.model_validate(data.pop("info"))
        job = _Job(info=info, request=data, directory=path)
        pages = path / "pages.jsonl"
        if pages.is_file():
            for line in pages.read_text(encoding="utf-8").splitlines():
                try:
                    page = JobPage.model_validate_json(line)
                except ValueError:  # the line being written when the server stopped
                    continue
                job.pages[page.page] = page
        info.pages_done = len(job.pages)
        info.pages_failed = sum(p.error is not None for p in job.pages.values())
        return job

    # -- requests -----------------------------------------------------------------------------

    def get(self, job_id: str) -> _Job:
        """The job with this id.

        Raises:
            JobNotFoundError: No such job.
        """
        job = self.jobs.get(job_id) if _ID.match(job_id) else None
        if job is None:
            raise JobNotFoundError(
                f"no job {job_id!r} on this server; it was never submitted, or was dropped to "
                f"make room (the server keeps {self.settings.max_jobs} jobs); GET /v1/jobs lists "
                "them"
            )
        return job

    async def submit(self, task: str, body: TaskRequest, data: bytes, source: str) -> JobInfo:
        """Store a new job and queue it.

        Raises:
            TooManyJobsError: ``max_active_jobs`` jobs are queued or running already.
        """
        active = sum(not job.info.finished for job in self.jobs.values())
        if active >= self.settings.max_active_jobs:
            raise TooManyJobsError(
                f"{active} jobs are queued or running and this server takes at most "
                f"{self.settings.max_active_jobs} (--max-active-jobs); retry later, or cancel one "
                "with DELETE /v1/jobs/{id}",
                retry_after=_JOBS_RETRY_AFTER,
            )
        job_id = "job_" + secrets.token_hex(8)
        info = JobInfo(id=job_id, task=task, source=source, status="queued", created_at=time.time())
        request = {
            "body": body.model_dump(mode="json", exclude_unset=True, exclude={"image", "task"})
        }
        job = _Job(info=info, request=request, directory=self.directory / job_id)
        await asyncio.to_thread(self._store, job, data)
        self.jobs[job_id] = job
        assert self._queue is not None, "the job manager was not started"
        self._queue.put_nowait(job_id)
        return info

    def _store(self, job: _Job, data: bytes) -> None:
        self._make_room()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        job.directory.mkdir(mode=0o700)
        (job.directory / "input").write_bytes(data)
        job.save()

    def _make_room(self) -> None:
        finished = sorted(
            (job for job in self.jobs.values() if job.info.finished),
            key=lambda job: job.info.finished_at or job.info.created_at,
        )
        while len(self.jobs) >= self.settings.max_jobs and finished:
            oldest = finished.pop(0)
            del self.jobs[oldest.info.id]
            shutil.rmtree(oldest.directory, ignore_errors=True)

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job; the pages it finished stay readable.

        Raises:
            JobNotFoundError: No such job.
            JobFinishedError: The job has already ended.
        """
        job = self.get(job_id)
        if job.info.finished:
            raise JobFinishedError(
                f"job {job_id} has already ended ({job.info.status}); nothing to cancel; "
                f"GET /v1/jobs/{job_id}/result has its pages"
            )
        self._finish(job, "cancelled")
        if job.runner is not None:
            job.runner.cancel()
        return job.info

    # -- running ------------------------------------------------------------------------------

    def _finish(self, job: _Job, status: JobState, error: JobError | None = None) -> None:
        job.info.status = status
        job.info.error = error
        job.info.finished_at = time.time()
        job.save()
        with contextlib.suppress(OSError):
            (job.directory / "input").unlink()

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = self.jobs.get(await self._queue.get())
            if job is None or job.info.finished:
                continue
            job.runner = asyncio.ensure_future(self._run(job))
            try:
                await asyncio.shield(job.runner)
            except asyncio.CancelledError:
                if self._stopping:
                    raise
            except Exception:  # _run reports its own failures; this is a bug
                logger.exception("job %s crashed", job.info.id)
            finally:
                job.runner = None

    async def _run(self, job: _Job) -> None:
        spec = self.specs.get(job.info.task)
        if spec is None:  # kept from a server that served another model
            message = (
                f"the served model cannot run {job.info.task!r} (this job was submitted to a "
                f"server with another model); its tasks are: {', '.join(self.specs)}"
            )
            self._finish(job, "failed", JobError(code="unsupported_task", message=message))
            return
        job.info.status = "running"
        job.info.started_at = time.time()
        job.save()
        try:
            with self.state.activity.use():
                await self._read_pages(job, spec)
            if job.info.finished:  # cancelled while its last page was being recorded
                return
        except asyncio.CancelledError:
            raise  # cancelled by DELETE (already marked) or by shutdown (resumed later)
        except MississippiError as e:
            self._finish(job, "failed", _error(e))
            return
        except Exception as e:
            logger.exception("job %s failed", job.info.id)
            self._finish(job, "failed", _error(e))
            return
        self._finish(job, "succeeded")

    async def _model(self) -> Any:
        while self.state.phase == "loading" and not (
            self.state.loader and self.state.loader.unloads
        ):
            await asyncio.sleep(_LOAD_POLL)
        return await self.state.acquire_vlm()

    async def _read_pages(self, job: _Job, spec: TaskSpec[Any, Any]) -> None:
        model = request_model(spec)
        body = model.model_validate(job.request["body"])
        data = await asyncio.to_thread((job.directory / "input").read_bytes)
        vlm = await self._model()
        reader = vlm.with_policy(self.state.policy, limits=self.state.limits)
        settings, arguments = job_arguments(spec, body, self.state)
        source = NamedSource(job.info.source, data)
        if spec.images == "document":  # the selected pages together: one result
            job.info.pages_total = 1
            pages = body.pages if body.pages is not None else body.page
            result = await reader.arun(
                spec.name,
                source,
                pages=pages,
                max_pages=self.settings.job_max_pages,
                **settings,
                **arguments,
            )
            job.record(JobPage(page=None, result=result.model_dump(mode="json")))
            return
        selection = await asyncio.to_thread(self._selection, body, data, job.info.source)
        job.info.pages_total = len(selection) if selection is not None else 1
        remaining = None if selection is None else [p for p in selection if p not in job.pages]
        if remaining == [] or (remaining is None and None in job.pages):
            return
        job.save()
        outcome: PageOutcome[Any]
        async for outcome in reader.aiter_batch(
            spec.name,
            [source],
            pages=remaining,
            max_pages=0,
            concurrency=self.settings.job_concurrency,
            **settings,
            **arguments,
        ):
            if outcome.error is not None and not outcome.opened:
                raise outcome.error
            page = outcome.as_json()
            job.record(JobPage.model_validate(page))

    def _selection(self, body: TaskRequest, data: bytes, name: str) -> list[int] | None:
        """The pages to read, or ``None`` for a single image (a document of one page)."""
        from mississippi_tools.images import count_pages
        from mississippi_tools.pdf import parse_page_selection

        count = count_pages(data, limits=self.state.limits, policy=self.state.policy)
        chosen: Any = body.pages if body.pages is not None else body.page
        if count <= 1 and chosen is None:
            return None
        selected = parse_page_selection(
            str(chosen) if isinstance(chosen, int) else chosen or "1-", count, what=name
        )
        limit = self.settings.job_max_pages
        if limit and len(selected) > limit:
            raise InvalidInputError(
                f"{name} has {len(selected)} pages to read and a job reads at most {limit}; "
                f"choose pages 1-{limit} (then the rest), or start the server with a larger "
                "--job-max-pages",
                remedy=Remedy("max_pages", str(len(selected))),
            )
        return selected


# -- routes -----------------------------------------------------------------------------------


def job_request_models(specs: Sequence[TaskSpec[Any, Any]]) -> dict[str, type[TaskRequest]]:
    """The body of ``POST /v1/jobs`` for each task: the task route's fields plus ``task``."""
    models: dict[str, type[TaskRequest]] = {}
    for spec in specs:
        base = request_model(spec)
        fields: dict[str, Any] = {
            "task": (Literal[spec.name], Field(description="The catalogue task to run.")),
        }
        models[spec.name] = create_model(
            base.__name__.removesuffix("Request") + "JobRequest",
            __base__=base,
            __doc__=f"A job of {spec.name}: {spec.title}",
            **fields,
        )
    return models


def _manager(request: Request) -> JobManager:
    manager = request.app.state.jobs
    assert isinstance(manager, JobManager)
    return manager


async def _task_of(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        task = form.get("task")
    else:
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            payload = {}  # parse_task_body says what is wrong with it
        task = payload.get("task") if isinstance(payload, dict) else None
    return task if isinstance(task, str) else ""


def build_jobs_router(
    specs: Sequence[TaskSpec[Any, Any]],
) -> tuple[APIRouter, list[type[BaseModel]]]:
    """The ``/v1/jobs`` routes for the served tasks, and the models to document."""
    router = APIRouter(dependencies=[Depends(require_api_key)], tags=["Jobs"])
    models = job_request_models(specs)
    names = ", ".join(models)

    async def submit(
        request: Request, manager: Annotated[JobManager, Depends(_manager)]
    ) -> JSONResponse:
        """Submit a task over a long document; answers 202 with the job's status at once.

        The body is a task route's body plus ``task``: JSON, or multipart/form-data with the
        document as the ``image`` file.
        """
        state = service_state(request)
        state.require_open()
        task = await _task_of(request)
        model = models.get(task)
        if model is None:
            raise InvalidInputError(
                f"task {task!r} is not one this server runs as a job; set task to one of: {names}"
            )
        body, sources = await parse_task_body(request, model, state)
        if len(sources) != 1:
            raise InvalidInputError(
                f"a job reads one document; send 'image' once (got {len(sources)})"
            )
        data, name = await request_bytes(sources[0], state)
        info = await manager.submit(task, body, data, name)
        return JSONResponse(
            info.model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/jobs/{info.id}"},
        )

    async def list_jobs(manager: Annotated[JobManager, Depends(_manager)]) -> list[JobInfo]:
        """Every job kept, newest first."""
        infos = [job.info for job in manager.jobs.values()]
        return sorted(infos, key=lambda info: -info.created_at)

    async def status(job_id: str, manager: Annotated[JobManager, Depends(_manager)]) -> JobInfo:
        """The job's status and per-page progress."""
        return manager.get(job_id).info

    async def result(job_id: str, manager: Annotated[JobManager, Depends(_manager)]) -> JobResult:
        """The pages finished so far, in page order (all of them once ``complete``)."""
        return manager.get(job_id).result()

    async def cancel(job_id: str, manager: Annotated[JobManager, Depends(_manager)]) -> JobInfo:
        """Cancel a queued or running job; the pages it finished stay readable.

        409 when the job has already ended.
        """
        return manager.cancel(job_id)

    not_found: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorResponse, "description": "No such job"}
    }
    body_schema = {
        "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models.values()],
        "discriminator": {"propertyName": "task"},
    }
    router.add_api_route(
        "/v1/jobs",
        submit,
        methods=["POST"],
        summary="Submit a job",
        status_code=202,
        responses={
            **ERROR_RESPONSES,
            202: {
                "description": "The job was queued.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/JobInfo"}}
                },
            },
        },  # type: ignore[dict-item]
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": body_schema},
                    "multipart/form-data": {"schema": body_schema},
                },
            }
        },
    )
    router.add_api_route("/v1/jobs", list_jobs, methods=["GET"], summary="List jobs")
    router.add_api_route(
        "/v1/jobs/{job_id}", status, methods=["GET"], summary="Job status", responses=not_found
    )
    router.add_api_route(
        "/v1/jobs/{job_id}/result",
        result,
        methods=["GET"],
        summary="Job result (partial until complete)",
        responses=not_found,
    )
    router.add_api_route(
        "/v1/jobs/{job_id}",
        cancel,
        methods=["DELETE"],
        summary="Cancel a job",
        responses={
            **not_found,
            409: {"model": ErrorResponse, "description": "The job has already ended"},
        },
    )
    return router, [*models.values(), JobInfo]
