"""The to_html task: catalogue, API on a tiny WebSight checkpoint, save, and the preview."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image, ImageDraw

from mississippi_tools import MississippiVLM
from mississippi_tools.errors import PreviewError, UnsupportedTaskError
from mississippi_tools.render.html_preview import find_chromium, preview_document
from mississippi_tools.tasks.catalogue import get_task, tasks_for
from mississippi_tools.tasks.html import HTMLResult, write_html_outputs
from mississippi_tools.tasks.results import ResultMetadata

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium); CI installs it",
)


@pytest.fixture(scope="module")
def websight_vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MississippiVLM]:
    from mississippi_tools.models.websight.testing import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp("html") / "tiny-websight")
    vlm = MississippiVLM.load(checkpoint, device="cpu", dtype="float32")
    yield vlm
    vlm.close()


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shots") / "shot.png"
    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 320, 40), fill="navy")
    draw.rectangle((20, 80, 200, 120), fill="orange")
    image.save(path)
    return path


def _meta() -> ResultMetadata:
    return ResultMetadata(model="m", engine="local")


def test_catalogue_offers_to_html_only_to_websight(websight_vlm: MississippiVLM, tiny_vlm) -> None:  # type: ignore[no-untyped-def]
    spec = get_task("to_html")
    assert spec.families == frozenset({"websight"})
    assert [t.name for t in tasks_for(websight_vlm.model_info)] == ["to_html"]
    assert "to_html" not in [t.name for t in tasks_for(tiny_vlm.model_info)]
    with pytest.raises(UnsupportedTaskError, match="HuggingFaceM4/VLM_WebSight_finetuned"):
        tiny_vlm.to_html(Image.new("RGB", (8, 8)))
    with pytest.raises(UnsupportedTaskError, match="only turn screenshots into HTML"):
        websight_vlm.ocr(Image.new("RGB", (8, 8)))


def test_to_html_through_the_api(websight_vlm: MississippiVLM, shot: Path, tmp_path: Path) -> None:
    result = websight_vlm.to_html(shot, max_new_tokens=12)
    assert isinstance(result, HTMLResult)
    assert result.meta.new_tokens == 12
    assert result.meta.prompt_tokens == 67  # <s>, <fake>, 64 x <image>, <fake>
    assert result.meta.finish_reason == "length"
    assert result.screenshot_size == (320, 240)
    assert result.html
    assert str(result) == result.html
    same = websight_vlm.run("to_html", shot, max_new_tokens=12)
    assert same.html == result.html
    saved = result.save(tmp_path / "out" / "page.html")
    assert saved.read_text(encoding="utf-8") == result.html
    assert "cut at the token limit" in get_task("to_html").render(result)
    batch = websight_vlm.to_html_batch([shot, shot], max_new_tokens=12)
    assert [r.html for r in batch] == [result.html, result.html]
    again = asyncio.run(websight_vlm.ato_html(shot, max_new_tokens=12))
    assert again.html == result.html
    json_round_trip = HTMLResult.model_validate(result.model_dump(mode="json"))
    assert json_round_trip == result


def test_save_keeps_the_html_as_generated(tmp_path: Path) -> None:
    html = '<html><script>alert("x")</script>\n<meta http-equiv="refresh" content="0">é</html>'
    result = HTMLResult(html=html, meta=_meta())
    assert result.save(tmp_path / "p.html").read_bytes() == html.encode("utf-8")
    rendered = preview_document(html)
    assert rendered.startswith('<meta http-equiv="Content-Security-Policy"')
    assert "script-src 'none'" in rendered
    assert 'http-equiv="refresh"' not in rendered


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"body{background:#00ff00}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[tuple[str, list[str]]]:
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _colours(path: Path) -> set[tuple[int, int, int]]:
    with Image.open(path) as image:
        return {c for _, c in image.convert("RGB").getcolors(1 << 20) or []}


@needs_chromium
def test_preview_runs_no_script_and_fetches_nothing(
    tmp_path: Path, local_server: tuple[str, list[str]]
) -> None:
    base, requests = local_server
    # The server is real and reachable: a direct request is recorded.
    import urllib.request

    with urllib.request.urlopen(f"{base}/probe", timeout=10) as response:
        assert response.status == 200
    assert requests == ["/probe"]
    html = f"""<html><head>
<link rel="stylesheet" href="{base}/style.css">
<meta http-equiv="refresh" content="0; url={base}/refresh">
</head><body style="background:#ffffff;margin:0">
<div id="box" style="width:200px;height:100px;background:#ff0000"></div>
<script>document.body.style.background = '#00ff00';
document.getElementById('box').style.background = '#0000ff';</script>
<script src="{base}/script.js"></script>
<img src="{base}/pixel.png" width="50" height="50">
<img src="http://example.com/remote.png" width="50" height="50">
<iframe src="file:///etc/hostname"></iframe>
</body></html>"""
    result = HTMLResult(html=html, screenshot_size=(400, 300), meta=_meta())
    picture = result.preview(tmp_path / "preview.png", timeout=120)
    with Image.open(picture) as image:
        assert image.size == (400, 300)
    colours = _colours(picture)
    assert (255, 0, 0) in colours  # the static page is drawn
    assert (0, 255, 0) not in colours  # the script that would turn the page green did not run
    assert (0, 0, 255) not in colours  # nor the one that would turn the box blue
    assert requests == ["/probe"]  # no stylesheet, script, image or refresh was fetched


@needs_chromium
def test_preview_of_a_model_answer_and_the_cli_outputs(
    websight_vlm: MississippiVLM, shot: Path, tmp_path: Path
) -> None:
    result = websight_vlm.to_html(shot, max_new_tokens=8)
    notes = write_html_outputs(
        result, output=tmp_path / "page.html", preview=tmp_path / "preview.png"
    )
    assert (tmp_path / "page.html").read_text(encoding="utf-8") == result.html
    with Image.open(tmp_path / "preview.png") as image:
        assert image.size == (320, 240)  # the screenshot's size, to hold beside it
    assert notes == [
        f"HTML written to {tmp_path / 'page.html'}",
        f"preview written to {tmp_path / 'preview.png'}",
    ]


def test_preview_without_chromium_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MISSISSIPPI_CHROMIUM", str(tmp_path / "no-such-browser"))
    result = HTMLResult(html="<p>x</p>", meta=_meta())
    with pytest.raises(PreviewError, match="apt-get install chromium"):
        result.preview(tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
