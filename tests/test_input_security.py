"""No surface returns a byte of a file that is not an image; agent tools default to the cwd.

Issue 12.4: a decode error used to quote the first bytes of any non-image file, so an agent
tricked into naming ``/etc/passwd`` or a credentials file got its contents back. Here each
surface (Python API, CLI, HTTP task route, LangChain tool, LlamaIndex tool, MCP tool through the
real SDK client) reads a fake credentials file, a JSON file, a binary file and a text file that
starts like a BMP, and nothing the caller gets back (error text, structured content, logs)
holds the secret marker or the files' first bytes.
"""

from __future__ import annotations

import base64
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from langchain_mississippi import MississippiOCRTool, MississippiToolkit
from llama_index.tools.mississippi import MississippiToolSpec
from mississippi_tools import sources
from mississippi_tools.errors import MississippiError
from mississippi_tools.sources import SourcePolicy, UnrestrictedPathsWarning, agent_policy
from mississippi_tools.vlm import MississippiVLM
from tests.mcp.conftest import make_server
from tests.mcp.support import text_of
from tests.server.live import quiet_settings, run_server
from tests.test_cli import on_model

MARKER = "zq7Xv91f3SECRET"
SECRETS: dict[str, bytes] = {
    "credentials": (
        f"[default]\naws_access_key_id = AKIA{MARKER}\naws_secret_access_key = {MARKER}/k\n"
    ).encode(),
    "token.json": f'{{"token": "{MARKER}", "user": "root"}}\n'.encode(),
    "blob.bin": b"\x00\x13\x37\xfe" + MARKER.encode() + bytes(range(256)),
    "bmw.txt": f"BMW service log\nowner key: {MARKER}\n".encode(),  # starts like a BMP
}


def leaks(text: str, data: bytes) -> list[str]:
    """What of ``data`` appears in ``text``: the marker, its first bytes, as text or hex."""
    found = []
    head = data[:8]
    candidates = {
        MARKER: "the marker",
        head.decode("latin-1"): "the first bytes",
        head.hex(): "the first bytes in hex",
        head.hex(" "): "the first bytes in spaced hex",
        repr(head)[2:-1]: "the first bytes as a bytes literal",
    }
    for needle, what in candidates.items():
        if len(needle.strip()) >= 4 and needle in text:
            found.append(what)
    return found


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    for name, data in SECRETS.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_leak(name: str, *texts: str) -> None:
    for text in texts:
        assert not leaks(text, SECRETS[name]), (name, leaks(text, SECRETS[name]), text)


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_python_api(
    tiny_vlm: MississippiVLM, secrets_dir: Path, logs: pytest.LogCaptureFixture, name: str
) -> None:
    path = secrets_dir / name
    inline = base64.b64encode(SECRETS[name]).decode()
    for image in (str(path), path, f"data:image/png;base64,{inline}", SECRETS[name]):
        with pytest.raises(MississippiError) as info:
            tiny_vlm.ocr(image, max_new_tokens=2)  # type: ignore[arg-type]
        error = info.value
        assert_no_leak(name, str(error), repr(error), repr(vars(error)), logs.text)


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_cli(tiny_checkpoint: Path, secrets_dir: Path, name: str) -> None:
    code, out, err = on_model(tiny_checkpoint, "ocr", str(secrets_dir / name), tokens=2)
    assert code != 0
    assert_no_leak(name, out, err)


def test_http_task_route(
    tiny_vlm: MississippiVLM, secrets_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    with run_server(quiet_settings(), tiny_vlm) as live:
        for name, data in SECRETS.items():
            inline = base64.b64encode(data).decode()
            for image in (inline, f"data:image/png;base64,{inline}", str(secrets_dir / name)):
                response = httpx.post(
                    f"{live.url}/v1/ocr", json={"image": image, "max_new_tokens": 2}, timeout=60
                )
                assert 400 <= response.status_code < 500, response.text
                assert_no_leak(name, response.text, logs.text)
            upload = httpx.post(
                f"{live.url}/v1/ocr",
                files={"image": (name, data, "application/octet-stream")},
                timeout=60,
            )
            assert 400 <= upload.status_code < 500, upload.text
            assert_no_leak(name, upload.text, logs.text)


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_langchain_tool(
    tiny_vlm: MississippiVLM, secrets_dir: Path, logs: pytest.LogCaptureFixture, name: str
) -> None:
    tool = MississippiOCRTool(vlm=tiny_vlm, allowed_roots=[secrets_dir], max_new_tokens=2)
    call = {"type": "tool_call", "id": "1", "name": tool.name, "args": {"image": name}}
    message = tool.invoke(call)
    assert message.status == "error"
    assert_no_leak(name, str(message.content), repr(message.artifact), logs.text)


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_llamaindex_tool(
    tiny_vlm: MississippiVLM, secrets_dir: Path, logs: pytest.LogCaptureFixture, name: str
) -> None:
    spec = MississippiToolSpec(tiny_vlm, policy=SourcePolicy(allowed_roots=(secrets_dir,)))
    tools = {tool.metadata.name: tool for tool in spec.to_tool_list()}
    with pytest.raises(MississippiError) as info:
        tools["ocr"].call(image=name)
    assert_no_leak(name, str(info.value), logs.text)


async def test_mcp_tool(
    tiny_vlm: MississippiVLM, secrets_dir: Path, logs: pytest.LogCaptureFixture
) -> None:
    server = make_server(tiny_vlm, allow_dirs=[secrets_dir])
    with anyio.fail_after(60):
        async with Client(server) as client:
            for name in SECRETS:
                result = await client.call_tool("ocr", {"image": str(secrets_dir / name)})
                assert result.is_error
                assert_no_leak(name, text_of(result), repr(result.structured_content), logs.text)
                inline = base64.b64encode(SECRETS[name]).decode()
                result = await client.call_tool("ocr", {"image": inline})
                assert result.is_error
                assert_no_leak(name, text_of(result), logs.text)
    # Without any allowed directory the server refuses paths before reading them.
    async with Client(make_server(tiny_vlm)) as client:
        result = await client.call_tool("ocr", {"image": str(secrets_dir / "credentials")})
    assert result.is_error
    assert_no_leak("credentials", text_of(result))


# --------------------------------------------------------------------------------------------
# The agent-facing default: the current directory only; unrestricted roots are warned about
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: the once-per-process warning not given yet."""
    monkeypatch.setattr(sources, "_unrestricted_warned", False)


def test_agent_policy_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert agent_policy(SourcePolicy()).allowed_roots == (tmp_path.resolve(),)
    assert agent_policy(None).allowed_roots == (tmp_path.resolve(),)
    given = SourcePolicy(allowed_roots=(tmp_path / "a",), allow_urls=True)
    assert agent_policy(given) == given
    assert agent_policy(SourcePolicy(allowed_roots=())).allowed_roots == ()
    narrowed = agent_policy(given, allowed_roots=[tmp_path / "b"])
    assert narrowed.allowed_roots == ((tmp_path / "b").resolve(),)
    assert narrowed.allow_urls


def test_agent_tools_without_roots_read_only_under_the_cwd(
    tiny_vlm: MississippiVLM, secrets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    secret = str(secrets_dir / "credentials")
    for tool in MississippiToolkit(vlm=tiny_vlm).get_tools():
        assert f"File paths must be inside {elsewhere.resolve()}" in tool.description
        message = tool.invoke(
            {"type": "tool_call", "id": "1", "name": tool.name, "args": _args(tool, secret)}
        )
        assert message.status == "error"
        assert str(message.content).startswith("access_denied: ")
    spec = MississippiToolSpec(tiny_vlm)
    assert spec.policy.allowed_roots == (elsewhere.resolve(),)
    with pytest.raises(PermissionError, match="outside the allowed roots"):
        spec.ocr(secret)


def _args(tool: Any, image: str) -> dict[str, Any]:
    extra = {
        "mississippi_ask": {"question": "?"},
        "mississippi_extract": {"json_schema": {"a": ""}},
        "mississippi_extract_document": {"json_schema": {"a": ""}},
    }
    return {"image": image, **extra.get(tool.name, {})}


@pytest.mark.usefixtures("fresh_warning")
def test_unrestricted_roots_warn_once_per_process(tiny_vlm: MississippiVLM) -> None:
    root = Path(os.sep)
    with pytest.warns(UnrestrictedPathsWarning, match="mississippi_ocr may read any file"):
        MississippiOCRTool(vlm=tiny_vlm, allowed_roots=[root])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MississippiToolkit(vlm=tiny_vlm, allowed_roots=[root]).get_tools()
        MississippiToolSpec(tiny_vlm, policy=SourcePolicy(allowed_roots=(root,)))
    assert [w for w in caught if issubclass(w.category, UnrestrictedPathsWarning)] == []


@pytest.mark.usefixtures("fresh_warning")
def test_the_llamaindex_spec_warns_about_unrestricted_roots(tiny_vlm: MississippiVLM) -> None:
    with pytest.warns(UnrestrictedPathsWarning, match="MississippiToolSpec"):
        MississippiToolSpec(tiny_vlm, policy=SourcePolicy(allowed_roots=(Path(os.sep),)))


@pytest.mark.usefixtures("fresh_warning")
def test_no_warning_for_confined_tools(tiny_vlm: MississippiVLM, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MississippiOCRTool(vlm=tiny_vlm, allowed_roots=[tmp_path])
        MississippiToolSpec(tiny_vlm)
    assert caught == []
