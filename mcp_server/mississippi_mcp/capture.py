"""Screenshots and the clipboard's image, on Linux (X11, Wayland), macOS and Windows.

What is used where:

============ =========================================== ==========================================
platform     screen, window, region                      clipboard
============ =========================================== ==========================================
Linux X11    Pillow ``ImageGrab`` (XCB); a window by its ``xclip`` (``apt install xclip``)
             title through ``xwininfo`` (x11-utils)
Linux        ``grim`` (wlroots compositors such as sway; ``wl-paste`` (``apt install
Wayland      no window by title)                         wl-clipboard``)
macOS        ``screencapture``; a window by its          Pillow ``ImageGrab.grabclipboard``
             application's name through ``osascript``
Windows      Pillow ``ImageGrab`` (all screens); a       Pillow ``ImageGrab.grabclipboard``
             window by its title through ``user32``
============ =========================================== ==========================================

Every failure is a typed error naming what to install or change: no display at all, no tool, no
image on the clipboard, no window of that title. Every external command runs with a deadline.
A capture is returned as an RGB image with where it came from; nothing is written to disk except
``screencapture``'s temporary file (removed at once).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from mississippi_tools.errors import InvalidInputError, MississippiError

__all__ = [
    "DEFAULT_CAPTURE_TIMEOUT",
    "Box",
    "Capture",
    "CaptureError",
    "CaptureUnavailableError",
    "NoClipboardImageError",
    "WindowNotFoundError",
    "grab_clipboard",
    "grab_screen",
]

DEFAULT_CAPTURE_TIMEOUT = 20.0
"""Seconds one external capture command may take."""

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)``: left, top, right, bottom, in screen pixels (right and bottom excluded)."""
Source = Literal["screen", "window", "region", "clipboard"]


class CaptureError(MississippiError):
    """A screenshot or the clipboard could not be read."""

    code = "capture_failed"


class CaptureUnavailableError(CaptureError):
    """No display, or no tool that can capture here; the message names what to install."""

    code = "capture_unavailable"


class NoClipboardImageError(CaptureError):
    """The clipboard holds no image (nothing, or only text)."""

    code = "no_clipboard_image"


class WindowNotFoundError(CaptureError):
    """No window has the requested title."""

    code = "window_not_found"


@dataclass(frozen=True)
class Capture:
    """One captured image.

    Attributes:
        image: The pixels, in RGB.
        source: ``screen``, ``window``, ``region`` or ``clipboard``.
        backend: What took it (``xcb``, ``grim``, ``screencapture``, ``imagegrab``, ``xclip``,
            ``wl-paste``).
        box: Where on the screen, for a window or region.
    """

    image: Image.Image
    source: Source
    backend: str
    box: Box | None = None

    @property
    def rgb_sha256(self) -> str:
        """SHA-256 of the RGB pixel bytes: equal for two captures of the same pixels."""
        return hashlib.sha256(self.image.tobytes()).hexdigest()

    def png(self) -> bytes:
        """The image as PNG (lossless)."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _run(command: Sequence[str], *, install: str, timeout: float) -> bytes:
    """``command``'s standard output; a missing program names what to install."""
    if shutil.which(command[0]) is None:
        raise CaptureUnavailableError(f"{command[0]} is not installed; {install}")
    try:
        done = subprocess.run(
            list(command),
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise CaptureError(f"{command[0]} did not answer within {timeout:g} s; try again") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = detail[0][:200] if detail else f"exit status {done.returncode}"
        raise CaptureError(f"{command[0]} failed: {reason}")
    return done.stdout


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CaptureError(f"{what} is not a readable image ({type(e).__name__})") from None


def _crop(image: Image.Image, box: Box, what: str) -> tuple[Image.Image, Box]:
    """``image`` cut to ``box`` (clamped to the screen); a box off the screen is an error."""
    x0, y0, x1, y1 = box
    width, height = image.size
    clamped = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    if clamped[0] >= clamped[2] or clamped[1] >= clamped[3]:
        raise InvalidInputError(
            f"{what} [{x0}, {y0}, {x1}, {y1}] is outside the screen, which is "
            f"{width}×{height} px; pass a region inside it"
        )
    return image.crop(clamped), clamped


def _check_region(region: Box) -> Box:
    x0, y0, x1, y1 = (int(v) for v in region)
    if x1 <= x0 or y1 <= y0:
        raise InvalidInputError(
            f"region [{x0}, {y0}, {x1}, {y1}] is empty: pass [left, top, right, bottom] with "
            "right > left and bottom > top, in screen pixels"
        )
    return x0, y0, x1, y1


def _is_windows(platform: str) -> bool:
    return platform.startswith(("win32", "cygwin"))


# ------------------------------------------------------------------------------------------------
# Screenshots
# ------------------------------------------------------------------------------------------------


def grab_screen(
    *,
    window: str | None = None,
    region: Box | None = None,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_CAPTURE_TIMEOUT,
) -> Capture:
    """The whole screen, one window (by title), or a region of the screen.

    Args:
        window: The window's title (X11, Windows) or application name (macOS).
        region: ``(x0, y0, x1, y1)`` in screen pixels; with ``window``, relative to the window.
        platform: A ``sys.platform`` value (default: this one).
        environ: The environment (``DISPLAY``, ``WAYLAND_DISPLAY``); default ``os.environ``.
        timeout: Seconds each external command may take.

    Raises:
        CaptureUnavailableError: No display, or no capture tool.
        WindowNotFoundError: No window of that title.
        InvalidInputError: The region is empty or off the screen.
        CaptureError: The capture tool failed.
    """
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    box = None if region is None else _check_region(region)
    if platform == "darwin":
        image, backend, window_box = _mac_screen(window, timeout)
    elif _is_windows(platform):
        image, backend, window_box = _windows_screen(window)
    else:
        image, backend, window_box = _linux_screen(window, environ, timeout)
    source: Source = "screen" if window is None else "window"
    where: Box | None = None
    if window_box is not None:
        image, where = _crop(image, window_box, f"window {window!r} at")
    if box is not None:
        x, y = (where[0], where[1]) if where is not None else (0, 0)
        image, where = _crop(image, box, "region")
        where = (where[0] + x, where[1] + y, where[2] + x, where[3] + y)
        source = "region"
    return Capture(image.convert("RGB"), source, backend, where)


_NO_DISPLAY = (
    "no graphical display: neither DISPLAY (X11) nor WAYLAND_DISPLAY is set for the MCP server; "
    "start it from the desktop session (the MCP client's environment must carry DISPLAY or "
    "WAYLAND_DISPLAY)"
)


def _linux_screen(
    window: str | None, environ: Mapping[str, str], timeout: float
) -> tuple[Image.Image, str, Box | None]:
    wayland = environ.get("WAYLAND_DISPLAY")
    display = environ.get("DISPLAY")
    if wayland and shutil.which("grim") is not None:
        if window is not None:
            raise CaptureError(
                "capturing a window by its title is not possible on Wayland; capture the "
                "screen, or pass a region"
            )
        data = _run(["grim", "-t", "png", "-"], install="apt install grim", timeout=timeout)
        return _decode(data, "grim's screenshot"), "grim", None
    if not display:
        if wayland:
            raise CaptureUnavailableError(
                "on Wayland the screen is captured with grim (wlroots compositors such as "
                "sway): install it (apt install grim); on GNOME or KDE run the MCP client "
                "under XWayland (DISPLAY set)"
            )
        raise CaptureUnavailableError(_NO_DISPLAY)
    from PIL import ImageGrab, features

    if not features.check("xcb"):
        raise CaptureUnavailableError(
            "this Pillow has no XCB support, needed for X11 screenshots; install Pillow's "
            "PyPI wheel (pip install --force-reinstall pillow)"
        )
    box = None if window is None else _x11_window_box(window, display, timeout)
    try:
        image = ImageGrab.grab(xdisplay=display)
    except OSError as e:
        raise CaptureError(f"cannot capture X11 display {display}: {e}") from None
    return image, "xcb", box


def _x11_window_box(title: str, display: str, timeout: float) -> Box:
    try:
        data = _run(
            ["xwininfo", "-display", display, "-name", title],
            install="install x11-utils (apt install x11-utils)",
            timeout=timeout,
        )
    except CaptureUnavailableError:
        raise
    except CaptureError:
        raise WindowNotFoundError(
            f"no window titled {title!r} on display {display}; pass the exact title, or "
            "capture the screen or a region"
        ) from None
    text = data.decode("utf-8", "replace")
    values: dict[str, int] = {}
    for key, label in (
        ("x", "Absolute upper-left X"),
        ("y", "Absolute upper-left Y"),
        ("w", "Width"),
        ("h", "Height"),
    ):
        match = re.search(rf"^\s*{label}:\s*(-?\d+)", text, re.MULTILINE)
        if match is None:
            raise CaptureError(f"xwininfo gave no {label.lower()} for window {title!r}")
        values[key] = int(match.group(1))
    return values["x"], values["y"], values["x"] + values["w"], values["y"] + values["h"]


def _mac_screen(window: str | None, timeout: float) -> tuple[Image.Image, str, Box | None]:
    """The screen, or a window (``screencapture -R`` on its bounds, in points: no crop needed)."""
    command = ["screencapture", "-x", "-t", "png"]
    if window is not None:
        script = (
            'tell application "System Events" to tell (first process whose name is '
            f'"{window.replace(chr(34), "")}") to get {{position, size}} of front window'
        )
        try:
            answer = _run(
                ["osascript", "-e", script], install="osascript ships with macOS", timeout=timeout
            )
            x, y, w, h = (int(float(v)) for v in answer.decode().replace(" ", "").split(","))
        except (CaptureError, ValueError):
            raise WindowNotFoundError(
                f"no application named {window!r} with a window (or no accessibility "
                "permission for the MCP client); pass the application's name as in the Dock"
            ) from None
        command.append(f"-R{x},{y},{w},{h}")
    descriptor, name = tempfile.mkstemp(suffix=".png")
    os.close(descriptor)
    try:
        _run(
            [*command, name],
            install="screencapture ships with macOS; give the MCP client the Screen Recording "
            "permission (System Settings > Privacy & Security)",
            timeout=timeout,
        )
        image = _decode(Path(name).read_bytes(), "screencapture's screenshot")
    finally:
        Path(name).unlink(missing_ok=True)
    return image, "screencapture", None


def _windows_screen(window: str | None) -> tuple[Image.Image, str, Box | None]:
    from PIL import ImageGrab

    box = None
    if window is not None:
        import ctypes
        from ctypes import wintypes

        user32 = ctypes.windll.user32  # type: ignore[attr-defined]
        handle = user32.FindWindowW(None, window)
        if not handle:
            raise WindowNotFoundError(
                f"no window titled {window!r}; pass the exact title as shown in its title bar"
            )
        rect = wintypes.RECT()
        user32.GetWindowRect(handle, ctypes.byref(rect))
        box = (rect.left, rect.top, rect.right, rect.bottom)
    try:
        image = ImageGrab.grab(all_screens=True)
    except OSError as e:
        raise CaptureError(f"cannot capture the screen: {e}") from None
    return image, "imagegrab", box


# ------------------------------------------------------------------------------------------------
# Clipboard
# ------------------------------------------------------------------------------------------------


def _pick_image_type(types: list[str], tool: str) -> str:
    for wanted in ("image/png", "image/bmp", "image/jpeg", "image/tiff", "image/webp"):
        if wanted in types:
            return wanted
    images = [t for t in types if t.startswith("image/")]
    if images:
        return images[0]
    held = "nothing" if not types else "no image (only " + ", ".join(sorted(types)[:4]) + ")"
    raise NoClipboardImageError(
        f"the clipboard holds {held}, as {tool} reports; copy an image (or take a screenshot "
        "to the clipboard) and call again"
    )


def grab_clipboard(
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_CAPTURE_TIMEOUT,
) -> Capture:
    """The image on the clipboard.

    Raises:
        CaptureUnavailableError: No display, or no clipboard tool (xclip, wl-paste).
        NoClipboardImageError: The clipboard holds no image.
        CaptureError: The clipboard tool failed.
    """
    platform = platform or sys.platform
    environ = os.environ if environ is None else environ
    if platform == "darwin" or _is_windows(platform):
        from PIL import ImageGrab

        try:
            content = ImageGrab.grabclipboard()
        except OSError as e:
            raise CaptureError(f"cannot read the clipboard: {e}") from None
        if isinstance(content, Image.Image):
            return Capture(content.convert("RGB"), "clipboard", "imagegrab")
        if isinstance(content, list) and content:  # copied files: read the first image
            with Image.open(content[0]) as image:
                return Capture(image.convert("RGB"), "clipboard", "imagegrab")
        raise NoClipboardImageError(
            "the clipboard holds no image; copy an image (or take a screenshot to the "
            "clipboard) and call again"
        )
    if environ.get("WAYLAND_DISPLAY") and shutil.which("wl-paste") is not None:
        types = _run(["wl-paste", "--list-types"], install="", timeout=timeout)
        kind = _pick_image_type(types.decode("utf-8", "replace").split(), "wl-paste")
        data = _run(["wl-paste", "--no-newline", "--type", kind], install="", timeout=timeout)
        return Capture(_decode(data, "the clipboard's image"), "clipboard", "wl-paste")
    display = environ.get("DISPLAY")
    if not display:
        if environ.get("WAYLAND_DISPLAY"):
            raise CaptureUnavailableError(
                "wl-paste is not installed; install wl-clipboard (apt install wl-clipboard)"
            )
        raise CaptureUnavailableError(_NO_DISPLAY)
    install = "install xclip (apt install xclip)"
    base = ["xclip", "-display", display, "-selection", "clipboard", "-o"]
    try:
        types = _run([*base, "-t", "TARGETS"], install=install, timeout=timeout)
    except CaptureUnavailableError:
        raise
    except CaptureError:  # xclip fails when nothing owns the clipboard
        raise NoClipboardImageError(
            "the clipboard is empty; copy an image (or take a screenshot to the clipboard) and "
            "call again"
        ) from None
    kind = _pick_image_type(types.decode("utf-8", "replace").split(), "xclip")
    data = _run([*base, "-t", kind], install=install, timeout=timeout)
    return Capture(_decode(data, "the clipboard's image"), "clipboard", "xclip")
