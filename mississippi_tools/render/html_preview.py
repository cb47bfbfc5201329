"""Render model-written HTML to a PNG in headless Chromium, with scripts and network off.

The HTML is untrusted: a model wrote it from a screenshot. The service never executes it; this
renders it on request, so a person can hold the picture beside the screenshot. The page is a copy
of the HTML in a fresh temporary directory, opened as ``file://`` by a headless Chromium with a
fresh profile, and:

* no script runs: the copy starts with a Content-Security-Policy (``script-src 'none'``), which
  the browser applies to every script of the page, inline or linked. (Chromium's
  ``--blink-settings=scriptEnabled=false`` would also do it, but with it Chromium 156's headless
  ``--screenshot`` writes no picture at all.)
* nothing is fetched: the same policy allows no source but inline styles and ``data:`` images and
  fonts (no ``http(s)``, no other ``file://`` path, no frames); ``<meta http-equiv="refresh">``
  is disabled in the copy; and the browser itself routes every request, loopback included, to a
  proxy port where nothing listens, resolves no host name, and runs no background networking,
  component updates, sync or QUIC.

So pages that link a stylesheet from a CDN (the WebSight data links Tailwind CSS) render without
it. Chromium is Debian's ``chromium`` package (or ``MISSISSIPPI_CHROMIUM``); nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from mississippi_tools.errors import PreviewError

__all__ = [
    "CHROMIUM_ENV",
    "CONTENT_SECURITY_POLICY",
    "find_chromium",
    "preview_document",
    "render_html_preview",
]

#: Environment variable naming the Chromium binary to use.
CHROMIUM_ENV = "MISSISSIPPI_CHROMIUM"

#: The policy the rendered copy starts with: inline styles and data: images/fonts, nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "font-src data:; frame-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"
)

_REFRESH = re.compile(r"http-equiv\s*=\s*([\"']?)\s*refresh\s*\1", re.IGNORECASE)
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The Chromium binary: ``MISSISSIPPI_CHROMIUM``, else the first on ``PATH``."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return configured if shutil.which(configured) else None
    return next((found for name in _CANDIDATES if (found := shutil.which(name))), None)


def preview_document(html: str) -> str:
    """The copy of ``html`` that is rendered: the policy first, meta refreshes disabled."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
    return meta + "\n" + _REFRESH.sub('http-equiv="x-refresh-disabled"', html)


def render_html_preview(
    html: str,
    output: str | os.PathLike[str],
    *,
    width: int = 1280,
    height: int = 960,
    timeout: float = 60.0,
) -> Path:
    """Render ``html`` into a PNG of ``width`` x ``height`` pixels (the browser's viewport).

    Args:
        html: The HTML document, as the model wrote it.
        output: Where to write the PNG (parent directories are created).
        width: Viewport width in CSS pixels.
        height: Viewport height in CSS pixels.
        timeout: Seconds before the browser is stopped and :class:`PreviewError` raised.

    Returns:
        The PNG's path.

    Raises:
        PreviewError: No Chromium is installed, or the browser failed, timed out, or wrote no
            picture.
        InvalidInputError: A size outside 16..8192 pixels.
    """
    from mississippi_tools.errors import InvalidInputError

    for name, value in (("width", width), ("height", height)):
        if not 16 <= value <= 8192:
            raise InvalidInputError(f"preview {name} must be 16..8192 pixels, got {value}")
    binary = find_chromium()
    if binary is None:
        raise PreviewError(
            "rendering an HTML preview needs Chromium, and none was found (set "
            f"{CHROMIUM_ENV} or install Debian's package: apt-get install chromium)"
        )
    target = Path(output).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mississippi-preview-") as scratch:
        page = Path(scratch) / "page.html"
        page.write_text(preview_document(html), encoding="utf-8")
        shot = Path(scratch) / "shot.png"
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-quic",
            f"--user-data-dir={Path(scratch) / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={shot}",
            page.as_uri(),
        ]
        _run(command, timeout)
        if not shot.is_file() or shot.stat().st_size == 0:
            raise PreviewError(f"Chromium ({binary}) exited without writing the preview picture")
        shutil.move(str(shot), target)
    return target


def _run(command: list[str], timeout: float) -> None:
    """Run the browser in its own process group; kill the whole group on timeout."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise PreviewError(
            f"Chromium did not render the preview within {timeout:g} s; pass a larger timeout"
        ) from None
    finally:
        if process.poll() is None:  # pragma: no cover - interrupted while waiting
            os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0:
        lines = [
            line
            for line in stderr.decode("utf-8", "replace").splitlines()
            if "dbus" not in line and line.strip()
        ]
        raise PreviewError(
            f"Chromium failed to render the preview (exit code {process.returncode}): "
            + (lines[-1] if lines else "no message")
        )
