"""Where image bytes may come from: local paths under a policy, and http(s) URLs when enabled.

An agent decides which path or URL to read, so every read goes through a :class:`SourcePolicy`:

- **Paths** (:func:`resolve_path`, :func:`read_path`): optionally confined to ``allowed_roots``;
  ``..`` escapes and symlinks leading out of the roots are refused, and so are ``/proc``, ``/sys``
  and ``/dev`` and anything that is not a regular file. FIFOs are never opened (opening one blocks
  until a writer appears): the file is opened with ``O_NONBLOCK`` and checked with ``fstat`` before
  any read, so a file swapped for a FIFO after the check cannot hang the process either.
- **URLs** (:func:`fetch_url`): off unless ``allow_urls``. Only http and https; the host is
  resolved and addresses that are private, loopback, link-local, reserved, multicast or
  unspecified are refused unless ``allow_private_urls``. The connection then goes to the address
  that was checked (the original host is kept in the ``Host`` header and for TLS), so a DNS answer
  that changes between the check and the request cannot redirect it to an internal service. Every
  redirect hop is checked the same way (at most :data:`MAX_REDIRECTS`). The body is streamed with a
  byte cap and the whole fetch has one deadline. Proxy settings from the environment are ignored.

Policy refusals raise :class:`~mississippi_tools.errors.AccessDeniedError` (a ``PermissionError``).

**Agents**: the default policy (any path) suits code that names its own files. Where an agent (an
LLM) names the path, as in the LangChain tools and the LlamaIndex tool spec, :func:`agent_policy`
applies instead: unless roots are given, only the current working directory. A document the agent
reads may carry a prompt injection asking it to read ``~/.aws/credentials``; errors never quote a
file's contents, but a tool should not open such files at all. A tool built with the filesystem
root as a root may read anything, and :class:`UnrestrictedPathsWarning` says so, once per process.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import socket
import stat
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mississippi_tools.errors import (
    AccessDeniedError,
    ImageFetchError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidInputError,
    Remedy,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_URL_TIMEOUT",
    "FORBIDDEN_PREFIXES",
    "MAX_REDIRECTS",
    "SourcePolicy",
    "UnrestrictedPathsWarning",
    "agent_policy",
    "fetch_url",
    "read_path",
    "resolve_path",
]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""Largest input accepted by default, in bytes (files, URL bodies, decoded base64)."""

DEFAULT_URL_TIMEOUT = 20.0
"""Seconds allowed for a whole URL fetch, redirects and body included."""

MAX_REDIRECTS = 5
"""Redirect hops followed by :func:`fetch_url` before giving up."""

FORBIDDEN_PREFIXES: tuple[Path, ...] = (Path("/proc"), Path("/sys"), Path("/dev"))
"""Pseudo-filesystems never read, whatever the policy says."""

_USER_AGENT = "mississippi-tools (image fetch)"


@dataclass(frozen=True)
class SourcePolicy:
    """What :func:`~mississippi_tools.images.load_image` may read besides in-memory data.

    The default reads any local regular file and no URL.

    Example:
        >>> policy = SourcePolicy(allowed_roots=(Path("/srv/uploads"),))
        >>> policy.allowed_roots
        (PosixPath('/srv/uploads'),)
    """

    allowed_roots: tuple[Path, ...] | None = None
    """Directories paths must stay inside (after resolving ``..`` and symlinks). ``None``: any
    path; ``()``: no path at all. Relative paths are taken relative to the first root."""
    allow_urls: bool = False
    """Fetch http(s) URLs. Off by default: an agent could otherwise make the service reach any
    host."""
    allow_private_urls: bool = False
    """Also fetch from private, loopback and link-local addresses (tests on 127.0.0.1, intranet
    deployments). Off by default to prevent server-side request forgery."""
    url_max_bytes: int = DEFAULT_MAX_BYTES
    """Largest URL body accepted, in bytes."""
    url_timeout: float = DEFAULT_URL_TIMEOUT
    """Seconds allowed for the whole fetch (connect, redirects, body)."""
    follow_symlinks_outside_roots: bool = False
    """Accept a symlink inside a root whose target lies outside every root."""

    def __post_init__(self) -> None:
        if self.allowed_roots is not None:
            roots: Iterable[str | os.PathLike[str]] = self.allowed_roots
            if isinstance(roots, str | os.PathLike):  # a common slip: one root, not a tuple
                roots = (roots,)
            normalized = tuple(Path(os.fsdecode(root)).resolve() for root in roots)
            object.__setattr__(self, "allowed_roots", normalized)
        if self.url_max_bytes <= 0:
            raise InvalidInputError(
                f"url_max_bytes must be positive, got {self.url_max_bytes}; "
                f"pass a byte count such as {DEFAULT_MAX_BYTES}"
            )
        if not self.url_timeout > 0:
            raise InvalidInputError(
                f"url_timeout must be a positive number of seconds, got {self.url_timeout!r}; "
                f"pass e.g. {DEFAULT_URL_TIMEOUT}"
            )


_DEFAULT_POLICY = SourcePolicy()


class UnrestrictedPathsWarning(UserWarning):
    """An agent-facing tool was built with roots that let the agent read any file."""


_unrestricted_warned = False
_warn_lock = threading.Lock()


def agent_policy(
    policy: SourcePolicy | None = None,
    *,
    allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
    tool: str = "a tool",
) -> SourcePolicy:
    """The policy for a surface where an agent names the paths: not the whole filesystem.

    Args:
        policy: The policy to start from (the model's, ``vlm.policy``); ``None`` means the
            defaults.
        allowed_roots: Roots given to the tool; they replace ``policy``'s.
        tool: The tool's name, for the warning.

    Returns:
        ``policy`` with ``allowed_roots`` set: the given roots; else ``policy``'s own when it has
        some (an empty tuple: no paths at all); else the current working directory, resolved
        now (relative paths start there).

    Warns:
        UnrestrictedPathsWarning: Once per process, when a root is the filesystem root (``/``).

    Example:
        >>> agent_policy(SourcePolicy()).allowed_roots == (Path.cwd().resolve(),)
        True
    """
    policy = policy or _DEFAULT_POLICY
    if allowed_roots is not None:
        roots: tuple[Path, ...] = tuple(Path(os.fsdecode(root)) for root in allowed_roots)
    elif policy.allowed_roots is not None:
        roots = policy.allowed_roots
    else:
        roots = (Path.cwd(),)
    result = dataclasses.replace(policy, allowed_roots=roots)
    assert result.allowed_roots is not None  # normalized by SourcePolicy
    if any(root == Path(root.anchor) for root in result.allowed_roots):
        _warn_unrestricted(tool)
    return result


def _warn_unrestricted(tool: str) -> None:
    global _unrestricted_warned
    with _warn_lock:
        if _unrestricted_warned:
            return
        _unrestricted_warned = True
    warnings.warn(
        f"{tool} may read any file on this machine (a root is the filesystem root): an agent "
        "can be talked into naming ~/.ssh or ~/.aws by a document it reads; give the tool the "
        "directories it needs as allowed_roots instead (this is said once per process)",
        UnrestrictedPathsWarning,
        stacklevel=3,
    )


def _short(value: str, limit: int = 120) -> str:
    """``value`` for an error message, shortened when long (paths can be base64 blobs)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[: limit - 20]!r}… ({len(value)} characters)"


def _is_within(path: Path, root: Path) -> bool:
    return path.is_relative_to(root)  # linear in the depth, unlike `root in path.parents`


def _forbidden_prefix(path: Path) -> Path | None:
    for prefix in FORBIDDEN_PREFIXES:
        if _is_within(path, prefix):
            return prefix
    return None


def _roots_text(roots: Iterable[Path]) -> str:
    return ", ".join(str(root) for root in roots) or "(none)"


def resolve_path(path: str | os.PathLike[str], policy: SourcePolicy | None = None) -> Path:
    """Check ``path`` against ``policy`` and return the real path of the regular file it names.

    Args:
        path: A local path. With ``policy.allowed_roots``, a relative path is taken relative to
            the first root; otherwise relative to the current directory.
        policy: The rules to apply; ``None`` means :class:`SourcePolicy` defaults (any path).

    Returns:
        The absolute path with symlinks resolved, to be opened instead of ``path``.

    Raises:
        AccessDeniedError: The path leaves the allowed roots (``..``, absolute path, symlink),
            lies under ``/proc``, ``/sys`` or ``/dev``, is not a regular file (directory, FIFO,
            socket, device), or cannot be read for lack of permission.
        ImageNotFoundError: Nothing exists at the path (also for names too long or invalid for
            the filesystem).
    """
    policy = policy or _DEFAULT_POLICY
    text = os.fsdecode(path)
    shown = _short(text)
    if "\x00" in text:
        raise ImageNotFoundError(
            f"no file at path {shown}: the path contains a NUL character; "
            "pass a plain filesystem path",
            path=text,
        )
    try:
        os.fsencode(text)  # a name read from the OS round-trips; other lone surrogates do not
    except UnicodeEncodeError:
        raise ImageNotFoundError(
            f"no file at path {shown}: the path holds characters no file name can have (lone "
            "UTF-16 surrogates, as left by a bad decoding); pass the path as the OS gives it, "
            "or as bytes / os.PathLike",
            path=text,
        ) from None
    roots = policy.allowed_roots
    candidate = Path(text)
    relative_hint = ""
    if not candidate.is_absolute():
        base = roots[0] if roots else Path.cwd()
        candidate = base / candidate
        relative_hint = f" (relative paths start at {str(base)!r})"
    # Lexical check first: a ".." escape is refused before the filesystem is asked anything, so
    # the error never reveals whether a file exists outside the roots.
    lexical = Path("/" + os.path.normpath(candidate).lstrip("/"))  # POSIX keeps a leading "//"
    prefix = _forbidden_prefix(lexical)
    if prefix is not None:
        raise AccessDeniedError(
            f"path {shown} is under {prefix}, which is never read "
            "(pseudo-files and devices); copy the data to a regular file"
        )
    if roots is not None and not any(_is_within(lexical, root) for root in roots):
        raise AccessDeniedError(
            f"path {shown} resolves to {str(lexical)!r}, outside the allowed roots "
            f"({_roots_text(roots)}); move the file under a root or allow its directory",
            remedy=Remedy("allowed_roots"),
        )
    try:
        real = candidate.resolve(strict=True)
        info = real.stat()
    except FileNotFoundError:
        raise ImageNotFoundError(
            f"no file at path {shown}; check the path{relative_hint}", path=text
        ) from None
    except PermissionError:
        raise AccessDeniedError(
            f"cannot read path {shown}: permission denied; make the file readable by this process"
        ) from None
    except (OSError, RuntimeError) as e:
        # ENAMETOOLONG, ENOTDIR, ELOOP (RuntimeError on some Pythons for symlink loops), ...
        reason = errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)
        raise ImageNotFoundError(
            f"no readable file at path {shown} ({reason}: {getattr(e, 'strerror', None) or e}); "
            "check the path",
            path=text,
        ) from None
    prefix = _forbidden_prefix(real)
    if prefix is not None:
        raise AccessDeniedError(
            f"path {shown} leads to {str(real)!r} under {prefix}, which is never read; "
            "copy the data to a regular file"
        )
    if (
        roots is not None
        and not policy.follow_symlinks_outside_roots
        and not any(_is_within(real, root) for root in roots)
    ):
        raise AccessDeniedError(
            f"path {shown} is a symlink (or goes through one) to {str(real)!r}, outside the "
            f"allowed roots ({_roots_text(roots)}); copy the file under a root, or allow "
            "links that leave the roots",
            remedy=Remedy("follow_symlinks_outside_roots"),
        )
    if not stat.S_ISREG(info.st_mode):
        raise AccessDeniedError(
            f"path {shown} is {_file_kind(info.st_mode)}, not a regular file; pass an image file"
        )
    return real


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def read_path(
    path: str | os.PathLike[str],
    policy: SourcePolicy | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """Read the file at ``path`` after :func:`resolve_path`, refusing files over ``max_bytes``.

    The file is opened non-blocking and re-checked with ``fstat``, so a FIFO put in its place
    after the check is refused instead of hanging the read.

    Args:
        path: A local path, checked against ``policy``.
        policy: The rules to apply; ``None`` means :class:`SourcePolicy` defaults.
        max_bytes: Largest file accepted.

    Returns:
        The file's bytes.

    Raises:
        AccessDeniedError: See :func:`resolve_path`.
        ImageNotFoundError: See :func:`resolve_path`.
        ImageTooLargeError: The file is larger than ``max_bytes``.
    """
    real = resolve_path(path, policy)
    shown = _short(os.fsdecode(path))
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise ImageNotFoundError(
            f"no file at path {shown} (it was removed)", path=str(path)
        ) from None
    except OSError as e:
        raise AccessDeniedError(
            f"cannot open path {shown}: {e.strerror or e}; check that it is a readable regular file"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AccessDeniedError(
                f"path {shown} is {_file_kind(info.st_mode)}, not a regular file; "
                "pass an image file"
            )
        if info.st_size > max_bytes:
            raise _too_large(shown, info.st_size, max_bytes, source=os.fsdecode(path))
        # Size the read by fstat (read(n) allocates n bytes up front); if the file grew since,
        # read on, still capped.
        data = handle.read(info.st_size + 1)
        if len(data) > info.st_size:
            data += handle.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:
        raise _too_large(shown, len(data), max_bytes, source=os.fsdecode(path), at_least=True)
    return data


def _too_large(
    what: str, size: int, limit: int, *, source: str, at_least: bool = False, knob: str = ""
) -> ImageTooLargeError:
    more = "at least " if at_least else ""
    return ImageTooLargeError(
        f"{what} is {more}{size:,} bytes; the limit is {limit:,} bytes; "
        "shrink the file or raise the limit",
        source=source,
        remedy=Remedy(knob or "max_bytes", None if at_least else str(size)),
    )


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` may not be fetched without ``allow_private_urls``, or ``None``."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _refused_address(mapped)
    checks = (  # most specific first: 169.254.0.0/16 is both link-local and "private"
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def _checked_addresses(url: httpx.URL, policy: SourcePolicy) -> list[str]:
    """Resolve the URL's host; return the addresses to connect to, refusing forbidden ones."""
    host = url.raw_host.decode("ascii")
    if not host:
        raise InvalidInputError(f"URL {_short(str(url))} has no host; pass an absolute http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ImageNotFoundError(
            f"cannot resolve host {host!r} of URL {_short(str(url))} ({e}); check the URL",
            path=str(url),
        ) from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if text not in addresses:
            addresses.append(text)
    if not policy.allow_private_urls:
        for text in addresses:
            reason = _refused_address(ipaddress.ip_address(text))
            if reason is not None:
                raise AccessDeniedError(
                    f"URL {_short(str(url))} points to {text}, a {reason} address; fetching it "
                    "is refused to protect internal services; use a public URL, or allow "
                    "private addresses if the host is trusted",
                    remedy=Remedy("allow_private_urls"),
                )
    if not addresses:
        raise ImageNotFoundError(f"host {host!r} has no address; check the URL", path=str(url))
    return addresses


def _check_scheme(url: httpx.URL) -> None:
    if url.scheme not in ("http", "https"):
        raise AccessDeniedError(
            f"URL {_short(str(url))} uses the scheme {url.scheme!r}; only http and https are "
            "fetched; download the file and pass its path or bytes"
        )


def check_url_allowed(url: str, policy: SourcePolicy) -> None:
    """Refuse ``url`` when ``policy`` does not fetch URLs (the remedy names the option).

    Raises:
        AccessDeniedError: URLs are disabled.
    """
    if not policy.allow_urls:
        raise AccessDeniedError(
            f"fetching URLs is disabled, so {_short(url)} was not read; download the image and "
            "pass its bytes or path, or enable URL fetching",
            remedy=Remedy("allow_urls"),
        )


def fetch_url(
    url: str, policy: SourcePolicy | None = None, *, max_bytes: int | None = None
) -> bytes:
    """Download ``url`` under ``policy`` and return its body.

    Args:
        url: An ``http://`` or ``https://`` URL.
        policy: Must have ``allow_urls=True``; ``None`` means defaults, i.e. refused.
        max_bytes: A further cap on the body, on top of ``policy.url_max_bytes`` (the smaller
            applies).

    Returns:
        The response body (content-encoding removed; ``identity`` is requested).

    Raises:
        AccessDeniedError: URLs are disabled, the scheme is not http(s), or the host (or a
            redirect's host) resolves to a private/loopback/link-local/reserved address.
        ImageNotFoundError: The host does not resolve, or the server answered 404 or 410.
        ImageTooLargeError: The body is larger than the cap.
        InvalidInputError: Any other HTTP error status (the message has it), too many
            redirects, a timeout, or a connection or protocol failure.
    """
    policy = policy or _DEFAULT_POLICY
    check_url_allowed(url, policy)
    import httpx  # lazy: importing httpx costs ~130 ms

    cap = policy.url_max_bytes if max_bytes is None else min(max_bytes, policy.url_max_bytes)
    # The option that set the cap, for the remedy of a download over it.
    knob = "url_max_bytes" if cap == policy.url_max_bytes else "max_bytes"
    deadline = time.monotonic() + policy.url_timeout
    try:
        current = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise InvalidInputError(f"{_short(url)} is not a valid URL ({e}); fix the URL") from None
    _check_scheme(current)
    with httpx.Client(trust_env=False, follow_redirects=False, verify=True) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            body, location = _fetch_once(client, current, policy, cap, deadline, knob=knob)
            if location is None:
                return body
            try:
                current = current.join(location)
            except httpx.InvalidURL as e:
                raise InvalidInputError(
                    f"URL {_short(url)} redirected to an invalid location {location!r} ({e}); "
                    "fetch the final URL yourself"
                ) from None
            _check_scheme(current)
    raise ImageFetchError(
        f"URL {_short(url)} redirected more than {MAX_REDIRECTS} times (last: {current}); "
        "pass the final URL"
    )


def _fetch_once(
    client: httpx.Client,
    url: httpx.URL,
    policy: SourcePolicy,
    cap: int,
    deadline: float,
    *,
    knob: str,
) -> tuple[bytes, str | None]:
    """One request to ``url``, pinned to a checked address: ``(body, redirect location)``."""
    import httpx

    addresses = _checked_addresses(url, policy)
    host_header = url.netloc.decode("ascii")
    # TLS still checks the certificate against the original host name.
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    last_error: Exception | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        pinned = url.copy_with(host=address)
        request = client.build_request(
            "GET",
            pinned,
            headers={
                "Host": host_header,
                "Accept": "image/*, application/pdf;q=0.9, */*;q=0.1",
                "Accept-Encoding": "identity",
                "User-Agent": _USER_AGENT,
            },
            timeout=httpx.Timeout(remaining),
            extensions=extensions,
        )
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as e:
            last_error = e  # try the host's next address, as socket.create_connection would
            continue
        except httpx.TimeoutException:
            break
        except httpx.HTTPError as e:
            raise ImageFetchError(
                f"fetching {_short(str(url))} failed: {type(e).__name__}: {e}; check the URL",
                url=str(url),
            ) from e
        try:
            return _read_body(response, url, cap, deadline, knob=knob)
        finally:
            response.close()
    if last_error is not None and time.monotonic() < deadline:
        raise ImageFetchError(
            f"cannot connect to {_short(str(url))} ({last_error}); check that the server is up "
            "and the URL is right",
            url=str(url),
        ) from last_error
    raise ImageFetchError(
        f"fetching {_short(str(url))} did not finish within {policy.url_timeout:g} s; "
        "allow more time or download the image yourself",
        url=str(url),
        remedy=Remedy("url_timeout"),
    )


def _read_body(
    response: httpx.Response, url: httpx.URL, cap: int, deadline: float, *, knob: str
) -> tuple[bytes, str | None]:
    import httpx

    shown = _short(str(url))
    if response.is_redirect:
        location = response.headers.get("location")
        if location:
            return b"", location
    status = response.status_code
    if status in (404, 410):
        raise ImageNotFoundError(
            f"URL {shown} answered HTTP {status} ({response.reason_phrase}); check the URL",
            path=str(url),
        )
    if not 200 <= status < 300:
        raise ImageFetchError(
            f"URL {shown} answered HTTP {status} ({response.reason_phrase}); the image could not "
            "be downloaded; check the URL and that it is publicly readable",
            url=str(url),
            status_code=status,
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(f"URL {shown}", int(declared), cap, source=str(url), knob=knob)
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():  # as received, so the deadline is checked often
            size += len(chunk)
            if size > cap:
                raise _too_large(
                    f"URL {shown}", size, cap, source=str(url), knob=knob, at_least=True
                )
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total deadline exceeded")
    except httpx.TimeoutException:
        raise ImageFetchError(
            f"downloading {shown} did not finish in time ({size:,} bytes received); allow "
            "more time or download the image yourself",
            url=str(url),
            remedy=Remedy("url_timeout"),
        ) from None
    except httpx.HTTPError as e:
        raise ImageFetchError(
            f"downloading {shown} failed after {size:,} bytes: {type(e).__name__}: {e}; retry "
            "or download the image yourself",
            url=str(url),
        ) from e
    return b"".join(chunks), None
