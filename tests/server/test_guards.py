"""Guards at start-up and at the door: unusable API keys, keys in URLs, and what serve says."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mississippi_tools.cli import ExitCode, app
from mississippi_tools.errors import ModelNotFoundError
from mississippi_tools.server import ServerSettings, create_app, serve
from mississippi_tools.server.auth import redact_credentials
from mississippi_tools.server.settings import InvalidAPIKeyError
from tests.server.live import quiet_settings, run_server
from tests.support import wait_until

runner = CliRunner()


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSISSIPPI_API_KEY", raising=False)


@contextmanager
def plain_logging() -> Iterator[None]:
    """Logging as in a fresh process: no root handlers (pytest's capture handler removed, inside
    the test's call), so a record nobody handles goes to stderr through logging's last resort."""
    handlers = logging.root.handlers[:]
    logging.root.handlers.clear()
    try:
        yield
    finally:
        logging.root.handlers[:] = handlers


# -- unusable keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "is blank"),
        ("   ", "is blank"),
        (" k3y", "whitespace"),
        ("k3y\n", "whitespace"),
        ("kéy", "printable ASCII"),
    ],
)
def test_unusable_keys_are_refused_naming_the_option(key: str, reason: str) -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        with pytest.raises(InvalidAPIKeyError, match=f"--api-key or MISSISSIPPI_API_KEY.*{reason}"):
            ServerSettings(host=host, api_key=key).check_bind()
    with pytest.raises(InvalidAPIKeyError):
        create_app(quiet_settings(api_key=key))


def test_an_empty_key_in_the_environment_does_not_open_a_public_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MISSISSIPPI_API_KEY", "")
    args = ["serve", "--host", "0.0.0.0", "--port", "0", "--model", str(tmp_path / "none")]
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.USAGE
    assert "the API key (--api-key or MISSISSIPPI_API_KEY) is blank" in result.stderr


def test_a_blank_key_option_is_a_usage_error(no_key_in_env: None, tmp_path: Path) -> None:
    args = ["serve", "--api-key", "   ", "--port", "0", "--model", str(tmp_path / "none")]
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.USAGE
    assert "is blank" in result.stderr


# -- keys in URLs -------------------------------------------------------------------------------


def test_a_key_in_the_query_string_is_refused_with_the_header_to_use(server_vlm) -> None:  # type: ignore[no-untyped-def]
    with run_server(quiet_settings(api_key="s3cret"), server_vlm) as live:
        for query in ("api_key=s3cret", "token=s3cret", "API_KEY=s3cret"):
            answer = httpx.get(f"{live.url}/v1/models?{query}")
            assert answer.status_code == 401
            message = answer.json()["error"]["message"]
            assert "not accepted in the URL" in message
            assert "Authorization: Bearer <key>" in message
        with_header = httpx.get(
            f"{live.url}/v1/models?api_key=s3cret", headers={"Authorization": "Bearer s3cret"}
        )
        assert with_header.status_code == 401  # the URL leaked it; the client must stop that
        assert (
            httpx.get(
                f"{live.url}/v1/models?limit=1", headers={"Authorization": "Bearer s3cret"}
            ).status_code
            == 200
        )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def access_log() -> Iterator[_Records]:
    """The lines of uvicorn's access log (add it after the server started: uvicorn's logging
    configuration replaces the logger's handlers)."""
    records = _Records()
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


def test_the_access_log_never_shows_a_key_from_the_url(server_vlm) -> None:  # type: ignore[no-untyped-def]
    settings = quiet_settings(api_key="s3cret", access_log=True, log_level="info")
    with run_server(settings, server_vlm) as live, access_log() as log:
        httpx.get(f"{live.url}/health?api_key=s3cret&verbose=1")
        httpx.get(f"{live.url}/v1/models?access_token=s3cret")
        wait_until(lambda: len(log.lines) >= 2, timeout=10, what="two access-log lines")
    health, models = log.lines[:2]
    assert '"GET /health?api_key=***&verbose=1 HTTP/1.1" 200' in health
    assert '"GET /v1/models?access_token=*** HTTP/1.1" 401' in models
    assert not any("s3cret" in line for line in log.lines)


def test_redaction_keeps_everything_but_the_values() -> None:
    assert redact_credentials("/v1/ocr") == "/v1/ocr"
    assert redact_credentials("/x?a=1&Api%5Fkey=k&b&key=") == "/x?a=1&Api%5Fkey=***&b&key=***"


# -- what serve says ------------------------------------------------------------------------------


def test_serve_says_what_loads_from_where_and_when_it_is_ready(
    server_vlm, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="mississippi_tools.server")
    caplog.set_level(logging.INFO, logger="mississippi_tools.serving")  # the shared loader
    settings = quiet_settings(model=str(tmp_path))
    with run_server(settings, vlm_factory=lambda s: server_vlm, close_vlm=False) as live:
        wait_until(lambda: live.state.phase == "ready", timeout=30, what="the model ready")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("mississippi_tools")]
    assert any(
        f"loading model {tmp_path} from a local directory, device auto, dtype auto;" in m
        for m in messages
    )
    assert any(" ready in " in m and "s (cpu, float32); serving" in m for m in messages)


def test_an_expected_load_failure_ends_serve_with_one_line(
    capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def missing(settings: ServerSettings) -> None:
        raise ModelNotFoundError(f"{settings.model} is neither a checkpoint directory nor ...")

    settings = quiet_settings(model=str(tmp_path / "none"), log_level="info")
    with plain_logging(), pytest.raises(ModelNotFoundError):
        serve(settings, vlm_factory=missing)  # type: ignore[arg-type]
    err = capfd.readouterr().err
    assert f"loading model {tmp_path / 'none'}" in err
    assert "Traceback" not in err
    assert "neither a checkpoint" not in err  # the caller reports it, once


def test_the_serve_command_reports_a_missing_model_without_a_traceback(
    no_key_in_env: None, tmp_path: Path
) -> None:
    with plain_logging():
        result = runner.invoke(app, ["serve", "--port", "0", "--model", str(tmp_path / "none")])
    assert result.exit_code == ExitCode.MODEL
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and "is neither a checkpoint directory" in lines[-1]
    assert sum("neither a checkpoint directory" in line for line in lines) == 1
