"""Bearer-token authentication and the dependencies every ``/v1`` route shares.

With :attr:`~mississippi_tools.server.settings.ServerSettings.api_key` set, each request must send
``Authorization: Bearer <key>``; the comparison takes constant time. Without a key the service
only binds loopback addresses
(:meth:`~mississippi_tools.server.settings.ServerSettings.check_bind`).

A key in the URL (``?api_key=...``, ``?token=...``) is refused with 401, whatever its value:
URLs end up in access logs, proxies and shell histories. The access log shows such parameters
as ``***`` anyway (:class:`RedactCredentialsFilter`, installed by
:func:`~mississippi_tools.server.app.create_app`).
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import unquote_plus

from fastapi import Request

from mississippi_tools.server.errors import UnauthorizedError
from mississippi_tools.server.state import ServiceState
from mississippi_tools.vlm import MississippiVLM

__all__ = [
    "CREDENTIAL_QUERY_PARAMETERS",
    "RedactCredentialsFilter",
    "redact_credentials",
    "require_api_key",
    "require_vlm",
    "service_state",
]

#: Query parameters that carry credentials (compared in lower case): refused and redacted.
CREDENTIAL_QUERY_PARAMETERS = frozenset(
    {"api_key", "api-key", "apikey", "key", "token", "access_token", "auth", "authorization"}
)


def redact_credentials(target: str) -> str:
    """``target`` (a path with its query string) with credential parameters' values as ``***``.

    Example:
        >>> redact_credentials("/v1/models?api_key=s3cret&x=1")
        '/v1/models?api_key=***&x=1'
    """
    path, mark, query = target.partition("?")
    if not mark:
        return target
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        if equals and unquote_plus(name).lower() in CREDENTIAL_QUERY_PARAMETERS:
            pair = f"{name}=***"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}"


class RedactCredentialsFilter(logging.Filter):
    """Redact credential query parameters in uvicorn's access-log lines (``uvicorn.access``).

    uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with the path and query as the third argument.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's path argument; never drops a record."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_credentials(args[2]), *args[3:])
        return True


def install_access_log_redaction() -> None:
    """Add :class:`RedactCredentialsFilter` to the ``uvicorn.access`` logger, once."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactCredentialsFilter) for f in access.filters):
        access.addFilter(RedactCredentialsFilter())


def service_state(request: Request) -> ServiceState:
    """The app's :class:`~mississippi_tools.server.state.ServiceState`."""
    state = request.app.state.service
    assert isinstance(state, ServiceState)
    return state


def check_api_key(request: Request, state: ServiceState) -> None:
    """Raise :class:`UnauthorizedError` unless the request carries the API key."""
    expected = state.settings.api_key
    if expected is None:
        return
    in_url = [n for n in request.query_params if n.lower() in CREDENTIAL_QUERY_PARAMETERS]
    if in_url:
        raise UnauthorizedError(
            f"API keys are not accepted in the URL (query parameter {in_url[0]!r}): URLs end up "
            "in logs and proxies; send the header 'Authorization: Bearer <key>' instead"
        )
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "this server requires an API key: send 'Authorization: Bearer <key>' "
            "(MississippiVLM.connect(..., api_key=...), OpenAI(api_key=...))"
        )
    if not secrets.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise UnauthorizedError("the API key is not valid for this server")


async def require_api_key(request: Request) -> None:
    """Dependency: the request must carry the API key (when the server has one)."""
    check_api_key(request, service_state(request))


async def require_vlm(request: Request) -> MississippiVLM:
    """Dependency: the loaded model (503 with ``Retry-After`` while loading or stopping)."""
    return await service_state(request).acquire_vlm()
