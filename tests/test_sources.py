from __future__ import annotations

import io
import ipaddress
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from mississippi_tools.errors import (
    AccessDeniedError,
    ImageDecodeError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidInputError,
)
from mississippi_tools.images import ImageLimits, load_image
from mississippi_tools.sources import (
    SourcePolicy,
    _refused_address,
    fetch_url,
    read_path,
    resolve_path,
)


def png_bytes(colour: tuple[int, int, int] = (0, 128, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), colour).save(buffer, "PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "a.png").write_bytes(png_bytes())
    (tmp_path / "outside.png").write_bytes(png_bytes((1, 2, 3)))
    return base


def test_any_path_by_default(root: Path) -> None:
    assert resolve_path(root / "sub" / "a.png") == (root / "sub" / "a.png").resolve()
    assert read_path(str(root / "sub" / "a.png")) == png_bytes()


def test_relative_paths_start_at_the_first_root(root: Path) -> None:
    policy = SourcePolicy(allowed_roots=(root,))
    assert resolve_path("sub/a.png", policy) == (root / "sub" / "a.png").resolve()
    assert load_image("sub/a.png", policy=policy).image.getpixel((0, 0)) == (0, 128, 255)


def test_a_single_root_is_accepted_without_a_tuple(root: Path) -> None:
    policy = SourcePolicy(allowed_roots=str(root))  # type: ignore[arg-type]
    assert policy.allowed_roots == (root.resolve(),)


def test_outside_roots_is_refused(root: Path) -> None:
    policy = SourcePolicy(allowed_roots=(root,))
    with pytest.raises(AccessDeniedError, match="outside the allowed roots") as info:
        resolve_path(root.parent / "outside.png", policy)
    assert isinstance(info.value, PermissionError)
    assert "allowed_roots" in str(info.value)


def test_dotdot_escape_is_refused_even_when_the_target_is_missing(root: Path) -> None:
    policy = SourcePolicy(allowed_roots=(root,))
    with pytest.raises(AccessDeniedError, match="outside the allowed roots"):
        resolve_path("../outside.png", policy)
    with pytest.raises(AccessDeniedError):
        resolve_path("sub/../../no-such-file.png", policy)  # refused, not "not found"
    assert resolve_path("sub/../sub/a.png", policy) == (root / "sub" / "a.png").resolve()


def test_no_roots_means_no_paths(root: Path) -> None:
    with pytest.raises(AccessDeniedError):
        resolve_path(root / "sub" / "a.png", SourcePolicy(allowed_roots=()))


def test_symlink_escape_is_refused(root: Path) -> None:
    link = root / "sub" / "link.png"
    link.symlink_to(root.parent / "outside.png")
    dir_link = root / "linked_dir"
    dir_link.symlink_to(root.parent, target_is_directory=True)
    policy = SourcePolicy(allowed_roots=(root,))
    with pytest.raises(AccessDeniedError, match="symlink"):
        resolve_path(link, policy)
    with pytest.raises(AccessDeniedError, match="follow_symlinks_outside_roots"):
        load_image(dir_link / "outside.png", policy=policy)
    allowed = SourcePolicy(allowed_roots=(root,), follow_symlinks_outside_roots=True)
    assert resolve_path(link, allowed) == (root.parent / "outside.png").resolve()
    inside = root / "inside.png"
    inside.symlink_to(root / "sub" / "a.png")
    assert resolve_path(inside, policy) == (root / "sub" / "a.png").resolve()


@pytest.mark.parametrize("path", ["/proc/self/status", "/dev/zero", "/dev/stdin", "/sys/kernel"])
def test_pseudo_filesystems_are_refused(path: str) -> None:
    with pytest.raises(AccessDeniedError, match="never read"):
        load_image(path)


def test_symlink_into_proc_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "status.png"
    link.symlink_to("/proc/self/status")
    with pytest.raises(AccessDeniedError, match="never read"):
        load_image(link)


def test_directory_is_refused(root: Path) -> None:
    with pytest.raises(AccessDeniedError, match="a directory, not a regular file"):
        load_image(root / "sub")


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        for call in (lambda: load_image(fifo), lambda: read_path(fifo)):
            try:
                call()
            except BaseException as error:
                outcome.append(error)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():  # unblock the reader so the test process can finish
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert len(outcome) == 2
    for error in outcome:
        assert isinstance(error, AccessDeniedError)
        assert "FIFO" in str(error)


def test_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        with pytest.raises(AccessDeniedError, match="a socket"):
            load_image(path)
    finally:
        server.close()


def test_missing_file(root: Path) -> None:
    with pytest.raises(ImageNotFoundError, match="no file at path") as info:
        resolve_path(root / "missing.png")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ImageNotFoundError):
        resolve_path(root / "sub" / "a.png" / "child.png")  # ENOTDIR


def test_symlink_loop_is_not_found(tmp_path: Path) -> None:
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(ImageNotFoundError):
        resolve_path(loop)


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_unreadable_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A file without read permission is refused as access denied.

    Root reads anything, so under root the read runs in a forked child that dropped to nobody.
    """
    directory = Path(tempfile.mkdtemp(prefix="mississippi-unreadable-"))
    try:
        directory.chmod(0o755)
        path = directory / "a.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
        path.chmod(0)
        if os.geteuid() != 0:
            with pytest.raises(AccessDeniedError, match=r"(?i)permission denied"):
                read_path(path)
            return
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.close(reader)
            message = b"no error"
            try:
                os.setgid(65534)
                os.setuid(65534)
                read_path(path)
            except AccessDeniedError as e:
                message = f"refused: {e}".encode()
            except BaseException as e:
                message = repr(e).encode()
            os.write(writer, message)
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            answer = pipe.read().decode()
        os.waitpid(child, 0)
        assert answer.startswith("refused:"), answer
        assert "permission denied" in answer.lower(), answer
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_read_path_caps_the_size(root: Path) -> None:
    path = root / "sub" / "a.png"
    with pytest.raises(ImageTooLargeError, match=f"{path.stat().st_size:,} bytes; the limit is 10"):
        read_path(path, max_bytes=10)


def test_policy_validates() -> None:
    with pytest.raises(InvalidInputError, match="url_max_bytes"):
        SourcePolicy(url_max_bytes=0)
    with pytest.raises(InvalidInputError, match="url_timeout"):
        SourcePolicy(url_timeout=0)


# --------------------------------------------------------------------------------------------
# URLs, against a real HTTP server on 127.0.0.1
# --------------------------------------------------------------------------------------------

PNG = png_bytes()


class Handler(BaseHTTPRequestHandler):
    hosts: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_body(self, status: int, body: bytes, content_type: str = "image/png") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        path = self.path
        if path == "/image.png":
            self.send_body(200, PNG)
        elif path == "/page.html":
            self.send_body(200, b"<!doctype html><html>Log in</html>", "text/html")
        elif path == "/missing":
            self.send_body(404, b"not found", "text/plain")
        elif path == "/error":
            self.send_body(503, b"busy", "text/plain")
        elif path.startswith("/redirect/"):
            hops = int(path.rsplit("/", 1)[1])
            self.redirect("/image.png" if hops == 0 else f"/redirect/{hops - 1}")
        elif path == "/loop":
            self.redirect("/loop")
        elif path == "/to-ftp":
            self.redirect("ftp://example.com/a.png")
        elif path == "/to-invalid-host":
            self.redirect("http://no-such-host.invalid/a.png")
        elif path == "/big":
            self.send_body(200, PNG + bytes(10_000))
        elif path == "/big-no-length":  # HTTP/1.0: the body runs until the connection closes
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(20):
                    self.wfile.write(bytes(1000))
            except OSError:  # the client hung up at its cap
                pass
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self.send_body(400, b"bad", "text/plain")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


LOCAL = SourcePolicy(allow_urls=True, allow_private_urls=True)


def test_url_fetch_and_load(server: str) -> None:
    assert fetch_url(f"{server}/image.png", LOCAL) == PNG
    loaded = load_image(f"{server}/image.png", policy=LOCAL)
    assert loaded.source == f"{server}/image.png"
    assert loaded.image.getpixel((0, 0)) == (0, 128, 255)


def test_urls_off_by_default(server: str) -> None:
    with pytest.raises(AccessDeniedError, match=r"allow_urls=True"):
        fetch_url(f"{server}/image.png")
    with pytest.raises(AccessDeniedError, match=r"allow_urls=True"):
        load_image(f"{server}/image.png", policy=SourcePolicy(allowed_roots=(Path("/tmp"),)))


def test_loopback_refused_without_allow_private(server: str) -> None:
    policy = SourcePolicy(allow_urls=True)
    with pytest.raises(AccessDeniedError, match=r"127.0.0.1, a loopback address.*allow_private"):
        fetch_url(f"{server}/image.png", policy)
    port = server.rsplit(":", 1)[1]
    with pytest.raises(AccessDeniedError, match="loopback"):
        fetch_url(f"http://localhost:{port}/image.png", policy)


def test_host_header_keeps_the_name_while_the_address_is_pinned(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    Handler.hosts.clear()
    assert fetch_url(f"http://localhost:{port}/image.png", LOCAL) == PNG
    assert Handler.hosts[-1] == f"localhost:{port}"


def test_http_errors(server: str) -> None:
    with pytest.raises(ImageNotFoundError, match="HTTP 404"):
        load_image(f"{server}/missing", policy=LOCAL)
    with pytest.raises(InvalidInputError, match="HTTP 503") as info:
        load_image(f"{server}/error", policy=LOCAL)
    assert not isinstance(info.value, ImageDecodeError)


def test_html_instead_of_an_image(server: str) -> None:
    with pytest.raises(ImageDecodeError, match="an HTML page"):
        load_image(f"{server}/page.html", policy=LOCAL)


def test_redirects_are_followed_and_capped(server: str) -> None:
    assert fetch_url(f"{server}/redirect/4", LOCAL) == PNG  # 5 redirects
    with pytest.raises(InvalidInputError, match="redirected more than 5 times"):
        fetch_url(f"{server}/redirect/5", LOCAL)
    with pytest.raises(InvalidInputError, match="redirected more than 5 times"):
        fetch_url(f"{server}/loop", LOCAL)


def test_every_redirect_hop_is_checked(server: str) -> None:
    with pytest.raises(AccessDeniedError, match="scheme 'ftp'"):
        fetch_url(f"{server}/to-ftp", LOCAL)
    with pytest.raises(ImageNotFoundError, match=r"cannot resolve host 'no-such-host.invalid'"):
        fetch_url(f"{server}/to-invalid-host", LOCAL)


def test_body_size_is_capped(server: str) -> None:
    small = SourcePolicy(allow_urls=True, allow_private_urls=True, url_max_bytes=5000)
    with pytest.raises(ImageTooLargeError, match=r"limit is 5,000 bytes.*url_max_bytes"):
        fetch_url(f"{server}/big", small)
    with pytest.raises(ImageTooLargeError, match=r"at least \d[\d,]* bytes; the limit is 5,000"):
        fetch_url(f"{server}/big-no-length", small)
    with pytest.raises(ImageTooLargeError, match=r"ImageLimits\(max_bytes="):
        load_image(f"{server}/big", policy=LOCAL, limits=ImageLimits(max_bytes=1000))


def test_total_timeout(server: str) -> None:
    policy = SourcePolicy(allow_urls=True, allow_private_urls=True, url_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=r"url_timeout"):
        fetch_url(f"{server}/slow", policy)
    assert time.monotonic() - started < 2.0  # the server would drip for 10 s


def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InvalidInputError, match="cannot connect"):
        fetch_url(f"http://127.0.0.1:{port}/x.png", LOCAL)


def test_malformed_urls() -> None:
    with pytest.raises(InvalidInputError):
        fetch_url("http://[::1/x.png", LOCAL)
    with pytest.raises(InvalidInputError, match="no host"):
        fetch_url("http:///x.png", LOCAL)
    with pytest.raises(AccessDeniedError, match="only http and https"):
        fetch_url("ftp://example.com/x.png", LOCAL)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata endpoint
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refused_addresses(address: str, reason: str | None) -> None:
    assert _refused_address(ipaddress.ip_address(address)) == reason


# --------------------------------------------------------------------------------------------
# Paths that are not valid UTF-8 (issue 20.5)
# --------------------------------------------------------------------------------------------


def test_a_non_utf8_file_name_is_read(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"  # Latin-1, as an old system may write it
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (9, 8, 7)).save(buffer, "PNG")
    with open(name, "wb") as handle:
        handle.write(buffer.getvalue())
    text = os.fsdecode(name)  # what argv and os.listdir give: "caf\udce9.png"
    assert "\udce9" in text
    assert resolve_path(text) == Path(text)
    assert load_image(text).size == (3, 2)
    assert load_image(Path(text)).size == (3, 2)


@pytest.mark.parametrize("name", ["\ud800.png", "a\udc00b.png", "\udfff"])
def test_a_lone_surrogate_path_is_a_typed_error(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name)
    for call in (
        lambda: resolve_path(path),
        lambda: read_path(path),
        lambda: load_image(path),
        lambda: resolve_path(path, SourcePolicy(allowed_roots=(tmp_path,))),
    ):
        with pytest.raises(ImageNotFoundError, match="characters no file name can have") as info:
            call()
        str(info.value).encode("utf-8")  # the message itself is printable anywhere
